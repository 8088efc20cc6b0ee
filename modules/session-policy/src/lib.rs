//! outpost session-policy module: decides remote-support requests.
//!
//! Rules: a request without a requester is denied; only requested permissions
//! are offered; file transfer is never offered on a PC that holds patient data.
//! The host broker enforces the decision and the local user approves each
//! permission.

use outpost_sdk::{Decision, Permission, SessionPolicy, SupportRequest};

/// The session-policy module.
pub struct DefaultPolicy;

impl SessionPolicy for DefaultPolicy {
    fn evaluate(request: SupportRequest) -> Decision {
        decide(&request)
    }
}

outpost_sdk::export_session_policy!(DefaultPolicy);

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

/// Decide one request.
pub fn decide(request: &SupportRequest) -> Decision {
    if request.requester.trim().is_empty() {
        return deny("denied: the request names no requester");
    }
    let mut offer = Vec::new();
    let mut withheld = false;
    for &p in &request.permissions {
        if p == Permission::FileTransfer && request.pc_holds_patient_data {
            withheld = true;
        } else if !offer.contains(&p) {
            offer.push(p);
        }
    }
    let note = if withheld {
        "; file-transfer withheld because this PC holds patient data"
    } else {
        ""
    };
    if offer.is_empty() {
        return deny(format!("denied: no permission left to offer{note}"));
    }
    let names: Vec<&str> = offer.iter().map(|&p| name(p)).collect();
    Decision {
        allow: true,
        reason: format!("allowed for local approval: {}{note}", names.join(", ")),
        offer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::{Control, FileTransfer, View};

    fn check(requester: &str, asked: &[Permission], phi: bool, allow: bool, offer: &[Permission]) {
        let d = decide(&SupportRequest {
            requester: requester.into(),
            region: "eu".into(),
            permissions: asked.to_vec(),
            pc_holds_patient_data: phi,
        });
        assert_eq!(
            (d.allow, d.offer.as_slice()),
            (allow, offer),
            "{}",
            d.reason
        );
        assert!(!d.reason.is_empty());
    }

    #[test]
    fn decisions() {
        check("", &[View], false, false, &[]);
        check("  ", &[View], false, false, &[]);
        check(
            "eng@vendor",
            &[View, Control],
            false,
            true,
            &[View, Control],
        );
        check(
            "eng@vendor",
            &[View, FileTransfer],
            false,
            true,
            &[View, FileTransfer],
        );
        check("eng@vendor", &[View, FileTransfer], true, true, &[View]);
        check("eng@vendor", &[FileTransfer], true, false, &[]);
        check("eng@vendor", &[], false, false, &[]);
        check("eng@vendor", &[View, View], false, true, &[View]);
    }

    #[test]
    fn reason_explains_withheld_file_transfer() {
        let d = decide(&SupportRequest {
            requester: "eng".into(),
            region: "eu".into(),
            permissions: vec![View, FileTransfer],
            pc_holds_patient_data: true,
        });
        assert!(d.reason.contains("patient data"), "{}", d.reason);
    }
}
