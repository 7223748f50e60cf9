//! Relay framing: WireGuard (and disco) datagrams between members that have no direct path
//! travel through a relay run by the coordinator. The payload stays end-to-end encrypted;
//! the relay only sees who talks to whom.
//!
//! All relay datagrams start with [`MAGIC`] (`b"wmL1"`, never a WireGuard message type)
//! and a one-byte type:
//!
//! ```text
//! node -> relay   REGISTER  "wmL1" | 0x01 | node public key (32) | relay token (32)
//! node -> relay   SEND      "wmL1" | 0x02 | destination public key (32) | payload ...
//! relay -> node   DELIVER   "wmL1" | 0x03 | source public key (32)      | payload ...
//! relay -> node   REGISTERED "wmL1" | 0x04 | node public key (32)
//! ```
//!
//! REGISTER binds the datagram's source address (as the relay sees it, i.e. after NAT) to
//! the member's key; nodes repeat it every [`REGISTER_INTERVAL_SECS`] seconds, which also
//! keeps their NAT mapping to the relay open. The relay token is
//! [`token`]`(relay secret, key)`: the coordinator hands it to the member over the
//! authenticated control connection, so only the holder of the key's control session can
//! register it. SEND is forwarded only when the source address is registered to a member
//! that is authorised in the same network as the destination, and the destination is
//! registered; everything else is dropped and counted.

use sha2::{Digest as _, Sha256};

use crate::Key;

/// First four bytes of every relay datagram.
pub const MAGIC: [u8; 4] = *b"wmL1";
/// Register this source address as the member's.
pub const REGISTER: u8 = 1;
/// Forward the payload to a member.
pub const SEND: u8 = 2;
/// A forwarded payload, with the sender's key.
pub const DELIVER: u8 = 3;
/// The relay's acknowledgement of REGISTER.
pub const REGISTERED: u8 = 4;
/// Bytes before the payload in SEND and DELIVER.
pub const HEADER_LEN: usize = 4 + 1 + 32;
/// How often nodes re-register (also their NAT keepalive toward the relay).
pub const REGISTER_INTERVAL_SECS: u64 = 10;

/// A parsed relay datagram; payloads borrow from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// REGISTER.
    Register {
        /// The member's key.
        key: Key,
        /// Its relay token.
        token: Key,
    },
    /// SEND.
    Send {
        /// Destination member.
        to: Key,
        /// The datagram to forward.
        payload: &'a [u8],
    },
    /// DELIVER.
    Deliver {
        /// Source member.
        from: Key,
        /// The forwarded datagram.
        payload: &'a [u8],
    },
    /// REGISTERED.
    Registered {
        /// The member's key.
        key: Key,
    },
}

fn key_at(b: &[u8], at: usize) -> Option<Key> {
    let bytes: [u8; 32] = b.get(at..at + 32)?.try_into().ok()?;
    Some(Key(bytes))
}

/// Parses a relay datagram; `None` for anything malformed.
pub fn parse(datagram: &[u8]) -> Option<Frame<'_>> {
    if datagram.get(..4)? != MAGIC {
        return None;
    }
    let key = key_at(datagram, 5)?;
    match *datagram.get(4)? {
        REGISTER if datagram.len() == HEADER_LEN + 32 => Some(Frame::Register {
            key,
            token: key_at(datagram, HEADER_LEN)?,
        }),
        SEND => Some(Frame::Send {
            to: key,
            payload: &datagram[HEADER_LEN..],
        }),
        DELIVER => Some(Frame::Deliver {
            from: key,
            payload: &datagram[HEADER_LEN..],
        }),
        REGISTERED if datagram.len() == HEADER_LEN => Some(Frame::Registered { key }),
        _ => None,
    }
}

/// Writes the SEND or DELIVER header (`kind`, `key`) into `out[..HEADER_LEN]`.
pub fn write_header(out: &mut [u8], kind: u8, key: &Key) {
    out[..4].copy_from_slice(&MAGIC);
    out[4] = kind;
    out[5..HEADER_LEN].copy_from_slice(&key.0);
}

/// A whole SEND or DELIVER datagram.
pub fn frame(kind: u8, key: &Key, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + payload.len()];
    write_header(&mut out, kind, key);
    out[HEADER_LEN..].copy_from_slice(payload);
    out
}

/// A REGISTER datagram.
pub fn register(key: &Key, token: &Key) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + 32];
    write_header(&mut out, REGISTER, key);
    out[HEADER_LEN..].copy_from_slice(&token.0);
    out
}

/// A REGISTERED datagram.
pub fn registered(key: &Key) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    write_header(&mut out, REGISTERED, key);
    out
}

/// The relay token of `key` under the relay's secret.
pub fn token(relay_secret: &Key, key: &Key) -> Key {
    let mut h = Sha256::new();
    h.update(b"wiremesh-relay-token-v1");
    h.update(relay_secret.0);
    h.update(key.0);
    Key(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let a = Key([1; 32]);
        let t = Key([2; 32]);
        assert_eq!(
            parse(&register(&a, &t)),
            Some(Frame::Register { key: a, token: t })
        );
        assert_eq!(parse(&registered(&a)), Some(Frame::Registered { key: a }));
        let send = frame(SEND, &a, b"hello");
        assert_eq!(
            parse(&send),
            Some(Frame::Send {
                to: a,
                payload: b"hello"
            })
        );
        let deliver = frame(DELIVER, &a, b"");
        assert_eq!(
            parse(&deliver),
            Some(Frame::Deliver {
                from: a,
                payload: b""
            })
        );
    }

    #[test]
    fn rejects_malformed() {
        let a = Key([1; 32]);
        let good = register(&a, &a);
        for n in 0..good.len() {
            assert_eq!(parse(&good[..n]), None, "truncated to {n}");
        }
        let mut bad = frame(SEND, &a, b"x");
        bad[4] = 9;
        assert_eq!(parse(&bad), None);
        bad[0] = b'x';
        assert_eq!(parse(&bad), None);
    }

    #[test]
    fn tokens_depend_on_secret_and_key() {
        let s = Key([7; 32]);
        assert_ne!(token(&s, &Key([1; 32])), token(&s, &Key([2; 32])));
        assert_ne!(
            token(&s, &Key([1; 32])),
            token(&Key([8; 32]), &Key([1; 32]))
        );
        assert_eq!(token(&s, &Key([1; 32])), token(&s, &Key([1; 32])));
    }
}
