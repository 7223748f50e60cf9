//! The NAT traversal driver: the IO side of `mesh_proto::paths`.
//!
//! Everything here rides on the WireGuard socket, so the NAT mappings that reflection,
//! probes and relay registration create are the ones WireGuard uses:
//! - disco probes (`mesh_proto::disco`) are sealed with a key both peers derive from their
//!   WireGuard static keys, and fed to the peer's `PeerPaths`; its transmits go out here
//!   and its path changes move the peer's [`Endpoint`];
//! - reflection requests to the coordinator's two reflectors tell this node its public
//!   mapping (reported to the coordinator as reflexive candidates) and the NAT's mapping
//!   behaviour (`meshctl netcheck`);
//! - relay REGISTER every `REGISTER_INTERVAL_SECS` keeps the relay's view of this node (and
//!   the NAT mapping toward the relay) fresh. REGISTER carries the relay's cookie for our
//!   address (`mesh_proto::relay`): from the last REGISTERED, or, when there is none, it is
//!   older than a cookie window, or the last REGISTER went unanswered, from a HELLO whose
//!   CHALLENGE is answered with REGISTER at once.
//!
//! The inbound thread calls [`handle_disco`], [`handle_reflect`], [`handle_challenge`] and
//! [`handle_registered`];
//! the async [`run`] task drives timers every [`TICK`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_proto::api::{NetcheckReport, PathType, PingAnswer, PingReport, Reflection};
use mesh_proto::disco::{self, DiscoMsg};
use mesh_proto::paths::{Path, PathEvent, PeerPaths, Source};
use mesh_proto::{reflect, relay, Key};
use parking_lot::{Mutex, RwLock};

use super::peer::{Endpoint, Peer, PeerTable, Traversal};
use super::Device;

/// How often the driver runs due path timers. `PeerPaths` timers are ≥ 250 ms apart.
pub const TICK: Duration = Duration::from_millis(50);
/// How long `meshctl netcheck` waits for reflectors.
const NETCHECK_WAIT: Duration = Duration::from_millis(1500);
/// How long `meshctl ping` waits for pongs.
const PING_WAIT: Duration = Duration::from_millis(1200);
/// A relay registration older than this is considered lost.
const REGISTRATION_TTL: Duration = Duration::from_secs(3 * relay::REGISTER_INTERVAL_SECS);

/// Where a datagram goes (or came from, for replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight to this address.
    Direct(SocketAddr),
    /// Through the relay at `relay`, to (or from) the member `peer`.
    Relay {
        /// The relay's address.
        relay: SocketAddr,
        /// The other member.
        peer: Key,
    },
}

/// The coordinator's traversal services, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services {
    /// Reflector addresses.
    pub reflectors: Vec<SocketAddr>,
    /// Relay address.
    pub relay: Option<SocketAddr>,
    /// This node's relay token.
    pub relay_token: Option<Key>,
}

/// Node-wide traversal state (one per device).
#[derive(Debug, Default)]
pub struct State {
    services: RwLock<Services>,
    registered_at: Mutex<Option<Instant>>,
    cookie: Mutex<RelayCookie>,
    reflect: Mutex<ReflectState>,
    local: RwLock<Vec<SocketAddr>>,
    reflexive: RwLock<Vec<SocketAddr>>,
}

/// The relay's cookie for this node's address, and whether our last REGISTER is unanswered.
#[derive(Debug, Default)]
struct RelayCookie {
    cookie: Option<(Key, Instant)>,
    awaiting: bool,
}

impl RelayCookie {
    /// The cookie to register with now, if it can still be trusted: the relay accepts one
    /// for one window after its own, so one younger than a window is always good.
    fn usable(&self, now: Instant) -> Option<Key> {
        let (cookie, got) = self.cookie?;
        let fresh =
            now.saturating_duration_since(got) < Duration::from_secs(relay::COOKIE_EPOCH_SECS);
        (fresh && !self.awaiting).then_some(cookie)
    }
}

