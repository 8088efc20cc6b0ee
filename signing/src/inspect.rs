//! Helpers for the host CLI that need no trust decision: reading a signed file
//! without verifying it, and comparing two manifests' capabilities.

use crate::keys::KeyId;
use crate::manifest::{EndpointPattern, Manifest, Permission, World};
use crate::verify::{VerifyError, parse_manifest, parse_signed};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt;

/// What a signed file *claims*, read without checking any signature.
///
/// Nothing here is trustworthy: use it to show an operator what a file says
/// (for example before they add its key to the trust store), never to decide
/// whether to run it. Only [`crate::verify()`] decides that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnverifiedInspection {
    /// The manifest the file carries (parsed and validated, not authenticated).
    pub manifest: Manifest,
    /// Key ids of the signatures, in file order (signatures not checked).
    pub key_ids: Vec<KeyId>,
    /// SHA-256 of the whole file.
    pub file_sha256: [u8; 32],
    /// The SHA-256 the signatures claim to cover.
    pub claimed_signed_sha256: Vec<[u8; 32]>,
}

/// Parse a signed file into its manifest and signatures' key ids WITHOUT
/// verifying anything cryptographic. The structural checks are the same as
/// [`crate::verify()`]'s (one `signature` section first, one manifest second,
/// canonical manifest), so a file that inspects cleanly differs from a
/// verifiable one only in its signatures, keys, name and version.
pub fn inspect_unverified(bytes: &[u8]) -> Result<UnverifiedInspection, VerifyError> {
    let parsed = parse_signed(bytes)?;
    let manifest = parse_manifest(parsed.manifest)?;
    let mut key_ids = Vec::new();
    let mut claimed = Vec::new();
    for set in &parsed.sets {
        claimed.extend(set.hashes.iter().copied());
        key_ids.extend(set.signatures.iter().map(|s| KeyId::from_bytes(s.key_id)));
    }
    Ok(UnverifiedInspection {
        manifest,
        key_ids,
        file_sha256: Sha256::digest(bytes).into(),
        claimed_signed_sha256: claimed,
    })
}

/// One capability a manifest can ask for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Read a logical directory.
    Directory(String),
    /// Reach an HTTPS endpoint pattern (normalised: lowercase host).
    Endpoint(String),
    /// Queue records on an uplink stream.
    UplinkStream(String),
    /// Raise notifications.
    Notify,
    /// Keep persistent state (any quota above zero).
    State,
    /// Offer a remote-support permission.
    Permission(Permission),
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::Directory(d) => write!(f, "directory {d}"),
            Capability::Endpoint(e) => write!(f, "endpoint {e}"),
            Capability::UplinkStream(s) => write!(f, "uplink stream {s}"),
            Capability::Notify => f.write_str("notify"),
            Capability::State => f.write_str("state"),
            Capability::Permission(p) => write!(f, "permission {p}"),
        }
    }
}

impl Capability {
    /// What the capability lets a module do, in words for the person at
    /// the PC who approves an upgrade.
    pub fn plain_words(&self) -> String {
        match self {
            Capability::Directory(d) => format!("may read the files in the folder `{d}`"),
            Capability::Endpoint(e) => format!("may connect to {e} over HTTPS"),
            Capability::UplinkStream(s) => {
                format!(
                    "may send `{s}` records to the vendor (instrument data, never patient data)"
                )
            }
            Capability::Notify => "may show notifications on this PC".into(),
            Capability::State => "may keep a small amount of its own data on this PC".into(),
            Capability::Permission(Permission::View) => {
                "may offer screen viewing during remote support".into()
            }
            Capability::Permission(Permission::Control) => {
                "may offer remote control of keyboard and mouse during remote support".into()
            }
            Capability::Permission(Permission::FileTransfer) => {
                "may transfer files during remote support".into()
            }
        }
    }
}

/// A numeric request that changed between two manifests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitChange {
    /// Manifest field (`capabilities.state-quota-bytes`, `limits.memory-mib`, …).
    pub field: &'static str,
    /// Old value.
    pub old: u64,
    /// New value.
    pub new: u64,
}

