//! Session tests over `tokio::io::duplex`: the whole protocol without QUIC.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_proto::admin::{MemberView, UpdateMember};
use mesh_proto::control::{
    ClientMsg, JoinSecret, PeerPathReport, ReportedPath, ServerMsg, MAX_PATH_REPORT,
};
use mesh_proto::netmap::{Netmap, PeerChange};
use mesh_proto::{relay, Key};
use tokio::io::AsyncWriteExt as _;

use super::End;
use crate::control::state::{Coordinator, ManualClock};
use crate::store::MemoryStore;
use crate::testutil::{create_network, hello, join_info, private, Harness, Node, RELAY_SECRET};

fn netmap(msg: ServerMsg) -> Netmap {
    match msg {
        ServerMsg::Netmap { netmap } => netmap,
        other => panic!("expected a netmap, got {other:?}"),
    }
}

fn changes(msg: ServerMsg) -> (u64, Vec<PeerChange>) {
    match msg {
        ServerMsg::Changes { version, changes } => (version, changes),
        other => panic!("expected changes, got {other:?}"),
    }
}

fn denied(msg: ServerMsg) -> String {
    match msg {
        ServerMsg::Denied { reason } => reason,
        other => panic!("expected denied, got {other:?}"),
    }
}

fn pending(msg: ServerMsg) -> String {
    match msg {
        ServerMsg::Pending { message } => message,
        other => panic!("expected pending, got {other:?}"),
    }
}

/// Joins node `seed` to `lab` with `token` and returns it with its first netmap.
async fn join(h: &Harness, seed: u8, token: &JoinSecret) -> (Node, Netmap) {
    let mut node = Node::connect(
        &h.coord,
        seed,
        hello("lab", &private(seed), Some(token.clone())),
    )
    .await;
    let map = netmap(node.recv().await);
    (node, map)
}

#[tokio::test]
async fn token_join_gets_netmap_and_peers_learn_of_it() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let (mut a, map_a) = join(&h, 1, &token).await;
    assert!(
        h.store.is_flushed(),
        "netmap sent before the join was flushed"
    );
    assert_eq!(map_a.address.to_string(), "10.9.8.1/24");
    assert_eq!(map_a.name, "node-1");
    assert_eq!(map_a.network.mtu, 1280);
    assert_eq!(map_a.network.keepalive, 25);
    assert!(map_a.peers.is_empty());

    let (_b, map_b) = join(&h, 2, &token).await;
    assert_eq!(map_b.address.to_string(), "10.9.8.2/24");
    let peer = &map_b.peers[&a.key];
    assert_eq!(peer.address.to_string(), "10.9.8.1");
    assert_eq!(peer.allowed_ips[0].to_string(), "10.9.8.1/32");
    assert_eq!(
        peer.endpoints,
        vec![
            "198.51.100.1:51820".parse().unwrap(),
            "192.168.1.2:51820".parse().unwrap()
        ]
    );

    let (version, ch) = changes(a.recv().await);
    assert_eq!(version, map_b.version);
    assert!(
        matches!(&ch[..], [PeerChange::Upsert { peer }] if peer.public_key == private(2).public_key())
    );
    assert_eq!(h.coord.list_tokens("lab").await.unwrap()[0].uses, 2);
    assert!(h.coord.is_online("lab", &a.key));
}

#[tokio::test]
async fn wrong_proof_is_denied() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    // Claims node 1's public key but answers with node 9's private key.
    let mut node = Node::open(&h.coord, 9);
    let mut claim = hello("lab", &private(9), Some(token));
    claim.public_key = private(1).public_key();
    node.send(&ClientMsg::Hello(claim)).await;
    let ServerMsg::Challenge { ephemeral, nonce } = node.recv().await else {
        panic!("no challenge");
    };
    let proof = mesh_proto::control::node_proof(
        &private(9),
        &ephemeral,
        &nonce,
        &crate::testutil::EXPORTER,
    );
    node.send(&ClientMsg::Proof { proof }).await;
    assert!(denied(node.recv().await).contains("proof of key possession failed"));
    assert!(matches!(node.end().await, End::Denied(_)));
    assert!(h.coord.list_members("lab").await.unwrap().is_empty());
}

