//! The policy filter on the packet paths (issue 13): what this node lets through to and
//! from each network peer, compiled from the coordinator's [`NodeFilter`].
//!
//! Enforced on both ends: by the sender before encryption (`outbound.rs`, after routing
//! chose the peer: saves the bandwidth) and by the receiver after decryption and the
//! allowed-IPs source check (`inbound.rs`, before the TUN write: authoritative, as the
//! sender may run anything). Only network peers are filtered; static peers from meshd.toml
//! are outside the network's policy. No filter (a node that never got one, or one that
//! allows everything to everyone) costs nothing: the packet paths see `None`.
//!
//! Per peer and direction, a [`PortTable`] answers for a packet that opens a flow (a
//! binary search over that peer's port ranges, whatever the number of rules). Stateful
//! ([`flows`]): a flow the filter allowed is recorded, and its packets both ways pass
//! without asking again, so the answers to an allowed connection (TCP, UDP, ICMP echo)
//! pass whatever the other direction's table says; ICMP errors (unreachable, packet too
//! big, time exceeded, parameter problem) pass when the packet they quote belongs to a
//! recorded flow, else the table decides as for any ICMP. A new filter bumps a generation;
//! a recorded flow from an older one is checked against the new filter on its next packet
//! (its opener's packet, in its opener's direction) and forgotten if no longer allowed, so
//! a revoked permission stops established flows too.
//!
//! Fragments (only the first carries ports): a first fragment is judged like any packet,
//! and when it passes its datagram's later fragments may follow for 10 s. A later
//! fragment passes only then, or when the peer's table allows its protocol on every port
//! unconditionally; otherwise it is dropped (`fragment`). Fragments that arrive before
//! their first are therefore dropped; the sender's retransmission (or PMTU discovery)
//! recovers. A first fragment too short for its ports is malformed (dropped).
//!
//! A node that cannot apply an update fails closed ([`apply_update_limited`]): the peers the update
//! concerned (all of them for a full update, or when the default changed) are denied both
//! ways until an update applies; the rest keep the last filter that applied. It reports
//! the hash of that filter and the reason.
//!
//! Counters: per direction, packets allowed, and drops by the deciding rule (index and
//! line) or by reason (the default, a closed peer, fragment, malformed, table full). The
//! packet threads count into a per-batch [`Batch`] and add to the shared atomics once per
//! batch (and when the drop reason changes within one).

pub mod flows;
pub mod packet;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mesh_proto::api::{FilterDirection, FilterDrop, FilterDropReason, FilterStatus};
use mesh_proto::policy::{
    Action, Entry, FilterUpdate, NodeFilter, PeerFilter, PortTable, Proto, MAX_RULES,
};
use mesh_proto::Key;
use serde::{Deserialize, Serialize};

use flows::{Found, Inserted};
use packet::{Parsed, Tuple, L4};

/// Which way a packet goes, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// From a peer to this node (checked after decryption).
    Inbound,
    /// From this node to a peer (checked before encryption).
    #[default]
    Outbound,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::Inbound => 0,
            Direction::Outbound => 1,
        }
    }

    fn reverse(self) -> Direction {
        match self {
            Direction::Inbound => Direction::Outbound,
            Direction::Outbound => Direction::Inbound,
        }
    }

    const BOTH: [Direction; 2] = [Direction::Inbound, Direction::Outbound];
}

/// Why a packet was dropped, other than by a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// No rule decided; the default is deny.
    Default = 0,
    /// The peer is failed closed.
    Closed = 1,
    /// A later fragment that may not pass.
    Fragment = 2,
    /// Headers that do not parse.
    Malformed = 3,
    /// The flow table had no room for an allowed new flow.
    TableFull = 4,
}

const REASONS: [Reason; 5] = [
    Reason::Default,
    Reason::Closed,
    Reason::Fragment,
    Reason::Malformed,
    Reason::TableFull,
];

impl Reason {
    fn api(self) -> FilterDropReason {
        match self {
            Reason::Default => FilterDropReason::Default,
            Reason::Closed => FilterDropReason::Closed,
            Reason::Fragment => FilterDropReason::Fragment,
            Reason::Malformed => FilterDropReason::Malformed,
            Reason::TableFull => FilterDropReason::TableFull,
        }
    }
}

