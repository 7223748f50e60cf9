use super::*;
use crate::Key;

const CLUSTER: &str = r#"
default = "deny"

[groups]
cluster = ["tag:control", "tag:worker"]
everyone = ["group:cluster", "tag:ops"]

[[rule]]
from = ["group:cluster"]
to = ["tag:control"]
ports = ["tcp/2379-2380", "tcp/6443"]

[[rule]]
action = "deny"
from = ["tag:ops"]
to = ["*"]
ports = ["tcp/10250"]

[[rule]]
from = ["tag:ops"]
to = ["group:everyone"]
ports = ["tcp/22", "icmp"]

[[rule]]
from = ["tag:monitor"]
to = ["*"]
ports = ["tcp/9100"]

[[test]]
from = "tag:ops"
to = "tag:control"
port = "tcp/22"
expect = "allow"

[[test]]
from = "tag:ops"
to = "tag:worker"
port = "tcp/10250"
expect = "deny"
"#;

fn tags(t: &[&str]) -> BTreeSet<String> {
    t.iter().map(|s| (*s).to_owned()).collect()
}

fn probe(text: &str) -> Probe {
    Probe::parse(text).unwrap()
}

#[test]
fn a_document_parses_and_its_tests_pass() {
    let p = Policy::parse(CLUSTER).unwrap();
    assert_eq!(p.default, Action::Deny);
    assert_eq!(p.rules.len(), 4);
    // A rule's line is its [[rule]] header's.
    assert_eq!(p.rules[0].line, 8);
    assert_eq!(
        p.groups["everyone"],
        vec![
            Selector::Tag("control".into()),
            Selector::Tag("ops".into()),
            Selector::Tag("worker".into())
        ]
    );
    assert_eq!(p.tests.len(), 2);
}

#[test]
fn the_first_matching_rule_decides_else_the_default() {
    let p = Policy::parse(CLUSTER).unwrap();
    let d =
        |from: &str, to: &str, proto, port| p.decide_probe(&probe(from), &probe(to), proto, port);
    // Workers reach the control plane's etcd and apiserver, nothing else of it.
    assert_eq!(
        d("tag:worker", "tag:control", Proto::Tcp, 2379).action,
        Action::Allow
    );
    assert_eq!(
        d("tag:worker", "tag:control", Proto::Tcp, 6443).rule,
        Some(0)
    );
    assert_eq!(
        d("tag:worker", "tag:control", Proto::Tcp, 22).action,
        Action::Deny
    );
    assert_eq!(d("tag:worker", "tag:control", Proto::Tcp, 22).rule, None);
    // ops: ssh and ping everywhere, but the deny before it wins for the kubelet port.
    assert_eq!(d("tag:ops", "tag:worker", Proto::Tcp, 22).rule, Some(2));
    assert_eq!(
        d("tag:ops", "tag:worker", Proto::Icmp, 0).action,
        Action::Allow
    );
    assert_eq!(d("tag:ops", "tag:worker", Proto::Tcp, 10250).rule, Some(1));
    assert_eq!(
        d("tag:ops", "tag:worker", Proto::Udp, 22).action,
        Action::Deny
    );
    // Two tags: either can match.
    assert_eq!(
        d("tag:monitor tag:worker", "tag:control", Proto::Tcp, 9100).action,
        Action::Allow
    );
    // The default of a new network: everything allowed.
    let open = Policy::default();
    assert_eq!(
        open.decide_probe(&probe("tag:x"), &probe("tag:y"), Proto::Udp, 53),
        Decision {
            action: Action::Allow,
            rule: None
        }
    );
}

#[test]
fn members_and_prefixes_select_too() {
    let p = Policy::parse(
        r#"
default = "deny"
[[rule]]
from = ["member:laptop", "10.244.1.0/24"]
to = ["10.9.8.7"]
ports = ["udp/8472"]
"#,
    )
    .unwrap();
    let laptop = probe("member:laptop");
    let target = probe("10.9.8.7");
    assert_eq!(
        p.decide_probe(&laptop, &target, Proto::Udp, 8472).action,
        Action::Allow
    );
    assert_eq!(
        p.decide_probe(&laptop, &probe("10.9.8.8"), Proto::Udp, 8472)
            .action,
        Action::Deny
    );
    assert_eq!(
        p.decide_probe(&probe("10.244.1.9"), &target, Proto::Udp, 8472)
            .action,
        Action::Allow
    );
    assert_eq!(
        p.decide_probe(&probe("10.244.2.9"), &target, Proto::Udp, 8472)
            .action,
        Action::Deny
    );
}

