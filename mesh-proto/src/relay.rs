//! Relay framing: WireGuard (and disco) datagrams between members that have no direct path
//! travel through a relay run by the coordinator. The payload stays end-to-end encrypted;
//! the relay only sees who talks to whom.
//!
//! All relay datagrams start with [`MAGIC`] (`b"wmL1"`, never a WireGuard message type)
//! and a one-byte type:
//!
//! ```text
//! node -> relay   HELLO      "wmL1" | 0x05 | node public key (32) | zeros (32)
//! relay -> node   CHALLENGE  "wmL1" | 0x06 | node public key (32) | cookie (32)
//! node -> relay   REGISTER   "wmL1" | 0x01 | node public key (32) | cookie (32) | proof (32)
//! relay -> node   REGISTERED "wmL1" | 0x04 | node public key (32) | next cookie (32)
//! node -> relay   SEND       "wmL1" | 0x02 | destination public key (32) | payload ...
//! relay -> node   DELIVER    "wmL1" | 0x03 | source public key (32)      | payload ...
//! ```
//!
//! REGISTER binds the datagram's source address (as the relay sees it, i.e. after NAT) to
//! the member's key; nodes repeat it every [`REGISTER_INTERVAL_SECS`] seconds, which also
//! keeps their NAT mapping to the relay open. Registration is bound to the sender's address
//! and to time, so a captured REGISTER is worth nothing elsewhere or later:
//! - the **cookie** is [`cookie`]`(relay secret, epoch, address, key)`, a MAC the relay
//!   alone can make, for the address it saw the HELLO (or the last REGISTER) come from and
//!   the current [`COOKIE_EPOCH_SECS`] window; the relay accepts the current and the
//!   previous window's cookie, so one lives 30–60 s;
//! - the **proof** is [`proof`]`(token, cookie, key)` with the member's relay token
//!   [`token`]`(relay secret, key)`, which the coordinator hands to the member over the
//!   authenticated control connection. The token itself never travels in a datagram.
//!
//! A REGISTER replayed from another address carries a cookie for the victim's address and
//! is dropped; replayed after the window, its cookie is stale; a forged key has no token.
//! REGISTERED carries the cookie for the next REGISTER, so a registered node needs one
//! exchange per interval; it sends HELLO again only when it has no fresh cookie or its
//! last REGISTER went unanswered (lost, or its NAT moved it to another address).
//!
//! No answer is larger than the datagram it answers (HELLO is padded to CHALLENGE's
//! size), so the relay amplifies nothing for a spoofed source.
//!
//! All MACs here are SHA-256 over a domain string and fixed-length fields (so length
//! extension cannot produce another valid input).
//!
//! SEND is forwarded only when the source address is registered to a member that is
//! authorised in the same network as the destination, and the destination is registered;
//! everything else is dropped and counted.

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest as _, Sha256};

use crate::Key;

/// First four bytes of every relay datagram.
pub const MAGIC: [u8; 4] = *b"wmL1";
/// Register this source address as the member's (with a cookie and a proof).
pub const REGISTER: u8 = 1;
/// Forward the payload to a member.
pub const SEND: u8 = 2;
/// A forwarded payload, with the sender's key.
pub const DELIVER: u8 = 3;
/// The relay's acknowledgement of REGISTER, with the next cookie.
pub const REGISTERED: u8 = 4;
/// Ask the relay for a cookie.
pub const HELLO: u8 = 5;
/// The relay's cookie for the address the HELLO came from.
pub const CHALLENGE: u8 = 6;
/// Bytes before the payload in SEND and DELIVER.
pub const HEADER_LEN: usize = 4 + 1 + 32;
/// Length of HELLO, CHALLENGE and REGISTERED.
pub const SHORT_LEN: usize = HEADER_LEN + 32;
/// Length of REGISTER.
pub const REGISTER_LEN: usize = HEADER_LEN + 64;
/// How often nodes re-register (also their NAT keepalive toward the relay).
pub const REGISTER_INTERVAL_SECS: u64 = 10;
/// A cookie's window: one is accepted in its own window and the next.
pub const COOKIE_EPOCH_SECS: u64 = 30;

