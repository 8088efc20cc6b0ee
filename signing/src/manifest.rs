//! The capability manifest a module ships with.
//!
//! A manifest declares everything a module may ever ask of the host. The host
//! intersects it with the operator's policy to get the module's grant; nothing
//! that is not declared here can be granted.
//!
//! Encoding: TOML (or JSON) with kebab-case keys. Unknown keys anywhere are
//! refused, so a manifest can never carry a capability the host does not
//! understand.
//!
//! ```toml
//! name = "collector"
//! version = "0.1.0"
//! world = "collector"            # collector | notifier | session-policy
//! [capabilities]
//! directories = ["instrument-logs"]   # logical names, never paths
//! endpoints = ["*.vendor.example:443"] # host pattern and port
//! uplink-streams = ["heartbeat"]
//! notify = false
//! state-quota-bytes = 1048576
//! permissions = []                     # session-policy: view, control, file-transfer
//! [limits]
//! memory-mib = 64
//! cpu-ms-per-call = 2000
//! wall-ms-per-call = 10000
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest module name accepted (bytes).
pub const MAX_NAME_BYTES: usize = 64;
/// Most entries accepted in any one capability list.
pub const MAX_LIST_ENTRIES: usize = 64;

/// The world a module implements; decides what it exports and may import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// `outpost:agent/collector`: reads instrument data, queues device records.
    Collector,
    /// `outpost:agent/notifier`: turns host events into notifications.
    Notifier,
    /// `outpost:agent/session-policy`: decides remote-support requests.
    SessionPolicy,
}

impl World {
    /// The world's name as written in WIT and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Collector => "collector",
            World::Notifier => "notifier",
            World::SessionPolicy => "session-policy",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A remote-support permission: what a session-policy module may offer (in
/// its manifest), what an engineer asks for and what the person at the PC
/// approves one by one. The one definition of the workspace (re-exported by
/// [`crate::support`], `outpost-support-proto` and the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// See the screen (the screen backend runs view-only).
    View,
    /// See the screen and use keyboard and mouse.
    Control,
    /// Move files into, or fetch them from, the one granted folder.
    FileTransfer,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 3] = [
        Permission::View,
        Permission::Control,
        Permission::FileTransfer,
    ];

    /// The permission's manifest, wire and display name (`view`, `control`,
    /// `file-transfer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::View => "view",
            Permission::Control => "control",
            Permission::FileTransfer => "file-transfer",
        }
    }

    /// Parse a name.
    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::parse(s).ok_or_else(|| {
            format!("unknown permission {s:?} (expected view, control or file-transfer)")
        })
    }
}

/// What a module may ask of the host. Every field defaults to "nothing".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Capabilities {
    /// Logical read-only directories (the operator maps names to paths).
    pub directories: Vec<String>,
    /// HTTPS endpoints as `host-pattern:port` (`*.example.com:443`, `10.0.0.5:8443`).
    pub endpoints: Vec<String>,
    /// Uplink streams the module may queue records on.
    pub uplink_streams: Vec<String>,
    /// Whether the module may raise notifications.
    pub notify: bool,
    /// Bytes of persistent state (keys + values); 0 means no state interface.
    pub state_quota_bytes: u64,
    /// Remote-support permissions a session policy may ever offer.
    pub permissions: Vec<Permission>,
}

/// Resource limits the module asks for; the operator's policy caps them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap per call, MiB.
    pub memory_mib: u32,
    /// CPU time per call, milliseconds (enforced by epoch deadline).
    pub cpu_ms_per_call: u32,
    /// Wall-clock time per call, milliseconds.
    pub wall_ms_per_call: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 32,
            cpu_ms_per_call: 1000,
            wall_ms_per_call: 5000,
        }
    }
}

