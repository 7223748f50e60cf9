//! What the fuzz targets share: fixed keys, the disco sealing the targets do themselves,
//! the address normalisation the wire formats apply, and `arbitrary` mirrors of the
//! protocol types for the round-trip targets (mesh-proto does not depend on `arbitrary`).
//!
//! Targets live in `fuzz_targets/`, one per decoder; `run.sh` runs them and
//! `examples/seeds.rs` writes the committed seed corpora from the real encoders.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use chacha20poly1305::aead::AeadInPlace as _;
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
use ipnet::IpNet;
use mesh_proto::control::{ClientMsg, Hello, JoinSecret, PeerPathReport, ReportedPath, ServerMsg};
use mesh_proto::disco::{self, DiscoMsg, SharedKey};
use mesh_proto::netmap::{Netmap, NetworkInfo, PeerChange, PeerInfo};
use mesh_proto::Key;
use sha2::{Digest as _, Sha256};

/// The receiver ("me") of the binary netmaps the seeds and round trips use.
pub const ME: Key = Key([0x11; 32]);

/// Private key of the disco sender the targets play.
const DISCO_SENDER_PRIVATE: [u8; 32] = [0x21; 32];
/// Private key of the disco receiver (whose `SharedKey` opens).
const DISCO_RECEIVER_PRIVATE: [u8; 32] = [0x42; 32];

/// The two ends of one disco pair, derived once (an X25519 per input would dominate).
#[derive(Debug)]
pub struct DiscoPair {
    /// The sender's public key (bytes 4..36 of its datagrams).
    pub sender_public: Key,
    /// The sender's side (what `disco::seal` takes).
    pub sender_key: SharedKey,
    /// The receiver's side (what `disco::open` takes).
    pub receiver_key: SharedKey,
    /// The AEAD key both sides share, derived as the module docs of `mesh_proto::disco`
    /// describe it (SHA-256 of the label and the X25519 output).
    aead_key: [u8; 32],
}

/// The disco pair every disco target uses.
pub fn disco_pair() -> &'static DiscoPair {
    static PAIR: OnceLock<DiscoPair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let sender_private = Key::clamp_private(DISCO_SENDER_PRIVATE);
        let receiver_private = Key::clamp_private(DISCO_RECEIVER_PRIVATE);
        let sender_public = sender_private.public_key();
        let receiver_public = receiver_private.public_key();
        let secret = x25519_dalek::StaticSecret::from(receiver_private.0);
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(sender_public.0));
        let mut hash = Sha256::new();
        hash.update(disco::KEY_LABEL);
        hash.update(shared.as_bytes());
        DiscoPair {
            sender_public,
            sender_key: SharedKey::new(&sender_private, &receiver_public),
            receiver_key: SharedKey::new(&receiver_private, &sender_public),
            aead_key: hash.finalize().into(),
        }
    })
}

impl DiscoPair {
    /// A datagram from the sender carrying `plaintext` as it is (any bytes, not only
    /// encoded messages), sealed exactly as `disco::seal` seals: so `disco::open` gets past
    /// authentication and the message decoder sees fuzzer bytes.
    pub fn seal_plaintext(&self, nonce: [u8; 24], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(60 + plaintext.len() + 16);
        out.extend_from_slice(&disco::MAGIC);
        out.extend_from_slice(&self.sender_public.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (aad, rest) = out.split_at_mut(36);
        let tag = XChaCha20Poly1305::new(&self.aead_key.into())
            .encrypt_in_place_detached(&XNonce::from(nonce), aad, &mut rest[24..])
            .unwrap_or_else(|_| panic!("disco plaintext of {} bytes", plaintext.len()));
        out.extend_from_slice(&tag);
        out
    }
}

/// `addr` as the reflection and disco encoders write it: IPv4-mapped IPv6 as IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// A disco message as it comes back from `open(seal(msg))`: addresses canonical, at most
/// `MAX_CANDIDATES` candidates.
pub fn canonical_disco(msg: &DiscoMsg) -> DiscoMsg {
    match msg {
        DiscoMsg::Ping { tx } => DiscoMsg::Ping { tx: *tx },
        DiscoMsg::Pong { tx, observed } => DiscoMsg::Pong {
            tx: *tx,
            observed: canonical(*observed),
        },
        DiscoMsg::CallMeMaybe { candidates } => DiscoMsg::CallMeMaybe {
            candidates: candidates
                .iter()
                .take(disco::MAX_CANDIDATES)
                .map(|c| canonical(*c))
                .collect(),
        },
    }
}

// ---- arbitrary mirrors of the protocol types -------------------------------------------

/// An IP address.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum ArbIp {
    /// IPv4.
    V4([u8; 4]),
    /// IPv6 (IPv4-mapped ones included).
    V6([u8; 16]),
}

