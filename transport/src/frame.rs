//! The bytes on a stream. Pure functions (no I/O) so they can be property-tested.
//!
//! Every bidirectional stream starts with one kind byte:
//! - [`KIND_REQUEST`]: the rest of the client's half is one postcard message; the server
//!   answers with one reply and finishes.
//! - [`KIND_BATCH`]: the rest is a sequence of length-prefixed frames (header first, then
//!   batches) ended by a clean finish; the server answers with one reply (the ack).
//!
//! A reply is one status byte followed by either the postcard response ([`STATUS_OK`]) or a
//! UTF-8 error text ([`STATUS_ERR`]), so a caller can tell "the handler answered" from "the
//! remote could not decode / was overloaded / has no handler".
//!
//! postcard encodes enum variants by index: wire enums may only get variants appended.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub const KIND_REQUEST: u8 = 1;
pub const KIND_BATCH: u8 = 2;
pub const STATUS_OK: u8 = 0;
pub const STATUS_ERR: u8 = 1;
/// Bytes of a batch-stream frame's length prefix (u32 little-endian).
pub const LEN_PREFIX: usize = 4;
/// Error replies are truncated to this many bytes: they are for humans and logs.
const MAX_ERROR_TEXT: usize = 4096;

/// Why bytes could not be turned into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("stream ended in the middle of a frame")]
    Truncated,
    #[error("empty reply")]
    EmptyReply,
    #[error("unknown reply status {0}")]
    UnknownStatus(u8),
    #[error("{0}")]
    Decode(String),
    #[error("{0}")]
    Encode(String),
}

/// A parsed reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The handler answered; postcard bytes of the response.
    Ok(&'a [u8]),
    /// The remote refused (decode failure, overload, no handler, too large).
    Err(String),
}

/// `[kind] ++ postcard(value)`, refused if the postcard part exceeds `limit`.
pub fn encode_message<T: Serialize + ?Sized>(
    kind: u8,
    value: &T,
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    let out =
        postcard::to_extend(value, vec![kind]).map_err(|e| FrameError::Encode(e.to_string()))?;
    check_size(out.len() - 1, limit)?;
    Ok(out)
}

/// Decodes a complete postcard message; trailing bytes are an error (they mean the two sides
/// disagree about the type).
pub fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| FrameError::Decode(e.to_string()))?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(FrameError::Decode(format!(
            "{} unexpected trailing bytes",
            rest.len()
        )))
    }
}

/// `[STATUS_OK] ++ postcard(value)`, refused if larger than `limit`.
pub fn encode_ok<T: Serialize + ?Sized>(value: &T, limit: usize) -> Result<Vec<u8>, FrameError> {
    let out = postcard::to_extend(value, vec![STATUS_OK])
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    check_size(out.len() - 1, limit)?;
    Ok(out)
}

/// `[STATUS_ERR] ++ utf8(message)` (truncated to a few KiB at a char boundary).
pub fn encode_err(message: &str) -> Vec<u8> {
    let mut end = message.len().min(MAX_ERROR_TEXT);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(end + 1);
    out.push(STATUS_ERR);
    out.extend_from_slice(&message.as_bytes()[..end]);
    out
}

/// Splits a reply into its status and body.
pub fn parse_reply(bytes: &[u8]) -> Result<Reply<'_>, FrameError> {
    match bytes.split_first() {
        None => Err(FrameError::EmptyReply),
        Some((&STATUS_OK, body)) => Ok(Reply::Ok(body)),
        Some((&STATUS_ERR, body)) => Ok(Reply::Err(String::from_utf8_lossy(body).into_owned())),
        Some((&other, _)) => Err(FrameError::UnknownStatus(other)),
    }
}

/// `u32-le length ++ postcard(value)` for a batch stream, refused if larger than `limit`.
pub fn encode_frame<T: Serialize + ?Sized>(value: &T, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(value, vec![0u8; LEN_PREFIX])
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = out.len() - LEN_PREFIX;
    check_size(len, limit)?;
    let len = u32::try_from(len).map_err(|_| FrameError::TooLarge { size: len, limit })?;
    out[..LEN_PREFIX].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// Reads a frame's length prefix and checks it against `limit` before anything is allocated.
pub fn frame_len(prefix: [u8; LEN_PREFIX], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix) as usize;
    check_size(len, limit)?;
    Ok(len)
}

/// One frame's body and the bytes after it.
pub type FrameSplit<'a> = (&'a [u8], &'a [u8]);

