//! The flow table: which flows the filter let start, so their return traffic passes.
//!
//! Fixed size ([`CAPACITY`] entries of 64 bytes, 4 MiB, allocated once when the first
//! filter is installed), never grown, no allocation per packet. It is split into
//! [`SHARDS`] shards, each a `parking_lot` mutex around its slots; a flow's shard and its
//! first slot come from a keyed hash (std's SipHash with a random key, so a peer cannot
//! choose collisions). A lookup locks one shard and probes at most [`PROBE`] slots. The
//! outbound threads and the inbound thread meet on a shard only when they touch flows of
//! the same shard at the same moment, and the filter takes a shard lock at most once per
//! packet (once per run of one flow's packets in a batch: see `Batch`), so the locks are
//! uncontended in practice; no lock is held while taking another.
//!
//! A key is the flow's two ends in a canonical order (the lower address and port first),
//! the protocol and the peer's index, so both directions of a flow find one entry; the
//! entry remembers which side opened it and in which direction.
//!
//! Lifetimes (seconds after the flow's last packet; the clock is whole seconds):
//!
//! | flow | unanswered | answered |
//! |---|---|---|
//! | TCP | 60 (a SYN that gets nothing back) | 7200 (2 h), 120 after a FIN, 10 after a RST |
//! | UDP and other protocols | 30 | 120 |
//! | ICMP echo | 30 | 30 |
//! | first fragment seen (its datagram's later fragments pass) | 10 | — |
//!
//! These follow Linux conntrack's choices, shortened where conntrack is generous (5 days
//! for established TCP): a long-lived quiet TCP connection without keepalives loses its
//! entry after 2 h, and then its next packet from the opening side re-creates it.
//!
//! When a flow's probe window is full, an expired entry is reused, else the unanswered or
//! closing entry nearest to its expiry is evicted; if every entry in the window is an
//! answered, open flow the new flow is refused (the caller drops the packet and counts
//! `table-full`): established flows are never broken to make room.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::net::IpAddr;

use parking_lot::Mutex;

use super::packet::{Tuple, ACK, FIN, RST, SYN, TCP, UDP};
use super::Direction;

/// Entries in the table.
pub const CAPACITY: usize = 1 << 16;
/// Shards (independent locks).
pub const SHARDS: usize = 64;
/// Entries per shard.
const SLOTS: usize = CAPACITY / SHARDS;
/// Slots probed per lookup.
pub const PROBE: usize = 8;

/// Lifetimes in seconds (see the module docs).
pub mod timeout {
    /// TCP, nothing answered yet.
    pub const TCP_OPENING: u32 = 60;
    /// TCP, answered.
    pub const TCP_ESTABLISHED: u32 = 7200;
    /// TCP after a FIN either way.
    pub const TCP_CLOSING: u32 = 120;
    /// TCP after a RST.
    pub const TCP_RESET: u32 = 10;
    /// UDP and other protocols, nothing answered yet.
    pub const UNANSWERED: u32 = 30;
    /// UDP and other protocols, answered.
    pub const ANSWERED: u32 = 120;
    /// ICMP echo.
    pub const ECHO: u32 = 30;
    /// Later fragments of a datagram whose first fragment passed.
    pub const FRAGMENT: u32 = 10;
}

/// What a flow's key holds: both ends in canonical order, protocol, peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Key {
    a: u128,
    b: u128,
    pa: u32,
    pb: u32,
    proto: u8,
    /// 1: IPv6 addresses; 2: a fragment entry (a = source, b = destination, pa = id).
    flags: u8,
    peer: u32,
}

const V6: u8 = 1;
const FRAG: u8 = 2;

fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn addr(bits: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(bits.into())
    } else {
        IpAddr::V4(u32::try_from(bits).unwrap_or_default().into())
    }
}