#[derive(Debug, Default)]
struct ReflectState {
    pending: Vec<([u8; 12], SocketAddr, Instant)>,
    seen: HashMap<SocketAddr, (SocketAddr, Instant)>,
}

impl State {
    /// The relay address, if the coordinator offers one.
    pub fn relay(&self) -> Option<SocketAddr> {
        self.services.read().relay
    }

    /// Whether the relay acknowledged our registration recently.
    pub fn relay_registered(&self) -> bool {
        self.registered_at
            .lock()
            .is_some_and(|t| t.elapsed() < REGISTRATION_TTL)
    }

    /// This node's candidates: local addresses and reflexive ones.
    pub fn own_candidates(&self) -> Vec<SocketAddr> {
        let mut own = self.reflexive.read().clone();
        for a in self.local.read().iter() {
            if !own.contains(a) {
                own.push(*a);
            }
        }
        own
    }

    /// Addresses the reflectors saw for the WireGuard socket, deduplicated.
    pub fn reflexive(&self) -> Vec<SocketAddr> {
        self.reflexive.read().clone()
    }

    /// Whether this host has no NAT in front of it: an interface carries the public address
    /// the reflectors saw (or, before any reflection, a public address at all).
    ///
    /// Such a host must not send openers: with no NAT of its own to pass, a TTL-2 opener
    /// already reaches the peer's NAT, whose mapping toward us then clashes (see
    /// `PeerPaths::poll_opener`), and masquerade reuses the clashed port for that peer's
    /// later destinations too.
    pub fn public_host(&self) -> bool {
        let local = self.local.read();
        let reflexive = self.reflexive.read();
        if reflexive.is_empty() {
            local
                .iter()
                .any(|a| mesh_proto::paths::kind_of(a) == mesh_proto::paths::PathKind::Public)
        } else {
            reflexive
                .iter()
                .any(|r| local.iter().any(|l| l.ip() == r.ip()))
        }
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // getrandom only fails on broken systems; a fixed value then still works (ids collide).
    let _ = getrandom::getrandom(&mut b);
    u64::from_le_bytes(b)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let _ = getrandom::getrandom(&mut b);
    b
}

impl Device {
    /// Sends `payload` directly or wrapped for the relay. Never waits: traversal traffic is
    /// retried by its own timers.
    pub fn send_via(&self, via: Via, payload: &[u8]) {
        let result = match via {
            Via::Direct(to) => self.udp.send_now(to, payload),
            Via::Relay { relay: r, peer } => self
                .udp
                .send_now(r, &relay::frame(relay::SEND, &peer, payload)),
        };
        if let Err(e) = result {
            tracing::debug!(?via, "send: {e}");
        }
    }

    /// Sends a WireGuard datagram to where the peer's endpoint says.
    pub fn send_to_peer(&self, peer: &Peer, payload: &[u8]) {
        match peer.endpoint() {
            Some(Endpoint::Direct(a)) => self.send_via(Via::Direct(a), payload),
            Some(Endpoint::Relay(r)) => self.send_via(
                Via::Relay {
                    relay: r,
                    peer: peer.public_key,
                },
                payload,
            ),
            None => {}
        }
    }

    /// Installs the coordinator's services; peers learn whether a relay is available.
    pub fn set_services(&self, services: Services) {
        let changed_relay = {
            let mut current = self.traversal.services.write();
            let changed = current.relay != services.relay;
            *current = services;
            changed
        };
        if changed_relay {
            // A cookie is for the address one relay saw.
            *self.traversal.cookie.lock() = RelayCookie::default();
        }
        if changed_relay {
            let now = Instant::now();
            let relay = self.traversal.relay();
            for peer in &self.peers.load().list {
                if let Some(t) = &peer.traversal {
                    let mut paths = t.paths.lock();
                    paths.set_relay_available(now, relay.is_some());
                    self.flush_paths(peer, t, &mut paths);
                }
            }
        }
        self.register_and_reflect();
    }