#[tokio::test]
async fn low_order_keys_and_bad_messages_are_denied() {
    let h = Harness::new();
    h.network("lab").await;
    let mut node = Node::open(&h.coord, 1);
    let mut bad = hello("lab", &private(1), None);
    bad.public_key = Key([0; 32]);
    node.send(&ClientMsg::Hello(bad)).await;
    assert!(denied(node.recv().await).contains("low order"));

    // Proof before hello.
    let mut node = Node::open(&h.coord, 1);
    node.send(&ClientMsg::Proof {
        proof: Key([1; 32]),
    })
    .await;
    assert_eq!(denied(node.recv().await), "expected hello, got proof");

    // Garbage, then an oversized frame.
    let mut node = Node::open(&h.coord, 1);
    tokio::io::AsyncWriteExt::write_all(&mut node.writer, b"\x00\x00\x00\x05hello")
        .await
        .unwrap();
    assert!(denied(node.recv().await).starts_with("malformed message"));
    let mut node = Node::open(&h.coord, 1);
    tokio::io::AsyncWriteExt::write_all(&mut node.writer, b"\x00\x7f\xff\xff")
        .await
        .unwrap();
    assert!(denied(node.recv().await).contains("exceeds"));

    // An unknown network, after a good proof.
    let mut node = Node::connect(&h.coord, 1, hello("nope", &private(1), None)).await;
    assert_eq!(denied(node.recv().await), "unknown network \"nope\"");
}

#[tokio::test(start_paused = true)]
async fn silent_nodes_time_out() {
    let h = Harness::new();
    let mut node = Node::open(&h.coord, 1);
    let msg = node.frames.next::<ServerMsg>().await.unwrap().unwrap();
    assert_eq!(denied(msg), "handshake timed out");
}

#[tokio::test]
async fn nodes_of_an_older_protocol_are_told_to_upgrade() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let mut old = hello("lab", &private(1), Some(token));
    old.protocol = 1;
    let mut node = Node::connect(&h.coord, 1, old).await;
    let reason = denied(node.recv().await);
    assert!(
        reason.contains("control protocol 1") && reason.contains("upgrade meshd"),
        "{reason}"
    );
    // Nothing was admitted on its behalf.
    assert!(h.coord.list_members("lab").await.unwrap().is_empty());
    // A hello without the field is protocol 1.
    let body = serde_json::to_value(ClientMsg::Hello(hello("lab", &private(2), None))).unwrap();
    let mut body = body.as_object().unwrap().clone();
    body.remove("protocol");
    let ClientMsg::Hello(parsed) = serde_json::from_value(body.into()).unwrap() else {
        panic!("not a hello");
    };
    assert_eq!(parsed.protocol, 1);
}

