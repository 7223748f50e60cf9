//! Per-peer path selection and NAT traversal: a sans-IO state machine.
//!
//! One [`PeerPaths`] per peer decides how to reach it: directly at one of its candidate
//! addresses ([`Path::Direct`]) or through the relay ([`Path::Relay`]). It never reads the
//! clock or draws randomness: every call takes `now`, and [`PeerPaths::handle_timeout`]
//! takes the random source. The driver (meshd) follows quinn's and snownet's loop:
//!
//! ```text
//!  netmap      ──set_candidates──▶ ┌────────────┐ ──poll_transmit──▶ seal, send (direct or relay)
//!  disco in    ──handle_ping/pong/ │ PeerPaths  │ ──poll_event─────▶ move the WireGuard endpoint
//!                call_me_maybe──▶  │            │ ──poll_timeout───▶ sleep until, then
//!  WireGuard in ──note_authenticated_direct──▶ └────────────┘       handle_timeout(now, rng)
//! ```
//!
//! After any `handle_*` call, drain [`PeerPaths::poll_transmit`] and
//! [`PeerPaths::poll_event`], then sleep until [`PeerPaths::poll_timeout`]. Handlers that
//! take no random source (a received ping, say) schedule work "at `now`" instead of doing
//! it; the driver's next `handle_timeout(now, ..)` does it.
//!
//! # Policy
//!
//! - Candidates come from the netmap (the peer's reflected address, its local addresses,
//!   an admin-set endpoint) and are learned: the source of an authenticated ping
//!   (peer-reflexive), the addresses in a [`DiscoMsg::CallMeMaybe`], and addresses
//!   WireGuard traffic authenticated from. Learned candidates are only probed; they become
//!   a path only after an authenticated pong (or WireGuard traffic once probed).
//! - **No direct path alive** (on the relay, or nothing): probe every candidate every
//!   [`PROBE_INTERVAL`] and send a CallMeMaybe through the relay every
//!   [`CALL_ME_MAYBE_INTERVAL`], so the other side probes back at the same moment and both
//!   NATs open (simultaneous open). Receiving a ping or a CallMeMaybe probes all candidates
//!   at once, at most once per [`MIN_ROUND_SPACING`]: that reaction is what punches holes.
//! - **A direct path alive**: ping it every [`HEARTBEAT_INTERVAL`]; an unanswered ping is
//!   retransmitted after [`RETRANSMIT_MIN`] (or twice the RTT); every candidate is probed
//!   every [`UPGRADE_INTERVAL`] to find a better path and keep fallbacks fresh.
//! - **Liveness**: a pong, or WireGuard traffic authenticated from the address
//!   ([`PeerPaths::note_authenticated_direct`]), is evidence. A path without evidence for
//!   [`PATH_TIMEOUT`] (three missed heartbeats) is dead: traffic moves to the best other
//!   alive candidate, else to the relay. So direct → relay takes at most 6.5 s after the
//!   path dies, and relay → direct about one probe interval after it returns.
//! - **Choice**: [`better_path`]: LAN over public over relay, then RTT with hysteresis.
//! - **Security**: a pong counts only if its transaction id matches a ping this machine sent
//!   to that same source less than [`PING_EXPIRY`] ago, and each id counts once: forged,
//!   redirected and replayed pongs change nothing. (Disco datagrams are authenticated
//!   before they get here: [`crate::disco::open`].) A replayed ping gets no pong.
//! - **Bounds**: at most [`MAX_CANDIDATES`] candidates (of them at most [`MAX_LEARNED`]
//!   learned), [`MAX_OUTSTANDING_PINGS`] outstanding pings, [`MAX_QUEUED_TRANSMITS`] queued
//!   transmits and [`MAX_QUEUED_EVENTS`] queued events, whatever the peer sends.
//!
//! Addresses are compared after turning IPv4-mapped IPv6 (`::ffff:a.b.c.d`) into IPv4, so a
//! dual-stack socket's view and the netmap's agree; paths name the IPv4 form.
//!
//! Expected results per NAT pair are in `mesh-proto/tests/netsim.rs`, which drives two
//! `PeerPaths` through in-memory NAT models.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use crate::disco::DiscoMsg;
use crate::reflect::canonical_ip;

