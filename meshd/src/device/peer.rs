//! Peers and the table the data plane reads them from.
//!
//! **Architecture Invariant:** the hot paths take no lock to find a peer: the table is an
//! immutable value behind an `ArcSwap`, loaded once per batch, and replaced whole when the
//! peer set changes. The only per-peer locks are the `Tunn` mutex (taken once per run of
//! consecutive packets for that peer, not per packet) and the endpoint `RwLock` (read once
//! per run, written only when a peer roams).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use boringtun::noise::Tunn;
use ipnet::IpNet;
use mesh_proto::disco::SharedKey;
use mesh_proto::paths::PeerPaths;
use mesh_proto::{AllowedIps, Key};
use parking_lot::{Mutex, RwLock};

/// Where WireGuard datagrams for a peer go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Straight to the peer at this address.
    Direct(SocketAddr),
    /// Through the relay at this address, wrapped in a relay SEND header.
    Relay(SocketAddr),
}

impl Endpoint {
    /// The UDP destination.
    pub fn addr(&self) -> SocketAddr {
        match *self {
            Endpoint::Direct(a) | Endpoint::Relay(a) => a,
        }
    }
}

/// NAT traversal state of a network peer (static peers have none: they keep WireGuard's
/// plain roaming).
pub struct Traversal {
    /// Path selection (sans-IO, from mesh-proto).
    pub paths: Mutex<PeerPaths>,
    /// Key sealing disco messages to and from this peer.
    pub disco: SharedKey,
    /// The peer's name in the network (admins may rename it).
    pub name: RwLock<String>,
}

/// One WireGuard peer: its noise state and where to reach it.
pub struct Peer {
    /// Identifies the peer in session indices: boringtun puts it in the upper 24 bits of
    /// every receiver index this node hands out, so a data packet finds its peer by
    /// `receiver_index >> 8`.
    pub index: u32,
    /// The peer's static public key.
    pub public_key: Key,
    /// Prefixes routed to this peer and accepted from it.
    allowed_ips: RwLock<Vec<IpNet>>,
    /// Keepalive interval in seconds, if any.
    pub persistent_keepalive: Option<u16>,
    /// boringtun's state machine for this peer (handshakes, sessions, timers).
    pub tunn: Mutex<Tunn>,
    endpoint: RwLock<Option<Endpoint>>,
    /// Path selection for peers from a network; `None` for static peers.
    pub traversal: Option<Traversal>,
    /// Handshake initiations sent and not yet answered (see [`Peer::initiation_sent`]).
    handshake: Mutex<HandshakeTrack>,
    /// Handshakes completed (see [`Peer::handshake_completed`]).
    handshakes: AtomicU64,
    /// When traffic last went to or came from the peer, on [`activity_now`]'s clock (ms).
    last_active: AtomicU64,
}

/// A network peer with no traffic for this long (ms; `peer-idle-after` in meshd.toml, set
/// once at start by [`set_idle_after`]) is idle: its timers (handshakes, keepalives) and
/// path probing stop until a packet goes to it or comes from it ([`Peer::touch`]). In a
/// network of thousands, a node talks to few of them. Keepalives do not count as traffic.
static IDLE_AFTER_MS: AtomicU64 = AtomicU64::new(60_000);
/// `touch` writes the shared timestamp at most this often (ms): packet runs only read it.
const TOUCH_GRANULARITY_MS: u64 = 1000;
/// The activity clock starts here, above any idle threshold, so "before now" never
/// goes below zero.
const CLOCK_BASE_MS: u64 = 86_400_000 * 2;

/// Sets the idle threshold (meshd's config, at start).
pub fn set_idle_after(d: std::time::Duration) {
    IDLE_AFTER_MS.store(ms(d).max(1), Ordering::Relaxed);
}

fn idle_after_ms() -> u64 {
    IDLE_AFTER_MS.load(Ordering::Relaxed)
}

/// A new network peer is active for half the idle threshold without traffic (paths found
/// and a handshake ready for the first packet, as before peers idled), so join-to-first-
/// ping stays as fast.
fn warmup_ms() -> u64 {
    idle_after_ms() / 2
}

/// The clock of [`Peer::touch`], in ms (monotonic, from an arbitrary base).
pub fn activity_now() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(CLOCK_BASE_MS)
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// When this node started and last retried a handshake that has not completed yet.
#[derive(Debug, Default, Clone, Copy)]
pub struct HandshakeTrack {
    /// The first initiation of the current attempt.
    pub first: Option<std::time::Instant>,
    /// The latest initiation.
    pub last: Option<std::time::Instant>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("index", &self.index)
            .field("public_key", &self.public_key)
            .field("endpoint", &self.endpoint())
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// A peer with a fresh `Tunn`.
    pub fn new(
        index: u32,
        public_key: Key,
        allowed_ips: Vec<IpNet>,
        persistent_keepalive: Option<u16>,
        endpoint: Option<Endpoint>,
        tunn: Tunn,
        traversal: Option<Traversal>,
    ) -> Peer {
        Peer {
            index,
            public_key,
            allowed_ips: RwLock::new(allowed_ips),
            persistent_keepalive,
            tunn: Mutex::new(tunn),
            endpoint: RwLock::new(endpoint),
            traversal,
            handshake: Mutex::new(HandshakeTrack::default()),
            handshakes: AtomicU64::new(0),
            last_active: AtomicU64::new(
                activity_now().saturating_sub(idle_after_ms().saturating_sub(warmup_ms())),
            ),
        }
    }