#[tokio::test]
async fn nodes_before_dual_stack_are_refused_in_dual_stack_networks_only() {
    let h = Harness::new();
    h.network("dual").await;
    h.network_v4_only("v4").await;
    let join = |net: &'static str, seed: u8| {
        let h = &h;
        async move {
            let token = h.token(net, true, None).await;
            let mut hi = hello(net, &private(seed), Some(token));
            hi.protocol = mesh_proto::control::DUAL_STACK_PROTOCOL - 1;
            Node::connect(&h.coord, seed, hi).await
        }
    };
    let mut old = join("dual", 1).await;
    let reason = denied(old.recv().await);
    assert!(
        reason.contains("dual-stack") && reason.contains("upgrade meshd"),
        "{reason}"
    );
    // The same node is served in an IPv4-only network, in format 1.
    let mut old = join("v4", 2).await;
    loop {
        match old.recv().await {
            ServerMsg::Netmap { netmap } => {
                assert!(netmap.network.cidr6.is_none() && netmap.address6.is_none());
                break;
            }
            ServerMsg::Denied { reason } => panic!("denied in an IPv4 network: {reason}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn bad_tokens_are_denied_with_a_clear_reason() {
    let h = Harness::new();
    h.network("lab").await;
    h.network("other").await;
    let once = h.token("lab", false, None).await;
    let expiring = h.token("lab", true, Some(60)).await;
    let revoked = h.token("lab", true, None).await;
    let foreign = h.token("other", true, None).await;
    h.coord.revoke_token("lab", &revoked.id).await.unwrap();
    let mut wrong_secret = once.clone();
    wrong_secret.secret = Key([9; 32]);
    let mut unknown = once.clone();
    unknown.id = "000000000000".into();

    // The one-time token works once.
    join(&h, 1, &once).await;
    h.clock.advance(61);
    let cases = [
        (wrong_secret, "invalid join token".to_owned()),
        (unknown, "invalid join token".to_owned()),
        (
            once.clone(),
            format!("join token {} was already used (it is one-time)", once.id),
        ),
        (
            expiring.clone(),
            format!("join token {} has expired", expiring.id),
        ),
        (
            revoked.clone(),
            format!("join token {} was revoked", revoked.id),
        ),
        (
            foreign.clone(),
            format!(
                "join token {} is for network \"other\", not \"lab\"",
                foreign.id
            ),
        ),
    ];
    for (seed, (token, want)) in (2..).zip(cases) {
        let mut node =
            Node::connect(&h.coord, seed, hello("lab", &private(seed), Some(token))).await;
        assert_eq!(denied(node.recv().await), want);
    }
    // None of them became a member.
    assert_eq!(h.coord.list_members("lab").await.unwrap().len(), 1);
    // The member that used the one-time token may present it again (a retry).
    let (_n, map) = join(&h, 1, &once).await;
    assert_eq!(map.address.to_string(), "10.9.8.1/24");
}

#[tokio::test]
async fn pending_until_authorised_then_netmap() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let (mut a, _) = join(&h, 1, &token).await;

    let mut b = Node::connect(&h.coord, 2, hello("lab", &private(2), None)).await;
    let msg = pending(b.recv().await);
    let fp = b.key.fingerprint();
    assert!(msg.contains(&format!("authorize lab {fp}")), "{msg}");
    // Its address is reserved already; peers do not see it.
    let members = h.coord.list_members("lab").await.unwrap();
    assert_eq!(members.len(), 2);
    assert!(!members[1].authorized || !members[0].authorized);
    a.quiet().await;

    // Authorised through the API the HTTP layer uses, by fingerprint.
    let view = h.coord.authorize("lab", &fp).await.unwrap();
    assert!(view.authorized && view.online);
    let map = netmap(b.recv().await);
    assert_eq!(map.address.to_string(), "10.9.8.2/24");
    assert!(map.peers.contains_key(&a.key));
    let (_, ch) = changes(a.recv().await);
    assert!(matches!(&ch[..], [PeerChange::Upsert { peer }] if peer.public_key == b.key));
}

#[tokio::test]
async fn deauthorise_removes_everywhere_and_reauthorise_sends_full_map() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let (mut a, _) = join(&h, 1, &token).await;
    let (mut b, _) = join(&h, 2, &token).await;
    changes(a.recv().await);

    h.coord.deauthorize("lab", "node-2").await.unwrap();
    let (_, ch) = changes(a.recv().await);
    assert_eq!(ch, vec![PeerChange::Remove { public_key: b.key }]);
    assert_eq!(pending(b.recv().await), "deauthorized");

    // Reconnecting without a token, it stays pending (and replaces its old session).
    let mut b2 = Node::connect(&h.coord, 2, hello("lab", &private(2), None)).await;
    assert!(pending(b2.recv().await).starts_with("waiting for an admin"));
    assert_eq!(b.end().await, End::Replaced);

    h.coord.authorize("lab", "node-2").await.unwrap();
    let map = netmap(b2.recv().await);
    assert_eq!(map.address.to_string(), "10.9.8.2/24");
    let (_, ch) = changes(a.recv().await);
    assert!(matches!(&ch[..], [PeerChange::Upsert { .. }]));
}

