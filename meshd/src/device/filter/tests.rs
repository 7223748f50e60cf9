use std::net::IpAddr;

use mesh_proto::api::{FilterDirection, FilterDropReason};
use mesh_proto::policy::{Action, Entry, FilterUpdate, NodeFilter, PeerFilter, Ports};
use mesh_proto::Key;

use super::packet::build::{icmp, ip, tcp, udp};
use super::packet::{ACK, FIN, ICMP, ICMPV6, RST, SYN, TCP, UDP};
use super::*;

const ME: &str = "10.9.8.1";
const PEER: &str = "10.9.8.2";
const PEER_KEY: Key = Key([2; 32]);
const OTHER_KEY: Key = Key([3; 32]);
const IN: Direction = Direction::Inbound;
const OUT: Direction = Direction::Outbound;

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn entry(action: Action, ports: &str, rule: u32, line: u32) -> Entry {
    Entry {
        action,
        ports: Ports::parse(ports).unwrap(),
        src: None,
        dst: None,
        rule,
        line,
    }
}

fn allow(ports: &str, rule: u32, line: u32) -> Entry {
    entry(Action::Allow, ports, rule, line)
}

fn deny(ports: &str, rule: u32, line: u32) -> Entry {
    entry(Action::Deny, ports, rule, line)
}

