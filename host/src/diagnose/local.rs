//! Checks of this PC: clock, proxy settings, free disk, the state database,
//! the upload spool, the enrolment, the mapped directories, module states.
//! Nothing here creates the state directory or its database.

use super::inventory::{ModuleInfo, RefusalKind, existing_db};
use super::probe::ServerDate;
use super::{Finding, Status};
use crate::config::Config;
use crate::net::format_rfc3339;
use crate::store::quarantine::Quarantine;
use crate::store::spool::Spool;
use crate::uplink::identity::{Identity, IdentityError};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The subject of the checks of this PC.
pub const THIS_PC: &str = "this PC";
/// A clock further than this from a server's is a warning (certificate and
/// metadata expiry checks depend on it).
pub const CLOCK_WARN_SECS: u64 = 5 * 60;
/// A clock further than this from a server's is a failure (certificates and
/// signed metadata are judged on the wrong day).
pub const CLOCK_FAIL_SECS: u64 = 24 * 60 * 60;
/// Less free disk than this in the state directory is a failure (the
/// database cannot grow).
pub const DISK_FAIL_MIB: u64 = 64;
/// Free disk should hold what the spool may still grow by plus this margin.
pub const DISK_MARGIN_MIB: u64 = 256;
/// A spool fuller than this (percent of `spool-max-mib`) is a warning.
pub const SPOOL_WARN_PERCENT: u64 = 80;
/// A batch waiting longer than this means uploads do not go through.
pub const SPOOL_STALE_SECS: u64 = 60 * 60;
/// Environment variables through which the uplink's HTTPS client (reqwest)
/// takes a proxy.
pub const PROXY_VARIABLES: &[&str] = &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];

fn pc(check: &'static str, status: Status, detail: impl Into<String>) -> Finding {
    Finding::new(THIS_PC, check, status, detail)
}

/// `2 h 5 min`, `40 s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// This PC's clock against the first server `Date` (the vendor's uplink
/// servers first). `Date` has whole seconds: a difference under
/// [`CLOCK_WARN_SECS`] is fine.
pub fn clock(dates: &[ServerDate]) -> Finding {
    let Some(d) = dates.iter().find(|d| d.uplink).or_else(|| dates.first()) else {
        return pc(
            "clock",
            Status::Skipped,
            "not checked: no server answered over HTTPS, so there was no server time to compare with",
        );
    };
    let (diff, direction) = match d.server.duration_since(d.local) {
        Ok(ahead) => (ahead, "behind"),
        Err(e) => (e.duration(), "ahead of"),
    };
    let detail = format!(
        "this PC's clock is {} {direction} the clock of {} (server {}, this PC {})",
        human_duration(diff),
        d.endpoint,
        format_rfc3339(d.server),
        format_rfc3339(d.local)
    );
    let fix = "set this PC's clock right: turn on time synchronisation (NTP, or the Windows Time service) with your time server, and allow it through the firewall (UDP port 123); certificate checks and update expiry depend on the clock";
    if diff.as_secs() >= CLOCK_FAIL_SECS {
        pc("clock", Status::Fail, detail).with_fix(fix)
    } else if diff.as_secs() >= CLOCK_WARN_SECS {
        pc("clock", Status::Warn, detail).with_fix(fix)
    } else {
        pc(
            "clock",
            Status::Ok,
            format!(
                "within {} of the clock of {}",
                human_duration(diff.max(Duration::from_secs(1))),
                d.endpoint
            ),
        )
    }
}

/// `http://user:secret@proxy:3128` → `http://proxy:3128` (never show a
/// password).
pub fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            format!("{scheme}://{rest}")
        }
        None => url.rsplit_once('@').map_or(url, |(_, r)| r).to_owned(),
    }
}

/// A proxy in the environment: the uplink would go through it, while the
/// endpoint checks connect directly.
pub fn proxy(env: impl Fn(&str) -> Option<String>) -> Option<Finding> {
    let (var, value) = PROXY_VARIABLES
        .iter()
        .find_map(|v| env(v).filter(|s| !s.is_empty()).map(|s| (*v, s)))?;
    Some(
        pc(
            "proxy",
            Status::Warn,
            format!(
                "{var} is set ({}): the uplink sends through that proxy, but the endpoint checks above connect directly, so they may fail where the agent works, or pass where the proxy blocks",
                without_credentials(&value)
            ),
        )
        .with_fix("run the doctor where the agent's environment has no proxy variable, or check the proxy's allowlist against `outpost firewall-rules`"),
    )
}

