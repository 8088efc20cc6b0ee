//! Which addresses a module may reach only through a literal grant.
//!
//! Restricted: every block of the IANA IPv4 and IPv6 Special-Purpose Address
//! Registries (RFC 6890 and its updates), whether the registry marks it
//! globally reachable or not — no module has a reason to talk to an anycast
//! relay, a benchmarking net or a documentation prefix — plus IPv4 multicast
//! and the reserved 240.0.0.0/4, and every IPv6 address outside global
//! unicast 2000::/3 (multicast, unique-local, link-local, site-local, the
//! IPv4-compatible, -mapped and -translated forms, discard, SRv6, …).
//!
//! Decisions:
//! - IPv4-mapped (`::ffff:a.b.c.d`) and the other IPv4-embedding forms are
//!   restricted whole, whatever the embedded address: the registry calls
//!   them not globally reachable, and a public server is reached by its
//!   IPv4 address.
//! - 6to4 (2002::/16, deprecated by RFC 7526) and Teredo (2001::/32) are
//!   restricted whole: both tunnel to an embedded IPv4 address that may be
//!   private.
//! - The NAT64 well-known prefix 64:ff9b::/96 is restricted exactly when the
//!   IPv4 address it embeds is: on an IPv6-only network with DNS64 every
//!   IPv4-only server is reached through it, and RFC 6052 forbids it for
//!   non-global addresses. The local-use 64:ff9b:1::/48 (RFC 8215) maps
//!   whatever its operator chooses, so it is restricted whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A restricted block: its prefix as written in the registry, and its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// `192.0.0.0/24`.
    pub prefix: &'static str,
    /// What the registry calls it.
    pub name: &'static str,
}

struct V4Block {
    net: u32,
    len: u32,
    block: Block,
}

struct V6Block {
    net: u128,
    len: u32,
    block: Block,
}

const fn v4(
    a: u8,
    b: u8,
    c: u8,
    d: u8,
    len: u32,
    prefix: &'static str,
    name: &'static str,
) -> V4Block {
    V4Block {
        net: Ipv4Addr::new(a, b, c, d).to_bits(),
        len,
        block: Block { prefix, name },
    }
}

const fn v6(s: [u16; 8], len: u32, prefix: &'static str, name: &'static str) -> V6Block {
    V6Block {
        net: Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]).to_bits(),
        len,
        block: Block { prefix, name },
    }
}

/// IPv4: the special-purpose registry, multicast and the reserved block.
const V4_BLOCKS: &[V4Block] = &[
    v4(0, 0, 0, 0, 8, "0.0.0.0/8", "this network"),
    v4(10, 0, 0, 0, 8, "10.0.0.0/8", "private use"),
    v4(100, 64, 0, 0, 10, "100.64.0.0/10", "shared address space"),
    v4(127, 0, 0, 0, 8, "127.0.0.0/8", "loopback"),
    v4(169, 254, 0, 0, 16, "169.254.0.0/16", "link-local"),
    v4(172, 16, 0, 0, 12, "172.16.0.0/12", "private use"),
    v4(
        192,
        0,
        0,
        0,
        24,
        "192.0.0.0/24",
        "IETF protocol assignments",
    ),
    v4(
        192,
        0,
        2,
        0,
        24,
        "192.0.2.0/24",
        "documentation (TEST-NET-1)",
    ),
    v4(192, 31, 196, 0, 24, "192.31.196.0/24", "AS112-v4"),
    v4(192, 52, 193, 0, 24, "192.52.193.0/24", "AMT"),
    v4(
        192,
        88,
        99,
        0,
        24,
        "192.88.99.0/24",
        "deprecated 6to4 relay anycast",
    ),
    v4(192, 168, 0, 0, 16, "192.168.0.0/16", "private use"),
    v4(
        192,
        175,
        48,
        0,
        24,
        "192.175.48.0/24",
        "direct delegation AS112 service",
    ),
    v4(198, 18, 0, 0, 15, "198.18.0.0/15", "benchmarking"),
    v4(
        198,
        51,
        100,
        0,
        24,
        "198.51.100.0/24",
        "documentation (TEST-NET-2)",
    ),
    v4(
        203,
        0,
        113,
        0,
        24,
        "203.0.113.0/24",
        "documentation (TEST-NET-3)",
    ),
    v4(224, 0, 0, 0, 4, "224.0.0.0/4", "multicast"),
    v4(
        240,
        0,
        0,
        0,
        4,
        "240.0.0.0/4",
        "reserved and limited broadcast",
    ),
];

