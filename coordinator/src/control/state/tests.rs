//! State tests: persistence across restarts (sled), durability, the change log.

use std::sync::Arc;

use mesh_proto::admin::CreateNetwork;
use mesh_proto::control::JoinToken;

use super::*;
use crate::store::MemoryStore;
use crate::testutil::{hello, join_info, open_sled_store, private, remote, Harness};

fn open_sled(path: &std::path::Path) -> Arc<Coordinator> {
    let store = Arc::new(open_sled_store(path));
    Coordinator::open(store, Arc::new(ManualClock::new(5_000)), join_info()).unwrap()
}

/// `PATCH …/members/{node}` with a new name only; the member's view after it.
async fn rename(coord: &Coordinator, net: &str, node: &str, name: &str) -> MemberView {
    coord
        .update_member(
            net,
            node,
            mesh_proto::admin::UpdateMember {
                name: Some(name.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

async fn lab(coord: &Coordinator) {
    coord
        .create_network(CreateNetwork {
            cidr6: None,
            name: "lab".into(),
            cidr: "10.9.8.0/24".parse().unwrap(),
            mtu: Some(1400),
            keepalive: Some(0),
            dns_domain: None,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn addresses_survive_restart_and_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (token, before) = {
        let coord = open_sled(&path);
        lab(&coord).await;
        let created = coord
            .create_token("lab", mesh_proto::admin::CreateToken::default())
            .await
            .unwrap();
        let token = created.join_token.parse::<JoinToken>().unwrap().secret;
        coord
            .admit(&hello("lab", &private(1), Some(token.clone())), remote(1))
            .await
            .unwrap();
        coord
            .admit(&hello("lab", &private(2), None), remote(2))
            .await
            .unwrap();
        coord
            .admit(&hello("lab", &private(3), None), remote(3))
            .await
            .unwrap();
        coord.delete_member("lab", "node-2").await.unwrap();
        (token, coord.list_members("lab").await.unwrap())
    };
    assert_eq!(before.len(), 2);

    // A restarted coordinator has everything an admin or node was told.
    let coord = open_sled(&path);
    let net = coord.get_network("lab").await.unwrap();
    assert_eq!((net.mtu, net.keepalive, net.members), (1400, 0, 2));
    let after = coord.list_members("lab").await.unwrap();
    assert_eq!(after, before);
    let tokens = coord.list_tokens("lab").await.unwrap();
    assert_eq!(tokens[0].uses, 1);

    // The same key keeps its address when it comes back, with or without the token.
    coord
        .admit(&hello("lab", &private(1), Some(token)), remote(1))
        .await
        .unwrap();
    coord
        .admit(&hello("lab", &private(3), None), remote(3))
        .await
        .unwrap();
    let again = coord.list_members("lab").await.unwrap();
    let addr = |ms: &[mesh_proto::admin::MemberView], seed: u8| {
        ms.iter()
            .find(|m| m.public_key == private(seed).public_key())
            .map(|m| m.address)
    };
    assert_eq!(addr(&again, 1), addr(&before, 1));
    assert_eq!(addr(&again, 3), addr(&before, 3));
    // The deleted member's address (.2) went to nobody else and is free again.
    coord
        .admit(&hello("lab", &private(4), None), remote(4))
        .await
        .unwrap();
    let with4 = coord.list_members("lab").await.unwrap();
    assert_eq!(
        addr(&with4, 4).map(|a| a.to_string()).as_deref(),
        Some("10.9.8.2")
    );
}

#[tokio::test]
async fn resume_records_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let v = {
        let coord = open_sled(&path);
        lab(&coord).await;
        coord
            .admit(&hello("lab", &private(1), None), remote(1))
            .await
            .unwrap();
        coord.authorize("lab", "node-1").await.unwrap();
        let v = coord.get_network("lab").await.unwrap().version;
        coord
            .admit(&hello("lab", &private(2), None), remote(2))
            .await
            .unwrap();
        coord.authorize("lab", "node-2").await.unwrap();
        v
    };
    let coord = open_sled(&path);
    let now = coord.get_network("lab").await.unwrap().version;
    assert_eq!(now, v + 1);
    let records = coord.resume_records("lab", v, now).unwrap().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].touched, vec![private(2).public_key()]);
    // Resuming from the version before: both records.
    let records = coord.resume_records("lab", v - 1, now).unwrap().unwrap();
    assert_eq!(records.len(), 2);
    // A version before the network existed, or from the future: no resume.
    assert!(coord.resume_records("lab", 1, now).unwrap().is_none());
    assert!(coord.resume_records("lab", now + 1, now).unwrap().is_none());
}

#[tokio::test]
async fn a_recreated_network_starts_above_the_old_ones_versions() {
    let h = Harness::new();
    h.network("lab").await;
    h.coord
        .admit(
            &hello("lab", &private(1), Some(h.token("lab", true, None).await)),
            remote(1),
        )
        .await
        .unwrap();
    let old = h.coord.get_network("lab").await.unwrap().version;
    h.coord.delete_network("lab").await.unwrap();
    h.clock.advance(1);
    h.network("lab").await;
    let new = h.coord.get_network("lab").await.unwrap().version;
    assert!(new > old + 1000, "{old} -> {new}");
    // A node holding the old network's map cannot resume into the new one.
    assert!(h.coord.resume_records("lab", old, new).unwrap().is_none());
}

#[tokio::test]
async fn every_acknowledged_change_is_flushed() {
    let h = Harness::new();
    h.network("lab").await;
    assert!(h.store.is_flushed());
    h.coord
        .admit(&hello("lab", &private(1), None), remote(1))
        .await
        .unwrap();
    assert!(h.store.is_flushed());
    h.coord.authorize("lab", "node-1").await.unwrap();
    assert!(h.store.is_flushed());
    h.token("lab", false, None).await;
    assert!(h.store.is_flushed());
    h.coord.delete_network("lab").await.unwrap();
    assert!(h.store.is_flushed());
}

#[tokio::test]
async fn the_change_log_is_bounded() {
    let store = Arc::new(MemoryStore::new());
    let coord =
        Coordinator::open(store.clone(), Arc::new(ManualClock::new(1)), join_info()).unwrap();
    lab(&coord).await;
    coord
        .admit(&hello("lab", &private(1), None), remote(1))
        .await
        .unwrap();
    let start = coord.get_network("lab").await.unwrap().version;
    for i in 0..LOG_KEEP + 5 {
        let edit = if i % 2 == 0 {
            "authorize"
        } else {
            "deauthorize"
        };
        if edit == "authorize" {
            coord.authorize("lab", "node-1").await.unwrap();
        } else {
            coord.deauthorize("lab", "node-1").await.unwrap();
        }
    }
    let now = coord.get_network("lab").await.unwrap().version;
    assert_eq!(now, start + LOG_KEEP + 5);
    assert_eq!(store.log_after("lab", 0).unwrap().len() as u64, LOG_KEEP);
    assert!(coord.resume_records("lab", start, now).unwrap().is_none());
    assert!(coord
        .resume_records("lab", now - 10, now)
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn admin_errors_name_the_problem() {
    let h = Harness::new();
    h.network("lab").await;
    let err = |e: Error| (std::mem::discriminant(&e), e.to_string());
    let e = h.coord.get_network("nope").await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)));
    let e = h
        .coord
        .create_network(CreateNetwork {
            cidr6: None,
            name: "lab".into(),
            cidr: "10.0.0.0/24".parse().unwrap(),
            mtu: None,
            keepalive: None,
            dns_domain: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{:?}", err(e));
    let e = h
        .coord
        .create_token(
            "lab",
            mesh_proto::admin::CreateToken {
                reusable: false,
                expires_in_secs: Some(u64::MAX),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)));
    assert!(matches!(
        h.coord.revoke_token("lab", "nope").await.unwrap_err(),
        Error::NotFound(_)
    ));
}

#[tokio::test]
async fn the_relay_view_follows_authorisation_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (k1, k2, k3) = (
        private(1).public_key(),
        private(2).public_key(),
        private(3).public_key(),
    );
    {
        let coord = open_sled(&path);
        let view = coord.membership();
        lab(&coord).await;
        assert!(view.load().is_empty());
        for seed in 1..=3 {
            coord
                .admit(&hello("lab", &private(seed), None), remote(seed))
                .await
                .unwrap();
        }
        // Pending members are not in it.
        assert!(view.load().is_empty());
        coord.authorize("lab", "node-1").await.unwrap();
        coord.authorize("lab", "node-2").await.unwrap();
        assert!(view.load().share_network(&k1, &k2));
        // Endpoint and name changes leave it alone; a deauthorisation does not.
        let before = view.load_full();
        rename(&coord, "lab", "node-1", "web").await;
        assert!(Arc::ptr_eq(&before, &view.load_full()));
        coord.authorize("lab", "node-3").await.unwrap();
        coord.deauthorize("lab", "node-2").await.unwrap();
        assert!(!view.load().is_member(&k2));
        assert!(view.load().share_network(&k1, &k3));
    }
    // Rebuilt from the store on start.
    let coord = open_sled(&path);
    let view = coord.membership();
    assert_eq!(view.load().len(), 2);
    assert!(view.load().share_network(&k1, &k3) && !view.load().is_member(&k2));
    coord.delete_network("lab").await.unwrap();
    assert!(view.load().is_empty());
}

#[tokio::test]
async fn routes_approved_and_advertised_reach_peers() {
    let coord = Coordinator::open(
        Arc::new(MemoryStore::default()),
        Arc::new(ManualClock::new(5_000)),
        join_info(),
    )
    .unwrap();
    lab(&coord).await;
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
    let token = coord
        .create_token(
            "lab",
            mesh_proto::admin::CreateToken {
                reusable: true,
                expires_in_secs: None,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .join_token
        .parse::<JoinToken>()
        .unwrap()
        .secret;
    let mut a = hello("lab", &private(1), Some(token.clone()));
    a.routes = vec![net("10.244.1.0/24"), net("10.244.1.7/24"), net("0.0.0.0/0")];
    coord.admit(&a, remote(1)).await.unwrap();
    let mut b = hello("lab", &private(2), Some(token));
    b.routes = vec![net("10.244.2.0/24")];
    coord.admit(&b, remote(2)).await.unwrap();
    let key_a = private(1).public_key();
    let name_a = {
        let ms = coord.list_members("lab").await.unwrap();
        let m = ms.iter().find(|m| m.public_key == key_a).unwrap().clone();
        assert_eq!(m.advertised_routes, vec![net("10.244.1.0/24")]);
        assert!(m.approved_routes.is_empty());
        m.name
    };
    let rx = coord.state.lock().await.networks["lab"].tx.subscribe();
    let allowed = |rx: &watch::Receiver<Arc<Snapshot>>| -> Vec<String> {
        rx.borrow().peers[&key_a]
            .allowed_ips
            .iter()
            // Routes only: not its own addresses (/32, and /128 in this dual-stack network).
            .filter(|n| n.prefix_len() != n.max_prefix_len())
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(allowed(&rx).len(), 0, "advertised only: not routed");
    let v0 = rx.borrow().version;

    let view = coord
        .approve_route("lab", &name_a, "10.244.1.0/24")
        .await
        .unwrap();
    assert_eq!(view.approved_routes, vec![net("10.244.1.0/24")]);
    assert_eq!(allowed(&rx), ["10.244.1.0/24"]);
    let v1 = rx.borrow().version;
    assert!(v1 > v0, "approval bumps the version");
    // Idempotent, no bump.
    coord
        .approve_route("lab", &name_a, "10.244.1.0/24")
        .await
        .unwrap();
    assert_eq!(rx.borrow().version, v1);

    // Conflicts (the overlay prefix, A's approved route) and bad prefixes.
    for prefix in ["10.9.8.0/25", "10.244.0.0/16", "10.244.1.128/25"] {
        let r = coord.approve_route("lab", "node-2", prefix).await;
        assert!(matches!(r, Err(Error::Conflict(_))), "{prefix}: {r:?}");
    }
    let r = coord.approve_route("lab", "node-2", "10.244.2.1/24").await;
    assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
    assert!(matches!(
        coord
            .unapprove_route("lab", "node-2", "10.244.2.0/24")
            .await,
        Err(Error::NotFound(_))
    ));

    // The node stops advertising it: gone from peers, still approved.
    let mut again = hello("lab", &private(1), None);
    again.routes = vec![];
    coord.admit(&again, remote(1)).await.unwrap();
    assert_eq!(allowed(&rx).len(), 0);
    a.join = None;
    coord.admit(&a, remote(1)).await.unwrap();
    assert_eq!(allowed(&rx).len(), 1, "advertised again: back");

    // Unapproved: gone.
    let view = coord
        .unapprove_route("lab", &name_a, "10.244.1.0/24")
        .await
        .unwrap();
    assert!(view.approved_routes.is_empty());
    assert_eq!(allowed(&rx).len(), 0);
}

/// Path reports live with the session: checked, shown in the member's view with the
/// peers' names, gone when the session goes or is replaced.
#[tokio::test]
async fn path_reports_are_checked_and_kept_with_the_session() {
    use mesh_proto::control::{PeerPathReport, ReportedPath, MAX_PATH_REPORT};
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    for seed in 1..=3 {
        h.coord
            .admit(
                &hello("lab", &private(seed), Some(token.clone())),
                remote(seed),
            )
            .await
            .unwrap();
    }
    // Node 4 is pending.
    h.coord
        .admit(&hello("lab", &private(4), None), remote(4))
        .await
        .unwrap();
    let key = |seed: u8| private(seed).public_key();
    let entry = |seed: u8, path, rtt_ms| PeerPathReport {
        peer: key(seed),
        path,
        rtt_ms,
    };
    let paths_of = |members: &[MemberView], seed: u8| {
        members
            .iter()
            .find(|m| m.public_key == key(seed))
            .map(|m| m.paths.clone())
            .unwrap()
    };

    let a = h.coord.register_session("lab", &key(1));
    let report = [
        entry(2, ReportedPath::Direct, Some(3)),
        entry(3, ReportedPath::Relayed, None),
        entry(99, ReportedPath::Direct, None), // not a member
        entry(1, ReportedPath::Direct, None),  // itself
        entry(2, ReportedPath::None, None),    // repeated
        entry(4, ReportedPath::Direct, None),  // pending
    ];
    assert_eq!(h.coord.report_paths(&a, &report).await, Ok(2));
    let members = h.coord.list_members("lab").await.unwrap();
    assert_eq!(
        paths_of(&members, 1),
        vec![
            PeerPathView {
                peer: key(2).fingerprint(),
                name: "node-2".into(),
                path: "direct".into(),
                rtt_ms: Some(3),
            },
            PeerPathView {
                peer: key(3).fingerprint(),
                name: "node-3".into(),
                path: "relayed".into(),
                rtt_ms: None,
            },
        ]
    );
    assert!(paths_of(&members, 2).is_empty());
    // Views name peers as they are now.
    rename(&h.coord, "lab", "node-3", "db").await;
    let members = h.coord.list_members("lab").await.unwrap();
    assert_eq!(paths_of(&members, 1)[1].name, "db");

    // Too long: ignored whole, the last report stays.
    let long = vec![entry(2, ReportedPath::Relayed, None); MAX_PATH_REPORT + 1];
    assert_eq!(
        h.coord.report_paths(&a, &long).await,
        Err(PathsIgnored::TooLong(MAX_PATH_REPORT + 1))
    );
    assert_eq!(
        paths_of(&h.coord.list_members("lab").await.unwrap(), 1).len(),
        2
    );
    // A pending member's reports are not kept.
    let d = h.coord.register_session("lab", &key(4));
    assert_eq!(
        h.coord.report_paths(&d, &report[..1]).await,
        Err(PathsIgnored::NotAuthorised)
    );
    // A deauthorised member shows none.
    h.coord.deauthorize("lab", "node-1").await.unwrap();
    assert!(paths_of(&h.coord.list_members("lab").await.unwrap(), 1).is_empty());
    h.coord.authorize("lab", "node-1").await.unwrap();
    assert_eq!(
        paths_of(&h.coord.list_members("lab").await.unwrap(), 1).len(),
        2
    );

    // A newer session starts without paths; the older one can no longer report.
    let a2 = h.coord.register_session("lab", &key(1));
    assert!(paths_of(&h.coord.list_members("lab").await.unwrap(), 1).is_empty());
    assert_eq!(
        h.coord.report_paths(&a, &report).await,
        Err(PathsIgnored::Replaced)
    );
    assert_eq!(h.coord.report_paths(&a2, &report[1..2]).await, Ok(1));
    drop(a);
    assert_eq!(
        paths_of(&h.coord.list_members("lab").await.unwrap(), 1).len(),
        1
    );
    // Disconnected: offline, no paths.
    drop(a2);
    let members = h.coord.list_members("lab").await.unwrap();
    let m1 = members.iter().find(|m| m.public_key == key(1)).unwrap();
    assert!(!m1.online && m1.paths.is_empty());
    drop(d);
}

/// Several coordinators on one shared store ([`MemoryStore::shared`], or etcd): each
/// mirrors what the others commit.
mod shared {
    use mesh_proto::admin::CreateToken;

    use super::*;
    use crate::store::{EtcdStore, MemoryStore};
    use crate::testutil::{create_network, EtcdServer};

    fn open(store: Arc<dyn Store>, id: &str) -> Arc<Coordinator> {
        Coordinator::open_as(
            store,
            Arc::new(ManualClock::new(5_000)),
            join_info(),
            None,
            id.into(),
        )
        .unwrap()
    }

    /// Waits until `coord` mirrors `n` members of `net` (the follower is asynchronous).
    async fn members_seen(coord: &Coordinator, net: &str, n: usize) -> Vec<MemberView> {
        for _ in 0..500 {
            if let Ok(m) = coord.list_members(net).await {
                if m.len() == n {
                    return m;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{} never saw {n} members of {net}", coord.id());
    }

    /// Joins through every coordinator at once, one one-time token raced by two nodes:
    /// no address twice, the token used once, the same members and versions everywhere.
    async fn join_storm(coords: &[Arc<Coordinator>]) {
        create_network(&coords[0], "lab").await;
        // The others learn of it through the store (asynchronously).
        for c in coords {
            members_seen(c, "lab", 0).await;
        }
        let token = coords[1]
            .create_token(
                "lab",
                CreateToken {
                    reusable: true,
                    expires_in_secs: None,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .join_token
            .parse::<JoinToken>()
            .unwrap()
            .secret;
        let once_created = coords[2]
            .create_token("lab", CreateToken::default())
            .await
            .unwrap();
        let once = once_created.join_token.parse::<JoinToken>().unwrap().secret;
        // The racing coordinators follow the store: wait until both know the token (else
        // a join can be refused as an unknown token before the race starts).
        for c in &coords[..2] {
            let mut known = false;
            for _ in 0..500 {
                let tokens = c.list_tokens("lab").await.unwrap();
                if tokens.iter().any(|t| t.id == once_created.token.id) {
                    known = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(known, "the one-time token never reached a coordinator");
        }
        let mut joins = Vec::new();
        for i in 0..30u8 {
            let c = coords[usize::from(i) % coords.len()].clone();
            let h = hello("lab", &private(i + 1), Some(token.clone()));
            joins.push(tokio::spawn(async move {
                c.admit(&h, remote(i + 1)).await.map(|_| ())
            }));
        }
        // Two nodes race one one-time token through two coordinators.
        for (i, c) in [(100u8, &coords[0]), (101u8, &coords[1])] {
            let c = c.clone();
            let h = hello("lab", &private(i), Some(once.clone()));
            joins.push(tokio::spawn(async move {
                c.admit(&h, remote(i)).await.map(|_| ())
            }));
        }
        let mut refused = 0;
        for (n, j) in joins.into_iter().enumerate() {
            match j.await.unwrap() {
                Ok(()) => {}
                Err(AdmitError::Used(_)) if n >= 30 => refused += 1,
                Err(e) => panic!("join {n} failed: {e}"),
            }
        }
        assert_eq!(refused, 1, "the one-time token admitted exactly one node");
        let mut views = Vec::new();
        for c in coords {
            let m = members_seen(c, "lab", 31).await;
            let addrs: BTreeSet<_> = m.iter().map(|v| v.address).collect();
            assert_eq!(addrs.len(), 31, "no address twice at {}", c.id());
            let mut m: Vec<(Key, String, bool)> = m
                .into_iter()
                .map(|v| (v.public_key, v.address.to_string(), v.authorized))
                .collect();
            m.sort();
            views.push((m, c.get_network("lab").await.unwrap().version));
        }
        assert!(
            views.windows(2).all(|w| w[0] == w[1]),
            "every coordinator mirrors the same"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coordinators_on_one_memory_store_agree() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::shared());
        let coords: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| open(store.clone(), id))
            .collect();
        join_storm(&coords).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coordinators_on_one_etcd_agree() {
        let etcd = EtcdServer::start();
        let coords: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| {
                let s: Arc<EtcdStore> =
                    Arc::new(tokio::task::block_in_place(|| etcd.store("/wm-ha/", id)));
                open(s, id)
            })
            .collect();
        join_storm(&coords).await;
        // A coordinator started later loads everything and agrees too.
        let late = open(
            Arc::new(tokio::task::block_in_place(|| etcd.store("/wm-ha/", "d"))),
            "d",
        );
        members_seen(&late, "lab", 31).await;
        assert_eq!(
            late.get_network("lab").await.unwrap().version,
            coords[0].get_network("lab").await.unwrap().version
        );
    }

    #[tokio::test]
    async fn a_store_without_quorum_refuses_writes_and_recovers() {
        let store = Arc::new(MemoryStore::shared());
        let c = open(store.clone(), "a");
        create_network(&c, "lab").await;
        store.fail_next(1);
        let e = c
            .create_token("lab", CreateToken::default())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Store(StoreError::Unavailable(_))), "{e}");
        // Nothing changed; the next write goes through.
        assert!(c.list_tokens("lab").await.unwrap().is_empty());
        c.create_token("lab", CreateToken::default()).await.unwrap();
        assert_eq!(c.list_tokens("lab").await.unwrap().len(), 1);
    }
}

/// Joins that arrive while the state is busy are admitted together: one store batch for
/// all of them, each with its own address, a one-time token still used once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_share_one_batch() {
    use mesh_proto::admin::CreateToken;
    let h = Harness::new();
    h.network("lab").await;
    let token = h.token("lab", true, None).await;
    let once = h
        .coord
        .create_token("lab", CreateToken::default())
        .await
        .unwrap()
        .join_token
        .parse::<JoinToken>()
        .unwrap()
        .secret;
    let before = h.coord.applied.load(std::sync::atomic::Ordering::SeqCst);
    let busy = h.coord.state.lock().await;
    let mut joins = Vec::new();
    for i in 1..=20u8 {
        let c = h.coord.clone();
        let secret = if i > 18 { once.clone() } else { token.clone() };
        let hello = hello("lab", &private(i), Some(secret));
        joins.push(tokio::spawn(async move {
            c.admit(&hello, remote(i)).await.map(|_| ())
        }));
    }
    // Every join is queued behind the lock before it is released.
    while h.coord.joins().len() < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(busy);
    let mut used = 0;
    for j in joins {
        match j.await.unwrap() {
            Ok(()) => {}
            Err(AdmitError::Used(_)) => used += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(used, 1, "the one-time token admitted one of the two");
    let batches = h.coord.applied.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(batches, 1, "19 joins in {batches} store batches");
    let members = h.coord.list_members("lab").await.unwrap();
    assert_eq!(members.len(), 19);
    let addrs: std::collections::BTreeSet<_> = members.iter().map(|m| m.address).collect();
    assert_eq!(addrs.len(), 19, "no address twice");
}

/// Issue 14: the admin sees each authorised member's DNS name as meshd answers for it:
/// its name as a DNS label, a collision resolved by a key suffix for the higher address,
/// the new name in a rename's answer, none while pending.
#[tokio::test]
async fn member_views_show_dns_names_with_collisions_resolved() {
    let coord = Coordinator::open(
        Arc::new(MemoryStore::default()),
        Arc::new(ManualClock::new(5_000)),
        join_info(),
    )
    .unwrap();
    lab(&coord).await;
    let reusable = mesh_proto::admin::CreateToken {
        reusable: true,
        ..Default::default()
    };
    let token = coord
        .create_token("lab", reusable)
        .await
        .unwrap()
        .join_token
        .parse::<JoinToken>()
        .unwrap()
        .secret;
    let mut names = Vec::new();
    for (seed, name) in [(1u8, "Web_1"), (2, "web-1"), (3, "db")] {
        let mut hi = hello("lab", &private(seed), Some(token.clone()));
        hi.name = name.into();
        coord.admit(&hi, remote(seed)).await.unwrap();
        names.push(name);
    }
    let mut pending = hello("lab", &private(4), None);
    pending.name = "late".into();
    coord.admit(&pending, remote(4)).await.unwrap();
    let members = coord.list_members("lab").await.unwrap();
    let dns = |name: &str| {
        members
            .iter()
            .find(|m| m.name == name)
            .unwrap()
            .dns_name
            .clone()
    };
    // Both normalise to `web-1`: the lower overlay address keeps it.
    let (first, second) = (dns("Web_1").unwrap(), dns("web-1").unwrap());
    let lower = members
        .iter()
        .filter(|m| m.name.to_lowercase().replace('_', "-") == "web-1")
        .min_by_key(|m| m.address)
        .unwrap()
        .name
        .clone();
    let (kept, suffixed) = if lower == "Web_1" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(kept, "web-1.lab.mesh.internal");
    assert!(
        suffixed.starts_with("web-1-") && suffixed.ends_with(".lab.mesh.internal"),
        "{suffixed}"
    );
    assert_eq!(dns("db").as_deref(), Some("db.lab.mesh.internal"));
    assert_eq!(dns("late"), None, "a pending member has no name in DNS");
    // A rename answers with the new name.
    let renamed = rename(&coord, "lab", "db", "Store.1").await;
    assert_eq!(
        renamed.dns_name.as_deref(),
        Some("store-1.lab.mesh.internal")
    );
}