/// A parsed relay datagram; payloads borrow from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// HELLO.
    Hello {
        /// The member's key.
        key: Key,
    },
    /// CHALLENGE.
    Challenge {
        /// The member's key.
        key: Key,
        /// The cookie to put in REGISTER.
        cookie: Key,
    },
    /// REGISTER.
    Register {
        /// The member's key.
        key: Key,
        /// The relay's cookie for this address.
        cookie: Key,
        /// [`proof`] of holding the key's relay token.
        proof: Key,
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
        /// The cookie for the next REGISTER.
        cookie: Key,
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
        HELLO if datagram.len() == SHORT_LEN => Some(Frame::Hello { key }),
        CHALLENGE if datagram.len() == SHORT_LEN => Some(Frame::Challenge {
            key,
            cookie: key_at(datagram, HEADER_LEN)?,
        }),
        REGISTER if datagram.len() == REGISTER_LEN => Some(Frame::Register {
            key,
            cookie: key_at(datagram, HEADER_LEN)?,
            proof: key_at(datagram, HEADER_LEN + 32)?,
        }),
        SEND => Some(Frame::Send {
            to: key,
            payload: &datagram[HEADER_LEN..],
        }),
        DELIVER => Some(Frame::Deliver {
            from: key,
            payload: &datagram[HEADER_LEN..],
        }),
        REGISTERED if datagram.len() == SHORT_LEN => Some(Frame::Registered {
            key,
            cookie: key_at(datagram, HEADER_LEN)?,
        }),
        _ => None,
    }
}

/// Writes the header (`kind`, `key`) into `out[..HEADER_LEN]`.
pub fn write_header(out: &mut [u8], kind: u8, key: &Key) {
    out[..4].copy_from_slice(&MAGIC);
    out[4] = kind;
    out[5..HEADER_LEN].copy_from_slice(&key.0);
}

/// Writes a CHALLENGE or REGISTERED (`kind`) for `key` with `cookie` into
/// `out[..SHORT_LEN]` (the relay answers in its receive buffer).
pub fn write_short(out: &mut [u8], kind: u8, key: &Key, cookie: &Key) {
    write_header(out, kind, key);
    out[HEADER_LEN..SHORT_LEN].copy_from_slice(&cookie.0);
}

/// A whole SEND or DELIVER datagram.
pub fn frame(kind: u8, key: &Key, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + payload.len()];
    write_header(&mut out, kind, key);
    out[HEADER_LEN..].copy_from_slice(payload);
    out
}

/// A HELLO datagram (padded with zeros to the size of the CHALLENGE it asks for).
pub fn hello(key: &Key) -> Vec<u8> {
    let mut out = vec![0u8; SHORT_LEN];
    write_header(&mut out, HELLO, key);
    out
}

/// A CHALLENGE or REGISTERED datagram.
pub fn short(kind: u8, key: &Key, cookie: &Key) -> Vec<u8> {
    let mut out = vec![0u8; SHORT_LEN];
    write_short(&mut out, kind, key, cookie);
    out
}