/// IPv6: the special-purpose registry and the parts of the address space
/// outside global unicast that have a name; the most specific first.
const V6_BLOCKS: &[V6Block] = &[
    v6([0; 8], 128, "::/128", "unspecified"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "::1/128", "loopback"),
    v6([0; 8], 96, "::/96", "IPv4-compatible (deprecated)"),
    v6(
        [0, 0, 0, 0, 0, 0xffff, 0, 0],
        96,
        "::ffff:0:0/96",
        "IPv4-mapped",
    ),
    v6(
        [0, 0, 0, 0, 0xffff, 0, 0, 0],
        96,
        "::ffff:0:0:0/96",
        "IPv4-translated",
    ),
    v6(
        [0x64, 0xff9b, 0, 0, 0, 0, 0, 0],
        96,
        "64:ff9b::/96",
        "NAT64 well-known prefix",
    ),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "64:ff9b:1::/48",
        "local-use IPv4/IPv6 translation",
    ),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "100::/64", "discard-only"),
    v6(
        [0x100, 0, 0, 1, 0, 0, 0, 0],
        64,
        "100:0:0:1::/64",
        "dummy IPv6 prefix",
    ),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "2001::/32", "Teredo"),
    v6(
        [0x2001, 2, 0, 0, 0, 0, 0, 0],
        48,
        "2001:2::/48",
        "benchmarking",
    ),
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "2001:10::/28",
        "ORCHID (deprecated)",
    ),
    v6(
        [0x2001, 0x20, 0, 0, 0, 0, 0, 0],
        28,
        "2001:20::/28",
        "ORCHIDv2",
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "2001::/23",
        "IETF protocol assignments",
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "2001:db8::/32",
        "documentation",
    ),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "2002::/16", "6to4"),
    v6(
        [0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0],
        48,
        "2620:4f:8000::/48",
        "direct delegation AS112 service",
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "3fff::/20",
        "documentation",
    ),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "5f00::/16", "SRv6 SIDs"),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "fc00::/7", "unique-local"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "fe80::/10", "link-local"),
    v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "fec0::/10",
        "site-local (deprecated)",
    ),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "ff00::/8", "multicast"),
];

/// 64:ff9b::/96, the NAT64 well-known prefix (RFC 6052).
const NAT64_WELL_KNOWN: u128 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0).to_bits();

/// Every IPv6 address outside 2000::/3 that no named block covers.
const NOT_GLOBAL_UNICAST: Block = Block {
    prefix: "outside 2000::/3",
    name: "not global unicast",
};

/// 2000::/3, global unicast.
const GLOBAL_UNICAST: u128 = Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0).to_bits();

fn in_v4(ip: u32, net: u32, len: u32) -> bool {
    len == 0 || (ip ^ net) >> (32 - len) == 0
}

fn in_v6(ip: u128, net: u128, len: u32) -> bool {
    len == 0 || (ip ^ net) >> (128 - len) == 0
}

/// The restricted block `ip` lies in, if any (see the module doc).
pub fn restricted_block(ip: IpAddr) -> Option<Block> {
    match ip {
        IpAddr::V4(v4) => {
            let bits = v4.to_bits();
            V4_BLOCKS
                .iter()
                .find(|b| in_v4(bits, b.net, b.len))
                .map(|b| b.block)
        }
        IpAddr::V6(v6) => {
            let bits = v6.to_bits();
            let found = V6_BLOCKS.iter().find(|b| in_v6(bits, b.net, b.len));
            match found {
                Some(b) if b.net == NAT64_WELL_KNOWN && b.len == 96 => {
                    let embedded = Ipv4Addr::from_bits(bits as u32);
                    restricted_block(IpAddr::V4(embedded)).map(|_| b.block)
                }
                Some(b) => Some(b.block),
                None if !in_v6(bits, GLOBAL_UNICAST, 3) => Some(NOT_GLOBAL_UNICAST),
                None => None,
            }
        }
    }
}