/// A module's manifest: identity, world, capabilities and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    /// Module name (`[a-z0-9-]`, 1..=64 bytes); the operator installs it under this name.
    pub name: String,
    /// Semantic version `MAJOR.MINOR.PATCH`.
    pub version: String,
    /// The world the module implements.
    pub world: World,
    /// Requested capabilities.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Requested limits.
    #[serde(default)]
    pub limits: Limits,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not a valid manifest (syntax, types or unknown fields).
    #[error("manifest is not valid: {0}")]
    Parse(String),
    /// A field is well-formed but not acceptable.
    #[error("manifest field `{field}` is not valid: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Manifest {
    /// Parse a TOML manifest and check it (see [`Manifest::validate`]).
    pub fn from_toml(text: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Parse a JSON manifest and check it.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Canonical JSON encoding (fields in declaration order, no whitespace).
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifest serialises")
    }

    /// The semantic version as `(major, minor, patch)`.
    pub fn semver(&self) -> (u64, u64, u64) {
        parse_semver(&self.version).expect("validated manifest has a semver")
    }

    /// Check every field's shape. Called by the parsers.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !valid_name(&self.name) {
            return Err(invalid(
                "name",
                format!(
                    "{:?} must be 1..={MAX_NAME_BYTES} bytes of a-z, 0-9 and '-'",
                    self.name
                ),
            ));
        }
        if parse_semver(&self.version).is_none() {
            return Err(invalid(
                "version",
                format!("{:?} is not MAJOR.MINOR.PATCH", self.version),
            ));
        }
        let c = &self.capabilities;
        for (field, list) in [
            ("capabilities.directories", &c.directories),
            ("capabilities.uplink-streams", &c.uplink_streams),
        ] {
            check_list_len(field, list.len())?;
            for entry in list {
                if !valid_name(entry) {
                    return Err(invalid(
                        field,
                        format!("{entry:?} must be a logical name of a-z, 0-9 and '-'"),
                    ));
                }
            }
        }
        check_list_len("capabilities.endpoints", c.endpoints.len())?;
        for e in &c.endpoints {
            EndpointPattern::parse(e)
                .map_err(|reason| invalid("capabilities.endpoints", reason))?;
        }
        check_list_len("capabilities.permissions", c.permissions.len())?;
        if !c.permissions.is_empty() && self.world != World::SessionPolicy {
            return Err(invalid(
                "capabilities.permissions",
                format!(
                    "only a session-policy module may declare permissions, not a {}",
                    self.world
                ),
            ));
        }
        if !c.uplink_streams.is_empty() && self.world != World::Collector {
            return Err(invalid(
                "capabilities.uplink-streams",
                format!("the {} world has no uplink", self.world),
            ));
        }
        if c.notify && self.world != World::Notifier {
            return Err(invalid(
                "capabilities.notify",
                format!("the {} world has no notify interface", self.world),
            ));
        }
        if !c.endpoints.is_empty() && self.world == World::Notifier {
            return Err(invalid(
                "capabilities.endpoints",
                "the notifier world has no network".to_string(),
            ));
        }
        let l = &self.limits;
        for (field, v) in [
            ("limits.memory-mib", l.memory_mib),
            ("limits.cpu-ms-per-call", l.cpu_ms_per_call),
            ("limits.wall-ms-per-call", l.wall_ms_per_call),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be above zero".to_string()));
            }
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: String) -> ManifestError {
    ManifestError::Invalid { field, reason }
}

fn check_list_len(field: &'static str, len: usize) -> Result<(), ManifestError> {
    if len > MAX_LIST_ENTRIES {
        return Err(invalid(
            field,
            format!("{len} entries, at most {MAX_LIST_ENTRIES} allowed"),
        ));
    }
    Ok(())
}

/// Whether `s` is a valid module or logical name: 1..=64 bytes of `[a-z0-9-]`,
/// not starting or ending with `-`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn parse_semver(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split('.');
    let mut num = || -> Option<u64> {
        let p = it.next()?;
        if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if p.len() > 1 && p.starts_with('0') {
            return None;
        }
        p.parse().ok()
    };
    let v = (num()?, num()?, num()?);
    if it.next().is_some() {
        return None;
    }
    Some(v)
}