/// What an upgrade changes in what a module may do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapabilityDiff {
    /// Capabilities the new manifest asks for that the old did not (sorted).
    pub added: Vec<Capability>,
    /// Capabilities the old manifest had that the new one drops (sorted).
    pub removed: Vec<Capability>,
    /// Quotas and limits whose value changed.
    pub changed: Vec<LimitChange>,
    /// `(old, new)` if the world changed.
    pub world: Option<(World, World)>,
}

impl CapabilityDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.world.is_none()
    }

    /// Whether the new manifest asks for anything more: a new capability, a
    /// higher quota or limit, or a different world. An upgrade for which this
    /// is true needs the user's approval of the listed additions.
    pub fn asks_for_more(&self) -> bool {
        !self.added.is_empty() || self.world.is_some() || self.changed.iter().any(|c| c.new > c.old)
    }
}

impl CapabilityDiff {
    /// A canonical text of the diff, one line per item in a fixed order
    /// (`+ endpoint …`, `- directory …`, `~ limits.memory-mib 32 -> 64`,
    /// `world collector -> notifier`): what [`CapabilityDiff::digest`] hashes.
    pub fn canonical_text(&self) -> String {
        let mut out = String::new();
        for c in &self.added {
            out.push_str(&format!("+ {c}\n"));
        }
        for c in &self.removed {
            out.push_str(&format!("- {c}\n"));
        }
        for c in &self.changed {
            out.push_str(&format!("~ {} {} -> {}\n", c.field, c.old, c.new));
        }
        if let Some((old, new)) = self.world {
            out.push_str(&format!("world {old} -> {new}\n"));
        }
        out
    }

    /// SHA-256 (lowercase hex) of [`CapabilityDiff::canonical_text`], prefixed
    /// with a domain tag: the exact difference a person approves. Two diffs
    /// have the same digest only if they list the same changes.
    pub fn digest(&self) -> String {
        diff_text_digest(&self.canonical_text())
    }
}

/// The digest [`CapabilityDiff::digest`] gives for a diff whose
/// [`CapabilityDiff::canonical_text`] is `text`: lets a stored diff text be
/// checked against the digest a person approved.
pub fn diff_text_digest(text: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"outpost-capability-diff-v1\n");
    h.update(text.as_bytes());
    crate::hex::encode(&h.finalize())
}

/// SHA-256 (lowercase hex) of everything a manifest may do: its world,
/// capabilities (as [`Capability`] items, sorted) and numeric quotas and
/// limits, under a domain tag. Name and version are not part of it: two
/// versions with the same digest ask for exactly the same things. The
/// update repository publishes it with each module.
pub fn capability_digest(m: &Manifest) -> String {
    let mut h = Sha256::new();
    h.update(b"outpost-capabilities-v1\n");
    h.update(format!("world {}\n", m.world).as_bytes());
    for c in capabilities(m) {
        h.update(format!("{c}\n").as_bytes());
    }
    h.update(
        format!(
            "state-quota-bytes {}\nmemory-mib {}\ncpu-ms-per-call {}\nwall-ms-per-call {}\n",
            m.capabilities.state_quota_bytes,
            m.limits.memory_mib,
            m.limits.cpu_ms_per_call,
            m.limits.wall_ms_per_call
        )
        .as_bytes(),
    );
    crate::hex::encode(&h.finalize())
}

fn capabilities(m: &Manifest) -> BTreeSet<Capability> {
    let c = &m.capabilities;
    let mut set = BTreeSet::new();
    set.extend(c.directories.iter().cloned().map(Capability::Directory));
    set.extend(c.endpoints.iter().map(|e| {
        Capability::Endpoint(
            EndpointPattern::parse(e)
                .map(|p| p.to_string())
                .unwrap_or_else(|_| e.clone()),
        )
    }));
    set.extend(
        c.uplink_streams
            .iter()
            .cloned()
            .map(Capability::UplinkStream),
    );
    if c.notify {
        set.insert(Capability::Notify);
    }
    if c.state_quota_bytes > 0 {
        set.insert(Capability::State);
    }
    set.extend(c.permissions.iter().copied().map(Capability::Permission));
    set
}

