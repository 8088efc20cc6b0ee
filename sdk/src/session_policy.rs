//! The `session-policy` world's export: a trait and its export macro.

use crate::bindings::session_policy::exports::outpost::agent::policy as wit;

/// A permission a support session may ask for: view, control, file transfer.
pub use wit::Permission;

/// A support request as the host broker presents it.
pub use wit::SupportRequest;

/// The policy's answer: allow or not, the permissions to offer, and why.
pub use wit::Decision;

/// A session-policy module: decides remote-support requests; the host broker
/// enforces the decision. Export an implementation with
/// [`export_session_policy!`](crate::export_session_policy).
pub trait SessionPolicy {
    /// Decide one support request.
    fn evaluate(request: SupportRequest) -> Decision;
}

/// Export a type implementing [`SessionPolicy`] as this component's
/// `outpost:agent/policy` implementation.
#[macro_export]
macro_rules! export_session_policy {
    ($ty:ty) => {
        const _: () = {
            // Unused in native builds, where nothing is exported.
            #[allow(dead_code)]
            struct __OutpostSessionPolicyExport;

            impl $crate::__private::session_policy::exports::outpost::agent::policy::Guest
                for __OutpostSessionPolicyExport
            {
                fn evaluate(request: $crate::SupportRequest) -> $crate::Decision {
                    <$ty as $crate::SessionPolicy>::evaluate(request)
                }
            }

            // Component export names (`outpost:agent/...#...`) are not valid
            // native symbol names: export only when building the component.
            #[cfg(target_arch = "wasm32")]
            $crate::__private::session_policy::export_session_policy_world!(
                __OutpostSessionPolicyExport with_types_in $crate::__private::session_policy
            );
        };
    };
}