/// A parsed endpoint pattern: `host:port`, where host is a DNS name, a
/// `*.`-prefixed wildcard (one or more labels, never the bare suffix), or an
/// IP literal (`10.0.0.5`, `[::1]`).
///
/// An IP literal is written in its one standard form: dotted-quad IPv4
/// (`127.0.0.1`, never `127.1`, `0x7f.0.0.1`, `0177.0.0.1` or `2130706433`)
/// or bracketed IPv6. A name whose last label is a number (or `0x…`) is such
/// a legacy IPv4 spelling and is refused; a trailing dot is refused (the
/// label before it would be empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPattern {
    /// Lowercased host part (without brackets for IPv6).
    pub host: HostPattern,
    /// TCP port.
    pub port: u16,
}

/// The host part of an [`EndpointPattern`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// An exact DNS name.
    Exact(String),
    /// `*.suffix`: any name with at least one more label before `suffix`.
    Wildcard(String),
    /// An IP literal; the only way a grant may reach a private or loopback
    /// address. It matches only a request whose host is the same IP literal
    /// (compared as addresses), never a name.
    Ip(std::net::IpAddr),
}

/// The host of an outgoing request, read strictly before any lookup.
///
/// One spelling per destination, so that a grant cannot be matched by a
/// second spelling that means something else to the resolver:
/// - an IP literal only in its standard form (dotted-quad IPv4, bracketed or
///   bare IPv6); such a host is connected to as that address and never goes
///   to DNS;
/// - anything whose last label is a number (`127.1`, `0x7f.0.0.1`,
///   `2130706433`, `1.2.3.4.5`) is a legacy IPv4 spelling that resolvers read
///   as an address: refused;
/// - a trailing dot (`api.vendor.example.`, `127.0.0.1.`) is refused, not
///   normalised: it makes a name absolute (no search list), a different
///   question to the resolver than the name the grant was written for;
/// - otherwise a DNS name, lowercased, each label 1..=63 bytes of letters,
///   digits and `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestHost {
    /// A DNS name (lowercase, no trailing dot); resolved, then checked again.
    Name(String),
    /// An IP literal; connected to as is.
    Ip(std::net::IpAddr),
}

/// Why a request's host was refused (before any lookup or connection).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No host at all.
    #[error("no host")]
    Empty,
    /// `name.` or `1.2.3.4.`.
    #[error("host ends with a dot (write it without the dot)")]
    TrailingDot,
    /// `127.1`, `0x7f.0.0.1`, `0177.0.0.1`, `2130706433`, `1.2.3.4.5`.
    #[error("host is an IPv4 address in a non-standard spelling (only a.b.c.d is accepted)")]
    NonStandardIpv4,
    /// `[…]` that is not an IPv6 address (zone ids included).
    #[error("host is not a valid IPv6 literal")]
    BadIpv6,
    /// Not a DNS name.
    #[error("host is not a valid DNS name")]
    BadName,
}

impl RequestHost {
    /// Read `host` as it appears in a URL's authority (IPv6 in brackets; a
    /// bare IPv6 address is accepted too).
    pub fn parse(host: &str) -> Result<RequestHost, HostError> {
        if host.is_empty() {
            return Err(HostError::Empty);
        }
        if let Some(inner) = host.strip_prefix('[') {
            return inner
                .strip_suffix(']')
                .and_then(|i| i.parse::<std::net::Ipv6Addr>().ok())
                .map(|ip| RequestHost::Ip(ip.into()))
                .ok_or(HostError::BadIpv6);
        }
        if host.contains(':') {
            return host
                .parse::<std::net::Ipv6Addr>()
                .map(|ip| RequestHost::Ip(ip.into()))
                .map_err(|_| HostError::BadIpv6);
        }
        if host.ends_with('.') {
            return Err(HostError::TrailingDot);
        }
        let lower = host.to_ascii_lowercase();
        if ends_in_number(&lower) {
            return lower
                .parse::<std::net::Ipv4Addr>()
                .map(|ip| RequestHost::Ip(ip.into()))
                .map_err(|_| HostError::NonStandardIpv4);
        }
        if valid_dns_name(&lower) {
            Ok(RequestHost::Name(lower))
        } else {
            Err(HostError::BadName)
        }
    }
}