fn node(default: Action, peers: &[(Key, Vec<Entry>, Vec<Entry>)]) -> NodeFilter {
    NodeFilter {
        default,
        peers: peers
            .iter()
            .map(|(k, inbound, outbound)| {
                (
                    *k,
                    PeerFilter {
                        inbound: inbound.clone(),
                        outbound: outbound.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// A filter compiled as the device compiles it, and the state it came from.
struct Node {
    saved: Saved,
    compiler: Compiler,
    filter: Option<Arc<Filter>>,
}

impl Node {
    fn new(f: NodeFilter) -> Node {
        let mut n = Node {
            saved: Saved::default(),
            compiler: Compiler::default(),
            filter: None,
        };
        apply_update(&mut n.saved, &f.update_from(None)).unwrap();
        n.filter = n.compiler.compile(&n.saved);
        n
    }

    fn update(&mut self, update: &FilterUpdate) -> Result<(), String> {
        let r = apply_update(&mut self.saved, update);
        self.filter = self.compiler.compile(&self.saved);
        r
    }

    fn filter(&self) -> &Filter {
        self.filter.as_deref().expect("no filter compiled")
    }

    /// Whether `packet` passes `dir` with `key` (peer index 1) at `now`.
    fn passes_with(&self, key: Key, dir: Direction, packet: &[u8], now: u32) -> bool {
        let f = self.filter();
        let Some(rules) = f.rules(&key, true) else {
            return true;
        };
        let mut batch = Batch::new(now);
        let index = if key == PEER_KEY { 1 } else { 2 };
        let ok = f.check(rules, index, dir, packet, &mut batch);
        batch.finish(f);
        ok
    }

    fn passes(&self, dir: Direction, packet: &[u8], now: u32) -> bool {
        self.passes_with(PEER_KEY, dir, packet, now)
    }

    fn status(&self) -> mesh_proto::api::FilterStatus {
        status(
            &self.saved,
            self.compiler.counters().map(|c| &**c),
            self.filter.as_deref(),
            1,
        )
        .expect("no filter status")
    }

    /// Drops counted for (direction, reason, rule).
    fn drops(&self, dir: FilterDirection, reason: FilterDropReason, rule: Option<u32>) -> u64 {
        self.status()
            .drops
            .iter()
            .filter(|d| d.direction == dir && d.reason == reason && d.rule == rule)
            .map(|d| d.packets)
            .sum()
    }
}

fn out_tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    ip(a(ME), a(PEER), TCP, &tcp(sport, dport, flags), None)
}

fn in_tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    ip(a(PEER), a(ME), TCP, &tcp(sport, dport, flags), None)
}

fn out_udp(sport: u16, dport: u16) -> Vec<u8> {
    ip(a(ME), a(PEER), UDP, &udp(sport, dport), None)
}

fn in_udp(sport: u16, dport: u16) -> Vec<u8> {
    ip(a(PEER), a(ME), UDP, &udp(sport, dport), None)
}

#[test]
fn rules_decide_and_count_per_rule_and_direction() {
    let n = Node::new(node(
        Action::Deny,
        &[(
            PEER_KEY,
            vec![allow("tcp/22", 0, 5), deny("tcp/23", 1, 9)],
            vec![allow("udp/53", 2, 12)],
        )],
    ));
    assert!(n.passes(IN, &in_tcp(40000, 22, SYN), 1));
    assert!(!n.passes(IN, &in_tcp(40000, 23, SYN), 1));
    assert!(!n.passes(IN, &in_tcp(40001, 23, SYN), 1));
    assert!(!n.passes(IN, &in_tcp(40000, 80, SYN), 1));
    assert!(n.passes(OUT, &out_udp(5000, 53), 1));
    assert!(!n.passes(OUT, &out_tcp(40000, 80, SYN), 1));
    assert!(!n.passes(OUT, &out_udp(5000, 54), 1));

    let s = n.status();
    assert_eq!(s.hash, Some(n.saved.filter.as_ref().unwrap().hash()));
    assert_eq!(s.default, Some(Action::Deny));
    assert_eq!((s.allowed_inbound, s.allowed_outbound), (1, 1));
    use FilterDirection::{Inbound as I, Outbound as O};
    assert_eq!(n.drops(I, FilterDropReason::Rule, Some(1)), 2);
    let rule1 = s.drops.iter().find(|d| d.rule == Some(1)).unwrap();
    assert_eq!(rule1.line, Some(9));
    assert_eq!(n.drops(I, FilterDropReason::Default, None), 1);
    assert_eq!(n.drops(O, FilterDropReason::Default, None), 2);
    assert_eq!(n.drops(O, FilterDropReason::Rule, Some(1)), 0);
    // The allowed flows are recorded (SYN to 22, UDP to 53).
    assert_eq!(s.flows, 2);
}

#[test]
fn answers_to_allowed_flows_pass_both_ways() {
    // This node may open HTTPS to the peer; the peer may open SSH to this node; nothing
    // else either way.
    let n = Node::new(node(
        Action::Deny,
        &[(
            PEER_KEY,
            vec![allow("tcp/22", 0, 3)],
            vec![allow("tcp/443", 1, 7)],
        )],
    ));
    // Our connection out, its answers in.
    assert!(n.passes(OUT, &out_tcp(40000, 443, SYN), 1));
    assert!(n.passes(IN, &in_tcp(443, 40000, SYN | ACK), 1));
    assert!(n.passes(OUT, &out_tcp(40000, 443, ACK), 2));
    assert!(n.passes(IN, &in_tcp(443, 40000, ACK), 2));
    // The peer cannot use the flow's ports to open something of its own.
    assert!(!n.passes(IN, &in_tcp(443, 40001, SYN), 2));
    assert!(!n.passes(IN, &in_tcp(40000, 443, SYN), 2));
    // Its connection in, our answers out.
    assert!(n.passes(IN, &in_tcp(50000, 22, SYN), 3));
    assert!(n.passes(OUT, &out_tcp(22, 50000, SYN | ACK), 3));
    // But not a connection of ours from port 22.
    assert!(!n.passes(OUT, &out_tcp(22, 50001, SYN), 3));
    // Closed with RST: the answer window closes 10 s later.
    assert!(n.passes(OUT, &out_tcp(40000, 443, RST), 4));
    assert!(n.passes(IN, &in_tcp(443, 40000, ACK), 13));
    assert!(!n.passes(IN, &in_tcp(443, 40000, ACK), 14 + 10));
}

#[test]
fn udp_answers_pass_until_the_flow_expires() {
    let n = Node::new(node(
        Action::Deny,
        &[(PEER_KEY, vec![], vec![allow("udp/53", 0, 2)])],
    ));
    assert!(n.passes(OUT, &out_udp(5000, 53), 100));
    // Unanswered UDP lives 30 s.
    assert!(!n.passes(IN, &in_udp(53, 5000), 130));
    assert!(n.passes(OUT, &out_udp(5000, 53), 200));
    assert!(n.passes(IN, &in_udp(53, 5000), 229));
    // Answered: 120 s after the last packet.
    assert!(n.passes(IN, &in_udp(53, 5000), 229 + 119));
    assert!(!n.passes(IN, &in_udp(53, 5000), 229 + 119 + 120));
    // The answer from another port is not the flow's.
    assert!(n.passes(OUT, &out_udp(5000, 53), 1000));
    assert!(!n.passes(IN, &in_udp(54, 5000), 1001));
}

#[test]
fn icmp_echo_answers_and_errors_of_allowed_flows_pass() {
    let n = Node::new(node(
        Action::Deny,
        &[(
            PEER_KEY,
            vec![],
            vec![allow("icmp", 0, 2), allow("udp/9999", 1, 3)],
        )],
    ));
    let (me, peer) = (a(ME), a(PEER));
    // Our ping out, the peer's echo reply in; not the peer's ping in.
    assert!(n.passes(OUT, &ip(me, peer, ICMP, &icmp(8, 77, b"x"), None), 1));
    assert!(n.passes(IN, &ip(peer, me, ICMP, &icmp(0, 77, b"x"), None), 1));
    assert!(!n.passes(IN, &ip(peer, me, ICMP, &icmp(0, 78, b"x"), None), 1));
    assert!(!n.passes(IN, &ip(peer, me, ICMP, &icmp(8, 77, b"x"), None), 1));
    // Echo flows last 30 s.
    assert!(!n.passes(IN, &ip(peer, me, ICMP, &icmp(0, 77, b"x"), None), 31));

    // Our UDP to the peer's port 9999, its "port unreachable" back.
    let sent = out_udp(40000, 9999);
    assert!(n.passes(OUT, &sent, 40));
    let unreachable = ip(peer, me, ICMP, &icmp(3, 0, &sent[..28]), None);
    assert!(n.passes(IN, &unreachable, 41));
    // An error about a flow we do not have (another port) is denied.
    let unknown = ip(
        peer,
        me,
        ICMP,
        &icmp(3, 0, &out_udp(40000, 8888)[..28]),
        None,
    );
    assert!(!n.passes(IN, &unknown, 41));
    // An error about our flow addressed to someone else is denied.
    let elsewhere = ip(peer, a("10.9.8.7"), ICMP, &icmp(3, 0, &sent[..28]), None);
    assert!(!n.passes(IN, &elsewhere, 41));
    // Time exceeded about our ping passes too.
    let ping = ip(me, peer, ICMP, &icmp(8, 5, b"x"), None);
    assert!(n.passes(OUT, &ping, 50));
    assert!(n.passes(IN, &ip(peer, me, ICMP, &icmp(11, 0, &ping), None), 50));
}

#[test]
fn ipv6_flows_and_packet_too_big() {
    let (me, peer) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
    let n = Node::new(node(
        Action::Deny,
        &[(PEER_KEY, vec![], vec![allow("tcp/443", 0, 2)])],
    ));
    let syn = ip(me, peer, TCP, &tcp(40000, 443, SYN), None);
    assert!(n.passes(OUT, &syn, 1));
    assert!(n.passes(IN, &ip(peer, me, TCP, &tcp(443, 40000, SYN | ACK), None), 1));
    let data = ip(me, peer, TCP, &tcp(40000, 443, ACK), None);
    let too_big = ip(peer, me, ICMPV6, &icmp(2, 0, &data), None);
    assert!(n.passes(IN, &too_big, 2));
    // Not about our flow: the table decides (deny).
    let other = ip(me, peer, TCP, &tcp(40001, 443, ACK), None);
    assert!(!n.passes(IN, &ip(peer, me, ICMPV6, &icmp(2, 0, &other), None), 2));
}

#[test]
fn fragments_follow_their_first_or_need_the_whole_protocol() {
    let n = Node::new(node(
        Action::Deny,
        &[(
            PEER_KEY,
            vec![allow("udp/5000", 0, 2), allow("tcp", 1, 3)],
            vec![],
        )],
    ));
    let (me, peer) = (a(ME), a(PEER));
    let first = ip(peer, me, UDP, &udp(4000, 5000), Some((0, true, 0x77)));
    let later = ip(peer, me, UDP, &[0xaa; 64], Some((185, false, 0x77)));
    assert!(n.passes(IN, &first, 1));
    assert!(n.passes(IN, &later, 2));
    // 10 s after the first, its datagram is over.
    assert!(!n.passes(IN, &later, 12));
    // A later fragment of a datagram whose first was denied, or never seen.
    let denied_first = ip(peer, me, UDP, &udp(4000, 6000), Some((0, true, 0x78)));
    assert!(!n.passes(IN, &denied_first, 20));
    assert!(!n.passes(
        IN,
        &ip(peer, me, UDP, &[0; 64], Some((185, false, 0x78))),
        20
    ));
    assert!(!n.passes(
        IN,
        &ip(peer, me, UDP, &[0; 64], Some((185, false, 0x79))),
        20
    ));
    // TCP is open on every port: its later fragments pass on their own.
    assert!(n.passes(
        IN,
        &ip(peer, me, TCP, &[0; 64], Some((185, false, 0x80))),
        20
    ));
    // A first fragment too short for its ports is malformed.
    let tiny = ip(peer, me, UDP, &udp(4000, 5000)[..4], Some((0, true, 0x81)));
    assert!(!n.passes(IN, &tiny, 20));
    use FilterDirection::Inbound as I;
    assert_eq!(n.drops(I, FilterDropReason::Fragment, None), 3);
    assert_eq!(n.drops(I, FilterDropReason::Malformed, None), 1);
}

#[test]
fn malformed_packets_are_dropped_and_counted() {
    let n = Node::new(node(
        Action::Deny,
        &[(PEER_KEY, vec![allow("*", 0, 2)], vec![])],
    ));
    // Open inbound, closed outbound: the peer is filtered.
    let good = in_tcp(1, 2, SYN);
    for cut in [0, 1, 19, 20, 39] {
        assert!(!n.passes(IN, &good[..cut], 1), "cut {cut}");
    }
    assert!(n.passes(IN, &good, 1));
    assert_eq!(
        n.drops(FilterDirection::Inbound, FilterDropReason::Malformed, None),
        5
    );
}

#[test]
fn a_new_filter_revokes_established_flows() {
    let allowed = node(
        Action::Deny,
        &[(
            PEER_KEY,
            vec![],
            vec![allow("tcp/443", 0, 2), allow("udp/53", 1, 3)],
        )],
    );
    let mut n = Node::new(allowed.clone());
    assert!(n.passes(OUT, &out_tcp(40000, 443, SYN), 1));
    assert!(n.passes(OUT, &out_udp(5000, 53), 1));
    assert!(n.passes(IN, &in_tcp(443, 40000, SYN | ACK), 1));
    // HTTPS is revoked, DNS kept (a new generation).
    let revoked = node(
        Action::Deny,
        &[(PEER_KEY, vec![], vec![allow("udp/53", 1, 3)])],
    );
    n.update(&revoked.update_from(Some(&allowed))).unwrap();
    assert!(!n.passes(IN, &in_tcp(443, 40000, ACK), 2));
    assert!(!n.passes(OUT, &out_tcp(40000, 443, ACK), 2));
    assert!(n.passes(IN, &in_udp(53, 5000), 2));
    // Counters survive the recompilation (rule 1 kept its line).
    assert_eq!(n.status().allowed_outbound, 2);
}

#[test]
fn a_broken_update_fails_closed_for_its_peers_only() {
    let first = node(
        Action::Deny,
        &[
            (PEER_KEY, vec![allow("tcp/22", 0, 2)], vec![]),
            (OTHER_KEY, vec![allow("tcp/22", 0, 2)], vec![]),
        ],
    );
    let mut n = Node::new(first.clone());
    let mut second = first.clone();
    second
        .peers
        .get_mut(&PEER_KEY)
        .unwrap()
        .inbound
        .push(allow("tcp/80", 1, 5));
    let mut broken = second.update_from(Some(&first));
    broken.hash = "0123456789abcdef".into();
    let e = n.update(&broken).unwrap_err();
    assert!(e.contains("0123456789abcdef"), "{e}");
    // The peer concerned: nothing passes either way, not even what the old filter allowed.
    assert!(!n.passes(IN, &in_tcp(1, 22, SYN), 1));
    assert!(!n.passes(IN, &in_tcp(1, 80, SYN), 1));
    assert!(!n.passes(OUT, &out_udp(1, 53), 1));
    // The other peer keeps the filter that applied.
    assert!(n.passes_with(OTHER_KEY, IN, &in_tcp(1, 22, SYN), 1));
    assert!(!n.passes_with(OTHER_KEY, IN, &in_tcp(1, 80, SYN), 1));
    let s = n.status();
    assert_eq!(s.hash, Some(first.hash()));
    assert_eq!(s.error.as_deref(), Some(e.as_str()));
    assert_eq!(s.closed, vec![PEER_KEY]);
    assert!(!s.closed_all);
    assert_eq!(
        n.drops(FilterDirection::Inbound, FilterDropReason::Closed, None),
        2
    );

    // A broken full update closes every peer, also those it does not name.
    let mut full = second.update_from(None);
    full.hash = "ffffffffffffffff".into();
    n.update(&full).unwrap_err();
    assert!(!n.passes_with(OTHER_KEY, IN, &in_tcp(1, 22, SYN), 1));
    assert!(!n.passes_with(Key([9; 32]), IN, &in_tcp(1, 22, SYN), 1));
    assert!(n.status().closed_all);

    // An update that applies reopens them.
    n.update(&second.update_from(None)).unwrap();
    assert!(n.passes(IN, &in_tcp(1, 80, SYN), 2));
    let s = n.status();
    assert_eq!((s.error, s.closed_all, s.closed.len()), (None, false, 0));
    assert_eq!(s.hash, Some(second.hash()));
}

#[test]
fn a_broken_first_update_closes_what_it_names() {
    // Before any filter the node allows everything; a broken delta closes its peers and
    // leaves the rest open, a broken change of the default closes all.
    let mut saved = Saved::default();
    let update = FilterUpdate {
        full: false,
        default: Action::Allow,
        upsert: [(PEER_KEY, PeerFilter::default())].into(),
        remove: vec![OTHER_KEY],
        hash: "nope".into(),
    };
    apply_update(&mut saved, &update).unwrap_err();
    assert_eq!(saved.filter, None);
    assert_eq!(saved.closed.peers, [PEER_KEY, OTHER_KEY].into());
    assert!(!saved.closed.all);
    assert_eq!(saved.hash(), NodeFilter::allow_all().hash());
    let mut compiler = Compiler::default();
    let f = compiler.compile(&saved).unwrap();
    assert!(matches!(f.rules(&PEER_KEY, true), Some(PeerRules::Closed)));
    assert!(f.rules(&Key([9; 32]), true).is_none());

    let mut saved = Saved::default();
    let update = FilterUpdate {
        default: Action::Deny,
        upsert: Default::default(),
        remove: vec![],
        ..update
    };
    apply_update(&mut saved, &update).unwrap_err();
    assert!(saved.closed.all);
}

#[test]
fn limits_are_checked_beyond_the_hash() {
    let mut big = node(Action::Deny, &[]);
    big.peers.insert(
        PEER_KEY,
        PeerFilter {
            inbound: vec![allow("tcp/22", MAX_RULES as u32, 2)],
            outbound: vec![],
        },
    );
    let mut saved = Saved::default();
    let e = apply_update(&mut saved, &big.update_from(None)).unwrap_err();
    assert!(e.contains("rule index"), "{e}");
    assert!(saved.closed.all);
}

#[test]
fn open_filters_and_static_peers_cost_nothing() {
    let mut compiler = Compiler::default();
    // No filter; the filter that allows everything; one whose rules open everything.
    assert!(compiler.compile(&Saved::default()).is_none());
    let all = Saved {
        filter: Some(NodeFilter::allow_all()),
        ..Saved::default()
    };
    assert!(compiler.compile(&all).is_none());
    let open = Saved {
        filter: Some(node(
            Action::Deny,
            &[(PEER_KEY, vec![allow("*", 0, 1)], vec![allow("*", 0, 1)])],
        )),
        ..Saved::default()
    };
    // Other peers fall to the default (deny): compiled, but the open peer is not checked.
    let f = compiler.compile(&open).unwrap();
    assert!(f.rules(&PEER_KEY, true).is_none());
    assert!(f.rules(&OTHER_KEY, true).is_some());
    // Static peers are outside the network's policy.
    assert!(f.rules(&OTHER_KEY, false).is_none());
    // A port range that leaves a hole is not "open".
    let holed = Saved {
        filter: Some(node(
            Action::Allow,
            &[(PEER_KEY, vec![deny("udp/7", 0, 1)], vec![])],
        )),
        ..Saved::default()
    };
    let f = compiler.compile(&holed).unwrap();
    assert!(f.rules(&PEER_KEY, true).is_some());
    assert!(f.rules(&OTHER_KEY, true).is_none());
}

#[test]
fn conditional_rules_use_the_packet_addresses() {
    // Only the peer's pod prefix may reach port 80 here.
    let mut pods = allow("tcp/80", 0, 2);
    pods.src = Some("10.244.2.0/24".parse().unwrap());
    let n = Node::new(node(Action::Deny, &[(PEER_KEY, vec![pods], vec![])]));
    let from_pod = ip(a("10.244.2.9"), a(ME), TCP, &tcp(1, 80, SYN), None);
    assert!(n.passes(IN, &from_pod, 1));
    assert!(!n.passes(IN, &in_tcp(1, 80, SYN), 1));
}

/// Answered flows fill the table; a new flow is then refused (and its packet dropped)
/// rather than breaking one of them.
#[test]
fn a_full_flow_table_refuses_new_flows() {
    let n = Node::new(node(
        Action::Deny,
        &[(PEER_KEY, vec![], vec![allow("udp", 0, 2)])],
    ));
    let mut refused = None;
    let mut admitted = 0usize;
    'fill: for dport in 1..=u16::MAX {
        for sport in [1000u16, 2000] {
            if !n.passes(OUT, &out_udp(sport, dport), 5) {
                refused = Some((sport, dport));
                break 'fill;
            }
            assert!(n.passes(IN, &in_udp(dport, sport), 5));
            admitted += 1;
        }
    }
    let (sport, dport) = refused.expect("the table never filled");
    assert!(admitted <= flows::CAPACITY, "{admitted}");
    assert_eq!(
        n.drops(FilterDirection::Outbound, FilterDropReason::TableFull, None),
        1
    );
    // Its answer does not pass; the first flow's still does.
    assert!(!n.passes(IN, &in_udp(dport, sport), 5));
    assert!(n.passes(IN, &in_udp(1, 1000), 5));
    // Later, when the flows have expired, it gets in.
    assert!(n.passes(OUT, &out_udp(sport, dport), 5 + 121));
}

#[test]
fn a_batch_counts_once_and_remembers_its_flow() {
    let n = Node::new(node(
        Action::Deny,
        &[(PEER_KEY, vec![], vec![allow("tcp/443", 0, 2)])],
    ));
    let f = n.filter();
    let rules = f.rules(&PEER_KEY, true).unwrap();
    let mut batch = Batch::new(1);
    assert!(f.check(rules, 1, OUT, &out_tcp(40000, 443, SYN), &mut batch));
    for _ in 0..10 {
        assert!(f.check(rules, 1, OUT, &out_tcp(40000, 443, ACK), &mut batch));
        assert!(!f.check(rules, 1, OUT, &out_tcp(40000, 80, ACK), &mut batch));
    }
    // Nothing reaches the shared counters before the batch ends.
    assert_eq!(n.status().allowed_outbound, 0);
    batch.finish(f);
    let s = n.status();
    assert_eq!(s.allowed_outbound, 11);
    assert_eq!(
        n.drops(FilterDirection::Outbound, FilterDropReason::Default, None),
        10
    );
    // A FIN goes through the table (state change), not the memo.
    let mut batch = Batch::new(2);
    assert!(f.check(rules, 1, OUT, &out_tcp(40000, 443, ACK), &mut batch));
    assert!(f.check(rules, 1, OUT, &out_tcp(40000, 443, FIN | ACK), &mut batch));
    batch.finish(f);
    assert!(n.passes(IN, &in_tcp(443, 40000, ACK), 2 + 119));
    assert!(!n.passes(IN, &in_tcp(443, 40000, ACK), 2 + 119 + 121));
}
