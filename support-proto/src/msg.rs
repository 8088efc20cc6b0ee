//! The messages multiplexed inside the end-to-end channel. Each is the
//! plaintext of one Noise transport message: a tag byte, a big-endian `u32`
//! id (a TCP stream or a file transfer) and a body (raw bytes for data, JSON
//! for control).

use serde::{Deserialize, Serialize};

use crate::authz::{Grant, Refusal};

/// Largest plaintext of one Noise transport message (65535 minus the
/// 16-byte tag).
pub const MAX_PLAINTEXT_BYTES: usize = 65_535 - 16;
/// Largest data body of one message (the plaintext minus tag and id).
pub const MAX_DATA_BYTES: usize = MAX_PLAINTEXT_BYTES - 5;

/// A file being sent into the PC's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutHeader {
    /// Relative path inside the granted folder.
    pub name: String,
    /// Exact size in bytes.
    pub size: u64,
}

/// A completed transfer, as the receiving side checked it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDone {
    /// Relative path inside the granted folder.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
}

/// One multiplexed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// PC → engineer, first: the session is open with this grant.
    Welcome(Grant),
    /// PC → engineer, first: the attempt was refused; the PC closes.
    Refused(Refusal),
    /// Either side: the session ends, with a reason.
    End(String),
    /// Engineer → PC: open TCP stream `id` to the screen backend.
    TcpOpen(u32),
    /// Bytes of TCP stream `id`.
    TcpData(u32, Vec<u8>),
    /// TCP stream `id` was closed by the side that sends this.
    TcpClose(u32),
    /// Engineer → PC: transfer `id` sends a file into the folder.
    PutStart(u32, PutHeader),
    /// PC → engineer: transfer `id` may send its chunks.
    PutReady(u32),
    /// Engineer → PC: a chunk of transfer `id`.
    PutChunk(u32, Vec<u8>),
    /// Engineer → PC: transfer `id` is complete; the SHA-256 of the file.
    PutEnd(u32, [u8; 32]),
    /// Engineer → PC: transfer `id` fetches this file from the folder.
    GetStart(u32, String),
    /// PC → engineer: the fetched file of transfer `id` has this size.
    GetMeta(u32, u64),
    /// PC → engineer: a chunk of transfer `id`.
    GetChunk(u32, Vec<u8>),
    /// PC → engineer: transfer `id` is complete; the SHA-256 of the file.
    GetEnd(u32, [u8; 32]),
    /// The receiving side stored or verified transfer `id`.
    FileOk(u32, FileDone),
    /// Request `id` (a stream or a transfer) was denied or failed.
    Deny(u32, Refusal),
}

/// A message that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct MsgError(pub String);