/// A REGISTER datagram for `key`, proving `token` against `cookie`.
pub fn register(key: &Key, token: &Key, cookie: &Key) -> Vec<u8> {
    let mut out = vec![0u8; REGISTER_LEN];
    write_header(&mut out, REGISTER, key);
    out[HEADER_LEN..HEADER_LEN + 32].copy_from_slice(&cookie.0);
    out[HEADER_LEN + 32..].copy_from_slice(&proof(token, cookie, key).0);
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

/// The cookie window that `now` (Unix seconds) falls in.
pub fn epoch(now: u64) -> u64 {
    now / COOKIE_EPOCH_SECS
}

/// The relay's cookie for `key` at `addr` in window `epoch`.
pub fn cookie(relay_secret: &Key, epoch: u64, addr: &SocketAddr, key: &Key) -> Key {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let mut h = Sha256::new();
    h.update(b"wiremesh-relay-cookie-v1");
    h.update(relay_secret.0);
    h.update(epoch.to_be_bytes());
    h.update(ip);
    h.update(addr.port().to_be_bytes());
    h.update(key.0);
    Key(h.finalize().into())
}

/// What REGISTER carries to show it holds `token` for `key`, bound to `cookie`.
pub fn proof(token: &Key, cookie: &Key, key: &Key) -> Key {
    let mut h = Sha256::new();
    h.update(b"wiremesh-relay-register-v1");
    h.update(token.0);
    h.update(cookie.0);
    h.update(key.0);
    Key(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let a = Key([1; 32]);
        let c = Key([2; 32]);
        let t = Key([3; 32]);
        assert_eq!(parse(&hello(&a)), Some(Frame::Hello { key: a }));
        assert_eq!(
            parse(&short(CHALLENGE, &a, &c)),
            Some(Frame::Challenge { key: a, cookie: c })
        );
        assert_eq!(
            parse(&register(&a, &t, &c)),
            Some(Frame::Register {
                key: a,
                cookie: c,
                proof: proof(&t, &c, &a)
            })
        );
        assert_eq!(
            parse(&short(REGISTERED, &a, &c)),
            Some(Frame::Registered { key: a, cookie: c })
        );
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
        for good in [register(&a, &a, &a), hello(&a), short(REGISTERED, &a, &a)] {
            for n in 0..good.len() {
                assert_eq!(parse(&good[..n]), None, "truncated to {n}");
            }
            let mut long = good.clone();
            long.push(0);
            assert_eq!(parse(&long), None, "one byte too long");
        }
        let mut bad = frame(SEND, &a, b"x");
        bad[4] = 9;
        assert_eq!(parse(&bad), None);
        bad[0] = b'x';
        assert_eq!(parse(&bad), None);
    }

    #[test]
    fn the_old_clear_token_register_is_not_a_frame() {
        // "wmL1" | 1 | key | token: the format that could be replayed.
        let mut old = vec![0u8; HEADER_LEN + 32];
        write_header(&mut old, REGISTER, &Key([1; 32]));
        assert_eq!(parse(&old), None);
    }

    #[test]
    fn no_answer_is_larger_than_its_question() {
        let a = Key([1; 32]);
        assert!(short(CHALLENGE, &a, &a).len() <= hello(&a).len());
        assert!(short(REGISTERED, &a, &a).len() <= register(&a, &a, &a).len());
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

    #[test]
    fn cookies_depend_on_every_input() {
        let s = Key([7; 32]);
        let k = Key([1; 32]);
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let base = cookie(&s, 10, &a, &k);
        assert_eq!(base, cookie(&s, 10, &a, &k));
        assert_ne!(base, cookie(&Key([8; 32]), 10, &a, &k));
        assert_ne!(base, cookie(&s, 11, &a, &k));
        assert_ne!(base, cookie(&s, 10, &"192.0.2.2:5000".parse().unwrap(), &k));
        assert_ne!(base, cookie(&s, 10, &"192.0.2.1:5001".parse().unwrap(), &k));
        assert_ne!(base, cookie(&s, 10, &a, &Key([2; 32])));
        assert_eq!(epoch(59), 1);
        assert_eq!(epoch(60), 2);
    }

    #[test]
    fn proofs_depend_on_token_cookie_and_key() {
        let (t, c, k) = (Key([1; 32]), Key([2; 32]), Key([3; 32]));
        let p = proof(&t, &c, &k);
        assert_ne!(p, proof(&Key([9; 32]), &c, &k));
        assert_ne!(p, proof(&t, &Key([9; 32]), &k));
        assert_ne!(p, proof(&t, &c, &Key([9; 32])));
        // The token is not recoverable from the datagram: it is not in it.
        let d = register(&k, &t, &c);
        assert!(!d.windows(32).any(|w| w == t.0));
    }
}