impl Key {
    /// The key of `t` exchanged with `peer`, and whether `t` runs from `a` to `b`.
    pub fn of(peer: u32, t: &Tuple) -> (Key, bool) {
        let (s, d) = ((bits(t.src), t.sport), (bits(t.dst), t.dport));
        let forward = s <= d;
        let ((a, pa), (b, pb)) = if forward { (s, d) } else { (d, s) };
        let key = Key {
            a,
            b,
            pa,
            pb,
            proto: t.proto,
            flags: if t.src.is_ipv6() { V6 } else { 0 },
            peer,
        };
        (key, forward)
    }

    /// The key of the fragments of datagram `id` from `src` to `dst`.
    pub fn fragment(peer: u32, src: IpAddr, dst: IpAddr, proto: u8, id: u32) -> Key {
        Key {
            a: bits(src),
            b: bits(dst),
            pa: id,
            pb: 0,
            proto,
            flags: FRAG | if src.is_ipv6() { V6 } else { 0 },
            peer,
        }
    }

    /// The flow as its opener sent it (`forward`: from `a` to `b`).
    pub fn opener(&self, forward: bool) -> Tuple {
        let v6 = self.flags & V6 != 0;
        let (src, sport, dst, dport) = if forward {
            (self.a, self.pa, self.b, self.pb)
        } else {
            (self.b, self.pb, self.a, self.pa)
        };
        Tuple {
            src: addr(src, v6),
            dst: addr(dst, v6),
            proto: self.proto,
            sport,
            dport,
        }
    }
}

/// Where a TCP flow stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Tcp {
    #[default]
    Open,
    Closing,
    Reset,
}

/// One entry; `expires == 0` is an empty slot.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Slot {
    key: Key,
    expires: u32,
    /// The filter generation that last allowed it (see `Filter::generation`).
    generation: u32,
    /// The direction its first packet went.
    opened: Direction,
    /// Its first packet ran from `key.a` to `key.b`.
    forward: bool,
    answered: bool,
    tcp: Tcp,
}

impl Slot {
    fn live(&self, now: u32) -> bool {
        self.expires > now
    }

    /// Whether an entry may make room for another when the window is full.
    fn evictable(&self) -> bool {
        !self.answered || self.tcp != Tcp::Open || self.key.flags & FRAG != 0
    }

    fn lifetime(&self) -> u32 {
        if self.key.flags & FRAG != 0 {
            return timeout::FRAGMENT;
        }
        match self.key.proto {
            TCP => match (self.tcp, self.answered) {
                (Tcp::Reset, _) => timeout::TCP_RESET,
                (Tcp::Closing, _) => timeout::TCP_CLOSING,
                (Tcp::Open, false) => timeout::TCP_OPENING,
                (Tcp::Open, true) => timeout::TCP_ESTABLISHED,
            },
            super::packet::ICMP | super::packet::ICMPV6 => timeout::ECHO,
            UDP => {
                if self.answered {
                    timeout::ANSWERED
                } else {
                    timeout::UNANSWERED
                }
            }
            _ => {
                if self.answered {
                    timeout::ANSWERED
                } else {
                    timeout::UNANSWERED
                }
            }
        }
    }

    /// A packet of this flow went `dir` as `forward`: whether it is the opener's side
    /// (`Some(true)`), the answering side (`Some(false)`), or does not fit (`None`: the
    /// same ends but the roles swapped, e.g. this node claiming the peer's address).
    fn side(&self, dir: Direction, forward: bool) -> Option<bool> {
        match (dir == self.opened, forward == self.forward) {
            (true, true) => Some(true),
            (false, false) => Some(false),
            _ => None,
        }
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A live entry of this flow, allowed by the filter generation asked about.
    Pass,
    /// A live entry from an older filter generation: the caller checks the opener's
    /// packet against the current filter and calls [`Flows::confirm`] or [`Flows::forget`].
    Stale {
        /// The opener's direction.
        opened: Direction,
        /// The opener's packet.
        opener: Tuple,
    },
    /// No entry (or one that does not fit): the filter decides.
    Miss,
}

/// Whether [`Flows::insert`] found room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Recorded (or it was there already).
    Yes,
    /// Every entry in the window is an answered open flow.
    Full,
}