/// What dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Rule(u32),
    Reason(Reason),
}

/// The filter's counters, shared by the packet threads. Kept across recompilations while
/// the rules (index → line) stay the same.
#[derive(Debug)]
pub struct Counters {
    /// By rule index: its line in the document (0: no entry has it).
    lines: Box<[u32]>,
    /// By rule index, by direction.
    rules: Box<[[AtomicU64; 2]]>,
    reasons: [[AtomicU64; 2]; REASONS.len()],
    allowed: [AtomicU64; 2],
}

impl Counters {
    fn new(lines: Box<[u32]>) -> Counters {
        Counters {
            rules: lines.iter().map(|_| Default::default()).collect(),
            lines,
            reasons: Default::default(),
            allowed: Default::default(),
        }
    }

    /// New counters for `lines`, carrying over the reasons, the allowed counts and the
    /// counts of rules that kept their index and line.
    fn carried(lines: Box<[u32]>, old: &Counters) -> Counters {
        let new = Counters::new(lines);
        let copy = |to: &AtomicU64, from: &AtomicU64| {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        for (i, line) in new.lines.iter().enumerate() {
            if *line != 0 && old.lines.get(i) == Some(line) {
                for d in 0..2 {
                    copy(&new.rules[i][d], &old.rules[i][d]);
                }
            }
        }
        for r in 0..REASONS.len() {
            for d in 0..2 {
                copy(&new.reasons[r][d], &old.reasons[r][d]);
            }
        }
        for d in 0..2 {
            copy(&new.allowed[d], &old.allowed[d]);
        }
        new
    }

    fn add(&self, cause: Cause, dir: Direction, n: u64) {
        let counter = match cause {
            Cause::Rule(r) => match self.rules.get(r as usize) {
                Some(c) => &c[dir.index()],
                None => &self.reasons[Reason::Default as usize][dir.index()],
            },
            Cause::Reason(r) => &self.reasons[r as usize][dir.index()],
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One direction of a peer's rules.
#[derive(Debug)]
pub struct Side {
    table: PortTable,
    /// Whether every port of TCP, UDP, ICMP, and any other protocol is allowed whatever
    /// the addresses (for fragments, and to skip the state of open peers).
    whole: [bool; 4],
}

fn proto_slot(ip_proto: u8) -> usize {
    match Proto::from_ip(ip_proto) {
        Some(Proto::Tcp) => 0,
        Some(Proto::Udp) => 1,
        Some(Proto::Icmp) => 2,
        None => 3,
    }
}

impl Side {
    fn build(entries: &[Entry], default: Action) -> Side {
        let table = PortTable::build(entries, default);
        let unconditional: Vec<Entry> = entries
            .iter()
            .filter(|e| e.src.is_none() && e.dst.is_none())
            .copied()
            .collect();
        let plain = PortTable::build(&unconditional, default);
        let any = std::net::IpAddr::from([0u8; 4]);
        let denied_when = |p: Option<Proto>| {
            entries.iter().any(|e| {
                (e.src.is_some() || e.dst.is_some())
                    && e.action == Action::Deny
                    && (e.ports.proto.is_none() || e.ports.proto == p)
            })
        };
        let ported = |proto: Proto, ip: u8| {
            // The decision is constant between these cuts (see `PortTable::build`).
            let mut cuts: Vec<u32> = vec![0];
            for e in &unconditional {
                if e.ports.proto == Some(proto) {
                    cuts.push(u32::from(e.ports.lo));
                    cuts.push(u32::from(e.ports.hi) + 1);
                }
            }
            !denied_when(Some(proto))
                && cuts.iter().filter(|c| **c <= 65_535).all(|c| {
                    plain
                        .lookup(any, any, ip, u16::try_from(*c).unwrap_or(u16::MAX))
                        .action
                        == Action::Allow
                })
        };
        let whole = [
            ported(Proto::Tcp, packet::TCP),
            ported(Proto::Udp, packet::UDP),
            !denied_when(Some(Proto::Icmp))
                && plain.lookup(any, any, packet::ICMP, 0).action == Action::Allow,
            !denied_when(None) && plain.lookup(any, any, 0, 0).action == Action::Allow,
        ];
        Side { table, whole }
    }

    fn open(&self) -> bool {
        self.whole.iter().all(|w| *w)
    }
}

/// What this node enforces toward one peer.
#[derive(Debug)]
pub enum PeerRules {
    /// Everything passes both ways (nothing to check, no flows to record).
    Open,
    /// Failed closed: nothing passes.
    Closed,
    /// The tables.
    Tables {
        /// Traffic from the peer.
        inbound: Side,
        /// Traffic to the peer.
        outbound: Side,
    },
}

impl PeerRules {
    fn build(f: &PeerFilter, default: Action) -> PeerRules {
        let inbound = Side::build(&f.inbound, default);
        let outbound = Side::build(&f.outbound, default);
        if inbound.open() && outbound.open() {
            PeerRules::Open
        } else {
            PeerRules::Tables { inbound, outbound }
        }
    }
}

/// Peers denied both ways because an update could not be applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Closed {
    /// Every network peer.
    #[serde(default)]
    pub all: bool,
    /// These peers.
    #[serde(default)]
    pub peers: BTreeSet<Key>,
}

impl Closed {
    fn is_empty(&self) -> bool {
        !self.all && self.peers.is_empty()
    }

    fn covers(&self, key: &Key) -> bool {
        self.all || self.peers.contains(key)
    }
}

/// The filter state the control side keeps, and what the cache stores beside the netmap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Saved {
    /// The network it belongs to (a cached filter of another network is not restored).
    pub network: String,
    /// The last filter that applied (`None`: none received).
    pub filter: Option<NodeFilter>,
    /// Peers failed closed since.
    #[serde(default)]
    pub closed: Closed,
    /// Why the last update did not apply.
    #[serde(default)]
    pub error: Option<String>,
}

impl Saved {
    /// [`NodeFilter::hash`] of the filter in force: the last that applied (before any, the
    /// filter that allows everything, which is what the node runs).
    pub fn hash(&self) -> String {
        match &self.filter {
            Some(f) => f.hash(),
            None => NodeFilter::allow_all().hash(),
        }
    }
}

/// Checks what a filter may hold beyond its hash: at most `max_entries` entries, rule
/// indices below [`MAX_RULES`].
fn validate(f: &NodeFilter, max_entries: usize) -> Result<(), String> {
    let mut entries = 0usize;
    for pf in f.peers.values() {
        entries += pf.inbound.len() + pf.outbound.len();
        if let Some(e) = pf
            .inbound
            .iter()
            .chain(&pf.outbound)
            .find(|e| e.rule as usize >= MAX_RULES)
        {
            return Err(format!(
                "rule index {} (line {}) beyond the {MAX_RULES} rules a policy may have",
                e.rule, e.line
            ));
        }
    }
    if entries > max_entries {
        return Err(format!(
            "the filter has {entries} entries, this node takes at most {max_entries} (max-filter-entries)"
        ));
    }
    Ok(())
}

/// Applies `update` to `state` (pure). On success the new filter replaces the old and every
/// peer reopens; on failure (the result does not hash to what the coordinator announced,
/// or breaks a limit) the filter stays as it was and the peers the update concerns are
/// failed closed: those it upserts or removes, or all of them when it is full or changes
/// the default. Returns the error, if any (also kept in the state). A filter may have at
/// most `max_entries` entries (meshd.toml's `max-filter-entries`).
pub fn apply_update_limited(
    state: &mut Saved,
    update: &FilterUpdate,
    max_entries: usize,
) -> Result<(), String> {
    let mut next = state.filter.clone().unwrap_or_else(NodeFilter::allow_all);
    let applied = next
        .apply(update)
        .and_then(|()| validate(&next, max_entries));
    match applied {
        Ok(()) => {
            state.filter = Some(next);
            state.closed = Closed::default();
            state.error = None;
            Ok(())
        }
        Err(reason) => {
            let current_default = state.filter.as_ref().map_or(Action::Allow, |f| f.default);
            if update.full || update.default != current_default {
                state.closed.all = true;
            }
            state.closed.peers.extend(update.upsert.keys().copied());
            state.closed.peers.extend(update.remove.iter().copied());
            state.error = Some(reason.clone());
            Err(reason)
        }
    }
}

/// [`apply_update_limited`] with the largest limit.
#[cfg(test)]
pub fn apply_update(state: &mut Saved, update: &FilterUpdate) -> Result<(), String> {
    apply_update_limited(state, update, crate::config::MAX_FILTER_ENTRIES)
}

/// The compiled filter the packet paths read (behind an `ArcSwapOption` in the device,
/// loaded once per batch).
#[derive(Debug)]
pub struct Filter {
    generation: u32,
    peers: HashMap<Key, PeerRules>,
    /// Network peers the filter does not name.
    others: PeerRules,
    flows: Arc<flows::Flows>,
    counters: Arc<Counters>,
}

/// What a compilation reuses from the previous one.
#[derive(Debug, Default)]
pub struct Compiler {
    generation: u32,
    flows: Option<Arc<flows::Flows>>,
    counters: Option<Arc<Counters>>,
}

impl Compiler {
    /// Compiles `state` into what the packet paths enforce; `None` when that is nothing
    /// (no filter, or one that lets everything through both ways and closes no peer).
    pub fn compile(&mut self, state: &Saved) -> Option<Arc<Filter>> {
        if state.filter.is_none() && state.closed.is_empty() {
            return None;
        }
        let base = state.filter.clone().unwrap_or_else(NodeFilter::allow_all);
        let closed = &state.closed;
        let mut peers: HashMap<Key, PeerRules> = base
            .peers
            .iter()
            .map(|(k, f)| {
                let rules = if closed.covers(k) {
                    PeerRules::Closed
                } else {
                    PeerRules::build(f, base.default)
                };
                (*k, rules)
            })
            .collect();
        for k in &closed.peers {
            peers.insert(*k, PeerRules::Closed);
        }
        let others = if closed.all {
            PeerRules::Closed
        } else {
            PeerRules::build(&PeerFilter::default(), base.default)
        };
        let everything_open = matches!(others, PeerRules::Open)
            && peers.values().all(|r| matches!(r, PeerRules::Open));
        if everything_open {
            return None;
        }
        let mut lines: Vec<u32> = Vec::new();
        for e in base
            .peers
            .values()
            .flat_map(|f| f.inbound.iter().chain(&f.outbound))
        {
            let i = e.rule as usize;
            if i >= lines.len() {
                lines.resize(i + 1, 0);
            }
            lines[i] = e.line;
        }
        let lines = lines.into_boxed_slice();
        let counters = match &self.counters {
            Some(c) if c.lines == lines => c.clone(),
            Some(c) => Arc::new(Counters::carried(lines, c)),
            None => Arc::new(Counters::new(lines)),
        };
        self.counters = Some(counters.clone());
        self.generation = self.generation.wrapping_add(1);
        let flows = self
            .flows
            .get_or_insert_with(|| Arc::new(flows::Flows::new()))
            .clone();
        Some(Arc::new(Filter {
            generation: self.generation,
            peers,
            others,
            flows,
            counters,
        }))
    }

    /// The counters of the last compilation (kept for the status while no filter runs).
    pub fn counters(&self) -> Option<&Arc<Counters>> {
        self.counters.as_ref()
    }

    /// Forgets the flows and counters (the node left its network).
    pub fn reset(&mut self) {
        self.flows = None;
        self.counters = None;
    }
}

/// The filter's clock: whole seconds since the first call, from 1 (0 marks an empty flow
/// slot). Read once per batch.
pub fn now() -> u32 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u32::try_from(start.elapsed().as_secs())
        .unwrap_or(u32::MAX - 1)
        .saturating_add(1)
}

/// One packet thread's state for one batch: the clock, counts not yet added to the shared
/// counters, and the last flow that passed (so a run of one flow's packets probes the
/// flow table once).
#[derive(Debug)]
pub struct Batch {
    now: u32,
    allowed: [u64; 2],
    dropped: Option<(Cause, Direction, u64)>,
    /// Peer index, direction, flow of the last packet that passed through the flow table
    /// without changing its TCP state.
    memo: Option<(u32, Direction, Tuple)>,
}

impl Batch {
    /// A batch at `now` ([`now`]).
    pub fn new(now: u32) -> Batch {
        Batch {
            now,
            allowed: [0; 2],
            dropped: None,
            memo: None,
        }
    }