impl ArbIp {
    /// The address.
    pub fn ip(self) -> IpAddr {
        match self {
            ArbIp::V4(b) => IpAddr::V4(Ipv4Addr::from(b)),
            ArbIp::V6(b) => IpAddr::V6(Ipv6Addr::from(b)),
        }
    }
}

/// A socket address (no IPv6 flow info or scope: no wire form carries them).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct ArbSock(pub ArbIp, pub u16);

impl ArbSock {
    /// The address.
    pub fn sock(self) -> SocketAddr {
        SocketAddr::new(self.0.ip(), self.1)
    }
}

/// A prefix; the length is reduced into range, host bits are kept (as on the wire).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct ArbNet(pub ArbIp, pub u8);

impl ArbNet {
    /// The prefix.
    pub fn net(self) -> IpNet {
        let ip = self.0.ip();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        IpNet::new(ip, self.1 % (max + 1)).unwrap_or_else(|_| IpNet::from(ip))
    }
}

/// A netmap's network settings.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbNetwork {
    name: String,
    cidr: ArbNet,
    mtu: u16,
    keepalive: u16,
}

impl ArbNetwork {
    /// The settings.
    pub fn info(&self) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            cidr: self.cidr.net(),
            mtu: self.mtu,
            keepalive: self.keepalive,
            // One address family: the dual-stack format is reached by the decoders'
            // targets from bytes, and re-encoded there in its own format.
            cidr6: None,
        }
    }
}

/// A peer.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbPeer {
    key: [u8; 32],
    name: String,
    address: ArbIp,
    allowed_ips: Vec<ArbNet>,
    endpoints: Vec<ArbSock>,
}

impl ArbPeer {
    /// The peer.
    pub fn info(&self) -> PeerInfo {
        PeerInfo {
            public_key: Key(self.key),
            name: self.name.clone(),
            address: self.address.ip(),
            address6: None,
            allowed_ips: self.allowed_ips.iter().map(|n| n.net()).collect(),
            endpoints: self.endpoints.iter().map(|s| s.sock()).collect(),
        }
    }
}

/// A full netmap, as [`ME`] sees it.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbNetmap {
    version: u64,
    network: ArbNetwork,
    address: ArbIp,
    name: String,
    peers: Vec<ArbPeer>,
}

impl ArbNetmap {
    /// The netmap, or `None` when the parts do not make one (the address does not take the
    /// network's prefix length).
    pub fn netmap(&self) -> Option<Netmap> {
        let network = self.network.info();
        let address = IpNet::new(self.address.ip(), network.cidr.prefix_len()).ok()?;
        let peers: BTreeMap<Key, PeerInfo> = self
            .peers
            .iter()
            .map(ArbPeer::info)
            .filter(|p| p.public_key != ME)
            .map(|p| (p.public_key, p))
            .collect();
        Some(Netmap {
            version: self.version,
            network,
            address,
            address6: None,
            name: self.name.clone(),
            peers,
        })
    }
}

/// One netmap change.
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbChange {
    /// A peer added or changed.
    Upsert(ArbPeer),
    /// A peer removed.
    Remove([u8; 32]),
    /// The receiver's own address and name.
    SelfUpdate(ArbIp, String),
    /// Network settings.
    Network(ArbNetwork),
}

