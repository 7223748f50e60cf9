//! Disco: authenticated path probes between peers, sent on the WireGuard socket.
//!
//! Two peers find and keep a direct path by exchanging [`DiscoMsg`]s (tailscale's `disco`
//! protocol is the model): a [`DiscoMsg::Ping`] to a candidate address, a
//! [`DiscoMsg::Pong`] back to where the ping came from, and a [`DiscoMsg::CallMeMaybe`]
//! through the relay asking the other side to probe back at the same time (simultaneous
//! open through NATs). The path logic lives in [`crate::paths`]; this module is the wire.
//!
//! # Demultiplexing
//!
//! meshd receives WireGuard, disco, reflection answers and relay frames on one UDP socket.
//! [`classify`] tells them apart from the first four bytes, without allocating:
//!
//! ```text
//! byte 0     1     2     3
//!      1..=4 0x00  0x00  0x00   WireGuard (message type, then three reserved zero bytes)
//!      'w'   'm'   'D'   '1'    disco (this module)
//!      'w'   'm'   'R'   '1'    reflection (crate::reflect)
//!      'w'   'm'   'L'   '1'    relay framing (crate::relay)
//! ```
//!
//! # Sealed datagram
//!
//! ```text
//!  0               4                               36                              60
//! +---+---+---+---+-------------------------------+-------------------------------+
//! |'w' 'm' 'D' '1'| sender's static public key    | nonce (24 bytes, random)      |
//! |               | (32 bytes, WireGuard key)     |                               |
//! +---+---+---+---+-------------------------------+-------------------------------+
//!  60
//! +-------------------------------------------------------+-----------------------+
//! | ciphertext of the encoded message (same length)       | Poly1305 tag (16)     |
//! +-------------------------------------------------------+-----------------------+
//! ```
//!
//! The AEAD is XChaCha20-Poly1305 with the first 36 bytes (magic and sender key) as
//! associated data, under the pair's [`SharedKey`]:
//! `SHA-256("wiremesh-disco-v1" || X25519(my_static_private, peer_static_public))`.
//! Both peers derive the same key from their WireGuard static keys, so there is no key
//! exchange, and only the two of them can seal or open their messages. Binding the sender
//! key as associated data means a message cannot be re-labelled as coming from someone else,
//! and [`open`] refuses a datagram whose sender is not the key's peer (so a node's own
//! message reflected back at it is not accepted as the peer's).
//!
//! # Encoded message (the plaintext)
//!
//! ```text
//! Ping         0x01 | tx (12)                                          13 bytes
//! Pong         0x02 | tx (12) | address                                20 or 32 bytes
//! CallMeMaybe  0x03 | count u8 (≤ 16) | count × address                2 + 7..19 each
//!
//! address      family u8 (4 | 6) | port u16 BE | 4 or 16 address bytes
//! ```
//!
//! `tx` is a random transaction id chosen by the pinger and echoed in the pong; the pong's
//! address is the source address the responder saw the ping come from. Trailing bytes, an
//! unknown type or family, or more than [`MAX_CANDIDATES`] candidates make a message
//! malformed. The largest datagram is [`MAX_DATAGRAM`] bytes.

use std::net::SocketAddr;

use chacha20poly1305::aead::AeadInPlace as _;
use chacha20poly1305::{KeyInit as _, Tag, XChaCha20Poly1305, XNonce};
use sha2::{Digest as _, Sha256};

use crate::reflect::{put_addr, take_addr};
use crate::Key;

/// The four bytes every disco datagram starts with.
pub const MAGIC: [u8; 4] = *b"wmD1";
/// Most candidates one [`DiscoMsg::CallMeMaybe`] carries; [`seal`] sends the first ones.
pub const MAX_CANDIDATES: usize = 16;
/// Label hashed into the [`SharedKey`], so the key is used for nothing else.
pub const KEY_LABEL: &[u8] = b"wiremesh-disco-v1";

/// Magic, sender key, nonce.
const HEADER_LEN: usize = 4 + 32 + 24;
/// Bytes authenticated but not encrypted: magic and sender key.
const AAD_LEN: usize = 4 + 32;
const TAG_LEN: usize = 16;
/// Family, port, IPv6 address.
const MAX_ADDR_LEN: usize = 1 + 2 + 16;
/// The longest plaintext: a CallMeMaybe with [`MAX_CANDIDATES`] IPv6 candidates.
const MAX_PLAINTEXT: usize = 2 + MAX_CANDIDATES * MAX_ADDR_LEN;
/// The longest disco datagram (a full CallMeMaybe of IPv6 candidates): 382 bytes.
pub const MAX_DATAGRAM: usize = HEADER_LEN + MAX_PLAINTEXT + TAG_LEN;
/// The shortest disco datagram that can be valid (empty plaintext).
const MIN_DATAGRAM: usize = HEADER_LEN + TAG_LEN;

