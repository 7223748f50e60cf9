//! The control protocol between `meshd` and the coordinator, carried on one bidirectional
//! QUIC stream per connection (ALPN [`ALPN`]), plus the join token and certificate pin
//! formats.
//!
//! # Framing
//!
//! ```text
//!  0                   1                   2                   3
//! +-------+-------+-------+-------+---------------------------------+
//! |   body length (u32, big endian)   | body: one JSON message ...  |
//! +-------+-------+-------+-------+---------------------------------+
//! ```
//! Bodies above [`MAX_FRAME`] are a protocol error.
//!
//! # Exchange
//!
//! ```text
//! node                                           coordinator
//!  | -- Hello {network, public-key, join?, resume?, routes} -> |
//!  | <- Challenge {ephemeral, nonce} ------------------ |
//!  | -- Proof {proof} --------------------------------> |  proof of the private key
//!  | <- Pending | Denied | [Services] Netmap ----------- |
//!  | <- Changes {version, changes} ... (pushed) -------- |
//!  | -- Endpoints {...} (when they change) -----------> |
//!  | -- Paths {peers} (while authorised) --------------> |
//! ```
//!
//! The proof: the node computes `X25519(node_private, ephemeral)`, the coordinator
//! `X25519(ephemeral_private, node_public)`; both hash the shared secret with the nonce, the
//! TLS exporter secret of this very connection and the node's key ([`proof`]). Only the
//! holder of the private key can answer, the answer is useless on any other connection, and
//! the coordinator never sees a private key.
//!
//! # Services and coordinators
//!
//! Once authorised on a connection, and before the netmap, the node gets
//! [`ServerMsg::Services`]: the reflectors, the relay and its relay token, and
//! `coordinators`, the control address (`host:port`) of every coordinator sharing this
//! one's identity (one certificate pin, one relay secret), in a stable order. A node
//! replaces the coordinator list of its membership with a non-empty `coordinators` and
//! fails over among them when its own stops answering, resuming from its netmap version.
//! The field is omitted when empty and defaults to empty, so a coordinator that does not
//! send it and a node that does not read it interoperate with both kinds of peer.
//!
//! # Path reports
//!
//! While authorised, a node tells the coordinator how it reaches each peer
//! ([`ClientMsg::Paths`]), for the admin API (`MemberView.paths`). Each report is the whole
//! list (one [`PeerPathReport`] per network peer, what `meshctl status` says), replacing
//! the previous one. A node sends one soon after it gets its first netmap on a connection,
//! then whenever the set of (peer, path) changes, at most one per
//! [`PATH_REPORT_INTERVAL`]; a change of RTT alone is reported at most every
//! [`PATH_RTT_REFRESH`]. It reports at most [`MAX_PATH_REPORT`] peers.
//!
//! The coordinator keeps the latest report in memory only (never stored), drops it when
//! the session ends, ignores a report longer than [`MAX_PATH_REPORT`] and any entry that
//! names no other authorised member of the network, and never ends a session over a
//! report it cannot use.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::netmap::{Netmap, PeerChange};
use crate::Key;