#[tokio::test]
async fn delete_denies_the_member_and_frees_its_address() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let (mut a, _) = join(&h, 1, &token).await;
    let (mut b, _) = join(&h, 2, &token).await;
    changes(a.recv().await);

    h.coord
        .delete_member("lab", &b.key.to_base64())
        .await
        .unwrap();
    assert_eq!(denied(b.recv().await), "removed from network");
    let (_, ch) = changes(a.recv().await);
    assert_eq!(ch, vec![PeerChange::Remove { public_key: b.key }]);
    assert!(matches!(b.end().await, End::Denied(_)));

    // The next joiner gets the freed address.
    let (_c, map) = join(&h, 3, &token).await;
    assert_eq!(map.address.to_string(), "10.9.8.2/24");

    // Deleting the network denies everyone connected.
    h.coord.delete_network("lab").await.unwrap();
    assert_eq!(a.denied_after_changes().await, "network deleted");
}

#[tokio::test]
async fn resume_from_a_known_version_gets_changes() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let (a, map_a) = join(&h, 1, &token).await;
    assert_eq!(a.end().await, End::Closed);
    let (_b, _) = join(&h, 2, &token).await;

    let mut again = hello("lab", &private(1), None);
    again.resume = Some(map_a.version);
    let mut a = Node::connect(&h.coord, 1, again.clone()).await;
    let (version, ch) = changes(a.recv().await);
    assert_eq!(version, map_a.version + 1);
    assert!(
        matches!(&ch[..], [PeerChange::Upsert { peer }] if peer.public_key == private(2).public_key())
    );
    // The result is exactly the current netmap.
    let mut applied = map_a.clone();
    applied.apply(version, &ch);
    drop(a);

    // A version it was never sent gets the full map.
    again.resume = Some(map_a.version + 40);
    let mut a = Node::connect(&h.coord, 1, again.clone()).await;
    let full = netmap(a.recv().await);
    assert_eq!(full, applied);
    drop(a);

    // Resuming at the current version: an empty change list.
    again.resume = Some(full.version);
    let mut a = Node::connect(&h.coord, 1, again.clone()).await;
    assert_eq!(changes(a.recv().await), (full.version, vec![]));
    drop(a);

    // A node that was told it is pending drops its map: once authorised again it gets a
    // full one even though it asked to resume.
    h.coord.deauthorize("lab", "node-1").await.unwrap();
    let mut a = Node::connect(&h.coord, 1, again).await;
    pending(a.recv().await);
    h.coord.authorize("lab", "node-1").await.unwrap();
    netmap(a.recv().await);
}