/// While no direct path is alive, every candidate is probed this often (± [`JITTER_PERCENT`]).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(3);
/// While no direct path is alive, a CallMeMaybe goes through the relay this often, so the
/// peer probes us while we probe it.
pub const CALL_ME_MAYBE_INTERVAL: Duration = Duration::from_secs(3);
/// While a direct path is alive, it is pinged this often (± [`JITTER_PERCENT`]).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// While a direct path is alive, every candidate is probed this often (to find a better
/// path and keep fallbacks known).
pub const UPGRADE_INTERVAL: Duration = Duration::from_secs(10);
/// A path without evidence (pong or authenticated traffic) for this long is dead: three
/// missed heartbeats and a half (tailscale's `trustUDPAddrDuration` is the same 6.5 s).
pub const PATH_TIMEOUT: Duration = Duration::from_millis(6500);
/// Shortest wait before retransmitting an unanswered ping to the current path (the wait is
/// twice the RTT when that is longer, at most [`HEARTBEAT_INTERVAL`]). Under heavy loss this
/// is what keeps a working path from being declared dead.
pub const RETRANSMIT_MIN: Duration = Duration::from_millis(500);
/// A pong for a ping older than this is ignored (and the ping forgotten).
pub const PING_EXPIRY: Duration = Duration::from_secs(5);
/// Probe rounds triggered by the peer (a ping, a CallMeMaybe, new candidates) are at least
/// this far apart.
pub const MIN_ROUND_SPACING: Duration = Duration::from_secs(1);
/// Timers are spread by up to this many percent either way, so peers (and the many peers
/// of one node) do not fall into lockstep.
pub const JITTER_PERCENT: u64 = 10;
/// Most candidates per peer, learned ones included.
pub const MAX_CANDIDATES: usize = 16;
/// Most learned (peer-reflexive, CallMeMaybe, WireGuard-seen) candidates per peer; the
/// rest of [`MAX_CANDIDATES`] is for the netmap's.
pub const MAX_LEARNED: usize = 4;
/// Most pings awaiting a pong; the oldest is forgotten first.
pub const MAX_OUTSTANDING_PINGS: usize = 64;
/// Most messages waiting for [`PeerPaths::poll_transmit`]; the oldest is dropped first.
pub const MAX_QUEUED_TRANSMITS: usize = 64;
/// Most events waiting for [`PeerPaths::poll_event`]; beyond it the last two are merged.
pub const MAX_QUEUED_EVENTS: usize = 16;
/// How many recently answered ping ids are remembered to refuse replays.
const RECENT_PINGS: usize = 32;

/// Kinds of path, in order of preference (the derived `Ord`: `Lan < Public < Relay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// A private, unique-local, link-local or loopback address: the same site.
    Lan,
    /// Any other address: across the internet, possibly through NATs.
    Public,
    /// Through the relay.
    Relay,
}

/// How traffic to the peer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Straight to this address from the WireGuard socket.
    Direct(SocketAddr),
    /// Through the relay.
    Relay,
}

/// Where a disco message came from, or where one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// This address, on the WireGuard socket.
    Direct(SocketAddr),
    /// The relay.
    Relay,
}

/// An address the peer may be reached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The address.
    pub addr: SocketAddr,
    /// [`kind_of`] the address.
    pub kind: PathKind,
}

impl Candidate {
    /// The candidate for `addr`, with its [`kind_of`].
    pub fn new(addr: SocketAddr) -> Candidate {
        Candidate {
            addr,
            kind: kind_of(&addr),
        }
    }
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathEvent {
    /// The chosen path moved; `None` means no way to reach the peer.
    Changed {
        /// The previous path.
        from: Option<Path>,
        /// The new path.
        to: Option<Path>,
    },
}

/// One candidate as [`PeerPaths::snapshot`] shows it (for `meshctl status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CandidateState {
    /// The address.
    pub addr: SocketAddr,
    /// Its kind.
    pub kind: PathKind,
    /// Whether there was evidence (a pong, authenticated traffic) within [`PATH_TIMEOUT`].
    pub alive: bool,
    /// Smoothed round-trip time of its pings, once one was answered.
    pub rtt: Option<Duration>,
    /// When the last pong from it arrived (see [`CandidateState::last_pong_age`]).
    pub last_pong: Option<Instant>,
    /// Learned (peer-reflexive, from a CallMeMaybe or from traffic) rather than from the
    /// netmap.
    pub learned: bool,
}

impl CandidateState {
    /// How long ago the last pong arrived, as of `now`.
    pub fn last_pong_age(&self, now: Instant) -> Option<Duration> {
        self.last_pong.map(|t| now.saturating_duration_since(t))
    }
}