#[repr(align(64))]
struct Shard(Mutex<Box<[Slot]>>);

/// The table (see the module docs).
pub struct Flows {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl std::fmt::Debug for Flows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flows").finish_non_exhaustive()
    }
}

impl Default for Flows {
    fn default() -> Flows {
        Flows::new()
    }
}

impl Flows {
    /// An empty table of [`CAPACITY`] entries.
    pub fn new() -> Flows {
        Flows {
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(vec![Slot::default(); SLOTS].into_boxed_slice())))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// The shard and first slot of `key`.
    fn place(&self, key: &Key) -> (usize, usize) {
        let h = self.hasher.hash_one(key);
        ((h >> 48) as usize % SHARDS, h as usize % SLOTS)
    }

    /// Runs `f` on the live slot of `key` if there is one (with the shard locked).
    fn with<T>(&self, key: &Key, now: u32, f: impl FnOnce(&mut Slot) -> T) -> Option<T> {
        let (shard, start) = self.place(key);
        let mut slots = self.shards[shard].0.lock();
        for i in 0..PROBE {
            let slot = &mut slots[(start + i) % SLOTS];
            if slot.live(now) && slot.key == *key {
                return Some(f(slot));
            }
        }
        None
    }

    /// A packet of flow `t` (exchanged with peer index `peer`) going `dir` at `now`
    /// (seconds), with TCP `flags` (0 for others), under filter `generation`: refreshes the
    /// entry and its TCP state when it passes.
    pub fn hit(
        &self,
        peer: u32,
        t: &Tuple,
        dir: Direction,
        flags: u8,
        now: u32,
        generation: u32,
    ) -> Found {
        let (key, forward) = Key::of(peer, t);
        self.with(&key, now, |slot| {
            let Some(opener_side) = slot.side(dir, forward) else {
                return Found::Miss;
            };
            if slot.generation != generation {
                return Found::Stale {
                    opened: slot.opened,
                    opener: key.opener(slot.forward),
                };
            }
            if key.proto == TCP {
                if flags & SYN != 0 && flags & ACK == 0 && slot.tcp != Tcp::Open {
                    // A new connection on the tuple of a closed one: the filter decides
                    // again (it may come from the other side this time).
                    slot.expires = 0;
                    return Found::Miss;
                }
                if flags & RST != 0 {
                    slot.tcp = Tcp::Reset;
                } else if flags & FIN != 0 && slot.tcp == Tcp::Open {
                    slot.tcp = Tcp::Closing;
                }
            }
            if !opener_side {
                slot.answered = true;
            }
            slot.expires = now.saturating_add(slot.lifetime());
            Found::Pass
        })
        .unwrap_or(Found::Miss)
    }

    /// Whether flow `t` going `dir` belongs to a live entry of `generation` (for ICMP
    /// errors about it); changes nothing.
    pub fn knows(&self, peer: u32, t: &Tuple, dir: Direction, now: u32, generation: u32) -> bool {
        let (key, forward) = Key::of(peer, t);
        self.with(&key, now, |slot| {
            slot.generation == generation && slot.side(dir, forward).is_some()
        })
        .unwrap_or(false)
    }

    /// The current filter still allows the flow of a [`Found::Stale`] entry: it moves to
    /// `generation`.
    pub fn confirm(&self, peer: u32, t: &Tuple, now: u32, generation: u32) {
        let (key, _) = Key::of(peer, t);
        self.with(&key, now, |slot| slot.generation = generation);
    }

    /// Drops the entry of flow `t` (the current filter no longer allows it).
    pub fn forget(&self, peer: u32, t: &Tuple, now: u32) {
        let (key, _) = Key::of(peer, t);
        self.with(&key, now, |slot| slot.expires = 0);
    }