    /// Sets this node's local candidates (interface addresses with the WireGuard port).
    pub fn set_local_candidates(&self, local: Vec<SocketAddr>) {
        *self.traversal.local.write() = local;
        self.push_own_candidates();
    }

    fn push_own_candidates(&self) {
        let own = self.traversal.own_candidates();
        for peer in &self.peers.load().list {
            if let Some(t) = &peer.traversal {
                t.paths.lock().set_own_candidates(own.clone());
            }
        }
    }

    /// A new `PeerPaths` for a network peer with these candidates.
    pub fn new_paths(&self, candidates: &[SocketAddr]) -> PeerPaths {
        let now = Instant::now();
        let mut paths = PeerPaths::new(now, self.traversal.relay().is_some());
        paths.enable_openers();
        paths.set_candidates(now, reachable(self, candidates));
        paths.set_own_candidates(self.traversal.own_candidates());
        paths
    }

    /// The endpoint a path maps to.
    pub fn endpoint_for(&self, path: Option<Path>) -> Option<Endpoint> {
        match path? {
            Path::Direct(a) => Some(Endpoint::Direct(a)),
            Path::Relay => self.traversal.relay().map(Endpoint::Relay),
        }
    }

    /// Sends what `paths` queued and applies its path changes to the peer's endpoint.
    pub fn flush_paths(&self, peer: &Peer, t: &Traversal, paths: &mut PeerPaths) {
        let relay = self.traversal.relay();
        let public_host = self.traversal.public_host();
        while let Some(to) = paths.poll_opener() {
            if public_host || self.is_tunnelled(to.ip()) {
                // No NAT of ours to open (or the address is inside the mesh: never a
                // path); the ping still waits OPENER_LEAD, which gives the peer time to
                // open its NAT toward us first.
                continue;
            }
            // Its content does not matter: it is meant to expire on the way.
            if let Err(e) = self
                .udp
                .send_with_ttl(to, &disco::MAGIC, mesh_proto::paths::OPENER_TTL)
            {
                tracing::debug!(%to, "opener: {e}");
            }
        }
        while let Some((to, msg)) = paths.poll_transmit() {
            let via = match to {
                // A candidate inside the overlay (e.g. the address of a pod bridge whose
                // prefix the peer advertises) would be probed through the tunnel itself,
                // and answer: never a path.
                Source::Direct(a) if self.is_tunnelled(a.ip()) => continue,
                Source::Direct(a) => Via::Direct(a),
                Source::Relay => match relay {
                    Some(r) => Via::Relay {
                        relay: r,
                        peer: peer.public_key,
                    },
                    None => continue,
                },
            };
            let sealed = disco::seal(&t.disco, &self.public_key, random_bytes(), &msg);
            self.send_via(via, &sealed);
        }
        while let Some(PathEvent::Changed { from, to }) = paths.poll_event() {
            let endpoint = self.endpoint_for(to);
            tracing::info!(peer = %t.name.read(), key = %peer.public_key.fingerprint(), ?from, ?to, "path changed");
            peer.set_endpoint(endpoint);
        }
    }

    /// A network peer woke from idle ([`Peer::touch`]): probe its paths now rather than
    /// at the next timer (they went unchecked while it was idle).
    pub fn wake(&self, peer: &Peer) {
        if let Some(t) = &peer.traversal {
            let now = Instant::now();
            let mut paths = t.paths.lock();
            paths.probe_now(now);
            if paths.poll_timeout().is_some_and(|(at, _)| at <= now) {
                paths.handle_timeout(now, &mut random_u64);
            }
            self.flush_paths(peer, t, &mut paths);
            tracing::debug!(peer = %peer.public_key.fingerprint(), "active again");
        }
    }

    /// Runs `paths`' timers if due, then flushes.
    fn drive(&self, peer: &Peer, t: &Traversal, now: Instant) {
        let mut paths = t.paths.lock();
        if paths.poll_timeout().is_some_and(|(at, _)| at <= now) {
            paths.handle_timeout(now, &mut random_u64);
        }
        self.flush_paths(peer, t, &mut paths);
    }