impl fmt::Display for RequestHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestHost::Name(n) => f.write_str(n),
            RequestHost::Ip(std::net::IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            RequestHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Whether the last label of `name` is a number as URL parsers and
/// `inet_aton` read one (decimal, octal with a leading 0, or `0x` hex): such
/// a host is an IPv4 address to them, whatever else it looks like.
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.is_empty() {
        return false;
    }
    if let Some(hex) = last.strip_prefix("0x") {
        return hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    last.bytes().all(|b| b.is_ascii_digit())
}

impl EndpointPattern {
    /// Parse `host:port`. The port is required.
    pub fn parse(s: &str) -> Result<EndpointPattern, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("endpoint {s:?} must be host:port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("endpoint {s:?} has no valid port"))?;
        let host = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let ip: std::net::Ipv6Addr = inner
                .parse()
                .map_err(|_| format!("endpoint {s:?} has an invalid IPv6 literal"))?;
            HostPattern::Ip(ip.into())
        } else if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            HostPattern::Ip(ip.into())
        } else if ends_in_number(&host.to_ascii_lowercase()) {
            return Err(format!(
                "endpoint {s:?} spells an IPv4 address in a non-standard form; write it as a.b.c.d (a wildcard never covers addresses)"
            ));
        } else if let Some(suffix) = host.strip_prefix("*.") {
            check_dns_name(s, suffix)?;
            HostPattern::Wildcard(suffix.to_ascii_lowercase())
        } else {
            check_dns_name(s, host)?;
            HostPattern::Exact(host.to_ascii_lowercase())
        };
        Ok(EndpointPattern { host, port })
    }

    /// Whether a request to `host` on `port` matches this pattern: a name
    /// pattern matches names only, an IP pattern only the same IP literal.
    pub fn matches_host(&self, host: &RequestHost, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Exact(h), RequestHost::Name(n)) => n == h,
            (HostPattern::Wildcard(suffix), RequestHost::Name(n)) => n
                .strip_suffix(suffix.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            (HostPattern::Ip(ip), RequestHost::Ip(h)) => h == ip,
            _ => false,
        }
    }

    /// Whether a request to `host` (as written in a URL's authority) on
    /// `port` matches this pattern; a host [`RequestHost::parse`] refuses
    /// matches nothing.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        RequestHost::parse(host).is_ok_and(|h| self.matches_host(&h, port))
    }

    /// Whether this pattern is covered by `other` (every request this pattern
    /// allows, `other` allows too).
    pub fn is_within(&self, other: &EndpointPattern) -> bool {
        if self.port != other.port {
            return false;
        }
        match (&self.host, &other.host) {
            (HostPattern::Exact(a), _) => other.matches(a, self.port),
            (HostPattern::Ip(a), HostPattern::Ip(b)) => a == b,
            (HostPattern::Wildcard(a), HostPattern::Wildcard(b)) => {
                a == b || a.strip_suffix(b.as_str()).is_some_and(|p| p.ends_with('.'))
            }
            _ => false,
        }
    }
}

