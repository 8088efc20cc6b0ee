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

/// A remote-support permission a session-policy module may offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// See the screen.
    View,
    /// Use keyboard and mouse.
    Control,
    /// Move files to or from the PC.
    FileTransfer,
}

impl Permission {
    /// The permission's manifest name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::View => "view",
            Permission::Control => "control",
            Permission::FileTransfer => "file-transfer",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    /// An IP literal; the only way a grant may reach a private or loopback address.
    Ip(std::net::IpAddr),
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
        } else if let Some(suffix) = host.strip_prefix("*.") {
            check_dns_name(s, suffix)?;
            HostPattern::Wildcard(suffix.to_ascii_lowercase())
        } else {
            check_dns_name(s, host)?;
            HostPattern::Exact(host.to_ascii_lowercase())
        };
        Ok(EndpointPattern { host, port })
    }

    /// Whether a request to `host` (as written in the URL, lowercase, IPv6
    /// without brackets) on `port` matches this pattern.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        match &self.host {
            HostPattern::Exact(h) => host == h,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            HostPattern::Ip(ip) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|h| h == *ip),
        }
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

fn check_dns_name(whole: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
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
        assert!(EndpointPattern::parse("*:443").is_err());
        assert!(EndpointPattern::parse("a..b:443").is_err());
        assert!(EndpointPattern::parse("host:0").is_err());
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