/// The kind of a candidate address: [`PathKind::Lan`] for private IPv4 (RFC 1918), IPv4
/// link-local, unique-local IPv6 (`fc00::/7`), link-local IPv6 and loopback;
/// [`PathKind::Public`] for everything else (carrier-grade NAT space `100.64.0.0/10`
/// included: it is not a site).
pub fn kind_of(addr: &SocketAddr) -> PathKind {
    let lan = match canonical_ip(addr.ip()) {
        IpAddr::V4(ip) => ip.is_private() || ip.is_link_local() || ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_unique_local() || ip.is_unicast_link_local() || ip.is_loopback(),
    };
    if lan {
        PathKind::Lan
    } else {
        PathKind::Public
    }
}

/// Whether to move from the `current` path to a `new` one, each given as kind and RTT
/// (tailscale's `betterAddr`): a lower [`PathKind`] wins; within a kind, the new path must be
/// known to be faster by a quarter (new RTT < 3/4 of the current), so two similar paths
/// do not flap. An unknown RTT never beats a known one; a known one beats an unknown one.
pub fn better_path(
    current: (PathKind, Option<Duration>),
    new: (PathKind, Option<Duration>),
) -> bool {
    if new.0 != current.0 {
        return new.0 < current.0;
    }
    match (current.1, new.1) {
        (_, None) => false,
        (None, Some(_)) => true,
        // In nanoseconds as u128: cannot overflow.
        (Some(cur), Some(new)) => new.as_nanos() * 4 < cur.as_nanos() * 3,
    }
}

/// `addr` with IPv4-mapped IPv6 as IPv4 and no flow label (how addresses are compared).
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, v6.scope_id())),
        },
        v4 => v4,
    }
}

/// Whether a datagram can be sent to `addr` at all.
fn usable(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && ip != IpAddr::V4(Ipv4Addr::BROADCAST)
}

fn canonical_source(s: Source) -> Source {
    match s {
        Source::Direct(a) => Source::Direct(canonical(a)),
        Source::Relay => Source::Relay,
    }
}

#[derive(Debug, Clone)]
struct Cand {
    addr: SocketAddr,
    kind: PathKind,
    learned: bool,
    alive: bool,
    rtt: Option<Duration>,
    last_evidence: Option<Instant>,
    last_pong: Option<Instant>,
    last_ping: Option<Instant>,
    added: Instant,
}