/// List what `new` adds to and removes from `old`, plus changed quotas,
/// limits and world.
pub fn capability_diff(old: &Manifest, new: &Manifest) -> CapabilityDiff {
    let (a, b) = (capabilities(old), capabilities(new));
    let numbers = |m: &Manifest| {
        [
            (
                "capabilities.state-quota-bytes",
                m.capabilities.state_quota_bytes,
            ),
            ("limits.memory-mib", u64::from(m.limits.memory_mib)),
            (
                "limits.cpu-ms-per-call",
                u64::from(m.limits.cpu_ms_per_call),
            ),
            (
                "limits.wall-ms-per-call",
                u64::from(m.limits.wall_ms_per_call),
            ),
        ]
    };
    let changed = numbers(old)
        .into_iter()
        .zip(numbers(new))
        .filter(|((_, o), (_, n))| o != n)
        .map(|((field, old), (_, new))| LimitChange { field, old, new })
        .collect();
    CapabilityDiff {
        added: b.difference(&a).cloned().collect(),
        removed: a.difference(&b).cloned().collect(),
        changed,
        world: (old.world != new.world).then_some((old.world, new.world)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_name_the_capability_set_and_the_diff() {
        let a = manifest("directories = [\"logs\"]");
        let same = manifest("directories = [\"logs\"]");
        let wider = manifest("directories = [\"logs\"]\nendpoints = [\"api.v.example:443\"]");
        assert_eq!(capability_digest(&a), capability_digest(&same));
        assert_ne!(capability_digest(&a), capability_digest(&wider));
        assert_eq!(capability_digest(&a).len(), 64);
        let d = |x, y| capability_diff(x, y).digest();
        assert_ne!(d(&a, &wider), d(&wider, &a));
        assert_eq!(d(&a, &wider), d(&same, &wider));
        let added = capability_diff(&a, &wider).added;
        assert_eq!(
            added[0].plain_words(),
            "may connect to api.v.example:443 over HTTPS"
        );
        assert_eq!(
            Capability::Permission(Permission::FileTransfer).plain_words(),
            "may transfer files during remote support"
        );
    }

    fn manifest(extra: &str) -> Manifest {
        Manifest::from_toml(&format!(
            "name = \"collector\"\nversion = \"1.0.0\"\nworld = \"collector\"\n[capabilities]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn digests_follow_the_capabilities_not_the_version() {
        let a = manifest("endpoints = [\"api.vendor.example:443\"]\n");
        let mut b = a.clone();
        b.version = "2.0.0".into();
        assert_eq!(capability_digest(&a), capability_digest(&b));
        let c = manifest("endpoints = [\"api.vendor.example:443\", \"x.example:443\"]\n");
        assert_ne!(capability_digest(&a), capability_digest(&c));
        let d1 = capability_diff(&a, &c);
        let d2 = capability_diff(&a, &manifest("endpoints = [\"y.example:443\"]\n"));
        assert_ne!(d1.digest(), d2.digest());
        assert_eq!(d1.digest(), capability_diff(&a, &c).digest());
        assert_eq!(d1.canonical_text(), "+ endpoint x.example:443\n");
        assert_ne!(capability_diff(&a, &a).digest(), d1.digest());
    }

    #[test]
    fn lists_added_removed_and_changed() {
        let old = manifest(
            "directories = [\"instrument-logs\"]\nendpoints = [\"API.vendor.example:443\"]\n",
        );
        let new = manifest(
            "directories = [\"qc-results\"]\nendpoints = [\"api.vendor.example:443\", \"*.cdn.example:443\"]\nstate-quota-bytes = 10\n",
        );
        let d = capability_diff(&old, &new);
        let show = |v: &[Capability]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            show(&d.added),
            [
                "directory qc-results",
                "endpoint *.cdn.example:443",
                "state"
            ]
        );
        assert_eq!(show(&d.removed), ["directory instrument-logs"]);
        assert_eq!(
            d.changed,
            [LimitChange {
                field: "capabilities.state-quota-bytes",
                old: 0,
                new: 10
            }]
        );
        assert!(d.asks_for_more());
        assert!(capability_diff(&new, &new).is_empty());
        let narrower = capability_diff(&new, &manifest("directories = [\"qc-results\"]\n"));
        assert!(!narrower.asks_for_more(), "{narrower:?}");
        assert_eq!(narrower.removed.len(), 3);
    }
}