    /// Sends the relay registration and reflection requests (every
    /// `REGISTER_INTERVAL_SECS`, and whenever the services change).
    fn register_and_reflect(&self) {
        let services = self.traversal.services.read().clone();
        if let (Some(r), Some(token)) = (services.relay, services.relay_token) {
            let now = Instant::now();
            let mut c = self.traversal.cookie.lock();
            match c.usable(now) {
                Some(cookie) => {
                    c.awaiting = true;
                    drop(c);
                    let register = relay::register(&self.public_key, &token, &cookie);
                    self.send_via(Via::Direct(r), &register);
                }
                None => {
                    // The CHALLENGE brings a cookie, answered with REGISTER at once.
                    *c = RelayCookie::default();
                    drop(c);
                    self.send_via(Via::Direct(r), &relay::hello(&self.public_key));
                }
            }
        }
        let now = Instant::now();
        let mut state = self.traversal.reflect.lock();
        state
            .pending
            .retain(|(_, _, at)| now.saturating_duration_since(*at) < NETCHECK_WAIT * 2);
        for reflector in &services.reflectors {
            let tx = random_bytes();
            state.pending.push((tx, *reflector, now));
            self.send_via(Via::Direct(*reflector), &reflect::request(tx));
        }
    }

    /// Whether the coordinator told us about reflectors.
    pub fn has_reflectors(&self) -> bool {
        !self.traversal.services.read().reflectors.is_empty()
    }