const TYPE_PING: u8 = 1;
const TYPE_PONG: u8 = 2;
const TYPE_CALL_ME_MAYBE: u8 = 3;

/// What a datagram on the WireGuard socket is, by its first four bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A WireGuard message (type 1..=4 followed by three zero bytes).
    WireGuard,
    /// A disco message (`wmD1`): [`sender`], then [`open`].
    Disco,
    /// A reflection answer (`wmR1`): [`crate::reflect::parse_response`].
    Reflect,
    /// A relay frame (`wmL1`): [`crate::relay`].
    Relay,
    /// Anything else (drop and count it).
    Unknown,
}

/// Tells the protocols sharing the WireGuard socket apart. Reads four bytes; no allocation.
#[inline]
pub fn classify(datagram: &[u8]) -> Kind {
    match datagram.first_chunk::<4>() {
        Some([1..=4, 0, 0, 0]) => Kind::WireGuard,
        Some(&MAGIC) => Kind::Disco,
        Some(&crate::reflect::MAGIC) => Kind::Reflect,
        Some(&crate::relay::MAGIC) => Kind::Relay,
        _ => Kind::Unknown,
    }
}

/// A disco message (the plaintext of a sealed datagram).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DiscoMsg {
    /// "Are you there on this path?" Sent to a candidate address (or through the relay).
    Ping {
        /// Random transaction id, echoed in the pong.
        tx: [u8; 12],
    },
    /// The answer to a ping, sent back to the address the ping came from.
    Pong {
        /// The ping's transaction id.
        tx: [u8; 12],
        /// The source address the responder saw the ping come from (the pinger's
        /// reflexive address on this path; unspecified when the ping came via the relay).
        observed: SocketAddr,
    },
    /// "Probe me now, at these addresses": sent through the relay so that both sides
    /// probe at the same time and their NATs open for each other.
    CallMeMaybe {
        /// The sender's own endpoint candidates (at most [`MAX_CANDIDATES`] are sent).
        candidates: Vec<SocketAddr>,
    },
}

/// Why a disco datagram was not accepted. Tiny and copyable: these happen on the receive
/// path and are counted, not logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DiscoError {
    /// Does not start with `wmD1`.
    #[error("not a disco datagram")]
    NotDisco,
    /// Shorter than a header and a tag, or longer than [`MAX_DATAGRAM`].
    #[error("disco datagram has an impossible length")]
    Length,
    /// The sender field names someone other than the peer this key is shared with.
    #[error("disco datagram from another sender")]
    WrongSender,
    /// The peer's public key is a low-order point, so the shared key is not secret.
    #[error("peer key is not usable for disco")]
    WeakKey,
    /// Authentication failed: forged, corrupted, or sealed under another key.
    #[error("disco datagram failed authentication")]
    Auth,
    /// Authentic, but not a message this version understands.
    #[error("malformed disco message")]
    Malformed,
}

/// The key two peers share for disco, derived from their WireGuard static keys.
///
/// `Debug` prints only the peer's fingerprint.
#[derive(Clone)]
pub struct SharedKey {
    key: [u8; 32],
    peer: Key,
    contributory: bool,
}

impl SharedKey {
    /// `SHA-256("wiremesh-disco-v1" || X25519(my_private, peer_public))`; the peer computes
    /// the same key from its private key and our public key.
    pub fn new(my_private: &Key, peer_public: &Key) -> SharedKey {
        let secret = x25519_dalek::StaticSecret::from(my_private.0);
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer_public.0));
        let mut hash = Sha256::new();
        hash.update(KEY_LABEL);
        hash.update(shared.as_bytes());
        SharedKey {
            key: hash.finalize().into(),
            peer: *peer_public,
            contributory: shared.was_contributory(),
        }
    }

    /// The peer this key is shared with.
    pub fn peer(&self) -> &Key {
        &self.peer
    }

    /// False when the peer's public key is a low-order point: the "shared" secret is then a
    /// constant anyone can compute, and [`open`] refuses everything under this key.
    pub fn is_usable(&self) -> bool {
        self.contributory
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.key.into())
    }
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedKey(peer {})", self.peer.fingerprint())
    }
}

