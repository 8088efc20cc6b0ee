/* Wine 8.0 (Debian bookworm's wine64) has no bcryptprimitives.dll, and Rust's
 * standard library for Windows (since 1.78) draws its random bytes from its
 * ProcessPrng. This DLL gives Wine that one export, backed by the system
 * RNG through BCryptGenRandom, which Wine 8 has. Only for running the tests
 * under Wine in CI (.ci/run builds it into the test Wine prefix); a real
 * Windows (10 and later) has its own bcryptprimitives.dll. */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