#[tokio::test]
async fn endpoints_renames_and_readdressing_are_pushed() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let (mut a, _) = join(&h, 1, &token).await;
    let (mut b, _) = join(&h, 2, &token).await;
    changes(a.recv().await);

    b.send(&ClientMsg::Endpoints {
        listen_port: 4000,
        local: vec!["10.1.1.1:4000".parse().unwrap()],
        reflexive: vec![],
    })
    .await;
    let (_, ch) = changes(a.recv().await);
    // An endpoint update is not acknowledged to anyone, so nothing but the push itself
    // waits for its flush: a node is never sent a version a crash could take back.
    assert!(
        h.store.is_flushed(),
        "a push went out before its change was flushed"
    );
    let [PeerChange::Upsert { peer }] = &ch[..] else {
        panic!("{ch:?}");
    };
    assert_eq!(
        peer.endpoints,
        vec![
            "198.51.100.2:4000".parse().unwrap(),
            "10.1.1.1:4000".parse().unwrap()
        ]
    );
    // b is sent its own entry too (the change frame is shared), as a self update.
    b.only_self_updates().await;

    h.coord
        .update_member(
            "lab",
            "node-2",
            UpdateMember {
                name: Some("web".into()),
                address: Some("10.9.8.50".parse().unwrap()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (_, ch) = changes(b.recv().await);
    // Dual stack (the default): the IPv6 address follows the IPv4 host part, 50 = 0x32.
    let cidr6 = h.coord.get_network("lab").await.unwrap().cidr6.unwrap();
    let want6 = format!("{}32/64", cidr6.network());
    assert_eq!(
        ch,
        vec![PeerChange::SelfUpdate {
            address6: Some(want6.parse().unwrap()),
            address: "10.9.8.50/24".parse().unwrap(),
            name: "web".into()
        }]
    );
    let (_, ch) = changes(a.recv().await);
    assert!(
        matches!(&ch[..], [PeerChange::Upsert { peer }] if peer.name == "web" && peer.address.to_string() == "10.9.8.50")
    );
}

#[tokio::test]
async fn a_newer_session_replaces_the_older_one() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let (old, _) = join(&h, 1, &token).await;
    let mut new = Node::connect(&h.coord, 1, hello("lab", &private(1), None)).await;
    netmap(new.recv().await);
    assert_eq!(old.end().await, End::Replaced);
    assert!(h.coord.is_online("lab", &new.key));
    assert_eq!(new.end().await, End::Closed);
    assert!(!h.coord.is_online("lab", &private(1).public_key()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_get_distinct_addresses() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let mut tasks = Vec::new();
    for seed in 1..=50u8 {
        let coord = h.coord.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut node =
                Node::connect(&coord, seed, hello("lab", &private(seed), Some(token))).await;
            let map = netmap(node.recv().await);
            (map.address.addr(), node)
        }));
    }
    let mut addrs = BTreeSet::new();
    let mut nodes = Vec::new();
    for t in tasks {
        let (addr, node) = t.await.unwrap();
        addrs.insert(addr);
        nodes.push(node);
    }
    assert_eq!(addrs.len(), 50);
    let members = h.coord.list_members("lab").await.unwrap();
    let stored: BTreeSet<_> = members.iter().map(|m| m.address).collect();
    assert_eq!(stored, addrs);
    assert!(members.iter().all(|m| m.online && m.authorized));
}

#[tokio::test]
async fn services_come_before_the_first_netmap_of_each_connection() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let want = |key: &Key| ServerMsg::Services {
        reflectors: vec!["192.0.2.1:7444".into(), "192.0.2.1:7445".into()],
        relay: Some("192.0.2.1:7446".into()),
        relays: vec!["192.0.2.1:7446".into(), "[2001:db8::1]:7446".into()],
        relay_token: relay::token(&RELAY_SECRET, key),
        coordinators: vec!["192.0.2.1:7443".into()],
    };

    // Token join: Services, then the netmap.
    let mut a = Node::connect(&h.coord, 1, hello("lab", &private(1), Some(token.clone()))).await;
    assert_eq!(a.recv_any().await, want(&a.key));
    netmap(a.recv().await);
    // Control protocol 5: the network's DNS domain came with the first netmap.
    assert_eq!(
        a.names,
        [ServerMsg::Names {
            domain: "mesh.internal".into()
        }]
    );

    // Pending: nothing about services until authorised.
    let mut b = Node::connect(&h.coord, 2, hello("lab", &private(2), None)).await;
    pending(b.recv_any().await);
    h.coord.authorize("lab", "node-2").await.unwrap();
    assert_eq!(b.recv_any().await, want(&b.key));
    netmap(b.recv().await);
    // Later pushes carry no Services.
    changes(a.recv_any().await);

    // Deauthorised, then authorised again on the same connection: told again.
    h.coord.deauthorize("lab", "node-2").await.unwrap();
    pending(b.recv_any().await);
    changes(a.recv_any().await);
    h.coord.authorize("lab", "node-2").await.unwrap();
    assert_eq!(b.recv_any().await, want(&b.key));
    netmap(b.recv().await);
    changes(a.recv_any().await);
    a.quiet().await;

    // A resuming node gets Services before its changes.
    let version = h.coord.get_network("lab").await.unwrap().version;
    let mut again = hello("lab", &private(1), None);
    again.resume = Some(version);
    let mut a2 = Node::connect(&h.coord, 1, again).await;
    assert_eq!(a2.recv_any().await, want(&a2.key));
    // Each connection is told the domain once, before its first netmap frames.
    assert!(matches!(a2.recv_any().await, ServerMsg::Names { .. }));
    assert_eq!(changes(a2.recv_any().await), (version, vec![]));
    drop(a);

    // A coordinator without NAT services sends none.
    let plain = Coordinator::open(
        Arc::new(MemoryStore::new()),
        Arc::new(ManualClock::new(1)),
        join_info(),
    )
    .unwrap();
    create_network(&plain, "lab").await;
    let token = plain
        .create_token("lab", Default::default())
        .await
        .unwrap()
        .join_token
        .parse::<mesh_proto::control::JoinToken>()
        .unwrap()
        .secret;
    let mut n = Node::connect(&plain, 3, hello("lab", &private(3), Some(token))).await;
    netmap(n.recv().await);
}