    fn drop_packet(&mut self, filter: &Filter, cause: Cause, dir: Direction) -> bool {
        match &mut self.dropped {
            Some((c, d, n)) if *c == cause && *d == dir => *n += 1,
            other => {
                if let Some((c, d, n)) = other.take() {
                    filter.counters.add(c, d, n);
                }
                *other = Some((cause, dir, 1));
            }
        }
        false
    }

    fn pass(&mut self, dir: Direction) -> bool {
        self.allowed[dir.index()] += 1;
        true
    }

    /// Adds the batch's counts to `filter`'s counters.
    pub fn finish(&mut self, filter: &Filter) {
        if let Some((c, d, n)) = self.dropped.take() {
            filter.counters.add(c, d, n);
        }
        for d in Direction::BOTH {
            let n = std::mem::take(&mut self.allowed[d.index()]);
            if n != 0 {
                filter.counters.allowed[d.index()].fetch_add(n, Ordering::Relaxed);
            }
        }
        self.memo = None;
    }
}

impl Filter {
    /// The rules toward network peer `key`; `None` when its packets are not checked.
    /// Static peers (not from the network) are never filtered: pass `network: false`.
    #[inline]
    pub fn rules(&self, key: &Key, network: bool) -> Option<&PeerRules> {
        if !network {
            return None;
        }
        match self.peers.get(key).unwrap_or(&self.others) {
            PeerRules::Open => None,
            rules => Some(rules),
        }
    }

