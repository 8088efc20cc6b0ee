//! A throw-away PKI for tests and the demo: a CA and one server leaf.
//!
//! Lifetimes are realistic, not rcgen's default (valid until the year
//! 4096): the CA for [`CA_VALIDITY_DAYS`], the server certificate for
//! [`SERVER_CERT_VALIDITY_DAYS`] (well under the 397 days the CA/Browser
//! Forum allows, and inside the CA's validity). Both start
//! [`NOT_BEFORE_SKEW_SECS`] before the moment they were made, so a client
//! whose clock is a little behind still accepts them.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

/// How long the test CA is valid, from when it was made.
pub const CA_VALIDITY_DAYS: i64 = 365;
/// How long the server certificate is valid, from when it was made (at most
/// 397 days, the CA/Browser Forum's limit for TLS server certificates).
pub const SERVER_CERT_VALIDITY_DAYS: i64 = 90;
/// How far before the moment of making both certificates start (clock skew).
pub const NOT_BEFORE_SKEW_SECS: i64 = 3_600;

/// A freshly generated CA and a server certificate it signed (PEM).
#[derive(Clone)]
pub struct TestPki {
    /// The CA certificate: what clients trust.
    pub ca_cert_pem: String,
    /// The server's leaf certificate.
    pub server_cert_pem: String,
    /// The server's private key (PKCS#8).
    pub server_key_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

impl TestPki {
    /// Generate a CA and a leaf whose subject alternative names are `names`
    /// (an IP literal becomes an IP SAN, anything else a DNS name), e.g.
    /// `&["localhost", "127.0.0.1"]`.
    pub fn generate(names: &[&str]) -> anyhow::Result<TestPki> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs();
        let now = OffsetDateTime::from_unix_timestamp(i64::try_from(secs)?)
            .context("the system clock is out of range")?;
        let not_before = now - time::Duration::seconds(NOT_BEFORE_SKEW_SECS);
        let ca_key = KeyPair::generate().context("CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "outpost test CA");
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = not_before;
        ca.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
        let ca_cert = ca.self_signed(&ca_key).context("CA certificate")?;
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate().context("server key")?;
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut leaf = CertificateParams::new(names).context("server names")?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "outpost test server");
        leaf.distinguished_name = dn;
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.not_before = not_before;
        leaf.not_after = now + time::Duration::days(SERVER_CERT_VALIDITY_DAYS);
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .context("server certificate")?;
        Ok(TestPki {
            ca_cert_pem: ca_cert.pem(),
            server_cert_pem: leaf_cert.pem(),
            server_key_pem: leaf_key.serialize_pem(),
        })
    }

    /// Write `ca.pem`, `server.pem` and `server.key.pem` (0600 on Unix) into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("ca.pem"), &self.ca_cert_pem)?;
        std::fs::write(dir.join("server.pem"), &self.server_cert_pem)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(dir.join("server.key.pem"))?;
        std::io::Write::write_all(&mut f, self.server_key_pem.as_bytes())?;
        Ok(())
    }
}

/// A TLS client configuration (TLS 1.3 and 1.2, ring) trusting the public
/// web roots plus every certificate of `extra_ca_pem`; `what` names the
/// server in errors ("provider", "PostgreSQL").
pub(crate) fn client_tls(
    extra_ca_pem: Option<&str>,
    what: &str,
) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let mut n = 0;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let c = c.map_err(|e| anyhow::anyhow!("reading the {what} CA PEM: {e}"))?;
            roots
                .add(c)
                .map_err(|e| anyhow::anyhow!("{what} CA certificate: {e}"))?;
            n += 1;
        }
        if n == 0 {
            anyhow::bail!("no certificate in the {what} CA file");
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}