#[tokio::test]
async fn reflexive_and_public_endpoints_shape_the_candidates() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let (mut a, _) = join(&h, 1, &token).await;
    let (mut b, _) = join(&h, 2, &token).await;
    changes(a.recv().await);
    let ep = |s: &str| s.parse::<SocketAddr>().unwrap();
    let observed = ep("198.51.100.2:51820");
    let local = ep("192.168.1.2:51820");

    // Reflexive addresses replace the observed guess; locals come last.
    b.send(&ClientMsg::Endpoints {
        listen_port: 51820,
        local: vec![local, ep("0.0.0.0:51820")],
        reflexive: vec![ep("198.51.100.2:40001"), ep("[::ffff:198.51.100.2]:40001")],
    })
    .await;
    assert_eq!(
        upserted_endpoints(&mut a).await,
        vec![ep("198.51.100.2:40001"), local]
    );

    // An admin-set public endpoint goes first, and shows in the member's view.
    let view = h
        .coord
        .update_member(
            "lab",
            "node-2",
            UpdateMember {
                public_endpoint: Some(ep("203.0.113.50:51820")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(view.public_endpoint, Some(ep("203.0.113.50:51820")));
    let want = vec![ep("203.0.113.50:51820"), ep("198.51.100.2:40001"), local];
    assert_eq!(view.endpoints, want);
    assert_eq!(upserted_endpoints(&mut a).await, want);
    b.only_self_updates().await;

    // A reconnect through the same NAT keeps the reflexive address until the node
    // reports again: nothing changes for peers.
    drop(b);
    let mut b = Node::connect(&h.coord, 2, hello("lab", &private(2), None)).await;
    netmap(b.recv().await);
    a.quiet().await;

    // No reflexive address known: the observed one is back, after the public one.
    b.send(&ClientMsg::Endpoints {
        listen_port: 51820,
        local: vec![local],
        reflexive: vec![],
    })
    .await;
    assert_eq!(
        upserted_endpoints(&mut a).await,
        vec![ep("203.0.113.50:51820"), observed, local]
    );

    // An unspecified address clears the public endpoint.
    let view = h
        .coord
        .update_member(
            "lab",
            "node-2",
            UpdateMember {
                public_endpoint: Some(ep("0.0.0.0:0")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(view.public_endpoint, None);
    assert_eq!(upserted_endpoints(&mut a).await, vec![observed, local]);
    let members = h.coord.list_members("lab").await.unwrap();
    assert!(members.iter().all(|m| m.public_endpoint.is_none()));
}

/// The endpoints of the single peer upserted in the next changes `node` gets.
async fn upserted_endpoints(node: &mut Node) -> Vec<SocketAddr> {
    let (_, ch) = changes(node.recv().await);
    match &ch[..] {
        [PeerChange::Upsert { peer }] => peer.endpoints.clone(),
        other => panic!("expected one upsert, got {other:?}"),
    }
}

/// Polls the members until `check` holds (the session handles a report a moment after it
/// arrives; nothing is answered).
async fn wait_members(h: &Harness, what: &str, check: impl Fn(&[MemberView]) -> bool) {
    for _ in 0..500 {
        if check(&h.coord.list_members("lab").await.unwrap()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "{what}: members are {:#?}",
        h.coord.list_members("lab").await.unwrap()
    );
}

fn paths_of(members: &[MemberView], key: &Key) -> Vec<(String, String, Option<u32>)> {
    members
        .iter()
        .find(|m| m.public_key == *key)
        .map(|m| {
            m.paths
                .iter()
                .map(|p| (p.name.clone(), p.path.clone(), p.rtt_ms))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn path_reports_show_in_members_until_the_session_ends() {
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let (mut a, _) = join(&h, 1, &token).await;
    let (_b, _) = join(&h, 2, &token).await;
    let (_c, _) = join(&h, 3, &token).await;
    let key = |seed: u8| private(seed).public_key();
    let entry = |seed: u8, path, rtt_ms| PeerPathReport {
        peer: key(seed),
        path,
        rtt_ms,
    };
    a.send(&ClientMsg::Paths {
        peers: vec![
            entry(2, ReportedPath::Direct, Some(4)),
            entry(3, ReportedPath::Relayed, None),
            entry(77, ReportedPath::Direct, Some(1)), // no such member: dropped
        ],
    })
    .await;
    let want = vec![
        ("node-2".to_owned(), "direct".to_owned(), Some(4)),
        ("node-3".to_owned(), "relayed".to_owned(), None),
    ];
    wait_members(&h, "a's report shows", |ms| paths_of(ms, &a.key) == want).await;
    let members = h.coord.list_members("lab").await.unwrap();
    let view = members.iter().find(|m| m.public_key == a.key).unwrap();
    assert_eq!(view.paths[0].peer, key(2).fingerprint());
    assert!(paths_of(&members, &key(2)).is_empty());

    // Oversized and malformed reports are ignored; the session goes on and the last good
    // report stands until the next one.
    let long = vec![entry(2, ReportedPath::Relayed, Some(u32::MAX)); MAX_PATH_REPORT + 1];
    let frame = mesh_proto::control::encode(&ClientMsg::Paths { peers: long });
    assert!(frame.len() - 4 <= super::SESSION_FRAME_LIMIT);
    a.writer.write_all(&frame).await.unwrap();
    for body in [
        &br#"{"type":"paths","peers":"all of them"}"#[..],
        br#"{"type":"paths","peers":[{"peer":"AAAA","path":"direct"}]}"#,
        br#"{"type":"paths","peers":[{"peer":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","path":"lan"}]}"#,
        br#"{"type":"paths"}"#,
    ] {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        a.writer.write_all(&len).await.unwrap();
        a.writer.write_all(body).await.unwrap();
    }
    a.send(&ClientMsg::Paths {
        peers: vec![entry(3, ReportedPath::None, None)],
    })
    .await;
    let want = vec![("node-3".to_owned(), "none".to_owned(), None)];
    wait_members(&h, "a's newest report shows", |ms| {
        paths_of(ms, &a.key) == want
    })
    .await;
    assert!(h.coord.is_online("lab", &a.key));

    // Disconnected: offline, no paths.
    let a_key = a.key;
    assert_eq!(a.end().await, End::Closed);
    let members = h.coord.list_members("lab").await.unwrap();
    let view = members.iter().find(|m| m.public_key == a_key).unwrap();
    assert!(!view.online && view.paths.is_empty(), "{view:?}");
}

#[tokio::test]
async fn a_worst_case_path_report_fits_a_frame() {
    let peers = vec![
        PeerPathReport {
            peer: Key([0xff; 32]),
            path: ReportedPath::Relayed,
            rtt_ms: Some(u32::MAX),
        };
        MAX_PATH_REPORT
    ];
    let frame = mesh_proto::control::encode(&ClientMsg::Paths { peers });
    assert!(
        frame.len() - 4 <= super::SESSION_FRAME_LIMIT / 4 * 3,
        "{} bytes",
        frame.len()
    );
}

#[tokio::test]
async fn a_pending_nodes_path_report_is_ignored() {
    let h = Harness::new();
    h.network("lab").await;
    let mut node = Node::connect(&h.coord, 1, hello("lab", &private(1), None)).await;
    pending(node.recv().await);
    node.send(&ClientMsg::Paths { peers: vec![] }).await;
    node.quiet().await;
    assert!(h.coord.is_online("lab", &node.key));
    assert_eq!(node.end().await, End::Closed);
}
