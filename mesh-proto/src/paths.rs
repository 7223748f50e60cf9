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
//!   at once, at most once per [`MIN_ROUND_SPACING`], and a ping from a candidate that is
//!   not alive is answered by a ping back to it (at most every [`PING_BACK_SPACING`]):
//!   those reactions are what punch holes. New candidates are probed as soon as known.
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

/// How long a ping to a public candidate that is not alive waits after its opener (see
/// [`PeerPaths::poll_opener`]): longer than a CallMeMaybe takes through the relay.
pub const OPENER_LEAD: Duration = Duration::from_millis(250);
/// An opener's mapping lives as long as the NAT keeps unanswered UDP mappings (Linux: 30 s);
/// a candidate still not alive after this long is opened again.
pub const OPENER_REFRESH: Duration = Duration::from_secs(20);
/// The IP TTL of openers: past a NAT one or two hops away, not as far as the peer's NAT.
pub const OPENER_TTL: u32 = 2;

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
/// heartbeat intervals and a quarter, so three heartbeats (and their retransmissions) went
/// unanswered (tailscale's `trustUDPAddrDuration` is the same 6.5 s).
pub const PATH_TIMEOUT: Duration = Duration::from_millis(6500);
/// Shortest wait before retransmitting an unanswered ping to the current path (the wait is
/// twice the RTT when that is longer, at most [`HEARTBEAT_INTERVAL`]). Under heavy loss this
/// is what keeps a working path from being declared dead.
pub const RETRANSMIT_MIN: Duration = Duration::from_millis(250);
/// A pong for a ping older than this is ignored (and the ping forgotten).
pub const PING_EXPIRY: Duration = Duration::from_secs(5);
/// Probe rounds triggered by the peer (a ping, a CallMeMaybe, new candidates) are at least
/// this far apart.
pub const MIN_ROUND_SPACING: Duration = Duration::from_secs(1);
/// A candidate that pings us while not alive is pinged back at once (outside full rounds),
/// but not sooner than this after our last ping to it.
pub const PING_BACK_SPACING: Duration = Duration::from_millis(250);
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
/// A learned candidate without evidence for this long (since it was learned or last alive)
/// is forgotten, so a stale peer-reflexive address (or a replayed ping's spoofed source) is
/// not probed forever.
pub const LEARNED_TTL: Duration = Duration::from_secs(30);
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
    /// When to ping just this candidate (new, or pinged us while not alive).
    probe_at: Option<Instant>,
    added: Instant,
    /// When an opener last went to it (see [`PeerPaths::poll_opener`]).
    opened: Option<Instant>,
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
            probe_at: Some(now),
            added: now,
            opened: None,
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
    use_openers: bool,
    openers: VecDeque<SocketAddr>,
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
            use_openers: false,
            openers: VecDeque::new(),
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
    /// candidates are probed at once (at the next `handle_timeout`). Unusable addresses
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
        for addr in &wanted {
            match old.iter().position(|c| c.addr == *addr) {
                Some(i) => {
                    let mut c = old.swap_remove(i);
                    c.learned = false;
                    self.candidates.push(c);
                }
                // Probed at once: Cand::new sets probe_at.
                None => self.candidates.push(Cand::new(now, *addr, false)),
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
    }

    /// Sets this node's own candidates, which CallMeMaybe messages advertise to the peer
    /// (at most [`crate::disco::MAX_CANDIDATES`]). Empty by default: a CallMeMaybe then only
    /// asks the peer to probe the candidates it has.
    pub fn set_own_candidates(&mut self, candidates: Vec<SocketAddr>) {
        self.own_candidates.clear();
        for addr in candidates.into_iter().map(canonical) {
            if self.own_candidates.len() == crate::disco::MAX_CANDIDATES {
                break;
            }
            if usable(&addr) && !self.own_candidates.contains(&addr) {
                self.own_candidates.push(addr);
            }
        }
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
    /// know as a peer-reflexive candidate and pings it (or pings back a known one that is
    /// not alive, at most every [`PING_BACK_SPACING`]), and — unless a direct path is
    /// alive — probes all candidates at once (at most once per [`MIN_ROUND_SPACING`]): the
    /// reaction that makes simultaneous open work.
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
        if let Source::Direct(a) = from {
            match self.find(a) {
                // It reaches us from there: ping back at once (the pong may well get
                // through now that its NAT has sent to us), at most every PING_BACK_SPACING.
                Some(i) if !self.candidates[i].alive => {
                    let c = &mut self.candidates[i];
                    let at = c
                        .last_ping
                        .map_or(now, |t| (t + PING_BACK_SPACING).max(now));
                    c.probe_at = Some(c.probe_at.map_or(at, |p| p.min(at)));
                }
                Some(_) => {}
                // Peer-reflexive: probed at once (Cand::new sets probe_at).
                None if usable(&a) => {
                    self.add_learned(now, a);
                }
                None => {}
            }
        }
        if !self.is_direct() {
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
            // Learned, and so probed at once; it counts once a probe went out.
            None if usable(&from) => {
                self.add_learned(now, from);
            }
            None => {}
        }
    }

    /// Probes every candidate at the next `handle_timeout` (at most once per
    /// [`MIN_ROUND_SPACING`]), for `meshctl ping`: the answers show in
    /// [`PeerPaths::snapshot`] (`last_pong`, `rtt`).
    pub fn probe_now(&mut self, now: Instant) {
        self.request_round(now);
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
        // Learned candidates that never worked, or stopped working long ago, are forgotten.
        let current = self.current_addr();
        self.candidates.retain(|c| {
            !c.learned
                || c.alive
                || Some(c.addr) == current
                || now.saturating_duration_since(c.last_evidence.unwrap_or(c.added).max(c.added))
                    < LEARNED_TTL
        });

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

        // Single candidates due a probe: new ones, and ones that pinged us (ping back).
        for i in 0..self.candidates.len() {
            if self.candidates[i].probe_at.is_some_and(|t| t <= now) {
                let to = Source::Direct(self.candidates[i].addr);
                self.send_ping(now, to, rng);
            }
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

    /// When [`PeerPaths::handle_timeout`] must next be called, and why: "probe" (a round
    /// of all candidates), "probe-now" (a new candidate, or a ping back), "call-me-maybe",
    /// "heartbeat", "retransmit", "path-expiry". `None`: nothing to do until something
    /// arrives.
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
        if let Some(t) = self.candidates.iter().filter_map(|c| c.probe_at).min() {
            consider(t, "probe-now");
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

    /// Turns openers on (see [`PeerPaths::poll_opener`]).
    pub fn enable_openers(&mut self) {
        self.use_openers = true;
    }

    /// The next public candidate to send an *opener* to: any small datagram from the
    /// WireGuard socket with an IP TTL of [`OPENER_TTL`], which creates this node's NAT
    /// mapping toward the candidate but expires in transit before it reaches the peer's NAT.
    ///
    /// Why: a Linux NAT (`masquerade`) that receives an unsolicited packet from the peer keeps
    /// a conntrack entry for it, and when this side then sends to that peer, the mapping
    /// clashes with that entry and gets another port, which the peer's NAT drops: holes stay
    /// closed for good. So before pinging a public candidate that is not alive, each side
    /// opens its own NAT without touching the other's, and pings only [`OPENER_LEAD`] later,
    /// by when the other side (woken by the CallMeMaybe sent through the relay) has opened
    /// its NAT too.
    ///
    /// Off until [`PeerPaths::enable_openers`]: the driver must be able to send with a TTL.
    pub fn poll_opener(&mut self) -> Option<SocketAddr> {
        self.openers.pop_front()
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
        // A public candidate that is not alive gets an opener first, and the ping only
        // OPENER_LEAD later (see `poll_opener`).
        if let Source::Direct(addr) = to {
            if let Some(i) = self.find(addr) {
                let c = &mut self.candidates[i];
                let fresh = c
                    .opened
                    .is_some_and(|t| now.saturating_duration_since(t) < OPENER_REFRESH);
                if self.use_openers && c.kind == PathKind::Public && !c.alive && !fresh {
                    c.opened = Some(now);
                    let at = now + OPENER_LEAD;
                    c.probe_at = Some(c.probe_at.map_or(at, |p| p.max(at)));
                    if self.openers.len() >= MAX_QUEUED_TRANSMITS {
                        self.openers.pop_front();
                    }
                    self.openers.push_back(addr);
                    return;
                }
            }
        }
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
                self.candidates[i].probe_at = None;
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
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A deterministic rng for the tests (SplitMix64).
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    fn drain(p: &mut PeerPaths) -> Vec<(Source, DiscoMsg)> {
        std::iter::from_fn(|| p.poll_transmit()).collect()
    }

    fn events(p: &mut PeerPaths) -> Vec<PathEvent> {
        std::iter::from_fn(|| p.poll_event()).collect()
    }

    fn pings_to(msgs: &[(Source, DiscoMsg)], to: SocketAddr) -> Vec<[u8; 12]> {
        msgs.iter()
            .filter_map(|(s, m)| match (s, m) {
                (Source::Direct(a), DiscoMsg::Ping { tx }) if *a == to => Some(*tx),
                _ => None,
            })
            .collect()
    }

    /// Runs every timer due up to `until`, like a driver would; checks that each call moves
    /// the deadline past `now` (no busy loop). Returns everything sent, with its time.
    fn run_until(
        p: &mut PeerPaths,
        until: Instant,
        rng: &mut dyn FnMut() -> u64,
    ) -> Vec<(Instant, Source, DiscoMsg)> {
        let mut sent = Vec::new();
        while let Some((t, why)) = p.poll_timeout() {
            if t > until {
                break;
            }
            p.handle_timeout(t, rng);
            if let Some((next, _)) = p.poll_timeout() {
                assert!(next > t, "timer {why} at {t:?} did not advance");
            }
            sent.extend(drain(p).into_iter().map(|(s, m)| (t, s, m)));
        }
        sent
    }

    #[test]
    fn better_path_table() {
        use PathKind::*;
        let k = |ms: u64| Some(Duration::from_millis(ms));
        let table = [
            // (current, new, switch?)
            ((Relay, None), (Public, None), true),
            ((Relay, None), (Lan, k(50)), true),
            ((Public, k(5)), (Lan, k(500)), true),
            ((Public, k(5)), (Relay, None), false),
            ((Lan, k(500)), (Public, k(1)), false),
            ((Lan, None), (Public, k(1)), false),
            ((Public, k(100)), (Public, k(76)), false),
            ((Public, k(100)), (Public, k(75)), false),
            ((Public, k(100)), (Public, k(74)), true),
            ((Public, k(100)), (Public, k(150)), false),
            ((Public, k(100)), (Public, None), false),
            ((Public, None), (Public, k(100)), true),
            ((Public, None), (Public, None), false),
            ((Lan, k(4)), (Lan, k(2)), true),
            ((Relay, None), (Relay, None), false),
            ((Public, Some(Duration::MAX)), (Public, k(1)), true),
            ((Public, k(1)), (Public, Some(Duration::MAX)), false),
        ];
        for (cur, new, want) in table {
            assert_eq!(better_path(cur, new), want, "{cur:?} -> {new:?}");
        }
    }

    #[test]
    fn kinds() {
        let table = [
            ("10.1.2.3:1", PathKind::Lan),
            ("172.16.0.1:1", PathKind::Lan),
            ("172.32.0.1:1", PathKind::Public),
            ("192.168.0.1:1", PathKind::Lan),
            ("169.254.1.1:1", PathKind::Lan),
            ("127.0.0.1:1", PathKind::Lan),
            ("100.64.0.1:1", PathKind::Public),
            ("203.0.113.1:1", PathKind::Public),
            ("[fd00::1]:1", PathKind::Lan),
            ("[fe80::1%2]:1", PathKind::Lan),
            ("[2001:db8::1]:1", PathKind::Public),
            ("[::ffff:192.168.1.1]:1", PathKind::Lan),
            ("[::ffff:8.8.8.8]:1", PathKind::Public),
        ];
        for (a, want) in table {
            assert_eq!(kind_of(&addr(a)), want, "{a}");
            assert_eq!(Candidate::new(addr(a)).kind, want);
        }
        assert!(PathKind::Lan < PathKind::Public && PathKind::Public < PathKind::Relay);
    }

    #[test]
    fn punches_then_heartbeats() {
        let t0 = Instant::now(); // the test is the driver: it owns the clock
        let mut r = rng(1);
        let mut p = PeerPaths::new(t0, true);
        assert_eq!(p.path(), Some(Path::Relay));
        // Nothing to probe yet, but the peer is asked to call.
        assert_eq!(p.poll_timeout(), Some((t0, "call-me-maybe")));

        let (lan, public) = (addr("192.168.1.9:51820"), addr("203.0.113.9:51820"));
        p.set_candidates(
            t0,
            vec![public, lan, public, addr("0.0.0.0:1"), addr("1.2.3.4:0")],
        );
        assert_eq!(p.snapshot().len(), 2);
        assert_eq!(p.poll_timeout().map(|(t, _)| t), Some(t0));
        p.handle_timeout(t0, &mut r);
        let sent = drain(&mut p);
        assert_eq!(pings_to(&sent, lan).len(), 1);
        let tx_pub = pings_to(&sent, public)[0];
        assert!(sent
            .iter()
            .any(|(s, m)| *s == Source::Relay && matches!(m, DiscoMsg::CallMeMaybe { .. })));

        // The public pong arrives first: direct.
        let t1 = t0 + ms(40);
        p.handle_pong(t1, Source::Direct(public), tx_pub, addr("198.51.100.1:1"));
        assert_eq!(p.path(), Some(Path::Direct(public)));
        assert_eq!(p.rtt(), Some(ms(40)));
        assert_eq!(p.observed_by_peer(), Some(addr("198.51.100.1:1")));
        assert_eq!(
            events(&mut p),
            vec![PathEvent::Changed {
                from: Some(Path::Relay),
                to: Some(Path::Direct(public))
            }]
        );
        let (t, why) = p.poll_timeout().unwrap();
        assert_eq!(why, "heartbeat");
        let hb = t - t1;
        assert!(hb >= ms(1800) && hb <= ms(2200), "{hb:?}");

        // Then heartbeats every 2 s ± 10 %, each answered: no retransmissions.
        let mut now = t1;
        let mut beats = 0;
        while now < t1 + Duration::from_secs(9) {
            let (t, why) = p.poll_timeout().unwrap();
            assert_ne!(why, "retransmit");
            now = t;
            p.handle_timeout(now, &mut r);
            for tx in pings_to(&drain(&mut p), public) {
                p.handle_pong(
                    now + ms(40),
                    Source::Direct(public),
                    tx,
                    addr("198.51.100.1:1"),
                );
                if why == "heartbeat" {
                    beats += 1;
                }
            }
        }
        assert!((4..=5).contains(&beats), "{beats}");
        assert_eq!(p.path(), Some(Path::Direct(public)));
        assert!(events(&mut p).is_empty());
    }

    #[test]
    fn lan_beats_public_regardless_of_rtt() {
        let t0 = Instant::now();
        let mut r = rng(2);
        let mut p = PeerPaths::new(t0, true);
        let (lan, public) = (addr("10.0.0.2:51820"), addr("203.0.113.9:51820"));
        p.set_candidates(t0, vec![public, lan]);
        p.handle_timeout(t0, &mut r);
        let sent = drain(&mut p);
        p.handle_pong(
            t0 + ms(10),
            Source::Direct(public),
            pings_to(&sent, public)[0],
            public,
        );
        p.handle_pong(
            t0 + ms(90),
            Source::Direct(lan),
            pings_to(&sent, lan)[0],
            lan,
        );
        assert_eq!(p.path(), Some(Path::Direct(lan)));
        assert_eq!(events(&mut p).len(), 2);
    }

    #[test]
    fn hysteresis_between_public_paths() {
        let t0 = Instant::now();
        let mut r = rng(3);
        let mut p = PeerPaths::new(t0, false);
        assert_eq!(p.path(), None);
        let (a, b, c) = (
            addr("198.51.100.1:1"),
            addr("198.51.100.2:1"),
            addr("198.51.100.3:1"),
        );
        p.set_candidates(t0, vec![a, b, c]);
        p.handle_timeout(t0, &mut r);
        let sent = drain(&mut p);
        p.handle_pong(t0 + ms(100), Source::Direct(a), pings_to(&sent, a)[0], a);
        assert_eq!(p.path(), Some(Path::Direct(a)));
        // 80 ms is not a quarter better than 100 ms; 70 ms is.
        p.handle_pong(t0 + ms(80), Source::Direct(b), pings_to(&sent, b)[0], b);
        assert_eq!(p.path(), Some(Path::Direct(a)));
        p.handle_pong(t0 + ms(70), Source::Direct(c), pings_to(&sent, c)[0], c);
        assert_eq!(p.path(), Some(Path::Direct(c)));
        assert_eq!(
            events(&mut p),
            vec![
                PathEvent::Changed {
                    from: None,
                    to: Some(Path::Direct(a))
                },
                PathEvent::Changed {
                    from: Some(Path::Direct(a)),
                    to: Some(Path::Direct(c))
                },
            ]
        );
    }

    #[test]
    fn dead_path_falls_back_to_relay_then_returns() {
        let t0 = Instant::now();
        let mut r = rng(4);
        let mut p = PeerPaths::new(t0, true);
        let public = addr("203.0.113.9:51820");
        p.set_candidates(t0, vec![public]);
        p.handle_timeout(t0, &mut r);
        let tx = pings_to(&drain(&mut p), public)[0];
        let t1 = t0 + ms(50);
        p.handle_pong(t1, Source::Direct(public), tx, public);
        events(&mut p);

        // From now on nothing answers: heartbeat, retransmissions, then death at 6.5 s.
        let sent = run_until(&mut p, t1 + PATH_TIMEOUT, &mut r);
        let pings = sent
            .iter()
            .filter(|(_, s, m)| *s == Source::Direct(public) && matches!(m, DiscoMsg::Ping { .. }))
            .count();
        assert!(pings >= 8, "heartbeats and retransmissions: {pings}");
        assert_eq!(p.path(), Some(Path::Relay));
        assert_eq!(
            events(&mut p),
            vec![PathEvent::Changed {
                from: Some(Path::Direct(public)),
                to: Some(Path::Relay)
            }]
        );
        // The switch happened when the evidence ran out, with a CallMeMaybe at once.
        let cmm: Vec<Instant> = sent
            .iter()
            .filter(|(_, _, m)| matches!(m, DiscoMsg::CallMeMaybe { .. }))
            .map(|(t, _, _)| *t)
            .collect();
        assert_eq!(cmm, vec![t1 + PATH_TIMEOUT]);

        // On demand (meshctl ping): a round at once, then the regular schedule.
        let t = t1 + PATH_TIMEOUT + ms(1500);
        p.probe_now(t);
        assert_eq!(p.poll_timeout(), Some((t, "probe")));

        // On the relay: probes every 3 s ± 10 %.
        let sent = run_until(&mut p, t1 + Duration::from_secs(20), &mut r);
        let probe_times: Vec<Instant> = sent
            .iter()
            .filter(|(_, s, _)| *s == Source::Direct(public))
            .map(|(t, _, _)| *t)
            .collect();
        assert!(probe_times.len() >= 4);
        for w in probe_times.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap >= ms(2700) && gap <= ms(3300), "{gap:?}");
        }
        // It answers again: back to direct with the next pong.
        let now = t1 + Duration::from_secs(20);
        let next = run_until(&mut p, now + Duration::from_secs(4), &mut r);
        let (t, _, msg) = next
            .iter()
            .find(|(_, s, _)| *s == Source::Direct(public))
            .unwrap();
        let DiscoMsg::Ping { tx } = msg else {
            panic!("not a ping: {msg:?}")
        };
        p.handle_pong(*t + ms(50), Source::Direct(public), *tx, public);
        assert_eq!(p.path(), Some(Path::Direct(public)));
    }

    #[test]
    fn falls_back_to_another_alive_candidate() {
        let t0 = Instant::now();
        let mut r = rng(12);
        let mut p = PeerPaths::new(t0, true);
        let (lan, public) = (addr("10.0.0.2:51820"), addr("203.0.113.9:51820"));
        p.set_candidates(t0, vec![lan, public]);
        p.handle_timeout(t0, &mut r);
        let sent = drain(&mut p);
        p.handle_pong(
            t0 + ms(1),
            Source::Direct(lan),
            pings_to(&sent, lan)[0],
            lan,
        );
        p.handle_pong(
            t0 + ms(30),
            Source::Direct(public),
            pings_to(&sent, public)[0],
            public,
        );
        assert_eq!(p.path(), Some(Path::Direct(lan)));
        // Only the public address keeps answering (also the upgrade round at ~10 s).
        let mut now = t0;
        let mut switched_at = None;
        while now < t0 + Duration::from_secs(12) {
            let (t, _) = p.poll_timeout().unwrap();
            now = t;
            p.handle_timeout(now, &mut r);
            for tx in pings_to(&drain(&mut p), public) {
                p.handle_pong(now + ms(30), Source::Direct(public), tx, public);
            }
            if switched_at.is_none() && p.path() == Some(Path::Direct(public)) {
                switched_at = Some(now);
            }
        }
        // The LAN path died 6.5 s after its last pong; the public one was alive.
        let switched_at = switched_at.unwrap();
        assert!(
            switched_at - t0 <= ms(6501) + PATH_TIMEOUT,
            "{switched_at:?}"
        );
        assert_eq!(p.path(), Some(Path::Direct(public)));
    }

    #[test]
    fn forged_redirected_and_replayed_pongs_change_nothing() {
        let t0 = Instant::now();
        let mut r = rng(5);
        let mut p = PeerPaths::new(t0, true);
        let (a, evil) = (addr("203.0.113.9:51820"), addr("198.51.100.66:4444"));
        p.set_candidates(t0, vec![a]);
        p.handle_timeout(t0, &mut r);
        let tx = pings_to(&drain(&mut p), a)[0];

        // Wrong tx.
        p.handle_pong(t0 + ms(10), Source::Direct(a), [0xee; 12], a);
        // Right tx, but from another address (an attempt to redirect), or via the relay.
        p.handle_pong(t0 + ms(10), Source::Direct(evil), tx, a);
        p.handle_pong(t0 + ms(10), Source::Relay, tx, a);
        assert_eq!(p.path(), Some(Path::Relay));
        assert!(events(&mut p).is_empty());
        assert!(p.snapshot().iter().all(|c| !c.alive && c.addr != evil));

        // A pong after the ping expired.
        p.handle_pong(t0 + PING_EXPIRY + ms(1), Source::Direct(a), tx, a);
        assert_eq!(p.path(), Some(Path::Relay));

        // A pong counts once: replaying an accepted pong after the path died is nothing.
        let t1 = t0 + Duration::from_secs(10);
        let sent = run_until(&mut p, t1, &mut r);
        let (t, tx2) = sent
            .iter()
            .rev()
            .find_map(|(t, s, m)| match (s, m) {
                (Source::Direct(to), DiscoMsg::Ping { tx }) if *to == a => Some((*t, *tx)),
                _ => None,
            })
            .unwrap();
        p.handle_pong(t + ms(5), Source::Direct(a), tx2, a);
        assert_eq!(p.path(), Some(Path::Direct(a)));
        let t2 = t + Duration::from_secs(8);
        run_until(&mut p, t2, &mut r);
        assert_eq!(p.path(), Some(Path::Relay));
        p.handle_pong(t2, Source::Direct(a), tx2, a);
        assert_eq!(p.path(), Some(Path::Relay));
    }

    #[test]
    fn ping_gets_pong_learns_source_and_triggers_rate_limited_rounds() {
        let t0 = Instant::now();
        let mut r = rng(6);
        let mut p = PeerPaths::new(t0, true);
        let known = addr("203.0.113.9:51820");
        let prflx = addr("203.0.113.9:61000");
        p.set_candidates(t0, vec![known]);
        p.handle_timeout(t0, &mut r);
        drain(&mut p);

        let t1 = t0 + ms(300);
        p.handle_ping(t1, Source::Direct(prflx), [1; 12]);
        let sent = drain(&mut p);
        assert_eq!(
            sent,
            vec![(
                Source::Direct(prflx),
                DiscoMsg::Pong {
                    tx: [1; 12],
                    observed: prflx
                }
            )]
        );
        let snap = p.snapshot();
        assert!(snap
            .iter()
            .any(|c| c.addr == prflx && c.learned && !c.alive));
        // The new address is probed at once; the full reaction round waits for the 1 s
        // spacing since the round at t0.
        assert_eq!(p.poll_timeout(), Some((t1, "probe-now")));
        p.handle_timeout(t1, &mut r);
        let sent = drain(&mut p);
        assert_eq!(pings_to(&sent, prflx).len(), 1);
        assert_eq!(sent.len(), 1);
        assert_eq!(p.poll_timeout(), Some((t0 + MIN_ROUND_SPACING, "probe")));

        // A replayed ping is not answered and teaches nothing.
        p.handle_ping(t1 + ms(1), Source::Direct(addr("192.0.2.1:1")), [1; 12]);
        assert!(drain(&mut p).is_empty());
        assert_eq!(p.snapshot().len(), 2);

        // Via the relay: the pong goes back via the relay, observed unspecified.
        p.handle_ping(t1, Source::Relay, [2; 12]);
        let sent = drain(&mut p);
        assert_eq!(
            sent,
            vec![(
                Source::Relay,
                DiscoMsg::Pong {
                    tx: [2; 12],
                    observed: addr("0.0.0.0:0")
                }
            )]
        );

        p.handle_timeout(t0 + MIN_ROUND_SPACING, &mut r);
        let sent = drain(&mut p);
        assert_eq!(pings_to(&sent, known).len(), 1);
        assert_eq!(pings_to(&sent, prflx).len(), 1);
        // Another ping right after: a ping back to it a little later, the next full round a
        // second after the last.
        let t2 = t0 + MIN_ROUND_SPACING + ms(10);
        p.handle_ping(t2, Source::Direct(prflx), [3; 12]);
        assert_eq!(drain(&mut p).len(), 1, "the pong");
        let back = t0 + MIN_ROUND_SPACING + PING_BACK_SPACING;
        assert_eq!(p.poll_timeout(), Some((back, "probe-now")));
        p.handle_timeout(back, &mut r);
        let sent = drain(&mut p);
        assert_eq!(pings_to(&sent, prflx).len(), 1);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            p.poll_timeout(),
            Some((t0 + MIN_ROUND_SPACING * 2, "probe"))
        );
    }

    #[test]
    fn call_me_maybe_learns_and_probes() {
        let t0 = Instant::now();
        let mut r = rng(7);
        let mut p = PeerPaths::new(t0, true);
        p.set_own_candidates(vec![addr("[::ffff:192.0.2.1]:5"), addr("0.0.0.0:0")]);
        p.handle_call_me_maybe(
            t0,
            vec![addr("198.51.100.7:9"), addr("[::ffff:198.51.100.8]:9")],
        );
        assert_eq!(p.poll_timeout().map(|(t, _)| t), Some(t0));
        p.handle_timeout(t0, &mut r);
        let sent = drain(&mut p);
        assert_eq!(pings_to(&sent, addr("198.51.100.7:9")).len(), 1);
        assert_eq!(pings_to(&sent, addr("198.51.100.8:9")).len(), 1);
        assert!(sent.contains(&(
            Source::Relay,
            DiscoMsg::CallMeMaybe {
                candidates: vec![addr("192.0.2.1:5")]
            }
        )));
    }

    #[test]
    fn authenticated_traffic_is_evidence_but_never_redirects_by_itself() {
        let t0 = Instant::now();
        let mut r = rng(8);
        let mut p = PeerPaths::new(t0, true);
        let (known, unknown) = (addr("203.0.113.9:51820"), addr("198.51.100.5:777"));
        p.set_candidates(t0, vec![known]);
        run_until(&mut p, t0 + ms(100), &mut r);

        // Unknown address: learned (to be probed), not the path, however often it is seen.
        for i in 0..5 {
            p.note_authenticated_direct(t0 + ms(200 + i), unknown);
        }
        assert_eq!(p.path(), Some(Path::Relay));
        assert!(p.snapshot().iter().any(|c| c.addr == unknown && !c.alive));

        // A netmap candidate: evidence enough.
        p.note_authenticated_direct(t0 + ms(300), known);
        assert_eq!(p.path(), Some(Path::Direct(known)));
        assert_eq!(p.rtt(), None);

        // Traffic keeps it alive without pongs.
        let mut now = t0 + ms(300);
        for _ in 0..10 {
            now += Duration::from_secs(1);
            run_until(&mut p, now, &mut r);
            p.note_authenticated_direct(now, known);
        }
        assert_eq!(p.path(), Some(Path::Direct(known)));

        // The learned address was probed meanwhile; when the known path dies, traffic from
        // the learned one is evidence enough.
        let later = now + Duration::from_secs(7);
        let sent = run_until(&mut p, later, &mut r);
        assert_eq!(p.path(), Some(Path::Relay));
        let probed = p.snapshot().iter().any(|c| c.addr == unknown) && {
            let all: Vec<_> = sent.iter().map(|(_, s, _)| *s).collect();
            all.contains(&Source::Direct(unknown))
        };
        assert!(probed);
        p.note_authenticated_direct(later, unknown);
        assert_eq!(p.path(), Some(Path::Direct(unknown)));
    }

    #[test]
    fn state_is_bounded() {
        let t0 = Instant::now();
        let mut r = rng(9);
        let mut p = PeerPaths::new(t0, true);
        let many: Vec<SocketAddr> = (1..100u16)
            .map(|i| SocketAddr::new("198.51.100.1".parse().unwrap(), i))
            .collect();
        p.set_candidates(t0, many.clone());
        assert_eq!(p.snapshot().len(), MAX_CANDIDATES - MAX_LEARNED);
        for i in 1..100u16 {
            let mut tx = [0; 12];
            tx[..2].copy_from_slice(&i.to_le_bytes());
            let a = SocketAddr::new("192.0.2.1".parse().unwrap(), i);
            p.handle_ping(t0, Source::Direct(a), tx);
            p.note_authenticated_direct(t0, SocketAddr::new("192.0.2.2".parse().unwrap(), i));
        }
        p.handle_call_me_maybe(t0, many);
        let snap = p.snapshot();
        assert!(snap.len() <= MAX_CANDIDATES);
        assert!(snap.iter().filter(|c| c.learned).count() <= MAX_LEARNED);
        // Rounds every second for a while never keep more than 64 pings or 64 transmits.
        let mut now = t0;
        for i in 0..30u8 {
            now += ms(1000);
            p.handle_call_me_maybe(now, vec![]);
            p.handle_ping(now, Source::Relay, [i; 12]);
            p.handle_timeout(now, &mut r);
            assert!(p.outstanding.len() <= MAX_OUTSTANDING_PINGS);
            assert!(p.transmits.len() <= MAX_QUEUED_TRANSMITS);
        }
        assert!(p.recent_pings.len() <= RECENT_PINGS);
        // Events merge rather than grow.
        for i in 0..40 {
            p.set_relay_available(now, i % 2 == 0);
        }
        assert!(p.events.len() <= MAX_QUEUED_EVENTS);
    }

    #[test]
    fn candidates_that_stay_keep_state() {
        let t0 = Instant::now();
        let mut r = rng(10);
        let mut p = PeerPaths::new(t0, true);
        let (a, b, c) = (
            addr("198.51.100.1:1"),
            addr("198.51.100.2:1"),
            addr("198.51.100.3:1"),
        );
        p.set_candidates(t0, vec![a, b]);
        p.handle_timeout(t0, &mut r);
        let sent = drain(&mut p);
        p.handle_pong(t0 + ms(20), Source::Direct(a), pings_to(&sent, a)[0], a);
        assert_eq!(p.path(), Some(Path::Direct(a)));

        // a stays, b goes, c arrives: a keeps its RTT and stays the path; c is probed soon.
        p.set_candidates(t0 + ms(30), vec![c, a]);
        let snap = p.snapshot();
        assert_eq!(snap.iter().map(|s| s.addr).collect::<Vec<_>>(), vec![c, a]);
        assert_eq!(snap[1].rtt, Some(ms(20)));
        assert_eq!(snap[1].last_pong_age(t0 + ms(120)), Some(ms(100)));
        assert!(snap[1].alive);
        assert_eq!(p.poll_timeout(), Some((t0 + ms(30), "probe-now")));

        // The current path leaves the netmap: kept (as learned) while it works.
        p.set_candidates(t0 + ms(40), vec![c]);
        assert_eq!(p.path(), Some(Path::Direct(a)));
        assert!(p.snapshot().iter().any(|s| s.addr == a && s.learned));
    }

    #[test]
    fn learned_candidates_that_never_answer_are_forgotten() {
        let t0 = Instant::now();
        let mut r = rng(13);
        let mut p = PeerPaths::new(t0, true);
        let (known, spoofed) = (addr("203.0.113.9:51820"), addr("192.0.2.99:53"));
        p.set_candidates(t0, vec![known]);
        p.handle_ping(t0, Source::Direct(spoofed), [1; 12]);
        assert_eq!(p.snapshot().len(), 2);
        let sent = run_until(&mut p, t0 + LEARNED_TTL + Duration::from_secs(4), &mut r);
        // Probed while it was a candidate, then dropped; the netmap's candidate stays.
        assert!(sent.iter().any(|(_, s, _)| *s == Source::Direct(spoofed)));
        let last = sent
            .iter()
            .filter(|(_, s, _)| *s == Source::Direct(spoofed))
            .map(|(t, _, _)| *t)
            .max()
            .unwrap();
        assert!(last < t0 + LEARNED_TTL + PROBE_INTERVAL);
        let snap = p.snapshot();
        assert_eq!(snap.iter().map(|c| c.addr).collect::<Vec<_>>(), vec![known]);
    }

    #[test]
    fn relay_availability() {
        let t0 = Instant::now();
        let mut p = PeerPaths::new(t0, false);
        assert_eq!(p.poll_timeout(), None);
        p.set_relay_available(t0, true);
        assert_eq!(p.path(), Some(Path::Relay));
        p.set_relay_available(t0, false);
        assert_eq!(p.path(), None);
        assert_eq!(events(&mut p).len(), 2);
    }

    #[test]
    fn timers_always_advance_under_random_input() {
        let t0 = Instant::now();
        let mut r = rng(11);
        let mut p = PeerPaths::new(t0, true);
        let addrs: Vec<SocketAddr> = (1..6u16)
            .map(|i| SocketAddr::new("198.51.100.1".parse().unwrap(), i))
            .chain([addr("10.0.0.1:5")])
            .collect();
        p.set_candidates(t0, addrs.clone());
        let mut now = t0;
        let mut pending: Vec<(Source, [u8; 12])> = Vec::new();
        for _ in 0..3000 {
            let x = r();
            now += ms(x % 700);
            let a = addrs[(x % 6) as usize];
            match x % 7 {
                0 => p.handle_ping(now, Source::Direct(a), [(x >> 8) as u8; 12]),
                1 => p.handle_call_me_maybe(now, vec![a]),
                2 => p.note_authenticated_direct(now, a),
                3 if !pending.is_empty() => {
                    let (s, tx) = pending.swap_remove((x % pending.len() as u64) as usize);
                    p.handle_pong(now, s, tx, addrs[0]);
                }
                4 => p.set_candidates(now, addrs[(x % 3) as usize..].to_vec()),
                _ => {}
            }
            while let Some((t, why)) = p.poll_timeout() {
                if t > now {
                    break;
                }
                p.handle_timeout(now, &mut r);
                if let Some((next, _)) = p.poll_timeout() {
                    assert!(next > now, "{why} did not advance");
                }
            }
            for (s, m) in drain(&mut p) {
                if let DiscoMsg::Ping { tx } = m {
                    if x % 3 != 0 {
                        pending.push((s, tx));
                    }
                }
            }
            pending.truncate(100);
            events(&mut p);
        }
    }

    #[test]
    fn openers_precede_pings_to_public_candidates_only() {
        let t0 = Instant::now();
        let mut rng = rng(7);
        let mut p = PeerPaths::new(t0, true);
        p.enable_openers();
        let public: SocketAddr = "203.0.113.7:51820".parse().unwrap();
        let lan: SocketAddr = "192.168.1.7:51820".parse().unwrap();
        p.set_candidates(t0, vec![public, lan]);
        p.handle_timeout(t0, &mut rng);
        assert_eq!(p.poll_opener(), Some(public));
        assert_eq!(p.poll_opener(), None);
        let pinged: Vec<Source> = std::iter::from_fn(|| p.poll_transmit())
            .filter(|(_, m)| matches!(m, DiscoMsg::Ping { .. }))
            .map(|(to, _)| to)
            .collect();
        assert_eq!(
            pinged,
            vec![Source::Direct(lan)],
            "the public candidate waits for its opener"
        );
        // OPENER_LEAD later the public candidate gets its ping, without a second opener.
        let (at, _) = p.poll_timeout().unwrap();
        assert!(at <= t0 + OPENER_LEAD);
        let t1 = t0 + OPENER_LEAD;
        p.handle_timeout(t1, &mut rng);
        assert_eq!(p.poll_opener(), None);
        assert!(std::iter::from_fn(|| p.poll_transmit())
            .any(|(to, m)| to == Source::Direct(public) && matches!(m, DiscoMsg::Ping { .. })));
        // Still not alive after OPENER_REFRESH: opened again.
        let t2 = t0 + OPENER_REFRESH + Duration::from_secs(1);
        p.probe_now(t2);
        p.handle_timeout(t2, &mut rng);
        assert_eq!(p.poll_opener(), Some(public));
    }
}