    /// Whether `packet` may go `dir` between this node and the peer of `rules` (index
    /// `peer`): see the module docs. Counts into `batch`. No allocation.
    pub fn check(
        &self,
        rules: &PeerRules,
        peer: u32,
        dir: Direction,
        packet: &[u8],
        batch: &mut Batch,
    ) -> bool {
        let (inbound, outbound) = match rules {
            PeerRules::Open => return batch.pass(dir),
            PeerRules::Closed => {
                return batch.drop_packet(self, Cause::Reason(Reason::Closed), dir)
            }
            PeerRules::Tables { inbound, outbound } => (inbound, outbound),
        };
        let side = match dir {
            Direction::Inbound => inbound,
            Direction::Outbound => outbound,
        };
        let Ok(p) = packet::parse(packet) else {
            return batch.drop_packet(self, Cause::Reason(Reason::Malformed), dir);
        };
        let now = batch.now;
        let flows = &self.flows;
        let passed = match p.l4 {
            L4::Fragment { id } => {
                let key = flows::Key::fragment(peer, p.src, p.dst, p.proto, id);
                if flows.fragment_passed(key, now, self.generation)
                    || side.whole[proto_slot(p.proto)]
                {
                    return batch.pass(dir);
                }
                return batch.drop_packet(self, Cause::Reason(Reason::Fragment), dir);
            }
            L4::Error { inner } => {
                let about_a_flow = inner.is_some_and(|t| {
                    t.src == p.dst && flows.knows(peer, &t, dir.reverse(), now, self.generation)
                });
                about_a_flow || self.decide(side, &p, dir, batch)
            }
            L4::Icmp { .. } => self.decide(side, &p, dir, batch),
            L4::Tcp { .. } | L4::Udp { .. } | L4::Echo { .. } | L4::Other => {
                self.stateful(rules, peer, dir, &p, batch)
            }
        };
        if !passed {
            return false;
        }
        if let Some(id) = p.first_fragment {
            // Its later fragments may follow; no room only costs them.
            let key = flows::Key::fragment(peer, p.src, p.dst, p.proto, id);
            let _ = flows.insert_fragment(key, now, self.generation);
        }
        batch.pass(dir)
    }