/// Takes one frame off the front of `buf`: `Ok(None)` if `buf` is empty (a clean end),
/// `Err(Truncated)` if it ends inside a frame.
pub fn split_frame(buf: &[u8], limit: usize) -> Result<Option<FrameSplit<'_>>, FrameError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let Some((prefix, rest)) = buf.split_first_chunk::<LEN_PREFIX>() else {
        return Err(FrameError::Truncated);
    };
    let len = frame_len(*prefix, limit)?;
    if rest.len() < len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(rest.split_at(len)))
}

fn check_size(size: usize, limit: usize) -> Result<(), FrameError> {
    if size > limit {
        Err(FrameError::TooLarge { size, limit })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u64),
        Put { key: String, value: Vec<u8> },
        Batch(Vec<(u32, Option<String>)>),
        Empty,
    }

    fn arb_msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            any::<u64>().prop_map(Msg::Ping),
            (".{0,40}", proptest::collection::vec(any::<u8>(), 0..200))
                .prop_map(|(key, value)| Msg::Put { key, value }),
            proptest::collection::vec((any::<u32>(), proptest::option::of(".{0,10}")), 0..20)
                .prop_map(Msg::Batch),
            Just(Msg::Empty),
        ]
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), limit in 0usize..1024) {
            let _ = decode_message::<Msg>(&bytes);
            let _ = decode_message::<(String, Vec<u64>)>(&bytes);
            let _ = parse_reply(&bytes);
            let mut rest = &bytes[..];
            // Walking frames over junk ends (Ok(None) or Err) without panicking or looping.
            for _ in 0..=bytes.len() {
                match split_frame(rest, limit) {
                    Ok(Some((body, tail))) => {
                        prop_assert!(body.len() <= limit);
                        let _ = decode_message::<Msg>(body);
                        rest = tail;
                    }
                    _ => break,
                }
            }
        }

        #[test]
        fn valid_messages_round_trip(msg in arb_msg()) {
            let wire = encode_message(KIND_REQUEST, &msg, 1 << 20).unwrap();
            prop_assert_eq!(wire[0], KIND_REQUEST);
            prop_assert_eq!(decode_message::<Msg>(&wire[1..]).unwrap(), msg.clone());

            let reply = encode_ok(&msg, 1 << 20).unwrap();
            match parse_reply(&reply).unwrap() {
                Reply::Ok(body) => prop_assert_eq!(decode_message::<Msg>(body).unwrap(), msg.clone()),
                Reply::Err(e) => prop_assert!(false, "unexpected error reply {}", e),
            }
        }

        #[test]
        fn frame_sequences_round_trip(msgs in proptest::collection::vec(arb_msg(), 0..20)) {
            let mut wire = Vec::new();
            for m in &msgs {
                wire.extend(encode_frame(m, 1 << 20).unwrap());
            }
            let mut rest = &wire[..];
            let mut back = Vec::new();
            while let Some((body, tail)) = split_frame(rest, 1 << 20).unwrap() {
                back.push(decode_message::<Msg>(body).unwrap());
                rest = tail;
            }
            prop_assert_eq!(back, msgs);
        }

        #[test]
        fn truncated_frames_are_detected(msg in arb_msg(), cut in 1usize..64) {
            let wire = encode_frame(&msg, 1 << 20).unwrap();
            // Cutting everything would leave an empty buffer, which is a clean end.
            let cut = cut.min(wire.len() - 1);
            prop_assert_eq!(split_frame(&wire[..wire.len() - cut], 1 << 20), Err(FrameError::Truncated));
        }

        #[test]
        fn error_replies_round_trip(text in ".{0,5000}") {
            match parse_reply(&encode_err(&text)).unwrap() {
                Reply::Err(back) => prop_assert!(text.starts_with(&back)),
                Reply::Ok(_) => prop_assert!(false),
            }
        }
    }

    #[test]
    fn limits_are_enforced_on_both_ends() {
        let big = vec![7u8; 1000];
        assert!(matches!(
            encode_message(KIND_REQUEST, &big, 100),
            Err(FrameError::TooLarge { limit: 100, .. })
        ));
        assert!(matches!(
            encode_ok(&big, 100),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            encode_frame(&big, 100),
            Err(FrameError::TooLarge { .. })
        ));
        // A hostile length prefix is refused before allocation.
        assert!(matches!(
            split_frame(&[0xff, 0xff, 0xff, 0xff, 1], 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(parse_reply(&[]), Err(FrameError::EmptyReply));
        assert_eq!(parse_reply(&[9]), Err(FrameError::UnknownStatus(9)));
        assert!(
            decode_message::<u8>(&[1, 2]).is_err(),
            "trailing bytes must be refused"
        );
    }
}
