//! Policy through the state and the sessions: a document refused with its line and nothing
//! changed; filters sent before the netmap, as deltas after a tag change; nodes that cannot
//! enforce refused; `why` naming the rule.

use mesh_proto::control::{ServerMsg, FILTER_PROTOCOL, PROTOCOL};
use mesh_proto::policy::{Action, FilterUpdate, NodeFilter, Proto};

use crate::control::state::Error;
use crate::testutil::{hello, private, Harness, Node};

const POLICY: &str = r#"default = "deny"

[[rule]]
from = ["tag:worker"]
to = ["tag:control"]
ports = ["tcp/6443"]

[[rule]]
from = ["tag:ops"]
to = ["*"]
ports = ["tcp/22", "icmp"]

[[test]]
from = "tag:ops"
to = "tag:control"
port = "tcp/22"
expect = "allow"
"#;

/// Node `seed` joins with `protocol` and reads up to its first netmap; returns the filter
/// updates that came before it.
async fn join(h: &Harness, seed: u8, protocol: u32) -> (Node, Vec<FilterUpdate>) {
    let token = h.token("lab", true, None).await;
    let mut hi = hello("lab", &private(seed), Some(token));
    hi.protocol = protocol;
    let mut node = Node::connect(&h.coord, seed, hi).await;
    let mut filters = Vec::new();
    loop {
        match node.recv().await {
            ServerMsg::Filter(f) => filters.push(f),
            ServerMsg::Netmap { .. } => return (node, filters),
            other => panic!("node {seed}: unexpected {other:?}"),
        }
    }
}