    /// Notes traffic to or from the peer (once per run of packets). Returns whether the
    /// peer was idle: the caller then restarts its path probing at once.
    pub fn touch(&self) -> bool {
        let now = activity_now();
        let last = self.last_active.load(Ordering::Relaxed);
        if now.saturating_sub(last) < TOUCH_GRANULARITY_MS {
            return false;
        }
        self.last_active.store(now, Ordering::Relaxed);
        self.traversal.is_some() && now.saturating_sub(last) >= idle_after_ms()
    }

    /// Whether the peer's timers and path probing run at `now` ([`activity_now`], read
    /// once per sweep over the peers): always for static peers (a configured WireGuard
    /// peer behaves as WireGuard does), for network peers while traffic flows and during
    /// the warm-up after they appear.
    pub fn is_active(&self, now: u64) -> bool {
        self.traversal.is_none()
            || now.saturating_sub(self.last_active.load(Ordering::Relaxed)) < idle_after_ms()
    }

    /// Notes that a handshake initiation went out to this peer (`datagram` is what was
    /// sent: anything but an initiation, message type 1, is ignored). Cheap: it looks at one
    /// byte unless it is an initiation, which is rare.
    #[inline]
    pub fn initiation_sent(&self, datagram: &[u8], now: std::time::Instant) {
        if datagram.first() == Some(&1) {
            let mut t = self.handshake.lock();
            t.first.get_or_insert(now);
            t.last = Some(now);
        }
    }

    /// The handshake attempt in progress, if any.
    pub fn handshake_track(&self) -> HandshakeTrack {
        *self.handshake.lock()
    }

    /// Counts a completed handshake: an authentic initiation this node answered, or an
    /// authentic response to its own initiation.
    pub fn handshake_completed(&self) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
    }

    /// Handshakes completed since this peer was added.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Forgets the attempt (it completed, or gave up).
    pub fn handshake_done(&self) {
        *self.handshake.lock() = HandshakeTrack::default();
    }

    /// Prefixes routed to this peer and accepted from it. The packet paths do not read this:
    /// they use the [`PeerTable`]'s routes, rebuilt whenever this changes.
    pub fn allowed_ips(&self) -> Vec<IpNet> {
        self.allowed_ips.read().clone()
    }

    /// Replaces the allowed IPs (an approved route appeared or went); the caller rebuilds
    /// the table. The session is kept.
    pub fn set_allowed_ips(&self, nets: Vec<IpNet>) {
        *self.allowed_ips.write() = nets;
    }

    /// Where packets for this peer go now.
    #[inline]
    pub fn endpoint(&self) -> Option<Endpoint> {
        *self.endpoint.read()
    }

    /// Points the peer at `to` (a path decision).
    pub fn set_endpoint(&self, to: Option<Endpoint>) {
        *self.endpoint.write() = to;
    }

    /// An authenticated WireGuard packet arrived directly from `from`. Static peers roam
    /// (the endpoint moves to `from`, as in WireGuard); for network peers it is evidence for
    /// their path selection, which decides. Returns true when a static peer's endpoint moved.
    #[inline]
    pub fn observe_source(&self, from: SocketAddr, now: std::time::Instant) -> bool {
        if let Some(t) = &self.traversal {
            t.paths.lock().note_authenticated_direct(now, from);
            return false;
        }
        if self.endpoint() == Some(Endpoint::Direct(from)) {
            return false;
        }
        let mut ep = self.endpoint.write();
        let changed = *ep != Some(Endpoint::Direct(from));
        *ep = Some(Endpoint::Direct(from));
        changed
    }
}

/// Every peer, indexed the three ways the data plane needs.
#[derive(Debug, Default)]
pub struct PeerTable {
    /// In configuration order (status output, timers).
    pub list: Vec<Arc<Peer>>,
    /// By [`Peer::index`], for data packets and handshake responses.
    pub by_index: HashMap<u32, Arc<Peer>>,
    /// By public key, for handshake initiations.
    pub by_key: HashMap<Key, Arc<Peer>>,
    /// Cryptokey routing: allowed IPs to peer.
    pub routes: AllowedIps<Arc<Peer>>,
}

impl PeerTable {
    /// Builds the indices over `peers`.
    pub fn new(peers: Vec<Arc<Peer>>) -> PeerTable {
        let mut table = PeerTable::default();
        for peer in &peers {
            table.by_index.insert(peer.index, peer.clone());
            table.by_key.insert(peer.public_key, peer.clone());
            for net in peer.allowed_ips().iter() {
                table.routes.insert(*net, peer.clone());
            }
        }
        table.list = peers;
        table
    }

    /// The peer whose allowed IPs hold `addr` (longest prefix).
    #[inline]
    pub fn route(&self, addr: std::net::IpAddr) -> Option<&Arc<Peer>> {
        self.routes.get(addr)
    }
}