impl Cand {
    fn new(now: Instant, addr: SocketAddr, learned: bool) -> Cand {
        Cand {
            addr,
            kind: kind_of(&addr),
            learned,
            alive: false,
            rtt: None,
            last_evidence: None,
            last_pong: None,
            last_ping: None,
            added: now,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    tx: [u8; 12],
    to: Source,
    sent: Instant,
}

/// Path selection and NAT traversal towards one peer (see the module documentation).
#[derive(Debug)]
pub struct PeerPaths {
    relay_available: bool,
    path: Option<Path>,
    candidates: Vec<Cand>,
    own_candidates: Vec<SocketAddr>,
    observed: Option<SocketAddr>,
    outstanding: VecDeque<Outstanding>,
    /// Transaction ids of pings already answered, to refuse replays.
    recent_pings: VecDeque<[u8; 12]>,
    transmits: VecDeque<(Source, DiscoMsg)>,
    events: VecDeque<PathEvent>,
    /// Next probe round of all candidates.
    next_round: Instant,
    last_round: Option<Instant>,
    next_call_me_maybe: Instant,
    /// Next heartbeat to the current direct path.
    next_heartbeat: Instant,
    /// Last ping sent to the current direct path.
    last_path_ping: Option<Instant>,
    /// Retransmission of an unanswered ping to the current direct path.
    next_retransmit: Option<Instant>,
    /// Jitter source: fed from the rng in `handle_timeout`, so handlers can jitter too.
    jitter: u64,
}

impl PeerPaths {
    /// A peer with no candidates yet. The path starts as [`Path::Relay`] when a relay is
    /// available, else `None`; no event is emitted for that initial state.
    pub fn new(now: Instant, relay_available: bool) -> Self {
        PeerPaths {
            relay_available,
            path: relay_available.then_some(Path::Relay),
            candidates: Vec::new(),
            own_candidates: Vec::new(),
            observed: None,
            outstanding: VecDeque::new(),
            recent_pings: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_round: now,
            last_round: None,
            next_call_me_maybe: now,
            next_heartbeat: now,
            last_path_ping: None,
            next_retransmit: None,
            jitter: 0x853c_49e6_748f_ea9b,
        }
    }

    /// Replaces the netmap's candidates for this peer (its reflected address, local
    /// addresses, admin-set endpoint). Candidates that stay keep their state; learned ones
    /// stay; a removed one that is the current path is kept as learned until it dies. New
    /// candidates are probed at once (within [`MIN_ROUND_SPACING`]). Unusable addresses
    /// (unspecified, port 0, multicast, broadcast) are skipped; at most
    /// `MAX_CANDIDATES - MAX_LEARNED` are taken.
    pub fn set_candidates(&mut self, now: Instant, candidates: Vec<SocketAddr>) {
        let mut wanted: Vec<SocketAddr> = Vec::new();
        for addr in candidates.into_iter().map(canonical) {
            if usable(&addr) && !wanted.contains(&addr) {
                wanted.push(addr);
                if wanted.len() == MAX_CANDIDATES - MAX_LEARNED {
                    break;
                }
            }
        }
        let current = self.current_addr();
        let mut old = std::mem::take(&mut self.candidates);
        let mut added = false;
        for addr in &wanted {
            match old.iter().position(|c| c.addr == *addr) {
                Some(i) => {
                    let mut c = old.swap_remove(i);
                    c.learned = false;
                    self.candidates.push(c);
                }
                None => {
                    self.candidates.push(Cand::new(now, *addr, false));
                    added = true;
                }
            }
        }
        // What was learned stays learned; the current path stays while it works.
        for mut c in old {
            if c.learned || Some(c.addr) == current {
                c.learned = true;
                self.candidates.push(c);
            }
        }
        while self.learned_count() > MAX_LEARNED {
            if !self.evict_learned() {
                break;
            }
        }
        if added {
            self.request_round(now);
        }
    }

    /// Sets this node's own candidates, which CallMeMaybe messages advertise to the peer
    /// (at most [`crate::disco::MAX_CANDIDATES`]). Empty by default: a CallMeMaybe then only
    /// asks the peer to probe the candidates it has.
    pub fn set_own_candidates(&mut self, candidates: Vec<SocketAddr>) {
        self.own_candidates = candidates
            .into_iter()
            .map(canonical)
            .filter(usable)
            .collect();
        self.own_candidates.dedup();
        self.own_candidates.truncate(crate::disco::MAX_CANDIDATES);
    }

    /// Whether a relay can be used. Without one, and without a direct path, the peer is
    /// unreachable (`path() == None`).
    pub fn set_relay_available(&mut self, now: Instant, available: bool) {
        if self.relay_available == available {
            return;
        }
        self.relay_available = available;
        match (self.path, available) {
            (Some(Path::Relay), false) => self.set_path(now, None),
            (None, true) => {
                self.next_call_me_maybe = now;
                self.set_path(now, Some(Path::Relay));
            }
            _ => {}
        }
    }

    /// An authenticated ping arrived. Queues a pong to the same source (its `observed` is
    /// the source address; unspecified for the relay), learns a direct source it did not
    /// know as a peer-reflexive candidate, and — unless a direct path is alive — probes all
    /// candidates at once (rate-limited): the reaction that makes simultaneous open work.
    /// A ping whose `tx` was already answered (a replay) is ignored.
    pub fn handle_ping(&mut self, now: Instant, from: Source, tx: [u8; 12]) {
        let from = canonical_source(from);
        if self.recent_pings.contains(&tx) {
            return;
        }
        if self.recent_pings.len() == RECENT_PINGS {
            self.recent_pings.pop_front();
        }
        self.recent_pings.push_back(tx);
        let observed = match from {
            Source::Direct(a) => a,
            Source::Relay => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        };
        self.queue_transmit(from, DiscoMsg::Pong { tx, observed });
        let mut learned = false;
        if let Source::Direct(a) = from {
            if usable(&a) && self.find(a).is_none() {
                learned = self.add_learned(now, a);
            }
        }
        if learned || !self.is_direct() {
            self.request_round(now);
        }
    }

    /// An authenticated CallMeMaybe arrived (through the relay): the peer is probing us
    /// now. Learns its candidates and probes all of ours at once (rate-limited).
    pub fn handle_call_me_maybe(&mut self, now: Instant, candidates: Vec<SocketAddr>) {
        for addr in candidates
            .into_iter()
            .take(crate::disco::MAX_CANDIDATES)
            .map(canonical)
        {
            if usable(&addr) && self.find(addr).is_none() {
                self.add_learned(now, addr);
            }
        }
        self.request_round(now);
    }

    /// An authenticated pong arrived. It counts only if `tx` matches a ping sent to this
    /// same `from` less than [`PING_EXPIRY`] ago (once); then the RTT is recorded, the path
    /// is alive, and it becomes the path if [`better_path`] says so.
    pub fn handle_pong(&mut self, now: Instant, from: Source, tx: [u8; 12], observed: SocketAddr) {
        let from = canonical_source(from);
        let Some(i) = self
            .outstanding
            .iter()
            .position(|o| o.tx == tx && o.to == from)
        else {
            return;
        };
        let Some(ping) = self.outstanding.remove(i) else {
            return;
        };
        let rtt = now.saturating_duration_since(ping.sent);
        if rtt > PING_EXPIRY {
            return;
        }
        let Source::Direct(addr) = from else {
            return;
        };
        let Some(i) = self.find(addr) else {
            return;
        };
        self.observed = Some(canonical(observed));
        let c = &mut self.candidates[i];
        c.rtt = Some(match c.rtt {
            // RFC 6298's smoothing: 7/8 old, 1/8 new.
            Some(srtt) => (srtt * 7 + rtt) / 8,
            None => rtt,
        });
        c.last_pong = Some(now);
        self.evidence(now, i);
    }

    /// A WireGuard packet from `from` authenticated: evidence that the direct path to
    /// `from` works, like a pong without an RTT. It can make `from` the path only if `from`
    /// is a netmap candidate or a learned one already probed; an unknown address is only
    /// learned and probed, never switched to by this call.
    ///
    /// Cheap enough for the receive path (a scan of at most [`MAX_CANDIDATES`]); meshd may
    /// call it once per received batch.
    pub fn note_authenticated_direct(&mut self, now: Instant, from: SocketAddr) {
        let from = canonical(from);
        match self.find(from) {
            Some(i) => {
                let c = &self.candidates[i];
                if !c.learned || c.last_ping.is_some() {
                    self.evidence(now, i);
                }
            }
            None => {
                if usable(&from) && self.add_learned(now, from) {
                    self.request_round(now);
                }
            }
        }
    }

    /// Runs the timers due at `now`: expires paths and pings, sends probe rounds,
    /// heartbeats, retransmissions and CallMeMaybes. `rng` supplies transaction ids and
    /// jitter (meshd passes the OS generator; tests pass a seeded one).
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn FnMut() -> u64) {
        self.jitter ^= rng();
        while self
            .outstanding
            .front()
            .is_some_and(|o| now.saturating_duration_since(o.sent) > PING_EXPIRY)
        {
            self.outstanding.pop_front();
        }

        // Paths without recent evidence are dead.
        for c in &mut self.candidates {
            if c.alive
                && c.last_evidence
                    .is_none_or(|t| now.saturating_duration_since(t) >= PATH_TIMEOUT)
            {
                c.alive = false;
            }
        }
        if let Some(addr) = self.current_addr() {
            if self.find(addr).is_none_or(|i| !self.candidates[i].alive) {
                self.reselect(now);
            }
        }

        if !self.candidates.is_empty() && now >= self.next_round {
            self.last_round = Some(now);
            for i in 0..self.candidates.len() {
                let to = Source::Direct(self.candidates[i].addr);
                self.send_ping(now, to, rng);
            }
            let interval = if self.is_direct() {
                UPGRADE_INTERVAL
            } else {
                PROBE_INTERVAL
            };
            self.next_round = now + self.jittered(interval);
        }

        if let Some(addr) = self.current_addr() {
            if now >= self.next_heartbeat {
                self.send_ping(now, Source::Direct(addr), rng);
            } else if self.next_retransmit.is_some_and(|t| now >= t) {
                if self.awaiting_pong(addr) {
                    self.send_ping(now, Source::Direct(addr), rng);
                } else {
                    self.next_retransmit = None;
                }
            }
        } else if self.relay_available && now >= self.next_call_me_maybe {
            let candidates = self.own_candidates.clone();
            self.queue_transmit(Source::Relay, DiscoMsg::CallMeMaybe { candidates });
            self.next_call_me_maybe = now + self.jittered(CALL_ME_MAYBE_INTERVAL);
        }
    }

    /// When [`PeerPaths::handle_timeout`] must next be called, and why ("probe",
    /// "call-me-maybe", "heartbeat", "retransmit", "path-expiry"). `None`: nothing to do
    /// until something arrives.
    pub fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        let mut best: Option<(Instant, &'static str)> = None;
        let mut consider = |t: Instant, why: &'static str| {
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, why));
            }
        };
        if !self.candidates.is_empty() {
            consider(self.next_round, "probe");
        }
        if self.is_direct() {
            consider(self.next_heartbeat, "heartbeat");
            if let Some(t) = self.next_retransmit {
                consider(t, "retransmit");
            }
        } else if self.relay_available {
            consider(self.next_call_me_maybe, "call-me-maybe");
        }
        for c in self.candidates.iter().filter(|c| c.alive) {
            if let Some(t) = c.last_evidence {
                consider(t + PATH_TIMEOUT, "path-expiry");
            }
        }
        best
    }

    /// The next disco message to seal and send, and where: a candidate address on the
    /// WireGuard socket, or the relay.
    pub fn poll_transmit(&mut self) -> Option<(Source, DiscoMsg)> {
        self.transmits.pop_front()
    }

    /// The next path change, oldest first.
    pub fn poll_event(&mut self) -> Option<PathEvent> {
        self.events.pop_front()
    }

    /// The current path: where WireGuard traffic to the peer goes. `None`: nowhere yet.
    pub fn path(&self) -> Option<Path> {
        self.path
    }

    /// The smoothed RTT of the current direct path (`None` on the relay or before a pong).
    pub fn rtt(&self) -> Option<Duration> {
        let addr = self.current_addr()?;
        self.candidates[self.find(addr)?].rtt
    }

    /// Our own address as the peer last saw it (from a direct pong), for status output.
    pub fn observed_by_peer(&self) -> Option<SocketAddr> {
        self.observed
    }

    /// Every candidate's state, netmap ones first, for status output.
    pub fn snapshot(&self) -> Vec<CandidateState> {
        self.candidates
            .iter()
            .map(|c| CandidateState {
                addr: c.addr,
                kind: c.kind,
                alive: c.alive,
                rtt: c.rtt,
                last_pong: c.last_pong,
                learned: c.learned,
            })
            .collect()
    }

    fn is_direct(&self) -> bool {
        matches!(self.path, Some(Path::Direct(_)))
    }

    fn current_addr(&self) -> Option<SocketAddr> {
        match self.path {
            Some(Path::Direct(a)) => Some(a),
            _ => None,
        }
    }

    fn find(&self, addr: SocketAddr) -> Option<usize> {
        self.candidates.iter().position(|c| c.addr == addr)
    }

    fn learned_count(&self) -> usize {
        self.candidates.iter().filter(|c| c.learned).count()
    }

    /// Drops the learned candidate least worth keeping (not the current path, not alive,
    /// oldest). False if every learned candidate is worth keeping.
    fn evict_learned(&mut self) -> bool {
        let current = self.current_addr();
        let victim = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.learned && !c.alive && Some(c.addr) != current)
            .min_by_key(|(_, c)| c.added)
            .map(|(i, _)| i);
        match victim {
            Some(i) => {
                self.candidates.remove(i);
                true
            }
            None => false,
        }
    }

    /// Adds a learned candidate if there is room (evicting a stale learned one if needed).
    fn add_learned(&mut self, now: Instant, addr: SocketAddr) -> bool {
        if (self.learned_count() >= MAX_LEARNED || self.candidates.len() >= MAX_CANDIDATES)
            && !self.evict_learned()
        {
            return false;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            return false;
        }
        self.candidates.push(Cand::new(now, addr, true));
        true
    }

    /// Candidate `i` just proved to work: alive now; maybe the new path.
    fn evidence(&mut self, now: Instant, i: usize) {
        let c = &mut self.candidates[i];
        c.alive = true;
        c.last_evidence = Some(now);
        let new = (c.kind, c.rtt);
        let addr = c.addr;
        let current = match self.path {
            Some(Path::Direct(a)) if a == addr => {
                self.next_retransmit = None;
                return;
            }
            Some(Path::Direct(a)) => self.find(a).map(|j| {
                let c = &self.candidates[j];
                (c.kind, c.rtt)
            }),
            Some(Path::Relay) => Some((PathKind::Relay, None)),
            None => None,
        };
        if current.is_none_or(|cur| better_path(cur, new)) {
            self.set_path(now, Some(Path::Direct(addr)));
        }
    }

    /// The current path died: the best alive candidate, else the relay, else nothing.
    fn reselect(&mut self, now: Instant) {
        let best = self
            .candidates
            .iter()
            .filter(|c| c.alive)
            .min_by_key(|c| (c.kind, c.rtt.unwrap_or(Duration::MAX)))
            .map(|c| Path::Direct(c.addr));
        let to = best.or(self.relay_available.then_some(Path::Relay));
        self.set_path(now, to);
    }

    fn set_path(&mut self, now: Instant, to: Option<Path>) {
        if to == self.path {
            return;
        }
        let from = std::mem::replace(&mut self.path, to);
        self.next_retransmit = None;
        self.last_path_ping = None;
        match to {
            Some(Path::Direct(_)) => {
                // Just heard from it: the next heartbeat is a full interval away.
                self.next_heartbeat = now + self.jittered(HEARTBEAT_INTERVAL);
                if !matches!(from, Some(Path::Direct(_))) {
                    self.next_round = now + self.jittered(UPGRADE_INTERVAL);
                }
            }
            _ => {
                // Lost the direct path (or never had one): probe and call at once.
                self.request_round(now);
                self.next_call_me_maybe = now;
            }
        }
        let event = PathEvent::Changed { from, to };
        if self.events.len() >= MAX_QUEUED_EVENTS {
            // Merge with the last queued change rather than grow.
            if let Some(PathEvent::Changed { from: first, .. }) = self.events.pop_back() {
                if first != to {
                    self.events
                        .push_back(PathEvent::Changed { from: first, to });
                }
            }
        } else {
            self.events.push_back(event);
        }
    }

    /// Schedules a probe round of all candidates at `now`, or as soon as
    /// [`MIN_ROUND_SPACING`] after the last one allows.
    fn request_round(&mut self, now: Instant) {
        let at = match self.last_round {
            Some(last) => (last + MIN_ROUND_SPACING).max(now),
            None => now,
        };
        self.next_round = self.next_round.min(at);
    }

    fn awaiting_pong(&self, addr: SocketAddr) -> bool {
        let Some(sent) = self.last_path_ping else {
            return false;
        };
        self.find(addr)
            .and_then(|i| self.candidates[i].last_evidence)
            .is_none_or(|t| t < sent)
    }

    fn send_ping(&mut self, now: Instant, to: Source, rng: &mut dyn FnMut() -> u64) {
        let mut tx = [0u8; 12];
        tx[..8].copy_from_slice(&rng().to_le_bytes());
        tx[8..].copy_from_slice(&rng().to_le_bytes()[..4]);
        if self.outstanding.len() >= MAX_OUTSTANDING_PINGS {
            self.outstanding.pop_front();
        }
        self.outstanding
            .push_back(Outstanding { tx, to, sent: now });
        if let Source::Direct(addr) = to {
            if let Some(i) = self.find(addr) {
                self.candidates[i].last_ping = Some(now);
            }
            if self.current_addr() == Some(addr) {
                // Any ping to the current path is its heartbeat, and is retransmitted
                // until answered.
                self.last_path_ping = Some(now);
                self.next_heartbeat = now + self.jittered(HEARTBEAT_INTERVAL);
                let rto = self
                    .rtt()
                    .map_or(RETRANSMIT_MIN, |rtt| rtt * 2)
                    .clamp(RETRANSMIT_MIN, HEARTBEAT_INTERVAL);
                self.next_retransmit = Some(now + self.jittered(rto));
            }
        }
        self.queue_transmit(to, DiscoMsg::Ping { tx });
    }

    fn queue_transmit(&mut self, to: Source, msg: DiscoMsg) {
        if self.transmits.len() >= MAX_QUEUED_TRANSMITS {
            self.transmits.pop_front();
        }
        self.transmits.push_back((to, msg));
    }

    /// `base` ± [`JITTER_PERCENT`], from the jitter state (SplitMix64 step).
    fn jittered(&mut self, base: Duration) -> Duration {
        self.jitter = self.jitter.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.jitter;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX / 4);
        let span = nanos / 100 * JITTER_PERCENT;
        let offset = z % (2 * span + 1);
        Duration::from_nanos(nanos - span + offset)
    }
}

#[cfg(test)]
mod tests {}