impl ArbChange {
    /// The change, with own updates at `prefix_len` (`None`: not representable).
    pub fn change(&self, prefix_len: u8) -> Option<PeerChange> {
        Some(match self {
            ArbChange::Upsert(p) => PeerChange::Upsert { peer: p.info() },
            ArbChange::Remove(k) => PeerChange::Remove {
                public_key: Key(*k),
            },
            ArbChange::SelfUpdate(ip, name) => PeerChange::SelfUpdate {
                address: IpNet::new(ip.ip(), prefix_len).ok()?,
                address6: None,
                name: name.clone(),
            },
            ArbChange::Network(n) => PeerChange::Network { network: n.info() },
        })
    }
}

/// A node → coordinator message.
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbClientMsg {
    /// Hello.
    Hello {
        network: String,
        public_key: [u8; 32],
        name: String,
        version: String,
        join: Option<(String, [u8; 32])>,
        resume: Option<u64>,
        listen_port: u16,
        local: Vec<ArbSock>,
        routes: Vec<ArbNet>,
        protocol: u32,
    },
    /// Proof.
    Proof([u8; 32]),
    /// Endpoints.
    Endpoints {
        listen_port: u16,
        local: Vec<ArbSock>,
        reflexive: Vec<ArbSock>,
    },
    /// Path report.
    Paths(Vec<([u8; 32], u8, Option<u32>)>),
    /// The filter a node runs.
    Filter(String, Option<String>),
}

impl ArbClientMsg {
    /// The message.
    pub fn msg(&self) -> ClientMsg {
        match self.clone() {
            ArbClientMsg::Hello {
                network,
                public_key,
                name,
                version,
                join,
                resume,
                listen_port,
                local,
                routes,
                protocol,
            } => ClientMsg::Hello(Hello {
                network,
                public_key: Key(public_key),
                name,
                version,
                join: join.map(|(id, secret)| JoinSecret {
                    id,
                    secret: Key(secret),
                }),
                resume,
                listen_port,
                local: local.iter().map(|s| s.sock()).collect(),
                routes: routes.iter().map(|n| n.net()).collect(),
                protocol,
            }),
            ArbClientMsg::Proof(k) => ClientMsg::Proof { proof: Key(k) },
            ArbClientMsg::Endpoints {
                listen_port,
                local,
                reflexive,
            } => ClientMsg::Endpoints {
                listen_port,
                local: local.iter().map(|s| s.sock()).collect(),
                reflexive: reflexive.iter().map(|s| s.sock()).collect(),
            },
            ArbClientMsg::Paths(peers) => ClientMsg::Paths {
                peers: peers
                    .into_iter()
                    .map(|(k, path, rtt_ms)| PeerPathReport {
                        peer: Key(k),
                        path: match path % 3 {
                            0 => ReportedPath::Direct,
                            1 => ReportedPath::Relayed,
                            _ => ReportedPath::None,
                        },
                        rtt_ms,
                    })
                    .collect(),
            },
            ArbClientMsg::Filter(hash, error) => ClientMsg::Filter { hash, error },
        }
    }
}

/// A coordinator → node message.
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbServerMsg {
    /// Challenge.
    Challenge([u8; 32], [u8; 32]),
    /// Pending.
    Pending(String),
    /// Denied.
    Denied(String),
    /// Netmap (JSON form).
    Netmap(ArbNetmap),
    /// Services.
    Services {
        reflectors: Vec<String>,
        relay: Option<String>,
        relays: Vec<String>,
        relay_token: [u8; 32],
        coordinators: Vec<String>,
    },
    /// Changes (JSON form).
    Changes(u64, u8, Vec<ArbChange>),
}

