//! Peers and the table the data plane reads them from.
//!
//! **Architecture Invariant:** the hot paths take no lock to find a peer: the table is an
//! immutable value behind an `ArcSwap`, loaded once per batch, and replaced whole when the
//! peer set changes. The only per-peer locks are the `Tunn` mutex (taken once per run of
//! consecutive packets for that peer, not per packet) and the endpoint `RwLock` (read once
//! per run, written only when a peer roams).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use boringtun::noise::Tunn;
use ipnet::IpNet;
use mesh_proto::{AllowedIps, Key};
use parking_lot::{Mutex, RwLock};

/// One WireGuard peer: its noise state and where to reach it.
pub struct Peer {
    /// Identifies the peer in session indices: boringtun puts it in the upper 24 bits of
    /// every receiver index this node hands out, so a data packet finds its peer by
    /// `receiver_index >> 8`.
    pub index: u32,
    /// The peer's static public key.
    pub public_key: Key,
    /// Prefixes routed to this peer and accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval in seconds, if any.
    pub persistent_keepalive: Option<u16>,
    /// boringtun's state machine for this peer (handshakes, sessions, timers).
    pub tunn: Mutex<Tunn>,
    endpoint: RwLock<Option<SocketAddr>>,
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
        endpoint: Option<SocketAddr>,
        tunn: Tunn,
    ) -> Peer {
        Peer {
            index,
            public_key,
            allowed_ips,
            persistent_keepalive,
            tunn: Mutex::new(tunn),
            endpoint: RwLock::new(endpoint),
        }
    }

    /// Where packets for this peer go now.
    #[inline]
    pub fn endpoint(&self) -> Option<SocketAddr> {
        *self.endpoint.read()
    }

    /// Points the peer at `to` (control-plane decision, e.g. a new candidate).
    pub fn set_endpoint(&self, to: SocketAddr) {
        *self.endpoint.write() = Some(to);
    }

    /// Roaming: an authenticated packet arrived from `from`; make it the endpoint.
    /// Returns true when the endpoint changed.
    #[inline]
    pub fn observe_source(&self, from: SocketAddr) -> bool {
        if self.endpoint() == Some(from) {
            return false;
        }
        let mut ep = self.endpoint.write();
        let changed = *ep != Some(from);
        *ep = Some(from);
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
            for net in &peer.allowed_ips {
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