/// (document, line, a fragment of the reason): a selector's or port's own line, else the
/// line of the table it is in.
const BAD: &[(&str, usize, &str)] = &[
    ("default = \"maybe\"\n", 1, "not an action"),
    ("[[rule]]\nfrom = [\"tag:a\"]\nto = [\"group:nope\"]\n", 3, "group:nope is not defined"),
    ("\n[[rule]]\nfrom = [\"tag:A\"]\nto = [\"*\"]\n", 3, "not a DNS label"),
    ("[[rule]]\nfrom = [\"tag:a\"]\nto = [\"*\"]\nports = [\"tcp/70000\"]\n", 4, "not a port"),
    ("[[rule]]\nfrom = [\"tag:a\"]\nto = [\"*\"]\nports = [\"tcp/9-1\"]\n", 4, "backwards"),
    ("[[rule]]\nfrom = [\"tag:a\"]\nto = [\"*\"]\nports = [\"sctp/9\"]\n", 4, "unknown protocol"),
    ("[[rule]]\nfrom = [\"tag:a\"]\nto = [\"*\"]\nports = [\"icmp/8\"]\n", 4, "icmp has no ports"),
    ("[[rule]]\nfrom = []\nto = [\"*\"]\n", 1, "from is empty"),
    ("[[rule]]\nfrom = [\"tag:a\"]\nto = [\"*\"]\nport = [\"tcp/1\"]\n", 4, "unknown field"),
    ("[[rule]]\nfrom = [\"tag:a\"\nto = [\"*\"]\n", 3, "expected `]`"),
    ("[groups]\na = [\"group:b\"]\nb = [\"group:a\"]\n", 2, "contain each other"),
    ("[groups]\na = [\"*\"]\n", 2, "in a group"),
    ("[[rule]]\nfrom = [\"nonsense\"]\nto = [\"*\"]\n", 2, "not a selector"),
    (
        "[[test]]\nfrom = \"tag:a\"\nto = \"tag:b\"\nport = \"tcp/1-2\"\nexpect = \"allow\"\n",
        1,
        "one protocol and port",
    ),
    (
        "default = \"deny\"\n[[test]]\nfrom = \"tag:a\"\nto = \"tag:b\"\nport = \"tcp/22\"\nexpect = \"allow\"\n",
        2,
        "test expects allow, but no rule matches, the default is deny",
    ),
];

#[test]
fn every_error_names_its_line_and_reason() {
    for (doc, line, reason) in BAD {
        let err = Policy::parse(doc).expect_err(doc);
        assert_eq!(err.line, *line, "{doc:?}: {err}");
        assert!(err.message.contains(reason), "{doc:?}: {err}");
        assert!(err.to_string().starts_with(&format!("line {line}: ")));
    }
    let huge = "#".repeat(MAX_DOCUMENT + 1);
    assert!(Policy::parse(&huge).unwrap_err().message.contains("bytes"));
}

#[test]
fn a_failing_test_names_the_rule_that_broke_it() {
    let broken = CLUSTER.replace("ports = [\"tcp/22\", \"icmp\"]", "ports = [\"icmp\"]");
    let err = Policy::parse(&broken).unwrap_err();
    assert_eq!(err.line, 29, "{err}");
    assert!(err.message.contains("test expects allow"), "{err}");
}

#[test]
fn ports_print_as_they_parse() {
    for text in ["*", "tcp", "udp/53", "tcp/2379-2380", "icmp"] {
        assert_eq!(Ports::parse(text).unwrap().to_string(), text);
    }
    for text in ["*", "tag:a", "group:b", "member:c", "10.0.0.0/8"] {
        assert_eq!(Selector::parse(text).unwrap().to_string(), text);
    }
    assert_eq!(
        Selector::parse("10.1.2.3/8").unwrap().to_string(),
        "10.0.0.0/8"
    );
}

/// A small deterministic generator for the property test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

struct Node {
    key: Key,
    name: String,
    tags: BTreeSet<String>,
    prefixes: Vec<IpNet>,
}

impl Node {
    fn subject(&self) -> Subject<'_> {
        Subject {
            name: &self.name,
            tags: &self.tags,
            prefixes: &self.prefixes,
        }
    }
}

