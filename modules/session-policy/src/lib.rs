//! outpost session-policy module: decides remote-support requests from the
//! engineer's verified claims (package `outpost:agent@0.3.0`).
//!
//! The rules ([`RULES`]) are compiled into the module, so a change of policy
//! is a new signed version that goes through the update approval like any
//! other. They say: who may connect (an engineer on the staff allowlist, or
//! one holding the required certification), that the engineer serves this
//! PC's region, which permissions may be offered per instrument model, and
//! in which local time windows. Only requested permissions are offered.
//!
//! The patient-data rule is the host's, not this module's: on a PC that
//! holds patient data the host removes file transfer from any offer unless
//! the person at the PC authorised it by approving the update that installed
//! a policy carrying it (a module cannot loosen it, and does not need to
//! repeat it). The host broker checks the credential before asking and the
//! person at the PC approves each offered permission after.

use outpost_sdk::{Decision, Permission, SessionPolicy, SupportRequest};

/// The session-policy module.
pub struct DefaultPolicy;

impl SessionPolicy for DefaultPolicy {
    fn evaluate(request: SupportRequest) -> Decision {
        decide(&request, &RULES)
    }
}

outpost_sdk::export_session_policy!(DefaultPolicy);

/// A local time window: days (bit 0 = Monday ... bit 6 = Sunday) and
/// minutes since midnight, `from` inclusive, `to` exclusive.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Days of the week (bit 0 = Monday).
    pub days: u8,
    /// First minute.
    pub from: u16,
    /// First minute after.
    pub to: u16,
}

/// Every day of the week.
pub const EVERY_DAY: u8 = 0b111_1111;
/// Monday to Friday.
pub const WEEKDAYS: u8 = 0b001_1111;

/// What this policy allows.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Engineer ids allowed whatever their certifications.
    pub allowlist: &'static [&'static str],
    /// The certification that allows an engineer not on the allowlist.
    pub required_certification: &'static str,
    /// Permissions that may be offered per instrument model; `*` is every
    /// model not listed. A PC with several models gets what all allow.
    pub models: &'static [(&'static str, &'static [Permission])],
    /// When sessions may start (local time); empty = at any time.
    pub windows: &'static [Window],
}

/// The rules this module is built with.
pub const RULES: Rules = Rules {
    allowlist: &[],
    required_certification: "privacy-training",
    models: &[(
        "*",
        &[
            Permission::View,
            Permission::Control,
            Permission::FileTransfer,
        ],
    )],
    windows: &[Window {
        days: EVERY_DAY,
        from: 0,
        to: 24 * 60,
    }],
};

fn name(p: Permission) -> &'static str {
    match p {
        Permission::View => "view",
        Permission::Control => "control",
        Permission::FileTransfer => "file-transfer",
    }
}

fn deny(reason: impl Into<String>) -> Decision {
    Decision {
        allow: false,
        offer: Vec::new(),
        reason: reason.into(),
    }
}

fn model_allows(rules: &Rules, model: &str, p: Permission) -> bool {
    let entry = rules
        .models
        .iter()
        .find(|(m, _)| *m == model)
        .or_else(|| rules.models.iter().find(|(m, _)| *m == "*"));
    entry.is_some_and(|(_, ps)| ps.contains(&p))
}

fn in_window(rules: &Rules, weekday: u8, minute: u16) -> bool {
    rules.windows.is_empty()
        || rules.windows.iter().any(|w| {
            weekday < 7 && w.days & (1 << weekday) != 0 && minute >= w.from && minute < w.to
        })
}