/// Whether `ip` is an address a module may only reach when granted as that
/// literal (see the module doc for what is restricted and why).
pub fn is_restricted(ip: IpAddr) -> bool {
    restricted_block(ip).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prefix written out here, independently of the tables above.
    fn range(cidr: &str) -> (IpAddr, IpAddr, Option<IpAddr>, Option<IpAddr>) {
        let (addr, len) = cidr.split_once('/').unwrap();
        let len: u32 = len.parse().unwrap();
        match addr.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => {
                let host = if len == 32 { 0 } else { u32::MAX >> len };
                let first = a.to_bits() & !host;
                let last = first | host;
                (
                    Ipv4Addr::from_bits(first).into(),
                    Ipv4Addr::from_bits(last).into(),
                    first.checked_sub(1).map(|b| Ipv4Addr::from_bits(b).into()),
                    last.checked_add(1).map(|b| Ipv4Addr::from_bits(b).into()),
                )
            }
            IpAddr::V6(a) => {
                let host = if len == 128 { 0 } else { u128::MAX >> len };
                let first = a.to_bits() & !host;
                let last = first | host;
                (
                    Ipv6Addr::from_bits(first).into(),
                    Ipv6Addr::from_bits(last).into(),
                    first.checked_sub(1).map(|b| Ipv6Addr::from_bits(b).into()),
                    last.checked_add(1).map(|b| Ipv6Addr::from_bits(b).into()),
                )
            }
        }
    }

    /// Each block of the registries: its first and last address are
    /// restricted; whether the address just below and just above is
    /// restricted too (it is when a neighbouring block starts there).
    #[test]
    fn every_registry_block_is_restricted_up_to_its_edges() {
        // (prefix, below restricted, above restricted)
        let table: &[(&str, bool, bool)] = &[
            // IPv4 special-purpose registry, multicast, reserved.
            ("0.0.0.0/8", false, false),
            ("0.0.0.0/32", false, true),
            ("10.0.0.0/8", false, false),
            ("100.64.0.0/10", false, false),
            ("127.0.0.0/8", false, false),
            ("169.254.0.0/16", false, false),
            ("172.16.0.0/12", false, false),
            ("192.0.0.0/24", false, false),
            ("192.0.0.0/29", false, true),
            ("192.0.0.8/32", true, true),
            ("192.0.0.9/32", true, true),
            ("192.0.0.10/32", true, true),
            ("192.0.0.170/31", true, true),
            ("192.0.2.0/24", false, false),
            ("192.31.196.0/24", false, false),
            ("192.52.193.0/24", false, false),
            ("192.88.99.0/24", false, false),
            ("192.168.0.0/16", false, false),
            ("192.175.48.0/24", false, false),
            ("198.18.0.0/15", false, false),
            ("198.51.100.0/24", false, false),
            ("203.0.113.0/24", false, false),
            ("224.0.0.0/4", false, true),
            ("240.0.0.0/4", true, false),
            ("255.255.255.255/32", true, false),
            // IPv6 special-purpose registry.
            ("::1/128", true, true),
            ("64:ff9b::/96", true, true),
            ("::/128", false, true),
            ("::ffff:0:0/96", true, true),
            ("64:ff9b:1::/48", true, true),
            ("100::/64", true, true),
            ("100:0:0:1::/64", true, true),
            ("2001::/23", false, false),
            ("2001::/32", false, true),
            ("2001:1::1/128", true, true),
            ("2001:1::2/128", true, true),
            ("2001:1::3/128", true, true),
            ("2001:2::/48", true, true),
            ("2001:3::/32", true, true),
            ("2001:4:112::/48", true, true),
            ("2001:10::/28", true, true),
            ("2001:20::/28", true, true),
            ("2001:30::/28", true, true),
            ("2001:db8::/32", false, false),
            ("2002::/16", false, false),
            ("2620:4f:8000::/48", false, false),
            ("3fff::/20", false, false),
            ("5f00::/16", true, true),
            ("fc00::/7", true, true),
            ("fe80::/10", true, true),
            // Outside the registry: the rest of the IPv6 address space that
            // is not global unicast.
            ("::/96", false, true),
            ("::ffff:0:0:0/96", true, true),
            ("fec0::/10", true, true),
            ("ff00::/8", true, false),
            ("4000::/2", false, true),
            ("0::/3", false, false),
        ];
        for (cidr, below, above) in table {
            let (first, last, before, after) = range(cidr);
            assert!(is_restricted(first), "{cidr}: first address {first}");
            assert!(is_restricted(last), "{cidr}: last address {last}");
            if let Some(b) = before {
                assert_eq!(is_restricted(b), *below, "{cidr}: just below, {b}");
            }
            if let Some(a) = after {
                assert_eq!(is_restricted(a), *above, "{cidr}: just above, {a}");
            }
        }
    }

    #[test]
    fn public_addresses_are_not_restricted() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "191.255.255.255",
            "192.0.1.0",
            "223.255.255.255",
            "2000::",
            "2001:200::",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "3fff:1000::",
            "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(restricted_block(ip), None, "{ip}");
        }
    }

    /// NAT64 (well-known prefix) follows the IPv4 address it embeds; every
    /// other IPv4-embedding form is restricted whole.
    #[test]
    fn ipv4_embedding_forms() {
        let r = |s: &str| is_restricted(s.parse().unwrap());
        assert!(!r("64:ff9b::8.8.8.8"), "NAT64 of a public address");
        assert!(r("64:ff9b::10.0.0.1"), "NAT64 of a private address");
        assert!(r("64:ff9b::127.0.0.1"));
        assert!(r("64:ff9b::192.0.0.8"));
        assert!(r("64:ff9b:1::8.8.8.8"), "local-use NAT64");
        assert!(r("::ffff:8.8.8.8"), "IPv4-mapped");
        assert!(r("::ffff:127.0.0.1"));
        assert!(r("::8.8.8.8"), "IPv4-compatible");
        assert!(r("::ffff:0:8.8.8.8"), "IPv4-translated");
        assert!(r("2002:808:808::1"), "6to4 of a public address");
        assert!(r("2001:0:4136:e378:8000:63bf:3fff:fdd2"), "Teredo");
    }

    #[test]
    fn the_block_is_named() {
        let b = restricted_block("192.0.0.8".parse().unwrap()).unwrap();
        assert_eq!(b.prefix, "192.0.0.0/24");
        let b = restricted_block("2001:20::1".parse().unwrap()).unwrap();
        assert_eq!(b.name, "ORCHIDv2");
        let b = restricted_block("4000::1".parse().unwrap()).unwrap();
        assert_eq!(b, NOT_GLOBAL_UNICAST);
    }
}