/// The next filter update `node` gets (netmap changes in between are skipped).
async fn next_filter(node: &mut Node) -> FilterUpdate {
    loop {
        match node.recv().await {
            ServerMsg::Filter(f) => return f,
            ServerMsg::Changes { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_bad_document_is_refused_with_its_line_and_changes_nothing() {
    let h = Harness::new();
    h.network("lab").await;
    h.coord
        .set_policy("lab", Some(POLICY.to_owned()))
        .await
        .unwrap();
    // A test the change would break, and a syntax error: both refused, with the line.
    let breaking = POLICY.replace("ports = [\"tcp/22\", \"icmp\"]", "ports = [\"icmp\"]");
    for (doc, line) in [(breaking.as_str(), "line 13"), ("[[rule]\n", "line 1")] {
        let err = h
            .coord
            .set_policy("lab", Some(doc.to_owned()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains(line)),
            "{err}"
        );
    }
    assert_eq!(
        h.coord.policy("lab").await.unwrap().document.as_deref(),
        Some(POLICY)
    );
    // Removing it: everything allowed again.
    h.coord.set_policy("lab", None).await.unwrap();
    let state = h.coord.policy("lab").await.unwrap();
    assert_eq!(state.document, None);
    assert_eq!(state.policy.default, Action::Allow);
}

#[tokio::test]
async fn filters_come_before_the_netmap_and_change_as_deltas() {
    let h = Harness::new();
    h.network("lab").await;
    h.coord
        .set_policy("lab", Some(POLICY.to_owned()))
        .await
        .unwrap();
    let (mut a, first) = join(&h, 1, PROTOCOL).await;
    assert_eq!(first.len(), 1, "one filter before the first netmap");
    assert!(first[0].full);
    assert_eq!(first[0].default, Action::Deny);
    let mut at_a = NodeFilter::allow_all();
    at_a.apply(&first[0]).unwrap();

    let (mut b, _) = join(&h, 2, PROTOCOL).await;
    // Without tags nothing is allowed between a and b: neither is in the other's filter
    // or netmap (the netmap is pruned to the peers a member may exchange traffic with).
    a.quiet().await;
    assert!(!at_a.reaches(&b.key));

    // a becomes control, b a worker: b may open 6443 on a. a gets b's entries and then b
    // in its netmap; only b travels.
    h.coord
        .set_tags("lab", "node-1", &["control".into()])
        .await
        .unwrap();
    h.coord
        .set_tags("lab", "node-2", &["tag:worker".into()])
        .await
        .unwrap();
    let mut last = None;
    let mut added = false;
    while !(added
        && at_a
            .peers
            .get(&b.key)
            .is_some_and(|p| !p.inbound.is_empty()))
    {
        match a.recv().await {
            ServerMsg::Filter(u) => {
                at_a.apply(&u).unwrap();
                last = Some(u);
            }
            ServerMsg::Changes { changes, .. } => {
                assert!(!added, "a second netmap change: {changes:?}");
                assert!(
                    matches!(&changes[..], [mesh_proto::netmap::PeerChange::Upsert { peer }] if peer.public_key == b.key),
                    "{changes:?}"
                );
                // The filter comes first: b is enforced from its first packet.
                assert!(at_a.peers.contains_key(&b.key), "netmap before filter");
                added = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let last = last.unwrap();
    assert_eq!(last.upsert.keys().collect::<Vec<_>>(), vec![&b.key]);
    assert!(at_a.reaches(&b.key));
    let inbound = mesh_proto::policy::PortTable::build(&at_a.peers[&b.key].inbound, at_a.default);
    let (src, dst) = ("10.9.8.2".parse().unwrap(), "10.9.8.1".parse().unwrap());
    assert_eq!(inbound.lookup(src, dst, 6, 6443).action, Action::Allow);
    assert_eq!(inbound.lookup(src, dst, 6, 22).action, Action::Deny);

    // The member view says a filter was sent and not yet confirmed.
    let a_key = a.key;
    let view = |members: Vec<mesh_proto::admin::MemberView>| {
        members
            .into_iter()
            .find(|m| m.public_key == a_key)
            .and_then(|m| m.filter)
            .unwrap()
    };
    let pending = view(h.coord.list_members("lab").await.unwrap());
    assert_eq!(pending.sent.as_deref(), Some(at_a.hash().as_str()));
    assert!(!pending.current && pending.reported.is_none());

    // a reports what it enforces: the coordinator keeps it per member.
    let hash = at_a.hash();
    a.send(&mesh_proto::control::ClientMsg::Filter {
        hash: hash.clone(),
        error: None,
    })
    .await;
    let mut seen = None;
    for _ in 0..100 {
        seen = h.coord.filter_report("lab", &a.key);
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(seen.unwrap().hash, hash);
    let current = view(h.coord.list_members("lab").await.unwrap());
    assert!(current.current && current.error.is_none(), "{current:?}");
    // A failure to apply is shown, and is not current.
    a.send(&mesh_proto::control::ClientMsg::Filter {
        hash: "0000000000000000".into(),
        error: Some("no room".into()),
    })
    .await;
    let mut failed = current.clone();
    for _ in 0..100 {
        failed = view(h.coord.list_members("lab").await.unwrap());
        if failed.error.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(failed.error.as_deref(), Some("no room"));
    assert!(!failed.current);

    // The policy removed: a full allow-all.
    h.coord.set_policy("lab", None).await.unwrap();
    // (b may get the updates of the tag changes first.)
    let open = loop {
        let u = next_filter(&mut b).await;
        if u.default == Action::Allow {
            break u;
        }
    };
    assert_eq!(open.hash, NodeFilter::allow_all().hash());
    assert!(open.upsert.is_empty());
}

#[tokio::test]
async fn nodes_that_cannot_enforce_are_refused_while_there_is_a_policy() {
    let h = Harness::new();
    // IPv4 only: old nodes are refused in dual-stack networks whatever the policy.
    h.network_v4_only("lab").await;
    // Without a policy a protocol 2 node joins as before.
    let (_old, filters) = join(&h, 1, 2).await;
    assert!(filters.is_empty());
    h.coord
        .set_policy("lab", Some(POLICY.to_owned()))
        .await
        .unwrap();
    let token = h.token("lab", true, None).await;
    let mut hi = hello("lab", &private(2), Some(token));
    hi.protocol = FILTER_PROTOCOL - 1;
    let mut node = Node::connect(&h.coord, 2, hi).await;
    let ServerMsg::Denied { reason } = node.recv().await else {
        panic!("a protocol 3 node was served under a policy");
    };
    assert!(
        reason.contains("has a policy") && reason.contains("upgrade meshd"),
        "{reason}"
    );
}

#[tokio::test]
async fn why_names_the_deciding_rule() {
    let h = Harness::new();
    h.network("lab").await;
    h.coord
        .set_policy("lab", Some(POLICY.to_owned()))
        .await
        .unwrap();
    let (_a, _) = join(&h, 1, PROTOCOL).await;
    h.coord
        .set_tags("lab", "node-1", &["control".into()])
        .await
        .unwrap();
    let why = h
        .coord
        .why("lab", "tag:worker", "node-1", "tcp/6443")
        .await
        .unwrap();
    assert_eq!(why.decision.action, Action::Allow);
    assert_eq!(why.line, Some(3));
    let why = h
        .coord
        .why("lab", "tag:worker", "node-1", "udp/53")
        .await
        .unwrap();
    assert_eq!((why.decision.action, why.line), (Action::Deny, None));
    let ssh = h
        .coord
        .why("lab", "tag:ops", "10.9.8.1", "tcp/22")
        .await
        .unwrap();
    assert_eq!(ssh.line, Some(8));
    assert_eq!(Proto::from_ip(6), Some(Proto::Tcp));
    for bad in ["tcp/1-2", "sctp/1", "tcp"] {
        assert!(
            h.coord.why("lab", "tag:a", "tag:b", bad).await.is_err(),
            "{bad}"
        );
    }
    assert!(h
        .coord
        .set_tags("lab", "node-1", &["Not A Label".into()])
        .await
        .is_err());
}