/// QUIC ALPN of this protocol version.
pub const ALPN: &[u8] = b"wiremesh/1";
/// The control protocol version this build speaks ([`Hello::protocol`]). Version 2 sends
/// netmaps and changes in the binary encoding of [`crate::wire`]; version 3 sends the
/// policy filter ([`ServerMsg::Filter`], which meshd enforces on both ends of every network
/// peer, and answers with [`ClientMsg::Filter`]); version 4 sends each distinct entry list
/// of a filter update once and hashes filters as [`crate::policy::FilterDigest`]. A
/// coordinator refuses nodes below [`MIN_PROTOCOL`] with a `Denied` that says so, and
/// nodes below [`FILTER_PROTOCOL`] in a network with a policy (they could not enforce it).
/// Version 5 adds [`ServerMsg::Names`] (the network's DNS domain, for member names); older
/// nodes are not sent it and serve names under [`crate::dns::DEFAULT_DOMAIN`]. Version 6
/// reads dual-stack netmaps ([`crate::wire::FORMAT_DUAL`]: an IPv6 prefix per network, an
/// IPv6 address per member); nodes below it are refused in dual-stack networks.
pub const PROTOCOL: u32 = 6;
/// The oldest protocol served in a dual-stack network.
pub const DUAL_STACK_PROTOCOL: u32 = 6;
/// The oldest protocol whose nodes are sent [`ServerMsg::Names`].
pub const NAMES_PROTOCOL: u32 = 5;
/// The oldest protocol whose nodes are sent a policy filter (3's encoding and hash are
/// no longer served).
pub const FILTER_PROTOCOL: u32 = 4;
/// The oldest protocol a coordinator serves.
pub const MIN_PROTOCOL: u32 = 2;
/// Largest frame body in bytes (a binary netmap of about 100,000 members fits).
pub const MAX_FRAME: usize = 8 << 20;
/// Label for the TLS keying-material exporter (RFC 5705) that binds proofs to a connection.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-wiremesh-proof-v1";
/// Most peers in one [`ClientMsg::Paths`] report; the coordinator ignores longer ones.
pub const MAX_PATH_REPORT: usize = 4096;
/// Shortest time between two [`ClientMsg::Paths`] reports of a node.
pub const PATH_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest time between two reports that differ only in RTTs.
pub const PATH_RTT_REFRESH: Duration = Duration::from_secs(30);

/// Node → coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMsg {
    /// First message on a connection.
    Hello(Hello),
    /// The answer to [`ServerMsg::Challenge`].
    Proof {
        /// [`proof`] computed by the node.
        proof: Key,
    },
    /// The node's endpoint candidates changed.
    Endpoints {
        /// WireGuard UDP port.
        listen_port: u16,
        /// Local interface addresses with the WireGuard port.
        local: Vec<SocketAddr>,
        /// Addresses the coordinator's reflectors saw for the WireGuard socket (the NAT
        /// mapping other members must use), best first.
        #[serde(default)]
        reflexive: Vec<SocketAddr>,
    },
    /// How the node reaches its peers now (see the module docs: when it is sent, how the
    /// coordinator bounds it).
    Paths {
        /// One entry per network peer, at most [`MAX_PATH_REPORT`]; replaces the last report.
        peers: Vec<PeerPathReport>,
    },
    /// The policy filter the node runs now (after each [`ServerMsg::Filter`]).
    Filter {
        /// [`crate::policy::NodeFilter::hash`] of the filter it enforces.
        hash: String,
        /// Why it could not apply the last update (it then fails closed for the peers
        /// concerned).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// How a node reaches one peer ([`ClientMsg::Paths`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PeerPathReport {
    /// The peer's public key.
    pub peer: Key,
    /// The path its WireGuard packets take.
    pub path: ReportedPath,
    /// Smoothed round-trip time of a direct path, in milliseconds, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u32>,
}

/// The path to a peer, as reported ([`PeerPathReport`]): `direct`, `relayed` or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportedPath {
    /// Straight to one of its addresses (LAN or public).
    Direct,
    /// Through the coordinator's relay.
    Relayed,
    /// No way to reach it (yet).
    None,
}

impl From<Option<crate::api::PathType>> for ReportedPath {
    /// The path `meshctl status` shows (`relay`), as reported (`relayed`); no path: `none`.
    fn from(path: Option<crate::api::PathType>) -> ReportedPath {
        match path {
            Some(crate::api::PathType::Direct) => ReportedPath::Direct,
            Some(crate::api::PathType::Relay) => ReportedPath::Relayed,
            None => ReportedPath::None,
        }
    }
}

impl ReportedPath {
    /// The wire word: `direct`, `relayed` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportedPath::Direct => "direct",
            ReportedPath::Relayed => "relayed",
            ReportedPath::None => "none",
        }
    }
}