/// Encodes and seals `msg` for the peer of `key`. `my_public` is our static public key (the
/// peer finds the key by it); `nonce` must be random (24 bytes: collisions are negligible).
/// A CallMeMaybe carries at most its first [`MAX_CANDIDATES`] candidates.
pub fn seal(key: &SharedKey, my_public: &Key, nonce: [u8; 24], msg: &DiscoMsg) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&my_public.0);
    out.extend_from_slice(&nonce);
    encode(&mut out, msg);
    let (aad, plaintext) = out.split_at_mut(AAD_LEN);
    let plaintext = &mut plaintext[24..];
    // Fails only for buffers beyond 256 GiB; ours is at most MAX_PLAINTEXT bytes.
    #[allow(clippy::expect_used)]
    let tag = key
        .cipher()
        .encrypt_in_place_detached(&XNonce::from(nonce), aad, plaintext)
        .expect("disco plaintext is far below the AEAD length limit");
    out.extend_from_slice(&tag);
    out
}

/// The sender's static public key of a disco datagram (to find its [`SharedKey`]), or
/// `None` if `datagram` cannot be a disco datagram. Not authenticated until [`open`].
pub fn sender(datagram: &[u8]) -> Option<Key> {
    if classify(datagram) != Kind::Disco || !(MIN_DATAGRAM..=MAX_DATAGRAM).contains(&datagram.len())
    {
        return None;
    }
    let key: [u8; 32] = datagram.get(4..36)?.try_into().ok()?;
    Some(Key(key))
}

/// Authenticates and decodes a disco datagram from the peer of `key`. Never panics; decrypts
/// into a stack buffer (the only allocation is a CallMeMaybe's candidate list).
pub fn open(key: &SharedKey, datagram: &[u8]) -> Result<DiscoMsg, DiscoError> {
    if classify(datagram) != Kind::Disco {
        return Err(DiscoError::NotDisco);
    }
    if !(MIN_DATAGRAM..=MAX_DATAGRAM).contains(&datagram.len()) {
        return Err(DiscoError::Length);
    }
    if !key.contributory {
        return Err(DiscoError::WeakKey);
    }
    let (aad, rest) = datagram.split_at(AAD_LEN);
    if aad[4..] != key.peer.0 {
        return Err(DiscoError::WrongSender);
    }
    let (nonce, rest) = rest.split_at(24);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut buf = [0u8; MAX_PLAINTEXT];
    let plaintext = buf.get_mut(..ciphertext.len()).ok_or(DiscoError::Length)?;
    plaintext.copy_from_slice(ciphertext);
    key.cipher()
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            aad,
            plaintext,
            Tag::from_slice(tag),
        )
        .map_err(|_| DiscoError::Auth)?;
    decode(plaintext).ok_or(DiscoError::Malformed)
}

/// Appends the plaintext encoding of `msg`.
fn encode(out: &mut Vec<u8>, msg: &DiscoMsg) {
    match msg {
        DiscoMsg::Ping { tx } => {
            out.push(TYPE_PING);
            out.extend_from_slice(tx);
        }
        DiscoMsg::Pong { tx, observed } => {
            out.push(TYPE_PONG);
            out.extend_from_slice(tx);
            put_addr(out, *observed);
        }
        DiscoMsg::CallMeMaybe { candidates } => {
            out.push(TYPE_CALL_ME_MAYBE);
            let n = candidates.len().min(MAX_CANDIDATES);
            // n ≤ 16, so it fits a byte.
            out.push(n as u8);
            for c in &candidates[..n] {
                put_addr(out, *c);
            }
        }
    }
}