impl ArbServerMsg {
    /// The message, or `None` when the parts do not make one.
    pub fn msg(&self) -> Option<ServerMsg> {
        Some(match self.clone() {
            ArbServerMsg::Challenge(e, n) => ServerMsg::Challenge {
                ephemeral: Key(e),
                nonce: Key(n),
            },
            ArbServerMsg::Pending(message) => ServerMsg::Pending { message },
            ArbServerMsg::Denied(reason) => ServerMsg::Denied { reason },
            ArbServerMsg::Netmap(n) => ServerMsg::Netmap {
                netmap: n.netmap()?,
            },
            ArbServerMsg::Services {
                reflectors,
                relay,
                relays,
                relay_token,
                coordinators,
            } => ServerMsg::Services {
                reflectors,
                relay,
                relays,
                relay_token: Key(relay_token),
                coordinators,
            },
            ArbServerMsg::Changes(version, prefix_len, changes) => ServerMsg::Changes {
                version,
                changes: changes
                    .iter()
                    .map(|c| c.change(prefix_len % 129))
                    .collect::<Option<_>>()?,
            },
        })
    }
}

/// A disco message.
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbDisco {
    /// Ping.
    Ping([u8; 12]),
    /// Pong.
    Pong([u8; 12], ArbSock),
    /// CallMeMaybe (any number of candidates: `seal` sends the first 16).
    CallMeMaybe(Vec<ArbSock>),
}

impl ArbDisco {
    /// The message.
    pub fn msg(&self) -> DiscoMsg {
        match self {
            ArbDisco::Ping(tx) => DiscoMsg::Ping { tx: *tx },
            ArbDisco::Pong(tx, observed) => DiscoMsg::Pong {
                tx: *tx,
                observed: observed.sock(),
            },
            ArbDisco::CallMeMaybe(c) => DiscoMsg::CallMeMaybe {
                candidates: c.iter().map(|s| s.sock()).collect(),
            },
        }
    }
}

// ---- encoders of whole binary bodies from decoded values --------------------------------

/// The binary frame (length prefix included) of `netmap` as the coordinator sends it to
/// every member: `me` is listed like any member, with its address and name.
pub fn encode_netmap(netmap: &Netmap, me: &Key) -> Vec<u8> {
    let mut frame = mesh_proto::wire::FrameBuilder::netmap(netmap.version, &netmap.network, 0);
    let own = PeerInfo {
        public_key: *me,
        name: netmap.name.clone(),
        address: netmap.address.addr(),
        address6: v6(netmap.address6),
        allowed_ips: Vec::new(),
        endpoints: Vec::new(),
    };
    let mut entry = Vec::new();
    for peer in std::iter::once(&own).chain(netmap.peers.values()) {
        entry.clear();
        mesh_proto::wire::encode_peer(peer, &mut entry);
        frame.member(&entry);
    }
    frame.finish()
}

/// The IPv6 address of a prefix, if it is one.
fn v6(net: Option<IpNet>) -> Option<std::net::Ipv6Addr> {
    match net?.addr() {
        std::net::IpAddr::V6(a) => Some(a),
        std::net::IpAddr::V4(_) => None,
    }
}

/// The binary changes frame (length prefix included) that `me` decodes as `changes`; own
/// updates are upserts of `me` (their prefix lengths are `prefix_len`, and `prefix_len6`
/// in a dual-stack frame).
pub fn encode_changes(
    version: u64,
    prefix_len: u8,
    prefix_len6: Option<u8>,
    changes: &[PeerChange],
    me: &Key,
) -> Vec<u8> {
    let mut frame = mesh_proto::wire::FrameBuilder::changes_with(version, prefix_len, prefix_len6);
    let mut entry = Vec::new();
    for change in changes {
        entry.clear();
        match change {
            PeerChange::Upsert { peer } => {
                mesh_proto::wire::encode_peer(peer, &mut entry);
                frame.upsert(&entry);
            }
            PeerChange::Remove { public_key } => frame.remove(public_key),
            PeerChange::SelfUpdate {
                address,
                address6,
                name,
            } => {
                let own = PeerInfo {
                    public_key: *me,
                    name: name.clone(),
                    address: address.addr(),
                    address6: v6(*address6),
                    allowed_ips: Vec::new(),
                    endpoints: Vec::new(),
                };
                mesh_proto::wire::encode_peer(&own, &mut entry);
                frame.upsert(&entry);
            }
            PeerChange::Network { network } => frame.network(network),
        }
    }
    frame.finish()
}