    /// `meshctl netcheck`: asks every reflector now and reports what they saw.
    pub async fn netcheck(&self) -> NetcheckReport {
        let start = Instant::now();
        self.register_and_reflect();
        let reflectors = self.traversal.services.read().reflectors.clone();
        let deadline = start + NETCHECK_WAIT;
        let observed = loop {
            let seen: Vec<Option<SocketAddr>> = {
                let state = self.traversal.reflect.lock();
                reflectors
                    .iter()
                    .map(|r| {
                        state
                            .seen
                            .get(r)
                            .filter(|(_, at)| *at >= start)
                            .map(|(o, _)| *o)
                    })
                    .collect()
            };
            if seen.iter().all(Option::is_some) || Instant::now() >= deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let mapping = reflect::classify(
            observed.first().copied().flatten(),
            observed.get(1).copied().flatten(),
        );
        NetcheckReport {
            udp: observed.iter().any(Option::is_some),
            reflections: reflectors
                .iter()
                .zip(&observed)
                .map(|(r, o)| Reflection {
                    reflector: *r,
                    observed: *o,
                })
                .collect(),
            mapping: match mapping {
                reflect::Mapping::EndpointIndependent => "endpoint-independent",
                reflect::Mapping::EndpointDependent => "endpoint-dependent",
                reflect::Mapping::Unknown => "unknown",
            }
            .to_owned(),
            relay: self.traversal.relay_registered(),
        }
    }

    /// `meshctl ping`: probes every path to the peer and reports which answered.
    pub async fn ping(&self, query: &str) -> Result<PingReport, String> {
        let peer = self.find_peer(query)?;
        let Some(t) = &peer.traversal else {
            return Err(format!(
                "{query:?} is a static peer; ping its overlay address instead"
            ));
        };
        let start = Instant::now();
        {
            let mut paths = t.paths.lock();
            paths.probe_now(start);
            paths.handle_timeout(start, &mut random_u64);
            self.flush_paths(&peer, t, &mut paths);
        }
        tokio::time::sleep(PING_WAIT).await;
        let paths = t.paths.lock();
        let mut answers: Vec<PingAnswer> = paths
            .snapshot()
            .into_iter()
            .filter(|c| c.last_pong.is_some_and(|at| at >= start))
            .map(|c| PingAnswer {
                path: PathType::Direct,
                addr: c.addr,
                rtt_ms: c.rtt.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            })
            .collect();
        let path = path_type(peer.endpoint());
        if answers.is_empty() && path == Some(PathType::Relay) && self.traversal.relay_registered()
        {
            // Relayed traffic answers through WireGuard itself; report the relay as the path.
            if let Some(r) = self.traversal.relay() {
                answers.push(PingAnswer {
                    path: PathType::Relay,
                    addr: r,
                    rtt_ms: 0.0,
                });
            }
        }
        Ok(PingReport {
            public_key: peer.public_key,
            answers,
            path,
        })
    }

    /// A peer by name (exact), overlay address, or public key prefix (at least 4
    /// characters), in that order of precedence.
    fn find_peer(&self, query: &str) -> Result<Arc<Peer>, String> {
        let table = self.peers.load();
        let pick = |matches: Vec<&Arc<Peer>>| -> Option<Result<Arc<Peer>, String>> {
            match matches.as_slice() {
                [] => None,
                [one] => Some(Ok((*one).clone())),
                _ => Some(Err(format!(
                    "{query:?} matches {} peers; be more specific",
                    matches.len()
                ))),
            }
        };
        let by_name = table
            .list
            .iter()
            .filter(|p| {
                p.traversal
                    .as_ref()
                    .is_some_and(|t| *t.name.read() == query)
            })
            .collect();
        if let Some(r) = pick(by_name) {
            return r;
        }
        if let Ok(ip) = query.parse::<std::net::IpAddr>() {
            if let Some(p) = table.route(ip) {
                return Ok(p.clone());
            }
        }
        if query.len() >= 4 {
            let by_key = table
                .list
                .iter()
                .filter(|p| p.public_key.to_base64().starts_with(query))
                .collect();
            if let Some(r) = pick(by_key) {
                return r;
            }
        }
        Err(format!(
            "no peer matches {query:?} (name, overlay address or key prefix)"
        ))
    }
}

/// The status word for an endpoint.
pub fn path_type(endpoint: Option<Endpoint>) -> Option<PathType> {
    endpoint.map(|e| match e {
        Endpoint::Direct(_) => PathType::Direct,
        Endpoint::Relay(_) => PathType::Relay,
    })
}

/// The candidates the WireGuard socket can send to: every one on the dual-stack socket,
/// IPv4 only where the kernel has no IPv6.
fn reachable(dev: &Device, candidates: &[SocketAddr]) -> Vec<SocketAddr> {
    let ipv6 = dev.udp.has_ipv6();
    candidates
        .iter()
        .copied()
        .filter(|a| ipv6 || a.is_ipv4())
        .collect()
}

/// Updates a network peer's candidates from a new netmap entry.
pub fn update_candidates(dev: &Device, peer: &Peer, candidates: &[SocketAddr]) {
    if let Some(t) = &peer.traversal {
        let mut paths = t.paths.lock();
        paths.set_candidates(Instant::now(), reachable(dev, candidates));
        dev.flush_paths(peer, t, &mut paths);
    }
}

/// A disco datagram arrived from `from` (direct, or through the relay).
pub fn handle_disco(dev: &Device, table: &PeerTable, datagram: &[u8], from: Source) -> bool {
    let Some(sender) = disco::sender(datagram) else {
        return false;
    };
    let Some(peer) = table.by_key.get(&sender) else {
        return false;
    };
    let Some(t) = &peer.traversal else {
        return false;
    };
    if let Source::Direct(a) = from {
        if dev.is_tunnelled(a.ip()) {
            // It came through the tunnel (sent to an overlay candidate by a peer that
            // does not filter them): a path over it would carry the tunnel inside itself.
            tracing::debug!(%a, "disco from an overlay address ignored");
            return true;
        }
    }
    let Ok(msg) = disco::open(&t.disco, datagram) else {
        return false;
    };
    // Probes are answered whether or not the peer is idle, but do not make it active:
    // two active peers probe each other, so that would keep every pair awake forever.
    // What wakes an idle peer is its handshake or data (see `Peer::touch`).
    let now = Instant::now();
    let mut paths = t.paths.lock();
    match msg {
        DiscoMsg::Ping { tx } => paths.handle_ping(now, from, tx),
        DiscoMsg::Pong { tx, observed } => paths.handle_pong(now, from, tx, observed),
        DiscoMsg::CallMeMaybe { candidates } => paths.handle_call_me_maybe(now, candidates),
    }
    // Handlers schedule their reactions "at now": run them at once, not at the next tick.
    if paths.poll_timeout().is_some_and(|(at, _)| at <= now) {
        paths.handle_timeout(now, &mut random_u64);
    }
    dev.flush_paths(peer, t, &mut paths);
    true
}

/// A reflection response arrived from `from`.
pub fn handle_reflect(dev: &Device, datagram: &[u8], from: SocketAddr) -> bool {
    let Some((tx, observed)) = reflect::parse_response(datagram) else {
        return false;
    };
    let now = Instant::now();
    let reflexive = {
        let mut state = dev.traversal.reflect.lock();
        let Some(i) = state
            .pending
            .iter()
            .position(|(t, r, _)| *t == tx && *r == from)
        else {
            return false;
        };
        state.pending.swap_remove(i);
        state.seen.insert(from, (observed, now));
        // In reflector order, so that answers arriving in a different order do not look
        // like a change (behind a symmetric NAT each reflector sees another port).
        let mut seen: Vec<(SocketAddr, SocketAddr)> =
            state.seen.iter().map(|(r, (o, _))| (*r, *o)).collect();
        seen.sort();
        let mut out: Vec<SocketAddr> = Vec::new();
        for (_, a) in seen {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    };
    let changed = {
        let mut current = dev.traversal.reflexive.write();
        let changed = *current != reflexive;
        *current = reflexive;
        changed
    };
    if changed {
        tracing::info!(reflexive = ?dev.traversal.reflexive(), "public mapping learned");
        dev.push_own_candidates();
        dev.reflexive_watch.send_replace(dev.traversal.reflexive());
    }
    true
}

/// The relay answered our HELLO with a cookie: REGISTER with it now.
pub fn handle_challenge(dev: &Device, from: SocketAddr, cookie: Key) -> bool {
    let services = dev.traversal.services.read().clone();
    let (Some(r), Some(token)) = (services.relay, services.relay_token) else {
        return false;
    };
    if r != from {
        return false;
    }
    *dev.traversal.cookie.lock() = RelayCookie {
        cookie: Some((cookie, Instant::now())),
        awaiting: true,
    };
    dev.send_via(
        Via::Direct(r),
        &relay::register(&dev.public_key, &token, &cookie),
    );
    true
}

/// The relay acknowledged our registration, with the cookie for the next one.
pub fn handle_registered(dev: &Device, from: SocketAddr, cookie: Key) -> bool {
    if dev.traversal.relay() != Some(from) {
        return false;
    }
    let now = Instant::now();
    *dev.traversal.cookie.lock() = RelayCookie {
        cookie: Some((cookie, now)),
        awaiting: false,
    };
    *dev.traversal.registered_at.lock() = Some(now);
    true
}

/// Drives path timers every [`TICK`], and registration and reflection every
/// `REGISTER_INTERVAL_SECS`. Runs until the process exits.
pub async fn run(dev: Arc<Device>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let every = (relay::REGISTER_INTERVAL_SECS * 1000 / TICK.as_millis() as u64).max(1);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        if n % every == 0 {
            dev.register_and_reflect();
        }
        let now = Instant::now();
        let active_now = super::peer::activity_now();
        let table = dev.peers.load();
        for peer in &table.list {
            if let Some(t) = peer
                .traversal
                .as_ref()
                .filter(|_| peer.is_active(active_now))
            {
                dev.drive(peer, t, now);
            }
        }
    }
}