/// Parses a plaintext; `None` unless it is exactly one well-formed message.
fn decode(bytes: &[u8]) -> Option<DiscoMsg> {
    let (&ty, rest) = bytes.split_first()?;
    let (msg, rest) = match ty {
        TYPE_PING => {
            let (tx, rest) = rest.split_first_chunk::<12>()?;
            (DiscoMsg::Ping { tx: *tx }, rest)
        }
        TYPE_PONG => {
            let (tx, rest) = rest.split_first_chunk::<12>()?;
            let (observed, rest) = take_addr(rest)?;
            (DiscoMsg::Pong { tx: *tx, observed }, rest)
        }
        TYPE_CALL_ME_MAYBE => {
            let (&n, mut rest) = rest.split_first()?;
            let n = usize::from(n);
            if n > MAX_CANDIDATES {
                return None;
            }
            let mut candidates = Vec::with_capacity(n);
            for _ in 0..n {
                let (addr, r) = take_addr(rest)?;
                candidates.push(addr);
                rest = r;
            }
            (DiscoMsg::CallMeMaybe { candidates }, rest)
        }
        _ => return None,
    };
    rest.is_empty().then_some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> (Key, Key) {
        let private = Key::clamp_private([seed; 32]);
        (private, private.public_key())
    }

    fn msgs() -> Vec<DiscoMsg> {
        vec![
            DiscoMsg::Ping { tx: [7; 12] },
            DiscoMsg::Pong {
                tx: [9; 12],
                observed: "203.0.113.9:41641".parse().unwrap(),
            },
            DiscoMsg::Pong {
                tx: [0; 12],
                observed: "[2001:db8::5]:1".parse().unwrap(),
            },
            DiscoMsg::CallMeMaybe { candidates: vec![] },
            DiscoMsg::CallMeMaybe {
                candidates: vec![
                    "192.168.1.2:51820".parse().unwrap(),
                    "[fe80::1]:51820".parse().unwrap(),
                ],
            },
            DiscoMsg::CallMeMaybe {
                candidates: (0..MAX_CANDIDATES as u16)
                    .map(|i| SocketAddr::new("2001:db8::1".parse().unwrap(), i))
                    .collect(),
            },
        ]
    }

    #[test]
    fn classifies_by_prefix() {
        let table: &[(&[u8], Kind)] = &[
            (&[1, 0, 0, 0, 9, 9], Kind::WireGuard),
            (&[4, 0, 0, 0], Kind::WireGuard),
            (&[5, 0, 0, 0], Kind::Unknown),
            (&[0, 0, 0, 0], Kind::Unknown),
            (&[1, 0, 0, 1], Kind::Unknown),
            (&[1, 0, 0], Kind::Unknown),
            (b"wmD1...", Kind::Disco),
            (b"wmR1", Kind::Reflect),
            (b"wmL1xyz", Kind::Relay),
            (b"wmX1", Kind::Unknown),
            (b"", Kind::Unknown),
        ];
        for (bytes, want) in table {
            assert_eq!(classify(bytes), *want, "{bytes:?}");
        }
    }

    #[test]
    fn both_sides_derive_the_same_key_and_round_trip() {
        let (a_priv, a_pub) = keys(1);
        let (b_priv, b_pub) = keys(2);
        let ab = SharedKey::new(&a_priv, &b_pub);
        let ba = SharedKey::new(&b_priv, &a_pub);
        assert_eq!(ab.key, ba.key);
        assert!(ab.is_usable());
        assert_eq!(
            format!("{ab:?}"),
            format!("SharedKey(peer {})", b_pub.fingerprint())
        );
        for (i, msg) in msgs().into_iter().enumerate() {
            let d = seal(&ab, &a_pub, [i as u8; 24], &msg);
            assert!(d.len() <= MAX_DATAGRAM);
            assert_eq!(classify(&d), Kind::Disco);
            assert_eq!(&d[..4], b"wmD1");
            assert_eq!(&d[4..36], &a_pub.0);
            assert_eq!(&d[36..60], &[i as u8; 24]);
            assert_eq!(sender(&d), Some(a_pub));
            assert_eq!(open(&ba, &d), Ok(msg));
            // The sender cannot open its own message as if it came from the peer.
            assert_eq!(open(&ab, &d), Err(DiscoError::WrongSender));
        }
    }

    #[test]
    fn plaintext_layout() {
        let mut out = Vec::new();
        encode(
            &mut out,
            &DiscoMsg::Pong {
                tx: [3; 12],
                observed: "198.51.100.1:258".parse().unwrap(),
            },
        );
        let mut want = vec![2];
        want.extend_from_slice(&[3; 12]);
        want.extend_from_slice(&[4, 1, 2, 198, 51, 100, 1]);
        assert_eq!(out, want);
    }

    #[test]
    fn oversized_call_me_maybe_is_truncated() {
        let (a_priv, a_pub) = keys(1);
        let (b_priv, b_pub) = keys(2);
        let many: Vec<SocketAddr> = (0..40u16)
            .map(|i| SocketAddr::new("2001:db8::1".parse().unwrap(), i))
            .collect();
        let d = seal(
            &SharedKey::new(&a_priv, &b_pub),
            &a_pub,
            [0; 24],
            &DiscoMsg::CallMeMaybe {
                candidates: many.clone(),
            },
        );
        assert_eq!(d.len(), MAX_DATAGRAM);
        assert_eq!(
            open(&SharedKey::new(&b_priv, &a_pub), &d),
            Ok(DiscoMsg::CallMeMaybe {
                candidates: many[..MAX_CANDIDATES].to_vec()
            })
        );
    }

    #[test]
    fn rejects_forgeries() {
        let (a_priv, a_pub) = keys(1);
        let (b_priv, b_pub) = keys(2);
        let (m_priv, _) = keys(3);
        let ab = SharedKey::new(&a_priv, &b_pub);
        let ba = SharedKey::new(&b_priv, &a_pub);
        let ping = DiscoMsg::Ping { tx: [1; 12] };
        let good = seal(&ab, &a_pub, [5; 24], &ping);

        // Sealed by a third party claiming to be a.
        let forged = seal(&SharedKey::new(&m_priv, &b_pub), &a_pub, [5; 24], &ping);
        assert_eq!(open(&ba, &forged), Err(DiscoError::Auth));

        // Every single-bit flip is caught (header bits by sender check or AEAD).
        for i in 0..good.len() * 8 {
            let mut d = good.clone();
            d[i / 8] ^= 1 << (i % 8);
            assert!(open(&ba, &d).is_err(), "bit {i}");
        }

        // A low-order peer key gives a non-secret key: refused.
        let weak = SharedKey::new(&b_priv, &Key([0; 32]));
        assert!(!weak.is_usable());
        let d = seal(&weak, &Key([0; 32]), [0; 24], &ping);
        assert_eq!(open(&weak, &d), Err(DiscoError::WeakKey));
    }

    #[test]
    fn authentic_garbage_is_malformed() {
        let (a_priv, a_pub) = keys(1);
        let (b_priv, b_pub) = keys(2);
        let ab = SharedKey::new(&a_priv, &b_pub);
        let ba = SharedKey::new(&b_priv, &a_pub);
        // Seal arbitrary plaintexts by hand: right key, wrong content.
        let bad_plaintexts: &[&[u8]] = &[
            &[],
            &[0],
            &[9, 1, 2],
            &[TYPE_PING; 12],
            &[TYPE_PING, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[TYPE_PONG, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0],
            &[TYPE_CALL_ME_MAYBE, 17],
            &[TYPE_CALL_ME_MAYBE, 1, 4, 0, 1, 1, 2, 3],
        ];
        for pt in bad_plaintexts {
            let mut d = Vec::new();
            d.extend_from_slice(&MAGIC);
            d.extend_from_slice(&a_pub.0);
            d.extend_from_slice(&[0; 24]);
            d.extend_from_slice(pt);
            let (aad, rest) = d.split_at_mut(AAD_LEN);
            let tag = ab
                .cipher()
                .encrypt_in_place_detached(&XNonce::from([0; 24]), aad, &mut rest[24..])
                .unwrap();
            d.extend_from_slice(&tag);
            assert_eq!(open(&ba, &d), Err(DiscoError::Malformed), "{pt:?}");
        }
    }

    /// A deterministic stand-in for a fuzzer: truncations, extensions and random bytes
    /// never panic, and only the untouched datagram opens.
    #[test]
    fn never_panics_on_arbitrary_input() {
        let (a_priv, a_pub) = keys(1);
        let (b_priv, b_pub) = keys(2);
        let ab = SharedKey::new(&a_priv, &b_pub);
        let ba = SharedKey::new(&b_priv, &a_pub);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            // SplitMix64.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for msg in msgs() {
            let good = seal(&ab, &a_pub, [1; 24], &msg);
            for n in 0..good.len() {
                assert!(open(&ba, &good[..n]).is_err());
                let _ = sender(&good[..n]);
                let _ = crate::reflect::parse_response(&good[..n]);
            }
            let mut longer = good.clone();
            longer.push(0);
            assert!(open(&ba, &longer).is_err());
        }
        for _ in 0..2000 {
            let len = (next() % (MAX_DATAGRAM as u64 + 40)) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && d.len() >= 36 {
                d[..4].copy_from_slice(&MAGIC);
                d[4..36].copy_from_slice(&a_pub.0);
            }
            let _ = classify(&d);
            let _ = sender(&d);
            assert!(open(&ba, &d).is_err());
            assert!(decode(&d).is_none_or(|m| !matches!(m, DiscoMsg::CallMeMaybe { ref candidates } if candidates.len() > MAX_CANDIDATES)));
            let _ = crate::reflect::parse_request(&d);
            let _ = crate::reflect::parse_response(&d);
        }
    }
}
