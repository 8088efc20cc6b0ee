//! What lab IT needs to get this PC talking to the vendor: `outpost doctor`
//! and `outpost firewall-rules`, as library code under a thin CLI.
//!
//! - [`inventory`] verifies every configured module and computes its grant
//!   the way the host would at start, without compiling or running anything,
//!   and lists the endpoints the host and the modules need
//!   ([`inventory::Allowlist`]).
//! - [`probe`] tests one endpoint step by step — DNS, TCP, TLS (version,
//!   chain, name, expiry), HTTP — with the host's own TLS settings, and reads
//!   the server's `Date` for the clock check. Failures are classified by
//!   [`crate::net::ConnectError`] / [`crate::net::TlsFailure`], the same words
//!   the uplink uses; this module adds what to change.
//! - [`local`] looks at this PC: free disk in the state directory, the state
//!   database, the upload spool, the enrolment, the mapped directories and
//!   each module's state (signature, grant, quarantine).
//! - [`firewall`] writes the outbound allowlist as text, JSON, an nftables
//!   file or a PowerShell script.
//!
//! Every [`Finding`] says what was checked, [`Status`], what is wrong in plain
//! words, and the fix (the firewall rule or the setting to change). A report
//! with any [`Status::Fail`] makes `outpost doctor` exit with status 1;
//! warnings alone do not.
//!
//! Architecture Invariant: the doctor never creates the state directory or
//! its database (an existing database is opened as the host opens it and
//! only read; without one, modules are verified against a scratch version
//! ledger), never compiles or runs a module, and sends nothing but a TLS
//! handshake and one `GET` per endpoint.

pub mod firewall;
pub mod inventory;
pub mod local;
pub mod probe;

use crate::config::Config;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::SystemTime;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not checked (an earlier step failed, or there is nothing to test).
    Skipped,
    /// Fine.
    Ok,
    /// Works, but needs attention soon (does not change the exit status).
    Warn,
    /// Broken: something the host needs does not work.
    Fail,
}

impl Status {
    /// The word shown in the text report.
    pub fn label(self) -> &'static str {
        match self {
            Status::Skipped => "SKIP",
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Finding {
    /// What was looked at: `host:port` of an endpoint, `this PC`, or
    /// `module NAME`.
    pub subject: String,
    /// Which check: `dns`, `tcp`, `tls`, `http`, `clock`, `disk`, `database`,
    /// `spool`, `enrolment`, `directory`, `proxy`, `module`, `allowlist`.
    pub check: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found; for a warning or failure, what is wrong.
    pub detail: String,
    /// What to change to fix it (a firewall rule, a setting, a command).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Which parts of the host need this endpoint (endpoint checks only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needed_by: Vec<String>,
    /// The TLS session and the certificate chain the server presented (TLS
    /// checks that got that far).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<probe::TlsFacts>,
}

impl Finding {
    /// A finding without fix, endpoint users or TLS facts.
    pub fn new(
        subject: impl Into<String>,
        check: &'static str,
        status: Status,
        detail: impl Into<String>,
    ) -> Finding {
        Finding {
            subject: subject.into(),
            check,
            status,
            detail: detail.into(),
            fix: None,
            needed_by: Vec::new(),
            tls: None,
        }
    }

    /// The same finding with `fix`.
    pub fn with_fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }
}

/// Counts of each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Checks that passed.
    pub ok: usize,
    /// Warnings.
    pub warn: usize,
    /// Failures.
    pub fail: usize,
    /// Checks not made.
    pub skipped: usize,
}

/// The whole report of `outpost doctor`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    /// The config file.
    pub config: String,
    /// `global`, `china`, or the configured `endpoint`.
    pub uplink: String,
    /// When the checks ran (RFC 3339, this PC's clock).
    pub checked_at: String,
    /// Every finding, endpoints first, then this PC, then modules.
    pub findings: Vec<Finding>,
    /// Counts per status.
    pub summary: Summary,
}

impl Report {
    /// A report over `findings`.
    pub fn new(config: &Config, findings: Vec<Finding>) -> Report {
        let mut summary = Summary::default();
        for f in &findings {
            match f.status {
                Status::Ok => summary.ok += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
                Status::Skipped => summary.skipped += 1,
            }
        }
        Report {
            config: config.path.display().to_string(),
            uplink: inventory::uplink_label(config),
            checked_at: crate::net::format_rfc3339(SystemTime::now()),
            findings,
            summary,
        }
    }

    /// Whether nothing failed (warnings allowed): exit status 0.
    pub fn passed(&self) -> bool {
        self.summary.fail == 0
    }

    /// The report in plain words, grouped by subject.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "outpost doctor: {} (uplink: {}), {}",
            self.config, self.uplink, self.checked_at
        );
        let mut subject: Option<&str> = None;
        for f in &self.findings {
            if subject != Some(f.subject.as_str()) {
                subject = Some(&f.subject);
                out.push('\n');
                if f.needed_by.is_empty() {
                    let _ = writeln!(out, "{}", f.subject);
                } else {
                    let _ = writeln!(out, "{} (needed by {})", f.subject, f.needed_by.join(", "));
                }
            }
            let _ = writeln!(out, "  {:<5} {:<9} {}", f.status.label(), f.check, f.detail);
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "  {:<5} {:<9} fix: {fix}", "", "");
            }
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "\n{} FAIL, {} WARN, {} OK, {} not checked: {}",
            s.fail,
            s.warn,
            s.ok,
            s.skipped,
            if self.passed() {
                "nothing is broken (exit status 0)"
            } else {
                "something is broken, see FAIL above (exit status 1)"
            }
        );
        out
    }
}

/// Run every check of `outpost doctor` for `config`. Never creates the
/// state directory or its database; must run inside a tokio runtime.
pub async fn doctor(config: &Config) -> Report {
    let mut findings = Vec::new();
    let modules = inventory::modules(config);
    match inventory::Allowlist::new(config, &modules) {
        Ok(allowlist) => {
            let dates = probe::probe_all(config, &allowlist, &mut findings).await;
            findings.push(local::clock(&dates));
        }
        Err(e) => findings.push(
            Finding::new("uplink", "allowlist", Status::Fail, e.to_string())
                .with_fix("write `[uplink] endpoint` as https://host[:port] in the host config"),
        ),
    }
    findings.extend(local::this_pc(config));
    findings.extend(local::module_states(config, &modules));
    Report::new(config, findings)
}