/// Decide one request under `rules`.
pub fn decide(request: &SupportRequest, rules: &Rules) -> Decision {
    let id = request.engineer_id.trim();
    if id.is_empty() {
        return deny("denied: the request names no engineer");
    }
    let listed = rules.allowlist.contains(&id);
    let certified = request
        .certifications
        .iter()
        .any(|c| c == rules.required_certification);
    if !listed && !certified {
        return deny(format!(
            "denied: engineer {id} is not on the staff allowlist and does not hold the {} certification",
            rules.required_certification
        ));
    }
    if request.pc_region.is_empty() || !request.engineer_regions.contains(&request.pc_region) {
        return deny(format!(
            "denied: engineer {id} does not serve this PC's region {:?}",
            request.pc_region
        ));
    }
    if request.credential_expires <= request.now {
        return deny("denied: the engineer's credential has expired");
    }
    if !in_window(rules, request.local_weekday, request.local_minute_of_day) {
        return deny("denied: outside the hours remote support may start on this PC");
    }
    let models: Vec<&str> = if request.instrument_models.is_empty() {
        vec!["*"]
    } else {
        request
            .instrument_models
            .iter()
            .map(String::as_str)
            .collect()
    };
    let mut offer = Vec::new();
    let mut withheld = Vec::new();
    let mut seen = Vec::new();
    for &p in &request.permissions {
        if seen.contains(&p) {
            continue;
        }
        seen.push(p);
        if !models.iter().all(|m| model_allows(rules, m, p)) {
            withheld.push(match p {
                Permission::View => "view for this instrument model",
                Permission::Control => "control for this instrument model",
                Permission::FileTransfer => "file-transfer for this instrument model",
            });
        } else {
            offer.push(p);
        }
    }
    let note = if withheld.is_empty() {
        String::new()
    } else {
        format!("; withheld: {}", withheld.join(", "))
    };
    if offer.is_empty() {
        return deny(format!("denied: no permission left to offer{note}"));
    }
    let names: Vec<&str> = offer.iter().map(|&p| name(p)).collect();
    Decision {
        allow: true,
        reason: format!(
            "allowed for local approval: {} (engineer {id}){note}",
            names.join(", ")
        ),
        offer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::{Control, FileTransfer, View};

    fn request(id: &str, asked: &[Permission], phi: bool) -> SupportRequest {
        SupportRequest {
            engineer_id: id.into(),
            engineer_name: "Ada".into(),
            engineer_regions: vec!["eu".into()],
            certifications: vec!["privacy-training".into()],
            credential_expires: 2_000,
            pc_region: "eu".into(),
            instrument_models: vec!["XN-550".into()],
            now: 1_000,
            local_minute_of_day: 10 * 60,
            local_weekday: 2,
            permissions: asked.to_vec(),
            pc_holds_patient_data: phi,
        }
    }

    fn check(r: &SupportRequest, rules: &Rules, allow: bool, offer: &[Permission]) {
        let d = decide(r, rules);
        assert_eq!(
            (d.allow, d.offer.as_slice()),
            (allow, offer),
            "{}",
            d.reason
        );
        assert!(!d.reason.is_empty());
    }

    #[test]
    fn decisions_on_the_built_in_rules() {
        check(&request("", &[View], false), &RULES, false, &[]);
        check(&request("  ", &[View], false), &RULES, false, &[]);
        check(
            &request("eng", &[View, Control], false),
            &RULES,
            true,
            &[View, Control],
        );
        check(
            &request("eng", &[View, FileTransfer], false),
            &RULES,
            true,
            &[View, FileTransfer],
        );
        // The patient-data rule is the host's: the module does not repeat it.
        check(
            &request("eng", &[View, FileTransfer], true),
            &RULES,
            true,
            &[View, FileTransfer],
        );
        check(&request("eng", &[], false), &RULES, false, &[]);
        check(&request("eng", &[View, View], false), &RULES, true, &[View]);
    }

    #[test]
    fn unknown_uncertified_engineers_other_regions_and_expired_credentials_are_denied() {
        let mut r = request("eng-9", &[View], false);
        r.certifications = vec!["forklift".into()];
        let d = decide(&r, &RULES);
        assert!(!d.allow && d.reason.contains("allowlist"), "{}", d.reason);
        let listed = Rules {
            allowlist: &["eng-9"],
            ..RULES
        };
        check(&r, &listed, true, &[View]);
        let mut r = request("eng", &[View], false);
        r.engineer_regions = vec!["us".into()];
        check(&r, &RULES, false, &[]);
        let mut r = request("eng", &[View], false);
        r.pc_region = String::new();
        check(&r, &RULES, false, &[]);
        let mut r = request("eng", &[View], false);
        r.credential_expires = r.now;
        check(&r, &RULES, false, &[]);
    }

    #[test]
    fn permissions_per_model_and_time_windows() {
        let rules = Rules {
            models: &[("XN-550", &[View]), ("*", &[View, Control, FileTransfer])],
            windows: &[Window {
                days: WEEKDAYS,
                from: 8 * 60,
                to: 18 * 60,
            }],
            ..RULES
        };
        let r = request("eng", &[View, Control], false);
        let d = decide(&r, &rules);
        assert_eq!(d.offer, vec![View]);
        assert!(
            d.reason.contains("control for this instrument model"),
            "{}",
            d.reason
        );
        let mut other = r.clone();
        other.instrument_models = vec!["cobas-8000".into()];
        check(&other, &rules, true, &[View, Control]);
        // Two models: only what both allow.
        other.instrument_models.push("XN-550".into());
        check(&other, &rules, true, &[View]);
        let mut late = r.clone();
        late.local_minute_of_day = 18 * 60;
        check(&late, &rules, false, &[]);
        let mut sunday = r.clone();
        sunday.local_weekday = 6;
        check(&sunday, &rules, false, &[]);
        let mut bad_day = r;
        bad_day.local_weekday = 9;
        check(&bad_day, &rules, false, &[]);
    }
}