/// The nearest existing folder of `p` (the state directory may not exist yet).
fn existing_ancestor(p: &Path) -> Option<PathBuf> {
    p.ancestors().find(|a| a.is_dir()).map(Path::to_owned)
}

/// Free disk space in the state directory.
pub fn disk(config: &Config, spool_used_bytes: u64) -> Finding {
    let dir = &config.state_dir;
    let Some(at) = existing_ancestor(dir) else {
        return pc(
            "disk",
            Status::Fail,
            format!("no folder of the state directory {} exists", dir.display()),
        )
        .with_fix("correct `state-dir` in the host config");
    };
    let free = match fs4::available_space(&at) {
        Ok(b) => b,
        Err(e) => {
            return pc(
                "disk",
                Status::Warn,
                format!("cannot read the free space of {}: {e}", at.display()),
            );
        }
    };
    let mib = free >> 20;
    let spool_max = config.uplink.spool_max_mib << 20;
    let wanted = (spool_max.saturating_sub(spool_used_bytes) >> 20) + DISK_MARGIN_MIB;
    let detail = format!("{mib} MiB free for the state directory {}", dir.display());
    if mib < DISK_FAIL_MIB {
        pc(
            "disk",
            Status::Fail,
            format!("{detail}: too little for the database to grow"),
        )
        .with_fix(format!(
            "free at least {wanted} MiB on that disk, or move `state-dir` to a disk with room"
        ))
    } else if mib < wanted {
        pc(
            "disk",
            Status::Warn,
            format!(
                "{detail}: less than the spool may still need ({} MiB) plus {DISK_MARGIN_MIB} MiB",
                wanted - DISK_MARGIN_MIB
            ),
        )
        .with_fix(format!(
            "free at least {wanted} MiB on that disk, move `state-dir`, or lower `[uplink] spool-max-mib`"
        ))
    } else {
        pc("disk", Status::Ok, detail)
    }
}

/// Everything about this PC but the clock: proxy, database, spool, disk,
/// enrolment, directories.
pub fn this_pc(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(proxy(|v| std::env::var(v).ok()));
    let mut spool_used = 0;
    match existing_db(config) {
        None => {
            out.push(
                pc(
                    "database",
                    Status::Warn,
                    format!(
                        "no state database in {} yet: the agent has not run with this config",
                        config.state_dir.display()
                    ),
                )
                .with_fix(format!(
                    "start the agent (`outpost run --config {}`, or its service)",
                    config.path.display()
                )),
            );
        }
        Some(Err(e)) => out.push(pc("database", Status::Fail, format!("{e}")).with_fix(
            "check the permissions of the state directory and that its disk is not full",
        )),
        Some(Ok(db)) => {
            match db.integrity_ok() {
                Ok(true) => out.push(pc(
                    "database",
                    Status::Ok,
                    format!("{} passes SQLite's integrity check", db.path().display()),
                )),
                Ok(false) | Err(_) => out.push(
                    pc(
                        "database",
                        Status::Fail,
                        format!("{} is damaged (SQLite's integrity check fails)", db.path().display()),
                    )
                    .with_fix("stop the agent, keep a copy of the state directory for the vendor's support, and restore the database from a backup"),
                ),
            }
            let (finding, used) = spool(config, &Spool::new(db));
            spool_used = used;
            out.push(finding);
        }
    }
    out.push(disk(config, spool_used));
    out.push(enrolment(config));
    for (name, path) in &config.directories {
        out.push(if path.is_dir() {
            pc(
                "directory",
                Status::Ok,
                format!("`{name}` = {} exists", path.display()),
            )
        } else {
            pc(
                "directory",
                Status::Fail,
                format!("`{name}` = {} is not a folder", path.display()),
            )
            .with_fix(format!(
                "correct the path of `{name}` in `[directories]`, or make sure the instrument software writes there"
            ))
        });
    }
    out
}