    /// Records flow `t`, opened by a packet going `dir` with TCP `flags`.
    pub fn insert(
        &self,
        peer: u32,
        t: &Tuple,
        dir: Direction,
        flags: u8,
        now: u32,
        generation: u32,
    ) -> Inserted {
        let (key, forward) = Key::of(peer, t);
        let mut slot = Slot {
            key,
            expires: 0,
            generation,
            opened: dir,
            forward,
            answered: false,
            tcp: if flags & RST != 0 {
                Tcp::Reset
            } else if flags & FIN != 0 {
                Tcp::Closing
            } else {
                Tcp::Open
            },
        };
        slot.expires = now.saturating_add(slot.lifetime());
        self.put(slot, now)
    }

    /// Notes that the first fragment of the datagram of `key` ([`Key::fragment`]) passed.
    pub fn insert_fragment(&self, key: Key, now: u32, generation: u32) -> Inserted {
        self.put(
            Slot {
                key,
                expires: now.saturating_add(timeout::FRAGMENT),
                generation,
                ..Slot::default()
            },
            now,
        )
    }

    /// Whether the first fragment of the datagram of `key` ([`Key::fragment`]) passed
    /// lately, under `generation`.
    pub fn fragment_passed(&self, key: Key, now: u32, generation: u32) -> bool {
        self.with(&key, now, |slot| slot.generation == generation)
            .unwrap_or(false)
    }

    fn put(&self, new: Slot, now: u32) -> Inserted {
        let (shard, start) = self.place(&new.key);
        let mut slots = self.shards[shard].0.lock();
        let mut free = None;
        let mut victim: Option<usize> = None;
        for i in 0..PROBE {
            let at = (start + i) % SLOTS;
            let slot = &slots[at];
            if !slot.live(now) {
                free.get_or_insert(at);
                continue;
            }
            if slot.key == new.key {
                // Another thread recorded it meanwhile (or a fragment entry is renewed).
                slots[at] = new;
                return Inserted::Yes;
            }
            if slot.evictable() && victim.is_none_or(|v| slot.expires < slots[v].expires) {
                victim = Some(at);
            }
        }
        match free.or(victim) {
            Some(at) => {
                slots[at] = new;
                Inserted::Yes
            }
            None => Inserted::Full,
        }
    }