/// What a node says about itself when it connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Hello {
    /// The network it wants to be in.
    pub network: String,
    /// Its WireGuard public key: its identity.
    pub public_key: Key,
    /// Its hostname (the member's default name).
    pub name: String,
    /// meshd's version.
    pub version: String,
    /// A join token's id and secret, when joining with a token.
    pub join: Option<JoinSecret>,
    /// The netmap version it has cached, to resume with changes instead of a full map.
    pub resume: Option<u64>,
    /// WireGuard UDP port.
    pub listen_port: u16,
    /// Local interface addresses with the WireGuard port.
    pub local: Vec<SocketAddr>,
    /// Prefixes behind the node it offers the network (its `advertise-routes`); they
    /// reach peers once an admin approves them. Replaces what it advertised before.
    #[serde(default)]
    pub routes: Vec<IpNet>,
    /// The control protocol version the node speaks ([`PROTOCOL`]); absent: 1 (JSON
    /// netmaps, before the binary encoding).
    #[serde(default = "protocol_one")]
    pub protocol: u32,
}

fn protocol_one() -> u32 {
    1
}

/// Coordinator → node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    /// Prove you hold the private key of the key you claim.
    Challenge {
        /// The coordinator's ephemeral X25519 public key for this connection.
        ephemeral: Key,
        /// 32 random bytes.
        nonce: Key,
    },
    /// Known, but not authorised (yet): wait for an admin.
    Pending {
        /// Human-readable explanation.
        message: String,
    },
    /// Refused; the connection closes after this.
    Denied {
        /// One line for the operator.
        reason: String,
    },
    /// The node's full netmap.
    Netmap {
        /// The map.
        netmap: Netmap,
    },
    /// NAT traversal services for this member; sent after authorisation, before the netmap.
    Services {
        /// Reflector addresses (`host:port`, UDP); two distinct ones let nodes tell
        /// endpoint-independent from endpoint-dependent NAT mappings.
        reflectors: Vec<String>,
        /// Relay address (`host:port`, UDP), if the coordinator relays.
        relay: Option<String>,
        /// The relay's address for every family the coordinator advertises (`relay`
        /// first, then e.g. its IPv6 address): a node takes the first it has a route to.
        /// Absent (empty) from a coordinator before dual-stack underlays; `relay` then.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        relays: Vec<String>,
        /// This member's relay token (`mesh_proto::relay::token`).
        relay_token: Key,
        /// Every coordinator's control address (`host:port`, QUIC), in a stable order:
        /// the coordinators that share this one's identity (pin, relay secret), any of
        /// which the node may use. Absent (empty) from a coordinator that does not know
        /// them; the node then keeps the addresses it has.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        coordinators: Vec<String>,
    },
    /// Changes since the last message, reaching `version`.
    Changes {
        /// The network version after these changes.
        version: u64,
        /// The changes, to apply in order.
        changes: Vec<PeerChange>,
    },
    /// The policy filter this node enforces, whole or as changes (protocol 4): sent before
    /// the first netmap and whenever the node's filter changes.
    Filter(crate::policy::FilterUpdate),
    /// The network's DNS domain (protocol 5): members answer to
    /// `<name>.<network>.<domain>`. Sent before the first netmap and whenever it changes.
    Names {
        /// E.g. `mesh.internal` (checked by [`crate::dns::check_domain`]).
        domain: String,
    },
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    /// A binary body ([`crate::wire`]) is not a valid message.
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),
}

/// Encodes `msg` as one frame (length prefix + JSON).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain data types cannot fail.
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The body length announced by a frame header, checked against [`MAX_FRAME`].
pub fn body_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(body)?)
}

/// Decodes a frame body from the coordinator as member `me` sees it: JSON (a body that
/// starts with `{`) or a binary netmap or changes message ([`crate::wire`]).
pub fn decode_server(body: &[u8], me: &Key) -> Result<ServerMsg, FrameError> {
    match body.first() {
        Some(b'{') | None => decode(body),
        Some(&crate::wire::KIND_NETMAP) => Ok(ServerMsg::Netmap {
            netmap: crate::wire::decode_netmap(body, me)?,
        }),
        Some(_) => {
            let (version, changes) = crate::wire::decode_changes(body, me)?;
            Ok(ServerMsg::Changes { version, changes })
        }
    }
}