/// The upload queue: how full, how old its oldest batch, what was lost.
/// Returns the finding and the bytes in use.
pub fn spool(config: &Config, spool: &Spool) -> (Finding, u64) {
    let read = spool
        .pending()
        .and_then(|(n, bytes)| Ok((n, bytes, spool.oldest_waiting_since()?, spool.counters()?)));
    let (batches, bytes, oldest, counters) = match read {
        Ok(r) => r,
        Err(e) => {
            return (
                pc(
                    "spool",
                    Status::Fail,
                    format!("cannot read the upload queue: {e}"),
                ),
                0,
            );
        }
    };
    let sum = |prefix: &str| -> u64 {
        counters
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    let max = config.uplink.spool_max_mib << 20;
    let percent = bytes.saturating_mul(100) / max.max(1);
    let mut detail = format!(
        "{batches} batch(es) waiting, {} KiB of {} MiB ({percent} %); so far {} delivered, {} dropped when full, {} refused by the cloud, {} refused by the PHI guard",
        bytes.div_ceil(1024),
        config.uplink.spool_max_mib,
        sum("delivered"),
        sum("dropped:"),
        sum("dead-letter:"),
        sum("guard-refused"),
    );
    let waited = oldest.map(|t| {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Duration::from_secs(now.saturating_sub(t).max(0) as u64)
    });
    if let Some(w) = waited {
        detail.push_str(&format!("; the oldest has waited {}", human_duration(w)));
    }
    let finding = if percent >= SPOOL_WARN_PERCENT {
        pc("spool", Status::Warn, format!("{detail}: the queue is nearly full, and when full the oldest events and heartbeats are dropped"))
            .with_fix("make the uplink endpoints reachable (see the endpoint checks), or raise `[uplink] spool-max-mib` if the disk has room")
    } else if waited.is_some_and(|w| w.as_secs() >= SPOOL_STALE_SECS) {
        pc(
            "spool",
            Status::Warn,
            format!("{detail}: uploads are not going through"),
        )
        .with_fix(format!("make the uplink endpoints reachable (see the endpoint checks above); `outpost uplink --config {}` shows the queue", config.path.display()))
    } else {
        pc("spool", Status::Ok, detail)
    };
    (finding, bytes)
}

/// Whether the device is enrolled, and with a server it uploads to.
pub fn enrolment(config: &Config) -> Finding {
    match Identity::load(&config.state_dir) {
        Ok(id) => {
            let endpoints = config.uplink.endpoints();
            if endpoints
                .iter()
                .any(|e| e.trim_end_matches('/') == id.server)
            {
                pc(
                    "enrolment",
                    Status::Ok,
                    format!("enrolled as device {} with {}", id.device_id, id.server),
                )
            } else {
                pc(
                    "enrolment",
                    Status::Warn,
                    format!(
                        "enrolled as device {} with {}, but uploads go to {}: the cloud there may not know this device",
                        id.device_id,
                        id.server,
                        endpoints.join(", ")
                    ),
                )
                .with_fix("set `[uplink]` back to the region or endpoint the device enrolled with, or enrol again (`outpost enroll`)")
            }
        }
        Err(e @ IdentityError::NotEnrolled(_)) => pc(
            "enrolment",
            Status::Fail,
            format!("{e}; nothing is collected or uploaded until then"),
        )
        .with_fix(format!("enrol this PC: `outpost enroll --config {} --email ... --name ... --instrument-model ... --instrument-id ... --serial ...`", config.path.display())),
        Err(e) => pc("enrolment", Status::Fail, e.to_string())
            .with_fix("enrol this PC again (`outpost enroll`); keep the unusable file for the vendor's support"),
    }
}

/// Each configured module: would it load, is it quarantined, is it signed
/// with a development key.
pub fn module_states(config: &Config, modules: &[ModuleInfo]) -> Vec<Finding> {
    let quarantine = match existing_db(config) {
        Some(Ok(db)) => Some(Quarantine::new(db)),
        _ => None,
    };
    modules
        .iter()
        .map(|m| {
            let subject = format!("module {}", m.name);
            let ready = match &m.outcome {
                Ok(r) => r,
                Err(r) => {
                    let fix = match r.kind {
                        RefusalKind::Unreadable => format!(
                            "install the module file at {} or correct `file` of module `{}` in the host config",
                            m.file.display(),
                            m.name
                        ),
                        RefusalKind::Signature => "install the module file exactly as the vendor shipped it, and check that `[trust]` holds the vendor's current key (`outpost verify` shows the details)".to_owned(),
                        RefusalKind::Policy => "either allow what the module asks in `[policy]` (if you accept it) or install a module that asks for less; `outpost check-config` lists every excess".to_owned(),
                        RefusalKind::Other => "run `outpost check-config` for details".to_owned(),
                    };
                    return Finding::new(
                        subject,
                        "module",
                        Status::Fail,
                        format!("the host refuses it: {}", r.reason),
                    )
                    .with_fix(fix);
                }
            };
            let quarantined = quarantine
                .as_ref()
                .map(|q| q.get(&m.name, &ready.file_sha256));
            match quarantined {
                Some(Ok(Some(q))) => {
                    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(q.since.max(0) as u64);
                    return Finding::new(
                        subject,
                        "module",
                        Status::Fail,
                        format!(
                            "quarantined since {} after repeated failures; last failure: {}",
                            format_rfc3339(since),
                            q.reason
                        ),
                    )
                    .with_fix(format!(
                        "fix the cause, then `outpost release {} --config {}` (it runs again at the next start)",
                        m.name,
                        config.path.display()
                    ));
                }
                Some(Err(e)) => {
                    return Finding::new(
                        subject,
                        "module",
                        Status::Fail,
                        format!("cannot read the quarantine list: {e}"),
                    );
                }
                _ => {}
            }
            let endpoints = if ready.endpoints.is_empty() {
                "none".to_owned()
            } else {
                ready
                    .endpoints
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let detail = format!(
                "version {}, {} world, signed by {}; endpoints: {endpoints}{}",
                ready.version,
                ready.world,
                ready.signers.join(", "),
                if quarantine.is_some() {
                    "; not quarantined"
                } else {
                    ""
                }
            );
            match &ready.development_key {
                Some(key) => Finding::new(
                    subject,
                    "module",
                    Status::Warn,
                    format!("{detail}; signed with the DEVELOPMENT key `{key}`, accepted only because `allow-development-key = true`"),
                )
                .with_fix("install the vendor's release-signed module and set `[trust] allow-development-key = false`"),
                None => Finding::new(subject, "module", Status::Ok, detail),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_are_never_shown() {
        for (url, want) in [
            ("http://user:secret@proxy.lab:3128", "http://proxy.lab:3128"),
            ("http://proxy.lab:3128", "http://proxy.lab:3128"),
            ("user:p@ss@proxy.lab:3128", "proxy.lab:3128"),
        ] {
            assert_eq!(without_credentials(url), want);
        }
        let f = proxy(|v| (v == "https_proxy").then(|| "http://u:pw@proxy.lab:8080".to_owned()))
            .unwrap();
        assert_eq!(f.status, Status::Warn);
        assert!(
            f.detail
                .starts_with("https_proxy is set (http://proxy.lab:8080)"),
            "{}",
            f.detail
        );
        assert!(!f.detail.contains("pw"));
        assert!(proxy(|_| None).is_none());
        assert!(proxy(|_| Some(String::new())).is_none());
    }

    #[test]
    fn clock_skew_is_judged_against_the_uplink_server_first() {
        let local = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let date = |endpoint: &str, uplink, offset: i64| ServerDate {
            endpoint: endpoint.into(),
            uplink,
            server: if offset >= 0 {
                local + Duration::from_secs(offset as u64)
            } else {
                local - Duration::from_secs(offset.unsigned_abs())
            },
            local,
        };
        assert_eq!(clock(&[]).status, Status::Skipped);
        let ok = clock(&[
            date("m.example:443", false, -7200),
            date("up.example:443", true, 3),
        ]);
        assert_eq!(ok.status, Status::Ok, "{}", ok.detail);
        assert!(ok.detail.contains("up.example:443"), "{}", ok.detail);
        let warn = clock(&[date("up.example:443", true, -7260)]);
        assert_eq!(warn.status, Status::Warn);
        assert!(
            warn.detail
                .starts_with("this PC's clock is 2 h 1 min ahead of the clock of up.example:443"),
            "{}",
            warn.detail
        );
        let fail = clock(&[date("up.example:443", true, 2 * 86_400)]);
        assert_eq!(fail.status, Status::Fail);
        assert!(fail.detail.contains("2 days 0 h behind"), "{}", fail.detail);
        assert!(fail.fix.unwrap().contains("NTP"));
    }
}