    /// Live entries at `now` (for the status; locks each shard once).
    pub fn len(&self, now: u32) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().iter().filter(|slot| slot.live(now)).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(src: &str, sport: u32, dst: &str, dport: u32, proto: u8) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            sport,
            dport,
        }
    }

    fn reverse(x: &Tuple) -> Tuple {
        Tuple {
            src: x.dst,
            dst: x.src,
            proto: x.proto,
            sport: x.dport,
            dport: x.sport,
        }
    }

    const OUT: Direction = Direction::Outbound;
    const IN: Direction = Direction::Inbound;

    #[test]
    fn slots_are_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn both_directions_find_one_entry() {
        let flows = Flows::new();
        let out = t("10.9.8.1", 40000, "10.9.8.2", 443, TCP);
        assert_eq!(flows.hit(1, &out, OUT, SYN, 100, 1), Found::Miss);
        assert_eq!(flows.insert(1, &out, OUT, SYN, 100, 1), Inserted::Yes);
        // The answer comes back in.
        assert_eq!(
            flows.hit(1, &reverse(&out), IN, SYN | ACK, 101, 1),
            Found::Pass
        );
        assert_eq!(flows.hit(1, &out, OUT, ACK, 101, 1), Found::Pass);
        // The same tuple with another peer index is another flow.
        assert_eq!(flows.hit(2, &reverse(&out), IN, ACK, 101, 1), Found::Miss);
        // The same ends in roles that do not fit: the opener's packet arriving from the
        // peer, or the answer leaving this node.
        assert_eq!(flows.hit(1, &out, IN, ACK, 101, 1), Found::Miss);
        assert_eq!(flows.hit(1, &reverse(&out), OUT, ACK, 101, 1), Found::Miss);
        assert_eq!(flows.len(101), 1);
    }

    #[test]
    fn entries_expire() {
        let flows = Flows::new();
        let udp = t("10.9.8.1", 5000, "10.9.8.2", 53, UDP);
        flows.insert(1, &udp, OUT, 0, 100, 1);
        // Unanswered UDP lives 30 s.
        assert_eq!(flows.hit(1, &reverse(&udp), IN, 0, 129, 1), Found::Pass);
        // Answered: 120 s from the last packet.
        assert_eq!(
            flows.hit(1, &reverse(&udp), IN, 0, 129 + 119, 1),
            Found::Pass
        );
        assert_eq!(
            flows.hit(1, &reverse(&udp), IN, 0, 248 + 120, 1),
            Found::Miss
        );
        assert_eq!(flows.len(1000), 0);

        // A SYN nobody answers: 60 s.
        let syn = t("10.9.8.1", 40000, "10.9.8.2", 22, TCP);
        flows.insert(1, &syn, OUT, SYN, 1000, 1);
        assert_eq!(flows.len(1059), 1);
        assert_eq!(flows.len(1060), 0);

        // Established TCP: 2 h; after a FIN 120 s; after a RST 10 s.
        let tcp = t("10.9.8.1", 40001, "10.9.8.2", 22, TCP);
        flows.insert(1, &tcp, OUT, SYN, 2000, 1);
        assert_eq!(
            flows.hit(1, &reverse(&tcp), IN, SYN | ACK, 2000, 1),
            Found::Pass
        );
        assert_eq!(flows.hit(1, &tcp, OUT, ACK, 2000 + 7199, 1), Found::Pass);
        let now = 2000 + 7199;
        assert_eq!(flows.hit(1, &tcp, OUT, FIN | ACK, now, 1), Found::Pass);
        assert_eq!(
            flows.hit(1, &reverse(&tcp), IN, ACK, now + 119, 1),
            Found::Pass
        );
        assert_eq!(
            flows.hit(1, &reverse(&tcp), IN, RST, now + 119, 1),
            Found::Pass
        );
        assert_eq!(flows.hit(1, &tcp, OUT, ACK, now + 128, 1), Found::Pass);
        assert_eq!(flows.hit(1, &tcp, OUT, ACK, now + 128 + 10, 1), Found::Miss);
    }

    #[test]
    fn a_new_syn_on_a_closed_tuple_is_decided_again() {
        let flows = Flows::new();
        let tcp = t("10.9.8.1", 40000, "10.9.8.2", 22, TCP);
        flows.insert(1, &tcp, OUT, SYN, 10, 1);
        flows.hit(1, &reverse(&tcp), IN, SYN | ACK, 10, 1);
        flows.hit(1, &tcp, OUT, RST, 11, 1);
        // The peer now opens a connection on the same ports: not our flow's answer.
        assert_eq!(flows.hit(1, &reverse(&tcp), IN, SYN, 12, 1), Found::Miss);
        assert_eq!(flows.len(12), 0);
    }

    #[test]
    fn stale_generations_ask_the_filter_again() {
        let flows = Flows::new();
        let udp = t("10.9.8.1", 5000, "10.9.8.2", 53, UDP);
        flows.insert(1, &udp, OUT, 0, 10, 1);
        assert_eq!(
            flows.hit(1, &reverse(&udp), IN, 0, 11, 2),
            Found::Stale {
                opened: OUT,
                opener: udp
            }
        );
        flows.confirm(1, &udp, 11, 2);
        assert_eq!(flows.hit(1, &reverse(&udp), IN, 0, 11, 2), Found::Pass);
        assert!(flows.knows(1, &udp, OUT, 11, 2));
        assert!(!flows.knows(1, &udp, OUT, 11, 3));
        flows.forget(1, &reverse(&udp), 11);
        assert_eq!(flows.hit(1, &reverse(&udp), IN, 0, 11, 2), Found::Miss);
    }

    #[test]
    fn ipv6_openers_come_back_whole() {
        let x = t("fd00::9", 1, "fd00::1", 2, UDP);
        for forward_first in [true, false] {
            let y = if forward_first { x } else { reverse(&x) };
            let (key, forward) = Key::of(7, &y);
            assert_eq!(key.opener(forward), y);
        }
    }

    /// Fill one probe window: expired entries are reused, unanswered ones evicted
    /// (soonest to expire first), answered open flows never; then new flows are refused.
    #[test]
    fn a_full_window_evicts_only_what_may_go() {
        let flows = Flows::new();
        // Find PROBE + 1 flows that share a window: same shard and start slot.
        let mut same = Vec::new();
        let mut port = 1u32;
        let want = flows.place(&Key::of(1, &t("10.9.8.1", 0, "10.9.8.2", 80, TCP)).0);
        while same.len() < PROBE + 1 {
            let x = t("10.9.8.1", port, "10.9.8.2", 80, TCP);
            if flows.place(&Key::of(1, &x).0) == want {
                same.push(x);
            }
            port += 1;
        }
        // PROBE answered connections fill the window.
        for (i, x) in same[..PROBE].iter().enumerate() {
            let now = 10 + i as u32;
            assert_eq!(flows.insert(1, x, OUT, SYN, now, 1), Inserted::Yes);
            assert_eq!(
                flows.hit(1, &reverse(x), IN, SYN | ACK, now, 1),
                Found::Pass
            );
        }
        let extra = same[PROBE];
        assert_eq!(flows.insert(1, &extra, OUT, SYN, 20, 1), Inserted::Full);
        // Every established flow still passes.
        for x in &same[..PROBE] {
            assert_eq!(flows.hit(1, &reverse(x), IN, ACK, 20, 1), Found::Pass);
        }
        // One of them closes (RST): it is what goes.
        flows.hit(1, &same[3], OUT, RST, 21, 1);
        assert_eq!(flows.insert(1, &extra, OUT, SYN, 21, 1), Inserted::Yes);
        assert_eq!(
            flows.hit(1, &reverse(&same[3]), IN, ACK, 21, 1),
            Found::Miss
        );
        assert_eq!(
            flows.hit(1, &reverse(&extra), IN, SYN | ACK, 21, 1),
            Found::Pass
        );
        // Once they expire, slots are free again.
        let later = 21 + timeout::TCP_ESTABLISHED + 1;
        assert_eq!(flows.insert(1, &same[3], OUT, SYN, later, 1), Inserted::Yes);
        assert_eq!(flows.len(later), 1);
    }

    #[test]
    fn fragments_are_remembered_briefly() {
        let flows = Flows::new();
        let (s, d) = ("10.9.8.1".parse().unwrap(), "10.9.8.2".parse().unwrap());
        let key = |peer, src, dst, proto, id| Key::fragment(peer, src, dst, proto, id);
        flows.insert_fragment(key(1, s, d, UDP, 77), 100, 1);
        assert!(flows.fragment_passed(key(1, s, d, UDP, 77), 109, 1));
        // Not the other way, another id, protocol or peer, or generation.
        assert!(!flows.fragment_passed(key(1, d, s, UDP, 77), 100, 1));
        assert!(!flows.fragment_passed(key(1, s, d, UDP, 78), 100, 1));
        assert!(!flows.fragment_passed(key(1, s, d, TCP, 77), 100, 1));
        assert!(!flows.fragment_passed(key(2, s, d, UDP, 77), 100, 1));
        assert!(!flows.fragment_passed(key(1, s, d, UDP, 77), 100, 2));
        assert!(!flows.fragment_passed(key(1, s, d, UDP, 77), 110, 1));
        // A fragment entry is not a flow of the same numbers.
        let udp = Tuple {
            src: s,
            dst: d,
            proto: UDP,
            sport: 77,
            dport: 0,
        };
        assert_eq!(
            flows.hit(1, &udp, Direction::Outbound, 0, 100, 1),
            Found::Miss
        );
    }
}