const T_WELCOME: u8 = 1;
const T_REFUSED: u8 = 2;
const T_END: u8 = 3;
const T_TCP_OPEN: u8 = 10;
const T_TCP_DATA: u8 = 11;
const T_TCP_CLOSE: u8 = 12;
const T_PUT_START: u8 = 20;
const T_PUT_READY: u8 = 21;
const T_PUT_CHUNK: u8 = 22;
const T_PUT_END: u8 = 23;
const T_GET_START: u8 = 24;
const T_GET_META: u8 = 25;
const T_GET_CHUNK: u8 = 26;
const T_GET_END: u8 = 27;
const T_FILE_OK: u8 = 28;
const T_DENY: u8 = 29;

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Msg {
    /// Encode into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        let (tag, id): (u8, u32) = match self {
            Msg::Welcome(_) => (T_WELCOME, 0),
            Msg::Refused(_) => (T_REFUSED, 0),
            Msg::End(_) => (T_END, 0),
            Msg::TcpOpen(id) => (T_TCP_OPEN, *id),
            Msg::TcpData(id, _) => (T_TCP_DATA, *id),
            Msg::TcpClose(id) => (T_TCP_CLOSE, *id),
            Msg::PutStart(id, _) => (T_PUT_START, *id),
            Msg::PutReady(id) => (T_PUT_READY, *id),
            Msg::PutChunk(id, _) => (T_PUT_CHUNK, *id),
            Msg::PutEnd(id, _) => (T_PUT_END, *id),
            Msg::GetStart(id, _) => (T_GET_START, *id),
            Msg::GetMeta(id, _) => (T_GET_META, *id),
            Msg::GetChunk(id, _) => (T_GET_CHUNK, *id),
            Msg::GetEnd(id, _) => (T_GET_END, *id),
            Msg::FileOk(id, _) => (T_FILE_OK, *id),
            Msg::Deny(id, _) => (T_DENY, *id),
        };
        out.push(tag);
        out.extend_from_slice(&id.to_be_bytes());
        match self {
            Msg::Welcome(g) => out.extend_from_slice(&json(g)),
            Msg::Refused(r) | Msg::Deny(_, r) => out.extend_from_slice(&json(r)),
            Msg::End(reason) => out.extend_from_slice(reason.as_bytes()),
            Msg::TcpOpen(_) | Msg::TcpClose(_) | Msg::PutReady(_) => {}
            Msg::TcpData(_, d) | Msg::PutChunk(_, d) | Msg::GetChunk(_, d) => {
                out.extend_from_slice(d)
            }
            Msg::PutStart(_, h) => out.extend_from_slice(&json(h)),
            Msg::PutEnd(_, h) | Msg::GetEnd(_, h) => out.extend_from_slice(h),
            Msg::GetStart(_, name) => out.extend_from_slice(name.as_bytes()),
            Msg::GetMeta(_, size) => out.extend_from_slice(&size.to_be_bytes()),
            Msg::FileOk(_, d) => out.extend_from_slice(&json(d)),
        }
    }

    /// Decode one message.
    pub fn decode(b: &[u8]) -> Result<Msg, MsgError> {
        if b.len() < 5 {
            return Err(MsgError(format!(
                "{} bytes is shorter than a header",
                b.len()
            )));
        }
        let tag = b[0];
        let id = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        let body = &b[5..];
        let from_json = |what: &str| MsgError(format!("{what} is not valid JSON of its kind"));
        let hash = |what: &str| -> Result<[u8; 32], MsgError> {
            body.try_into()
                .map_err(|_| MsgError(format!("{what} holds {} bytes, not 32", body.len())))
        };
        let text = |what: &str| -> Result<String, MsgError> {
            String::from_utf8(body.to_vec()).map_err(|_| MsgError(format!("{what} is not UTF-8")))
        };
        Ok(match tag {
            T_WELCOME => {
                Msg::Welcome(serde_json::from_slice(body).map_err(|_| from_json("welcome"))?)
            }
            T_REFUSED => {
                Msg::Refused(serde_json::from_slice(body).map_err(|_| from_json("refusal"))?)
            }
            T_END => Msg::End(text("end reason")?),
            T_TCP_OPEN => Msg::TcpOpen(id),
            T_TCP_DATA => Msg::TcpData(id, body.to_vec()),
            T_TCP_CLOSE => Msg::TcpClose(id),
            T_PUT_START => Msg::PutStart(
                id,
                serde_json::from_slice(body).map_err(|_| from_json("put header"))?,
            ),
            T_PUT_READY => Msg::PutReady(id),
            T_PUT_CHUNK => Msg::PutChunk(id, body.to_vec()),
            T_PUT_END => Msg::PutEnd(id, hash("put end")?),
            T_GET_START => Msg::GetStart(id, text("file name")?),
            T_GET_META => Msg::GetMeta(
                id,
                u64::from_be_bytes(
                    body.try_into()
                        .map_err(|_| MsgError("file size is not 8 bytes".into()))?,
                ),
            ),
            T_GET_CHUNK => Msg::GetChunk(id, body.to_vec()),
            T_GET_END => Msg::GetEnd(id, hash("get end")?),
            T_FILE_OK => Msg::FileOk(
                id,
                serde_json::from_slice(body).map_err(|_| from_json("file result"))?,
            ),
            T_DENY => Msg::Deny(
                id,
                serde_json::from_slice(body).map_err(|_| from_json("denial"))?,
            ),
            other => return Err(MsgError(format!("unknown message tag {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::authz::{Permission, RefusalCode};

    #[test]
    fn every_message_round_trips() {
        let all = vec![
            Msg::Welcome(Grant {
                permissions: vec![Permission::View, Permission::FileTransfer],
                engineer: "eng".into(),
                idle_timeout: Duration::from_secs(60),
                total_timeout: Duration::from_secs(3600),
            }),
            Msg::Refused(Refusal::new(RefusalCode::BadPassword, "wrong password")),
            Msg::End("bye".into()),
            Msg::TcpOpen(7),
            Msg::TcpData(7, vec![1, 2, 3]),
            Msg::TcpClose(7),
            Msg::PutStart(
                9,
                PutHeader {
                    name: "a/b.txt".into(),
                    size: 12,
                },
            ),
            Msg::PutReady(9),
            Msg::PutChunk(9, vec![0; 100]),
            Msg::PutEnd(9, [7; 32]),
            Msg::GetStart(10, "x.bin".into()),
            Msg::GetMeta(10, u64::MAX),
            Msg::GetChunk(10, vec![]),
            Msg::GetEnd(10, [1; 32]),
            Msg::FileOk(
                10,
                FileDone {
                    name: "x".into(),
                    size: 1,
                    sha256: "00".into(),
                },
            ),
            Msg::Deny(11, Refusal::new(RefusalCode::Internal, "no")),
        ];
        let mut buf = Vec::new();
        for m in all {
            m.encode(&mut buf);
            assert!(buf.len() <= MAX_PLAINTEXT_BYTES);
            assert_eq!(Msg::decode(&buf).unwrap(), m);
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [
            &[][..],
            &[T_TCP_OPEN, 0, 0][..],
            &[99, 0, 0, 0, 0][..],
            &[T_PUT_END, 0, 0, 0, 1, 1, 2][..],
            &[T_WELCOME, 0, 0, 0, 0, b'{'][..],
            &[T_GET_META, 0, 0, 0, 0, 1][..],
        ] {
            assert!(Msg::decode(bad).is_err(), "{bad:?}");
        }
    }
}