/// The proof of possession for one connection (see the module docs).
pub fn proof(shared_secret: &[u8; 32], nonce: &Key, exporter: &[u8; 32], node: &Key) -> Key {
    let mut h = Sha256::new();
    h.update(b"wiremesh-proof-v1");
    h.update(shared_secret);
    h.update(nonce.0);
    h.update(exporter);
    h.update(node.0);
    Key(h.finalize().into())
}

/// The node's side: proof from its private key and the coordinator's challenge.
pub fn node_proof(node_private: &Key, ephemeral: &Key, nonce: &Key, exporter: &[u8; 32]) -> Key {
    let secret = x25519_dalek::StaticSecret::from(node_private.0);
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(ephemeral.0));
    proof(
        shared.as_bytes(),
        nonce,
        exporter,
        &node_private.public_key(),
    )
}

/// The coordinator's side: the proof it expects from `node`, given its ephemeral secret.
pub fn expected_proof(
    ephemeral_private: &Key,
    node: &Key,
    nonce: &Key,
    exporter: &[u8; 32],
) -> Key {
    let secret = x25519_dalek::StaticSecret::from(ephemeral_private.0);
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(node.0));
    proof(shared.as_bytes(), nonce, exporter, node)
}

/// Compares two 32-byte values in constant time.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SHA-256 of a certificate's DER bytes, written `sha256:<64 hex>`: how nodes pin the
/// coordinator (like `kubeadm join --discovery-token-ca-cert-hash`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertPin(pub [u8; 32]);

impl CertPin {
    /// The pin of a DER certificate.
    pub fn of_der(der: &[u8]) -> CertPin {
        CertPin(Sha256::digest(der).into())
    }
}

impl fmt::Display for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a pin or token does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A pin is `sha256:` and 64 hex digits.
    #[error("expected sha256:<64 hex digits>")]
    Pin,
    /// A token is `wm1_` and base64url of its fields.
    #[error("not a wiremesh join token (expected wm1_…)")]
    Token,
}

impl FromStr for CertPin {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<CertPin, FormatError> {
        let hex = s.trim().strip_prefix("sha256:").ok_or(FormatError::Pin)?;
        // Hex digits only: `from_str_radix` alone would also take a sign ("+f").
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FormatError::Pin);
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| FormatError::Pin)?;
        }
        Ok(CertPin(out))
    }
}

impl Serialize for CertPin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CertPin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CertPin, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The part of a join token a node presents to the coordinator.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JoinSecret {
    /// The token's id (public; admins see and revoke tokens by it).
    pub id: String,
    /// The secret; the coordinator stores only its SHA-256.
    pub secret: Key,
}

impl fmt::Debug for JoinSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinSecret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Everything `meshctl join --token` needs, in one copy-pasteable string:
/// `wm1_` + base64url(JSON of this struct).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JoinToken {
    /// Coordinator QUIC addresses (`host:port`), tried in order.
    pub coordinators: Vec<String>,
    /// The coordinator certificate's pin.
    pub pin: CertPin,
    /// The network the token admits to.
    pub network: String,
    /// Token id and secret.
    #[serde(flatten)]
    pub secret: JoinSecret,
}

impl JoinToken {
    const PREFIX: &'static str = "wm1_";

    /// The token's text form.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{}{}", Self::PREFIX, URL_SAFE_NO_PAD.encode(json))
    }
}

impl FromStr for JoinToken {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<JoinToken, FormatError> {
        let body = s
            .trim()
            .strip_prefix(Self::PREFIX)
            .ok_or(FormatError::Token)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| FormatError::Token)?;
        serde_json::from_slice(&json).map_err(|_| FormatError::Token)
    }
}

