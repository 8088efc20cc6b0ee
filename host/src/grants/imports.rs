//! Which component imports a module may have, given its world and its grant.
//!
//! The table below mirrors the worlds in `wit/worlds.wit` (a test parses the WIT
//! and checks they agree). An import outside it, or inside it but not covered
//! by the grant, refuses the module at load time, naming the import.

use super::Grant;
use outpost_signing::manifest::World;

/// The WASI 0.2 baseline (`world sandbox`) every module may import. Each is
/// linked behind a deny-by-default context (see `runtime::sandbox`).
pub(crate) const SANDBOX: &[(&str, &str)] = &[
    ("wasi:cli", "environment"),
    ("wasi:cli", "exit"),
    ("wasi:cli", "stdin"),
    ("wasi:cli", "stdout"),
    ("wasi:cli", "stderr"),
    ("wasi:cli", "terminal-input"),
    ("wasi:cli", "terminal-output"),
    ("wasi:cli", "terminal-stdin"),
    ("wasi:cli", "terminal-stdout"),
    ("wasi:cli", "terminal-stderr"),
    ("wasi:clocks", "monotonic-clock"),
    ("wasi:clocks", "wall-clock"),
    ("wasi:random", "random"),
    ("wasi:random", "insecure"),
    ("wasi:random", "insecure-seed"),
    ("wasi:filesystem", "types"),
    ("wasi:filesystem", "preopens"),
    ("wasi:sockets", "network"),
    ("wasi:sockets", "instance-network"),
    ("wasi:sockets", "tcp-create-socket"),
    ("wasi:sockets", "tcp"),
    ("wasi:sockets", "udp-create-socket"),
    ("wasi:sockets", "udp"),
    ("wasi:sockets", "ip-name-lookup"),
    // Pulled in by the interfaces above through `use`.
    ("wasi:io", "error"),
    ("wasi:io", "poll"),
    ("wasi:io", "streams"),
];

/// What must hold in the grant for an interface to be linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    Nothing,
    Endpoints,
    StateQuota,
    UplinkStreams,
    NotifyRight,
}

/// Interfaces beyond the sandbox, per world, with the grant each needs.
fn world_imports(world: World) -> &'static [(&'static str, &'static str, Needs)] {
    use Needs::*;
    match world {
        World::Collector => &[
            ("outpost:agent", "types", Nothing),
            ("outpost:agent", "host-info", Nothing),
            ("outpost:agent", "log", Nothing),
            ("outpost:agent", "state", StateQuota),
            ("outpost:agent", "uplink", UplinkStreams),
            ("wasi:http", "types", Endpoints),
            ("wasi:http", "outgoing-handler", Endpoints),
        ],
        World::Notifier => &[
            ("outpost:agent", "types", Nothing),
            ("outpost:agent", "host-events", Nothing),
            ("outpost:agent", "host-info", Nothing),
            ("outpost:agent", "log", Nothing),
            ("outpost:agent", "state", StateQuota),
            ("outpost:agent", "notify", NotifyRight),
        ],
        World::SessionPolicy => &[
            ("outpost:agent", "types", Nothing),
            ("outpost:agent", "host-info", Nothing),
            ("outpost:agent", "log", Nothing),
            ("outpost:agent", "state", StateQuota),
            ("wasi:http", "types", Endpoints),
            ("wasi:http", "outgoing-handler", Endpoints),
        ],
    }
}

/// A component imports something its world or grant does not cover.
#[derive(Debug, thiserror::Error)]
#[error("module `{module}` ({world} world) imports {}", describe(.refused))]
pub struct ImportError {
    /// The module.
    pub module: String,
    /// Its world.
    pub world: World,
    /// Each refused import with the reason.
    pub refused: Vec<(String, String)>,
}