    /// The table's verdict for `p` going `dir`; counts a drop.
    fn decide(&self, side: &Side, p: &Parsed, dir: Direction, batch: &mut Batch) -> bool {
        let v = side.table.lookup(p.src, p.dst, p.proto, p.port());
        match (v.action, v.rule) {
            (Action::Allow, _) => true,
            (Action::Deny, Some(rule)) => batch.drop_packet(self, Cause::Rule(rule), dir),
            (Action::Deny, None) => batch.drop_packet(self, Cause::Reason(Reason::Default), dir),
        }
    }

    /// A packet of a flow: the flow table first, then the table (recording what it allows).
    fn stateful(
        &self,
        rules: &PeerRules,
        peer: u32,
        dir: Direction,
        p: &Parsed,
        batch: &mut Batch,
    ) -> bool {
        let PeerRules::Tables { inbound, outbound } = rules else {
            return matches!(rules, PeerRules::Open);
        };
        let Some(t) = p.tuple() else {
            return false;
        };
        let flags = match p.l4 {
            L4::Tcp { flags, .. } => flags,
            _ => 0,
        };
        let plain = flags & (packet::SYN | packet::FIN | packet::RST) == 0;
        if plain && batch.memo == Some((peer, dir, t)) {
            return true;
        }
        let (now, generation) = (batch.now, self.generation);
        let side_of = |d: Direction| match d {
            Direction::Inbound => inbound,
            Direction::Outbound => outbound,
        };
        match self.flows.hit(peer, &t, dir, flags, now, generation) {
            Found::Pass => {
                batch.memo = plain.then_some((peer, dir, t));
                return true;
            }
            Found::Stale { opened, opener } => {
                let v = side_of(opened).table.lookup(
                    opener.src,
                    opener.dst,
                    opener.proto,
                    u16::try_from(opener.dport).unwrap_or(0),
                );
                if v.action == Action::Allow {
                    self.flows.confirm(peer, &t, now, generation);
                    // Now current: this packet updates the entry as any other.
                    if self.flows.hit(peer, &t, dir, flags, now, generation) == Found::Pass {
                        batch.memo = plain.then_some((peer, dir, t));
                        return true;
                    }
                } else {
                    self.flows.forget(peer, &t, now);
                }
            }
            Found::Miss => {}
        }
        if !self.decide(side_of(dir), p, dir, batch) {
            return false;
        }
        // What opens a flow is recorded: not a RST, not an echo reply.
        let opens = match p.l4 {
            L4::Tcp { flags, .. } => flags & packet::RST == 0,
            L4::Echo { request, .. } => request,
            _ => true,
        };
        if opens && self.flows.insert(peer, &t, dir, flags, now, generation) == Inserted::Full {
            return batch.drop_packet(self, Cause::Reason(Reason::TableFull), dir);
        }
        true
    }
}

/// What `meshctl status` shows of the filter; `None` when no filter was ever received or
/// restored and nothing failed. `running` is the compiled filter, whose flows are counted
/// at `now` ([`now`]).
pub fn status(
    state: &Saved,
    counters: Option<&Counters>,
    running: Option<&Filter>,
    now: u32,
) -> Option<FilterStatus> {
    if state.filter.is_none() && state.error.is_none() && state.closed.is_empty() {
        return None;
    }
    let mut drops = Vec::new();
    let mut allowed = [0u64; 2];
    if let Some(c) = counters {
        for (i, per) in c.rules.iter().enumerate() {
            for d in Direction::BOTH {
                let n = per[d.index()].load(Ordering::Relaxed);
                if n != 0 {
                    drops.push(FilterDrop {
                        direction: api_dir(d),
                        reason: FilterDropReason::Rule,
                        rule: u32::try_from(i).ok(),
                        line: Some(c.lines[i]),
                        packets: n,
                    });
                }
            }
        }
        for r in REASONS {
            for d in Direction::BOTH {
                let n = c.reasons[r as usize][d.index()].load(Ordering::Relaxed);
                if n != 0 || r == Reason::Default {
                    drops.push(FilterDrop {
                        direction: api_dir(d),
                        reason: r.api(),
                        rule: None,
                        line: None,
                        packets: n,
                    });
                }
            }
        }
        for d in Direction::BOTH {
            allowed[d.index()] = c.allowed[d.index()].load(Ordering::Relaxed);
        }
    }
    Some(FilterStatus {
        hash: state.filter.as_ref().map(NodeFilter::hash),
        error: state.error.clone(),
        default: state.filter.as_ref().map(|f| f.default),
        closed_all: state.closed.all,
        closed: state.closed.peers.iter().copied().collect(),
        allowed_inbound: allowed[0],
        allowed_outbound: allowed[1],
        flows: running.map_or(0, |f| f.flows.len(now) as u64),
        drops,
    })
}

fn api_dir(d: Direction) -> FilterDirection {
    match d {
        Direction::Inbound => FilterDirection::Inbound,
        Direction::Outbound => FilterDirection::Outbound,
    }
}

#[cfg(test)]
mod tests;