/// SHA-256 of a token secret, as the coordinator stores it.
pub fn secret_hash(secret: &Key) -> [u8; 32] {
    Sha256::digest(secret.0).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limit() {
        let msg = ServerMsg::Pending {
            message: "wait".into(),
        };
        let frame = encode(&msg);
        let len = body_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode::<ServerMsg>(&frame[4..]).unwrap(), msg);
        assert!(matches!(
            body_len((MAX_FRAME as u32 + 1).to_be_bytes()),
            Err(FrameError::TooLarge(_))
        ));
        assert!(decode::<ServerMsg>(b"{\"type\":\"nope\"}").is_err());
    }

    #[test]
    fn proof_needs_the_private_key_and_the_connection() {
        let node = Key::clamp_private([7; 32]);
        let eph = Key::clamp_private([9; 32]);
        let nonce = Key([1; 32]);
        let exporter = [2; 32];
        let good = node_proof(&node, &eph.public_key(), &nonce, &exporter);
        assert_eq!(
            good,
            expected_proof(&eph, &node.public_key(), &nonce, &exporter)
        );
        // Another private key, another connection, another nonce: all fail.
        let other = Key::clamp_private([8; 32]);
        assert_ne!(
            node_proof(&other, &eph.public_key(), &nonce, &exporter),
            good
        );
        assert_ne!(node_proof(&node, &eph.public_key(), &nonce, &[3; 32]), good);
        assert_ne!(
            node_proof(&node, &eph.public_key(), &Key([4; 32]), &exporter),
            good
        );
    }

    #[test]
    fn hello_routes_are_optional_on_the_wire() {
        let key = Key([3; 32]).to_base64();
        let old = format!(
            r#"{{"type":"hello","network":"lab","public-key":"{key}","name":"a","version":"0.1",
            "join":null,"resume":null,"listen-port":51820,"local":[]}}"#
        );
        let ClientMsg::Hello(h) = decode::<ClientMsg>(old.as_bytes()).unwrap() else {
            panic!("not a hello");
        };
        assert!(h.routes.is_empty());
        let mut new = h.clone();
        new.routes = vec!["10.244.3.0/24".parse().unwrap()];
        let body = encode(&ClientMsg::Hello(new.clone()));
        assert!(String::from_utf8_lossy(&body).contains(r#""routes":["10.244.3.0/24"]"#));
        assert_eq!(
            decode::<ClientMsg>(&body[4..]).unwrap(),
            ClientMsg::Hello(new)
        );
    }

    #[test]
    fn path_reports_round_trip() {
        use crate::api::PathType;
        assert_eq!(
            ReportedPath::from(Some(PathType::Direct)),
            ReportedPath::Direct
        );
        assert_eq!(
            ReportedPath::from(Some(PathType::Relay)),
            ReportedPath::Relayed
        );
        assert_eq!(ReportedPath::from(None), ReportedPath::None);
        let msg = ClientMsg::Paths {
            peers: vec![
                PeerPathReport {
                    peer: Key([1; 32]),
                    path: ReportedPath::Direct,
                    rtt_ms: Some(12),
                },
                PeerPathReport {
                    peer: Key([2; 32]),
                    path: ReportedPath::Relayed,
                    rtt_ms: None,
                },
                PeerPathReport {
                    peer: Key([3; 32]),
                    path: ReportedPath::None,
                    rtt_ms: None,
                },
            ],
        };
        let frame = encode(&msg);
        let text = String::from_utf8_lossy(&frame[4..]).into_owned();
        assert!(
            text.starts_with(r#"{"type":"paths","peers":[{"peer":""#),
            "{text}"
        );
        assert!(text.contains(r#""path":"direct","rtt-ms":12}"#), "{text}");
        assert!(text.contains(r#""path":"relayed"}"#), "{text}");
        assert!(text.contains(r#""path":"none"}"#), "{text}");
        assert_eq!(decode::<ClientMsg>(&frame[4..]).unwrap(), msg);
        for p in [
            ReportedPath::Direct,
            ReportedPath::Relayed,
            ReportedPath::None,
        ] {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        // rtt-ms may be absent or null; unknown path words are refused.
        let key = Key([4; 32]).to_base64();
        let body = format!(
            r#"{{"type":"paths","peers":[{{"peer":"{key}","path":"direct","rtt-ms":null}}]}}"#
        );
        let ClientMsg::Paths { peers } = decode::<ClientMsg>(body.as_bytes()).unwrap() else {
            panic!("not a paths report");
        };
        assert_eq!(peers[0].rtt_ms, None);
        let bad = format!(r#"{{"type":"paths","peers":[{{"peer":"{key}","path":"lan"}}]}}"#);
        assert!(decode::<ClientMsg>(bad.as_bytes()).is_err());
        // Empty reports are valid (a node without peers).
        assert_eq!(
            decode::<ClientMsg>(br#"{"type":"paths","peers":[]}"#).unwrap(),
            ClientMsg::Paths { peers: vec![] }
        );
    }

    #[test]
    fn services_coordinators_are_optional_on_the_wire() {
        let token = Key([4; 32]);
        let old = ServerMsg::Services {
            reflectors: vec!["192.0.2.1:7444".into()],
            relay: None,
            relays: vec![],
            relay_token: token,
            coordinators: vec![],
        };
        // Empty: not sent, so an older node sees exactly what it always did.
        let frame = encode(&old);
        let text = String::from_utf8_lossy(&frame[4..]).into_owned();
        assert!(!text.contains("coordinators"), "{text}");
        assert!(!text.contains("relays"), "{text}");
        assert_eq!(decode::<ServerMsg>(&frame[4..]).unwrap(), old);
        // From an older coordinator (no field): empty.
        let body = format!(
            r#"{{"type":"services","reflectors":[],"relay":null,"relay_token":"{}"}}"#,
            token.to_base64()
        );
        let ServerMsg::Services {
            coordinators,
            relays,
            ..
        } = decode(body.as_bytes()).unwrap()
        else {
            panic!("not services");
        };
        assert!(coordinators.is_empty());
        assert!(relays.is_empty());
        // Present: kept in order.
        let new = ServerMsg::Services {
            reflectors: vec![],
            relay: Some("192.0.2.1:7446".into()),
            relays: vec!["192.0.2.1:7446".into(), "[2001:db8::1]:7446".into()],
            relay_token: token,
            coordinators: vec!["c2.example:7443".into(), "c1.example:7443".into()],
        };
        let frame = encode(&new);
        let text = String::from_utf8_lossy(&frame[4..]).into_owned();
        assert!(
            text.contains(r#""coordinators":["c2.example:7443","c1.example:7443"]"#),
            "{text}"
        );
        assert!(
            text.contains(r#""relays":["192.0.2.1:7446","[2001:db8::1]:7446"]"#),
            "{text}"
        );
        assert_eq!(decode_server(&frame[4..], &token).unwrap(), new);
    }

    #[test]
    fn pin_format() {
        let pin = CertPin::of_der(b"cert");
        let text = pin.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 71);
        assert_eq!(text.parse::<CertPin>().unwrap(), pin);
        for bad in [
            "",
            "sha256:",
            "sha1:00",
            &text[..70],
            &text.replace("sha256", "SHA256"),
        ] {
            assert_eq!(bad.parse::<CertPin>(), Err(FormatError::Pin), "{bad:?}");
        }
    }

    #[test]
    fn pin_is_hex_digits_only() {
        // Found by fuzz/fuzz_targets/pin.rs: "+f" parsed as the byte 0x0f, so two texts
        // named one pin.
        let found = "sha256:03d66dd08835c1ca+f128cceacd0f33ac94163096b20f445ae84285bc0832d72";
        assert_eq!(found.parse::<CertPin>(), Err(FormatError::Pin));
        let plus = format!("sha256:+f{}", "0".repeat(62));
        assert_eq!(plus.parse::<CertPin>(), Err(FormatError::Pin));
        let upper = format!("sha256:{}", "AB".repeat(32));
        assert_eq!(upper.parse::<CertPin>(), Ok(CertPin([0xab; 32])));
    }

    #[test]
    fn token_round_trip() {
        let token = JoinToken {
            coordinators: vec!["203.0.113.1:7443".into()],
            pin: CertPin([5; 32]),
            network: "lab".into(),
            secret: JoinSecret {
                id: "t1".into(),
                secret: Key([6; 32]),
            },
        };
        let text = token.encode();
        assert!(text.starts_with("wm1_") && !text.contains('='));
        assert_eq!(text.parse::<JoinToken>().unwrap(), token);
        assert_eq!("wm1_!!".parse::<JoinToken>(), Err(FormatError::Token));
        assert_eq!("xyz".parse::<JoinToken>(), Err(FormatError::Token));
        assert!(!format!("{:?}", token.secret).contains("secret:"));
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
