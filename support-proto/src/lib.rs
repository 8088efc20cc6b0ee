//! Remote support for outpost (issue #16): the end-to-end encrypted channel
//! between a support engineer and the PC, carried through the vendor's
//! relay, which forwards bytes only.
//!
//! * [`channel`]: the Noise `XX` handshake binding the PC's Noise key to the
//!   device's Ed25519 key and the engineer's staff credential to the
//!   handshake hash; transport frames that break the session when altered,
//!   replayed or reordered.
//! * [`msg`]: the messages multiplexed inside (screen TCP streams, file
//!   transfers, end).
//! * [`authz`]: the seam with the host's broker ([`Authorizer`]).
//! * [`relay_wire`]: the relay's hello protocol and its clients.
//! * [`pc`]: the PC side ([`pc::serve`]).
//! * [`engineer`]: the engineer client library behind `outpost-support`.
//! * [`files`]: file transfer confined to one granted folder.
//! * [`rfb`]: the VNC security handshake the PC ends on both sides (the
//!   backend's password never reaches the engineer).
//!
//! Never logged: passwords, keys, credentials, file contents or names.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authz;
pub mod channel;
pub mod engineer;
pub mod files;
pub mod frame;
pub mod msg;
pub mod pc;
pub mod relay_wire;
pub mod rfb;

pub use authz::{
    Authorizer, ConnectAttempt, Grant, Permission, Refusal, RefusalCode, challenge_message,
};
