//! The audit log: recorded with the change, bounded, readable over HTTP, durable.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mesh_proto::admin::{AuditEntry, CreateToken, UpdateMember};
use tower::ServiceExt as _;

use super::{AuditLog, ACTOR_ADMIN_TOKEN};
use crate::http::router;
use crate::state::{Coordinator, ManualClock};
use crate::store::Store;
use crate::testutil::{
    create_network, hello, join_info, open_sled_store, private, remote, Harness,
};

fn entry(n: u64) -> AuditEntry {
    AuditEntry {
        time: n,
        actor: ACTOR_ADMIN_TOKEN.into(),
        action: "token.revoke".into(),
        network: "lab".into(),
        target: format!("t{n}"),
        detail: String::new(),
    }
}

#[test]
fn log_is_bounded_in_memory_and_in_the_store_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = open_sled_store(&path);
        let mut log = AuditLog::load(&store, 3).unwrap();
        assert!(log.is_empty());
        for n in 0..5 {
            let e = vec![entry(n)];
            store.apply(&log.ops(&e)).unwrap();
            log.committed(e);
        }
        // Two at once, across the bound.
        let e = vec![entry(5), entry(6)];
        store.apply(&log.ops(&e)).unwrap();
        log.committed(e);
        assert_eq!(log.len(), 3);
        let seqs: Vec<u64> = store.audit().unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![4, 5, 6]);
        assert_eq!(
            log.latest(2).iter().map(|e| e.time).collect::<Vec<_>>(),
            vec![6, 5]
        );
        store.flush().unwrap();
    }
    let store = open_sled_store(&path);
    let mut log = AuditLog::load(&store, 3).unwrap();
    assert_eq!(
        log.latest(10).iter().map(|e| e.time).collect::<Vec<_>>(),
        vec![6, 5, 4]
    );
    // Sequence numbers continue after a reopen.
    let e = vec![entry(7)];
    store.apply(&log.ops(&e)).unwrap();
    log.committed(e);
    let seqs: Vec<u64> = store.audit().unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![5, 6, 7]);
}

async fn get(app: &axum::Router, uri: &str, auth: bool) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().uri(uri);
    if auth {
        req = req.header("authorization", "Bearer t0k");
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, body.to_vec())
}

#[tokio::test]
async fn admin_actions_are_recorded_and_listed_newest_first() {
    let h = Harness::new();
    let app = router(h.coord.clone(), "t0k");
    h.network("lab").await;
    let created = h
        .coord
        .create_token("lab", CreateToken::default())
        .await
        .unwrap();
    let id = created.token.id.clone();
    let secret = created
        .join_token
        .parse::<mesh_proto::control::JoinToken>()
        .unwrap()
        .secret;
    h.coord
        .admit(&hello("lab", &private(1), Some(secret)), remote(1))
        .await
        .unwrap();
    let fp = private(1).public_key().fingerprint();
    h.clock.advance(10);
    h.coord.deauthorize("lab", &fp).await.unwrap();
    h.coord
        .update_member(
            "lab",
            &fp,
            UpdateMember {
                name: Some("web".into()),
                address: Some("10.9.8.9".parse().unwrap()),
                public_endpoint: None,
            },
        )
        .await
        .unwrap();
    h.coord.revoke_token("lab", &id).await.unwrap();
    // A failed action is not recorded.
    assert!(h.coord.authorize("lab", "nobody").await.is_err());
    assert!(h.store.is_flushed());

    let (status, _) = get(&app, "/api/audit", false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for bad in [
        "/api/audit?limit=0",
        "/api/audit?limit=x",
        "/api/audit?limit=10001",
        "/api/audit?bogus=1",
    ] {
        assert_eq!(
            get(&app, bad, true).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let (status, body) = get(&app, "/api/audit", true).await;
    assert_eq!(status, StatusCode::OK);
    let all: Vec<AuditEntry> = serde_json::from_slice(&body).unwrap();
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "token.revoke",
            "member.set-address",
            "member.rename",
            "member.deauthorize",
            "token.create",
            "network.create"
        ]
    );
    let deauth = &all[3];
    assert_eq!(deauth.time, 1_000_010);
    assert_eq!(deauth.actor, "admin-token");
    assert_eq!(deauth.network, "lab");
    assert_eq!(deauth.target, fp);
    assert_eq!(all[2].detail, "node-1 -> web");
    assert_eq!(all[0].target, id);
    assert_eq!(all[5].target, "lab");

    let (_, body) = get(&app, "/api/audit?limit=2", true).await;
    let two: Vec<AuditEntry> = serde_json::from_slice(&body).unwrap();
    assert_eq!(two, all[..2].to_vec());
}

#[tokio::test]
async fn audit_survives_a_coordinator_restart_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let clock = Arc::new(ManualClock::new(5));
    {
        let coord = Coordinator::open(Arc::new(open_sled_store(&path)), clock.clone(), join_info())
            .unwrap();
        create_network(&coord, "lab").await;
        coord.delete_network("lab").await.unwrap();
    }
    let coord = Coordinator::open(Arc::new(open_sled_store(&path)), clock, join_info()).unwrap();
    let log = coord.audit(10).await;
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["network.delete", "network.create"]);
    assert_eq!(log[1].detail, "cidr 10.9.8.0/24, mtu 1280");
}