/// The compiled per-node tables give exactly what evaluating the document gives, for random
/// documents, members and packets (both ends: the receiver's inbound table and the sender's
/// outbound one).
#[test]
fn compiled_tables_agree_with_the_document() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let tag_names = ["a", "b", "c", "d"];
    let selectors = [
        "*",
        "tag:a",
        "tag:b",
        "tag:c",
        "group:g",
        "member:n1",
        "member:n2",
        "10.9.8.0/30",
        "10.244.1.0/24",
        "10.244.0.0/16",
        "10.9.8.3",
    ];
    let ports = [
        "*",
        "tcp",
        "udp",
        "icmp",
        "tcp/22",
        "tcp/20-30",
        "udp/53",
        "tcp/1000-2000",
        "udp/0-100",
    ];
    for round in 0..300 {
        let mut doc = format!(
            "default = \"{}\"\n[groups]\ng = [\"tag:{}\", \"{}\"]\n",
            if rng.below(2) == 0 { "allow" } else { "deny" },
            rng.pick(&tag_names),
            rng.pick(&["tag:d", "member:n3", "10.244.2.0/24"]),
        );
        for _ in 0..rng.below(8) {
            let list = |rng: &mut Rng, from: &[&str], n: u64| {
                (0..1 + rng.below(n))
                    .map(|_| format!("\"{}\"", rng.pick(from)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let action = if rng.below(3) == 0 { "deny" } else { "allow" };
            let from = list(&mut rng, &selectors, 2);
            let to = list(&mut rng, &selectors, 2);
            let p = list(&mut rng, &ports, 3);
            doc.push_str(&format!(
                "[[rule]]\naction = \"{action}\"\nfrom = [{from}]\nto = [{to}]\nports = [{p}]\n"
            ));
        }
        let policy = Policy::parse(&doc).unwrap_or_else(|e| panic!("{doc}\n{e}"));
        let nodes: Vec<Node> = (1..=4u8)
            .map(|i| {
                let mut prefixes = vec![IpNet::from(IpAddr::from([10, 9, 8, i]))];
                if i == 2 {
                    prefixes.push("10.244.1.0/24".parse().unwrap());
                }
                Node {
                    key: Key([i; 32]),
                    name: format!("n{i}"),
                    tags: (0..rng.below(3))
                        .map(|_| (*rng.pick(&tag_names)).to_owned())
                        .collect(),
                    prefixes,
                }
            })
            .collect();
        let filters: Vec<NodeFilter> = nodes
            .iter()
            .map(|me| {
                policy.filter_for(
                    &me.subject(),
                    nodes
                        .iter()
                        .filter(|p| p.key != me.key)
                        .map(|p| (p.key, p.subject())),
                )
            })
            .collect();
        // Compiling per pair of classes gives exactly the per-member filters.
        for (i, me) in nodes.iter().enumerate() {
            let mine = policy.class_of(&me.subject());
            for p in nodes.iter().filter(|p| p.key != me.key) {
                let pair = policy.pair_filter(&mine, &policy.class_of(&p.subject()));
                assert_eq!(filters[i].peers[&p.key], pair, "{doc}");
            }
        }
        for _ in 0..200 {
            let (fi, ti) = (rng.below(4) as usize, rng.below(4) as usize);
            if fi == ti {
                continue;
            }
            let (from, to) = (&nodes[fi], &nodes[ti]);
            let addr = |n: &Node, rng: &mut Rng| -> IpAddr {
                if n.prefixes.len() > 1 && rng.below(2) == 0 {
                    IpAddr::from([10, 244, 1, rng.below(256) as u8])
                } else {
                    n.prefixes[0].addr()
                }
            };
            let (src, dst) = (addr(from, &mut rng), addr(to, &mut rng));
            let ip_proto = *rng.pick(&[6u8, 17, 1, 47]);
            let port = *rng.pick(&[0u16, 22, 25, 53, 80, 1500, 2001, 65535]);
            let want = match Proto::from_ip(ip_proto) {
                Some(p) => policy.decide(
                    &from.subject(),
                    Some(src),
                    &to.subject(),
                    Some(dst),
                    p,
                    if p == Proto::Icmp { 0 } else { port },
                ),
                // Another protocol: only "*" rules name it.
                None => policy
                    .rules
                    .iter()
                    .enumerate()
                    .find(|(_, r)| {
                        r.ports.iter().any(|p| p.proto.is_none())
                            && r.from
                                .iter()
                                .any(|s| policy.matches(s, &from.subject(), Some(src)))
                            && r.to
                                .iter()
                                .any(|s| policy.matches(s, &to.subject(), Some(dst)))
                    })
                    .map_or(
                        Decision {
                            action: policy.default,
                            rule: None,
                        },
                        |(i, r)| Decision {
                            action: r.action,
                            rule: Some(i),
                        },
                    ),
            };
            let port = if ip_proto == 1 { 0 } else { port };
            let inbound = PortTable::build(&filters[ti].peers[&from.key].inbound, policy.default)
                .lookup(src, dst, ip_proto, port);
            let outbound = PortTable::build(&filters[fi].peers[&to.key].outbound, policy.default)
                .lookup(src, dst, ip_proto, port);
            let want = Verdict {
                action: want.action,
                rule: want.rule.map(|r| r as u32),
            };
            assert_eq!(
                inbound, want,
                "round {round}: inbound {src} -> {dst} {ip_proto}/{port}\n{doc}"
            );
            assert_eq!(
                outbound, want,
                "round {round}: outbound {src} -> {dst} {ip_proto}/{port}\n{doc}"
            );
        }
    }
}

#[test]
fn hashes_name_filters_and_reach_follows_allows() {
    let p = Policy::parse(CLUSTER).unwrap();
    let (ctl, wrk, mon) = (tags(&["control"]), tags(&["worker"]), tags(&["monitor"]));
    let pre = |i: u8| vec![IpNet::from(IpAddr::from([10, 9, 8, i]))];
    let (p1, p2, p3) = (pre(1), pre(2), pre(3));
    let subject = |name, tags, prefixes| Subject {
        name,
        tags,
        prefixes,
    };
    let c = subject("c", &ctl, &p1);
    let w = subject("w", &wrk, &p2);
    let m = subject("m", &mon, &p3);
    let at_worker = p.filter_for(&w, [(Key([1; 32]), c.clone()), (Key([3; 32]), m.clone())]);
    let at_monitor = p.filter_for(&m, [(Key([1; 32]), c.clone()), (Key([2; 32]), w.clone())]);
    // The worker reaches the control node (etcd, apiserver); the monitor scrapes it.
    assert!(at_worker.reaches(&Key([1; 32])));
    assert!(at_worker.reaches(&Key([3; 32])));
    // Two monitors would not reach each other... but a monitor reaches the worker.
    assert!(at_monitor.reaches(&Key([2; 32])));
    let strict = Policy::parse("default = \"deny\"\n").unwrap();
    let nothing = strict.filter_for(&w, [(Key([1; 32]), c.clone())]);
    assert!(!nothing.reaches(&Key([1; 32])));
    // Hashes: stable, and different for different filters.
    assert_eq!(at_worker.hash(), at_worker.clone().hash());
    assert_ne!(at_worker.hash(), at_monitor.hash());
    assert_eq!(at_worker.hash().len(), 16);
    assert!(NodeFilter::allow_all().reaches(&Key([9; 32])));
}

#[test]
fn updates_carry_only_changed_peers_and_check_the_result() {
    let p = Policy::parse(CLUSTER).unwrap();
    let (ctl, wrk, ops) = (tags(&["control"]), tags(&["worker"]), tags(&["ops"]));
    let pre = |i: u8| vec![IpNet::from(IpAddr::from([10, 9, 8, i]))];
    let (p1, p2, p3) = (pre(1), pre(2), pre(3));
    let me = Subject {
        name: "me",
        tags: &wrk,
        prefixes: &p1,
    };
    let c = Subject {
        name: "c",
        tags: &ctl,
        prefixes: &p2,
    };
    let o = Subject {
        name: "o",
        tags: &ops,
        prefixes: &p3,
    };
    let before = p.filter_for(&me, [(Key([2; 32]), c.clone()), (Key([3; 32]), o.clone())]);
    let first = before.update_from(None);
    assert!(first.full);
    let mut node = NodeFilter::allow_all();
    node.apply(&first).unwrap();
    assert_eq!(node, before);

    // o becomes a worker: only o's entries travel.
    let after = p.filter_for(
        &me,
        [
            (Key([2; 32]), c.clone()),
            (
                Key([3; 32]),
                Subject {
                    name: "o",
                    tags: &wrk,
                    prefixes: &p3,
                },
            ),
        ],
    );
    let delta = after.update_from(Some(&before));
    assert!(!delta.full);
    assert_eq!(
        delta.upsert.keys().copied().collect::<Vec<_>>(),
        vec![Key([3; 32])]
    );
    assert!(delta.remove.is_empty());
    node.apply(&delta).unwrap();
    assert_eq!(node, after);

    // c leaves: a removal.
    let gone = p.filter_for(&me, [(Key([3; 32]), o.clone())]);
    let delta = gone.update_from(Some(&after));
    assert_eq!(delta.remove, vec![Key([2; 32])]);

    // Applied to the wrong base, the hash does not match: refused, filter unchanged.
    // (a base with a peer the update does not mention).
    let base = p.filter_for(
        &me,
        [
            (Key([2; 32]), c.clone()),
            (Key([3; 32]), o.clone()),
            (Key([4; 32]), o.clone()),
        ],
    );
    let mut stale = base.clone();
    let err = stale.apply(&delta).unwrap_err();
    assert!(err.contains("hashes to"), "{err}");
    assert_eq!(stale, base);
    // It travels as JSON.
    let json = serde_json::to_string(&delta).unwrap();
    assert_eq!(serde_json::from_str::<FilterUpdate>(&json).unwrap(), delta);
}

/// A filter of `n` peers whose entries are one of two lists (as a class's peers are).
fn two_shapes(n: u8) -> NodeFilter {
    let entry = |rule, port| Entry {
        action: Action::Allow,
        ports: Ports {
            proto: Some(Proto::Tcp),
            lo: port,
            hi: port,
        },
        src: None,
        dst: None,
        rule,
        line: 3 + rule,
    };
    let a = PeerFilter {
        inbound: vec![entry(0, 22)],
        outbound: vec![entry(1, 443)],
    };
    let b = PeerFilter {
        inbound: vec![],
        outbound: vec![entry(2, 6443)],
    };
    NodeFilter {
        default: Action::Deny,
        peers: (1..=n)
            .map(|i| (Key([i; 32]), if i % 3 == 0 { b.clone() } else { a.clone() }))
            .collect(),
    }
}

#[test]
fn digest_follows_edits_and_tells_filters_apart() {
    let full = two_shapes(30);
    let d = FilterDigest::of(&full);
    assert_eq!(d.hex(), full.hash());
    assert_eq!(d.hex().len(), 16);
    // Built up peer by peer from the empty filter: the same digest.
    let mut up = FilterDigest::empty(full.default);
    for (k, pf) in &full.peers {
        up.add(k, pf);
    }
    assert_eq!(up, d);
    // A peer out, another's entries changed: the digest of the edited filter.
    let mut edited = full.clone();
    let mut e = d;
    let gone = Key([7; 32]);
    e.remove(&gone, &edited.peers.remove(&gone).unwrap());
    let moved = Key([8; 32]);
    let old = edited.peers[&moved].clone();
    let new = edited.peers[&Key([3; 32])].clone();
    e.remove(&moved, &old);
    e.add(&moved, &new);
    edited.peers.insert(moved, new);
    assert_eq!(e, FilterDigest::of(&edited));
    assert_ne!(e, d);
    // The same entries under two peers swapped, or another default: other digests.
    let mut swapped = full.clone();
    let (k1, k3) = (Key([1; 32]), Key([3; 32]));
    let (p1, p3) = (swapped.peers[&k1].clone(), swapped.peers[&k3].clone());
    swapped.peers.insert(k1, p3);
    swapped.peers.insert(k3, p1);
    assert_ne!(swapped.hash(), full.hash());
    let mut allow = full.clone();
    allow.default = Action::Allow;
    assert_ne!(allow.hash(), full.hash());
    assert_ne!(NodeFilter::allow_all().hash(), two_shapes(0).hash());
}

#[test]
fn updates_send_each_entry_list_once() {
    let full = two_shapes(200);
    let update = full.update_from(None);
    let json = serde_json::to_string(&update).unwrap();
    // Two distinct lists for 200 peers: each written once, then a key and an index each.
    assert_eq!(json.matches("\"inbound\"").count(), 2, "{json}");
    let back: FilterUpdate = serde_json::from_str(&json).unwrap();
    assert_eq!(back, update);
    let mut node = NodeFilter::allow_all();
    node.apply(&back).unwrap();
    assert_eq!(node, full);
    // Per peer it costs its key and index, not its entries.
    let per_peer = json.len() / 200;
    assert!(per_peer < 60, "{per_peer} bytes per peer");
    // An index past the lists is refused with the peer named, not a panic.
    let bad = json.replace(":1,", ":9,");
    assert_ne!(bad, json);
    let err = serde_json::from_str::<FilterUpdate>(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("names entry list 9, the update has 2"),
        "{err}"
    );
    // Unknown fields in the peers' part are refused too.
    let odd = json.replacen("\"entries\"", "\"extra\":1,\"entries\"", 1);
    assert!(serde_json::from_str::<FilterUpdate>(&odd).is_err());
}