impl fmt::Display for EndpointPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Exact(h) => write!(f, "{h}:{}", self.port),
            HostPattern::Wildcard(h) => write!(f, "*.{h}:{}", self.port),
            HostPattern::Ip(std::net::IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            HostPattern::Ip(ip) => write!(f, "{ip}:{}", self.port),
        }
    }
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_dns_name(whole: &str, name: &str) -> Result<(), String> {
    if valid_dns_name(name) {
        Ok(())
    } else {
        Err(format!("endpoint {whole:?} has an invalid host name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "collector"
version = "0.1.0"
world = "collector"
[capabilities]
directories = ["instrument-logs"]
endpoints = ["*.vendor.example:443"]
uplink-streams = ["heartbeat"]
state-quota-bytes = 1024
[limits]
memory-mib = 64
cpu-ms-per-call = 2000
wall-ms-per-call = 10000
"#;

    #[test]
    fn parses_and_round_trips_through_canonical_json() {
        let m = Manifest::from_toml(GOOD).unwrap();
        assert_eq!(m.world, World::Collector);
        assert_eq!(m.capabilities.directories, ["instrument-logs"]);
        assert_eq!(m.limits.memory_mib, 64);
        let again = Manifest::from_json(&m.to_canonical_json()).unwrap();
        assert_eq!(m, again);
        assert_eq!(m.to_canonical_json(), again.to_canonical_json());
    }

    #[test]
    fn refuses_unknown_fields_everywhere() {
        for (extra, place) in [
            ("shell = true\n", "top"),
            ("[capabilities]\nsockets = true\n", "capabilities"),
        ] {
            let text = if place == "top" {
                format!("{extra}{GOOD}")
            } else {
                GOOD.replace("[capabilities]\n", extra)
            };
            let err = Manifest::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains("unknown field"), "{place}: {err}");
        }
    }

    #[test]
    fn refuses_bad_shapes_naming_the_field() {
        let cases = [
            (
                GOOD.replace("\"collector\"\nversion", "\"Coll ector\"\nversion"),
                "name",
            ),
            (GOOD.replace("0.1.0", "0.1"), "version"),
            (
                GOOD.replace("instrument-logs", "/etc"),
                "capabilities.directories",
            ),
            (
                GOOD.replace("*.vendor.example:443", "vendor.example"),
                "capabilities.endpoints",
            ),
            (
                GOOD.replace("memory-mib = 64", "memory-mib = 0"),
                "limits.memory-mib",
            ),
            (
                GOOD.replace("state-quota-bytes = 1024", "notify = true"),
                "capabilities.notify",
            ),
        ];
        for (text, field) in cases {
            let err = Manifest::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(field), "expected {field} in {err}");
        }
    }

    #[test]
    fn endpoint_patterns_match_as_documented() {
        let check = |pat: &str, host: &str, port: u16| {
            EndpointPattern::parse(pat).unwrap().matches(host, port)
        };
        assert!(check("api.vendor.example:443", "API.vendor.example", 443));
        assert!(!check("api.vendor.example:443", "api.vendor.example", 8443));
        assert!(check("*.vendor.example:443", "eu.vendor.example", 443));
        assert!(check("*.vendor.example:443", "a.b.vendor.example", 443));
        assert!(!check("*.vendor.example:443", "vendor.example", 443));
        assert!(!check("*.vendor.example:443", "evilvendor.example", 443));
        assert!(check("127.0.0.1:8443", "127.0.0.1", 8443));
        assert!(!check("127.0.0.1:8443", "localhost", 8443));
        assert!(check("[::1]:8443", "::1", 8443));
        assert!(check("[::1]:8443", "[::1]", 8443));
        assert!(EndpointPattern::parse("*:443").is_err());
        assert!(EndpointPattern::parse("a..b:443").is_err());
        assert!(EndpointPattern::parse("host:0").is_err());
    }

    /// A literal grant matches the same literal and nothing else: no other
    /// spelling of the address, no name, no trailing dot (issue #20).
    #[test]
    fn ip_patterns_match_only_the_identical_literal() {
        let v4 = EndpointPattern::parse("127.0.0.1:8443").unwrap();
        let v6 = EndpointPattern::parse("[::1]:8443").unwrap();
        let name = EndpointPattern::parse("api.vendor.example:8443").unwrap();
        let wild = EndpointPattern::parse("*.vendor.example:8443").unwrap();
        assert!(v4.matches("127.0.0.1", 8443));
        for other in [
            "127.0.0.1.",
            "127.1",
            "127.0.1",
            "0x7f.0.0.1",
            "0X7F.0.0.1",
            "0x7f000001",
            "0177.0.0.1",
            "2130706433",
            "127.0.0.01",
            "[::ffff:127.0.0.1]",
            "::ffff:127.0.0.1",
            "[::ffff:7f00:1]",
            "localhost",
            "127.0.0.1.nip.io",
            " 127.0.0.1",
        ] {
            assert!(!v4.matches(other, 8443), "{other}");
        }
        assert!(v6.matches("[0:0::1]", 8443), "compared as addresses");
        for other in [
            "::1.",
            "[::1].",
            "[::1%25lo]",
            "[::1",
            "127.0.0.1",
            "localhost",
        ] {
            assert!(!v6.matches(other, 8443), "{other}");
        }
        assert!(name.matches("API.Vendor.Example", 8443));
        assert!(wild.matches("eu.vendor.example", 8443));
        for p in [&name, &wild] {
            assert!(!p.matches("api.vendor.example.", 8443), "{p}: trailing dot");
            assert!(!p.matches("eu.vendor.example.", 8443), "{p}: trailing dot");
        }
    }

    #[test]
    fn request_hosts_are_read_strictly() {
        use std::net::IpAddr;
        let ip = |s: &str| RequestHost::Ip(s.parse::<IpAddr>().unwrap());
        let cases: [(&str, Result<RequestHost, HostError>); 16] = [
            ("127.0.0.1", Ok(ip("127.0.0.1"))),
            ("[::1]", Ok(ip("::1"))),
            ("::1", Ok(ip("::1"))),
            ("[::ffff:127.0.0.1]", Ok(ip("::ffff:127.0.0.1"))),
            (
                "Api.Vendor.Example",
                Ok(RequestHost::Name("api.vendor.example".into())),
            ),
            ("x-1.example", Ok(RequestHost::Name("x-1.example".into()))),
            ("", Err(HostError::Empty)),
            ("127.0.0.1.", Err(HostError::TrailingDot)),
            ("api.vendor.example.", Err(HostError::TrailingDot)),
            ("127.1", Err(HostError::NonStandardIpv4)),
            ("0x7f.0.0.1", Err(HostError::NonStandardIpv4)),
            ("2130706433", Err(HostError::NonStandardIpv4)),
            ("1.2.3.4.5", Err(HostError::NonStandardIpv4)),
            ("host.0x", Err(HostError::NonStandardIpv4)),
            ("[fe80::1%25eth0]", Err(HostError::BadIpv6)),
            ("under_score.example", Err(HostError::BadName)),
        ];
        for (host, want) in cases {
            assert_eq!(RequestHost::parse(host), want, "{host:?}");
        }
    }

    #[test]
    fn patterns_that_spell_addresses_another_way_are_refused() {
        for bad in [
            "127.1:443",
            "0x7f.0.0.1:443",
            "2130706433:443",
            "0177.0.0.1:443",
            "*.0.0.1:443",
            "vendor.example.:443",
            "127.0.0.1.:443",
            "[fe80::1%eth0]:443",
        ] {
            assert!(EndpointPattern::parse(bad).is_err(), "{bad}");
        }
        let err = EndpointPattern::parse("127.1:443").unwrap_err();
        assert!(err.contains("a.b.c.d"), "{err}");
    }

    #[test]
    fn endpoint_containment() {
        let p = |s: &str| EndpointPattern::parse(s).unwrap();
        assert!(p("eu.vendor.example:443").is_within(&p("*.vendor.example:443")));
        assert!(p("*.eu.vendor.example:443").is_within(&p("*.vendor.example:443")));
        assert!(!p("*.vendor.example:443").is_within(&p("*.eu.vendor.example:443")));
        assert!(!p("eu.vendor.example:443").is_within(&p("*.vendor.example:8443")));
        assert!(p("10.0.0.5:443").is_within(&p("10.0.0.5:443")));
        assert!(!p("10.0.0.5:443").is_within(&p("*.vendor.example:443")));
    }
}