fn describe(refused: &[(String, String)]) -> String {
    refused
        .iter()
        .map(|(name, why)| format!("`{name}` ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Split `ns:pkg/iface@ver` into its parts.
fn split(name: &str) -> Option<(&str, &str, Option<&str>)> {
    let (pkg, rest) = name.split_once('/')?;
    let (iface, ver) = match rest.split_once('@') {
        Some((i, v)) => (i, Some(v)),
        None => (rest, None),
    };
    Some((pkg, iface, ver))
}

/// The version of the `outpost:agent` WIT package this host links (the
/// `package` line of every file in `wit/`; a test holds them together).
pub const AGENT_PACKAGE_VERSION: &str = "0.3.0";

/// Whether `ver` is semver-compatible with the version this host links
/// (for 0.x versions: the same minor version).
fn version_ok(pkg: &str, ver: Option<&str>) -> bool {
    let want = if pkg.starts_with("wasi:") {
        "0.2."
    } else {
        AGENT_PACKAGE_VERSION
            .rsplit_once('.')
            .map_or(AGENT_PACKAGE_VERSION, |(minor, _)| minor)
    };
    ver.is_some_and(|v| {
        v.strip_prefix(want)
            .is_some_and(|rest| want.ends_with('.') || rest.starts_with('.'))
    })
}

/// Whether an import `name` is allowed for `grant`; `Err(reason)` otherwise.
pub(crate) fn allowed(name: &str, grant: &Grant) -> Result<(), String> {
    let Some((pkg, iface, ver)) = split(name) else {
        return Err("not an interface import".into());
    };
    if !version_ok(pkg, ver) {
        return Err(format!(
            "version {} is not linked by this host",
            ver.unwrap_or("(none)")
        ));
    }
    if SANDBOX.iter().any(|(p, i)| *p == pkg && *i == iface) {
        return Ok(());
    }
    let Some((_, _, needs)) = world_imports(grant.world())
        .iter()
        .find(|(p, i, _)| *p == pkg && *i == iface)
    else {
        return Err(format!("not in the {} world", grant.world()));
    };
    let granted = match needs {
        Needs::Nothing => true,
        Needs::Endpoints => !grant.endpoints().is_empty(),
        Needs::StateQuota => grant.state_quota_bytes() > 0,
        Needs::UplinkStreams => !grant.uplink_streams().is_empty(),
        Needs::NotifyRight => grant.notify(),
    };
    if granted {
        Ok(())
    } else {
        let what = match needs {
            Needs::Endpoints => "no endpoint is granted",
            Needs::StateQuota => "no state quota is granted",
            Needs::UplinkStreams => "no uplink stream is granted",
            Needs::NotifyRight => "the notification right is not granted",
            Needs::Nothing => unreachable!(),
        };
        Err(what.into())
    }
}

/// Check every import of a component against the world and the grant.
pub fn check_imports<'a>(
    imports: impl IntoIterator<Item = &'a str>,
    grant: &Grant,
) -> Result<(), ImportError> {
    let refused: Vec<(String, String)> = imports
        .into_iter()
        .filter_map(|name| allowed(name, grant).err().map(|why| (name.to_owned(), why)))
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ImportError {
            module: grant.module().to_owned(),
            world: grant.world(),
            refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_wit_worlds() {
        let mut resolve = wit_parser::Resolve::default();
        let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let (pkg, _) = resolve.push_dir(&wit).expect("wit/ parses");
        let iface_name = |id: wit_parser::InterfaceId| {
            let i = &resolve.interfaces[id];
            let p = &resolve.packages[i.package.unwrap()].name;
            (
                format!("{}:{}", p.namespace, p.name),
                i.name.clone().unwrap(),
            )
        };
        for world in [World::Collector, World::Notifier, World::SessionPolicy] {
            let id = resolve.select_world(&[pkg], Some(world.as_str())).unwrap();
            let mut from_wit: Vec<(String, String)> = resolve.worlds[id]
                .imports
                .keys()
                .filter_map(|k| match k {
                    wit_parser::WorldKey::Interface(i) => Some(iface_name(*i)),
                    wit_parser::WorldKey::Name(_) => None,
                })
                .collect();
            let mut from_table: Vec<(String, String)> = SANDBOX
                .iter()
                .map(|(p, i)| (p.to_string(), i.to_string()))
                .chain(
                    world_imports(world)
                        .iter()
                        .map(|(p, i, _)| (p.to_string(), i.to_string())),
                )
                .collect();
            from_wit.sort();
            from_wit.dedup();
            from_table.sort();
            assert_eq!(from_wit, from_table, "world {world}");
        }
    }

    #[test]
    fn the_linked_agent_version_is_the_wit_package_version() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wit") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    text.starts_with(&format!("package outpost:agent@{AGENT_PACKAGE_VERSION};")),
                    "{}",
                    path.display()
                );
            }
        }
        assert!(version_ok("outpost:agent", Some("0.3.0")));
        assert!(version_ok("outpost:agent", Some("0.3.7")));
        assert!(!version_ok("outpost:agent", Some("0.2.0")));
        assert!(!version_ok("outpost:agent", Some("0.1.0")));
        assert!(!version_ok("outpost:agent", Some("0.20.0")));
        assert!(!version_ok("outpost:agent", None));
    }

    #[test]
    fn refuses_imports_outside_world_or_grant_naming_them() {
        let mut g = Grant::empty("n", World::Notifier);
        let err = check_imports(
            [
                "wasi:cli/environment@0.2.3",
                "outpost:agent/log@0.3.0",
                "outpost:agent/uplink@0.3.0",
                "outpost:agent/notify@0.3.0",
                "wasi:http/outgoing-handler@0.2.0",
                "wasi:cli/environment@0.3.0",
                "outpost:agent/host-info@0.1.0",
            ],
            &g,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`outpost:agent/uplink@0.3.0` (not in the notifier world)"),
            "{text}"
        );
        assert!(
            text.contains("`outpost:agent/notify@0.3.0` (the notification right is not granted)"),
            "{text}"
        );
        assert!(
            text.contains("`wasi:http/outgoing-handler@0.2.0` (not in the notifier world)"),
            "{text}"
        );
        assert!(
            text.contains("`wasi:cli/environment@0.3.0` (version 0.3.0"),
            "{text}"
        );
        // A module built against the previous package version names it.
        assert!(
            text.contains(
                "`outpost:agent/host-info@0.1.0` (version 0.1.0 is not linked by this host)"
            ),
            "{text}"
        );
        assert_eq!(err.refused.len(), 5);
        g.notify = true;
        check_imports(["outpost:agent/notify@0.3.0", "wasi:io/streams@0.2.0"], &g).unwrap();
    }
}
