//! The audit log over HTTP: admin actions recorded and listed newest first.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mesh_proto::admin::{AuditEntry, CreateToken, UpdateMember};
use tower::ServiceExt as _;

use crate::admin::router;
use crate::testutil::{hello, private, remote, Harness};

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
