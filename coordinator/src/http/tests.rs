//! The admin API against the router itself (`tower::ServiceExt::oneshot`), no sockets.

use axum::body::Body as HttpBody;
use axum::http::{Method, Request, StatusCode};
use mesh_proto::admin::{ApiError, MemberView, NetworkView, TokenCreated, TokenView};
use mesh_proto::control::JoinToken;
use mesh_proto::Key;
use serde::de::DeserializeOwned;
use tower::ServiceExt as _;

use super::router;
use crate::testutil::{hello, join_info, private, remote, Harness};

const TOKEN: &str = "test-admin-token";

struct Api {
    h: Harness,
    app: axum::Router,
}

impl Api {
    fn new() -> Api {
        let h = Harness::new();
        let app = router(h.coord.clone(), TOKEN);
        Api { h, app }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Vec<u8>) {
        self.raw(method, path, body, Some(&format!("Bearer {TOKEN}")))
            .await
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        auth: Option<&str>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(HttpBody::from(body.unwrap_or_default().to_owned()))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    async fn ok<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        want: StatusCode,
    ) -> T {
        let (status, bytes) = self.call(method, path, body).await;
        assert_eq!(status, want, "{}", String::from_utf8_lossy(&bytes));
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Asserts a failure status with a JSON error body; returns the message.
    async fn fails(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        want: StatusCode,
    ) -> String {
        let (status, bytes) = self.call(method.clone(), path, body).await;
        assert_eq!(
            status,
            want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let err: ApiError = serde_json::from_slice(&bytes).expect("an ApiError body");
        assert!(!err.error.is_empty() && !err.error.contains('\n'));
        err.error
    }
}

#[tokio::test]
async fn requests_without_the_token_get_401() {
    let api = Api::new();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some(TOKEN),
        Some("Basic dGVzdA=="),
        Some("Bearer "),
    ] {
        for (method, path) in [
            (Method::GET, "/api/networks"),
            (Method::DELETE, "/api/networks/lab"),
            (Method::GET, "/api/no/such/route"),
            (Method::GET, "/metrics"),
        ] {
            let (status, bytes) = api.raw(method, path, None, auth).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?} {path}");
            let err: ApiError = serde_json::from_slice(&bytes).unwrap();
            assert!(err.error.contains("admin token"));
        }
        // Outside the API, a browser is sent to the login page ([`crate::web`]).
        let (status, bytes) = api.raw(Method::GET, "/no/such/route", None, auth).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{auth:?}");
        assert!(bytes.is_empty());
    }
}

#[tokio::test]
async fn networks_crud() {
    let api = Api::new();
    let created: NetworkView = api
        .ok(
            Method::POST,
            "/api/networks",
            Some(r#"{"name":"lab","cidr":"10.9.8.0/24"}"#),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        (created.mtu, created.keepalive, created.members),
        (1280, 25, 0)
    );
    let created: NetworkView = api
        .ok(
            Method::POST,
            "/api/networks",
            Some(r#"{"name":"six","cidr":"fd00:1::/64","mtu":1400,"keepalive":0}"#),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!((created.mtu, created.keepalive), (1400, 0));
    let list: Vec<NetworkView> = api
        .ok(Method::GET, "/api/networks", None, StatusCode::OK)
        .await;
    assert_eq!(
        list.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["lab", "six"]
    );
    let one: NetworkView = api
        .ok(Method::GET, "/api/networks/lab", None, StatusCode::OK)
        .await;
    assert_eq!(one.cidr.to_string(), "10.9.8.0/24");

    let msg = api
        .fails(
            Method::POST,
            "/api/networks",
            Some(r#"{"name":"lab","cidr":"10.1.0.0/16"}"#),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(msg.contains("already exists"), "{msg}");
    let (status, _) = api.call(Method::DELETE, "/api/networks/six", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    api.fails(
        Method::GET,
        "/api/networks/six",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    api.fails(
        Method::DELETE,
        "/api/networks/six",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn bad_input_gets_4xx_with_a_message() {
    let api = Api::new();
    let cases: &[(&str, StatusCode, &str)] = &[
        (
            r#"{"name":"Lab","cidr":"10.9.8.0/24"}"#,
            StatusCode::BAD_REQUEST,
            "invalid network name",
        ),
        (
            r#"{"name":"","cidr":"10.9.8.0/24"}"#,
            StatusCode::BAD_REQUEST,
            "invalid network name",
        ),
        (
            r#"{"name":"lab","cidr":"10.9.8.0/31"}"#,
            StatusCode::BAD_REQUEST,
            "too small",
        ),
        (
            r#"{"name":"lab","cidr":"10.9.8.0/24","mtu":10}"#,
            StatusCode::BAD_REQUEST,
            "mtu",
        ),
        (
            r#"{"name":"lab","cidr":"banana"}"#,
            StatusCode::BAD_REQUEST,
            "bad request body",
        ),
        (
            r#"{"name":"lab","cidr":"10.9.8.0/24","colour":"red"}"#,
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            r#"{"name":"lab"#,
            StatusCode::BAD_REQUEST,
            "bad request body",
        ),
        (r#"[]"#, StatusCode::BAD_REQUEST, "bad request body"),
        (
            r#"{"name":"lab","cidr":"10.9.8.0/24","mtu":99999}"#,
            StatusCode::BAD_REQUEST,
            "bad request body",
        ),
    ];
    for (body, status, want) in cases {
        let msg = api
            .fails(Method::POST, "/api/networks", Some(body), *status)
            .await;
        assert!(msg.contains(want), "{body}: {msg}");
    }
    // No JSON content type.
    let (status, bytes) = api
        .raw(
            Method::POST,
            "/api/networks",
            None,
            Some(&format!("Bearer {TOKEN}")),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    serde_json::from_slice::<ApiError>(&bytes).unwrap();
    // Unknown routes and methods, bad path encoding.
    api.fails(Method::GET, "/api/nope", None, StatusCode::NOT_FOUND)
        .await;
    api.fails(
        Method::GET,
        "/api/networks/lab/members/x/y/z",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    api.fails(
        Method::PUT,
        "/api/networks",
        None,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    api.fails(
        Method::GET,
        "/api/networks/%FF",
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    api.fails(
        Method::GET,
        "/api/networks/nope/members",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    api.fails(
        Method::GET,
        "/api/networks/nope/tokens",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    api.fails(
        Method::POST,
        "/api/networks/nope/tokens",
        Some("{}"),
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn tokens_create_list_revoke() {
    let api = Api::new();
    api.h.network("lab").await;
    // No body at all: a one-time token that never expires.
    let (status, bytes) = api
        .call(Method::POST, "/api/networks/lab/tokens", None)
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let once: TokenCreated = serde_json::from_slice(&bytes).unwrap();
    assert!(!once.token.reusable && once.token.expires_at.is_none());
    let parsed: JoinToken = once.join_token.parse().unwrap();
    assert_eq!(parsed.network, "lab");
    assert_eq!(parsed.pin, join_info().pin);
    assert_eq!(parsed.coordinators, join_info().coordinators);
    assert_eq!(parsed.secret.id, once.token.id);
    assert_eq!(once.token.id.len(), 12);

    let reusable: TokenCreated = api
        .ok(
            Method::POST,
            "/api/networks/lab/tokens",
            Some(r#"{"reusable":true,"expires-in-secs":86400}"#),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        reusable.token.expires_at,
        Some(reusable.token.created_at + 86400)
    );
    api.fails(
        Method::POST,
        "/api/networks/lab/tokens",
        Some(r#"{"expires-in-secs":0}"#),
        StatusCode::BAD_REQUEST,
    )
    .await;
    api.fails(
        Method::POST,
        "/api/networks/lab/tokens",
        Some(r#"{"forever":true}"#),
        StatusCode::BAD_REQUEST,
    )
    .await;

    let list: Vec<TokenView> = api
        .ok(
            Method::GET,
            "/api/networks/lab/tokens",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(list.len(), 2);
    let listed = String::from_utf8(
        api.call(Method::GET, "/api/networks/lab/tokens", None)
            .await
            .1,
    )
    .unwrap();
    assert!(!listed.contains("secret") && !listed.contains("hash"));

    let path = format!("/api/networks/lab/tokens/{}", once.token.id);
    assert_eq!(
        api.call(Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    let list: Vec<TokenView> = api
        .ok(
            Method::GET,
            "/api/networks/lab/tokens",
            None,
            StatusCode::OK,
        )
        .await;
    assert!(list.iter().any(|t| t.id == once.token.id && t.revoked));
    api.fails(
        Method::DELETE,
        "/api/networks/lab/tokens/nope",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn members_list_update_authorize_delete() {
    let api = Api::new();
    api.h.network("lab").await;
    for seed in 1..=3 {
        api.h
            .coord
            .admit(&hello("lab", &private(seed), None), remote(seed))
            .await
            .unwrap();
    }
    let members: Vec<MemberView> = api
        .ok(
            Method::GET,
            "/api/networks/lab/members",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(members.len(), 3);
    assert!(members
        .iter()
        .all(|m| !m.authorized && !m.online && m.last_seen.is_some()));
    let m1 = members.iter().find(|m| m.name == "node-1").unwrap();
    assert_eq!(m1.fingerprint, m1.public_key.fingerprint());

    // By name, by fingerprint, by URL-safe key, by percent-encoded standard key.
    let std_key = private(2).public_key().to_base64();
    let url_key = std_key.replace('+', "-").replace('/', "_");
    let encoded = std_key
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    for node in [
        "node-1".to_owned(),
        m1.fingerprint.replace('+', "-").replace('/', "_"),
        url_key,
        encoded,
    ] {
        let v: MemberView = api
            .ok(
                Method::POST,
                &format!("/api/networks/lab/members/{node}/authorize"),
                None,
                StatusCode::OK,
            )
            .await;
        assert!(v.authorized, "{node}");
    }
    let v: MemberView = api
        .ok(
            Method::POST,
            "/api/networks/lab/members/node-1/deauthorize",
            None,
            StatusCode::OK,
        )
        .await;
    assert!(!v.authorized);

    // Rename and readdress.
    let v: MemberView = api
        .ok(
            Method::PATCH,
            "/api/networks/lab/members/node-3",
            Some(r#"{"name":"db","address":"10.9.8.100"}"#),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (v.name.as_str(), v.address.to_string().as_str()),
        ("db", "10.9.8.100")
    );
    let cases: &[(&str, StatusCode, &str)] = &[
        (
            r#"{"address":"10.9.8.100"}"#,
            StatusCode::CONFLICT,
            "already used",
        ),
        (
            r#"{"address":"10.9.9.1"}"#,
            StatusCode::BAD_REQUEST,
            "outside",
        ),
        (
            r#"{"address":"10.9.8.255"}"#,
            StatusCode::BAD_REQUEST,
            "reserved",
        ),
        (r#"{"name":"db"}"#, StatusCode::CONFLICT, "already used"),
        (
            r#"{"name":"no spaces"}"#,
            StatusCode::BAD_REQUEST,
            "invalid member name",
        ),
        (
            r#"{"address":"nope"}"#,
            StatusCode::BAD_REQUEST,
            "bad request body",
        ),
        (r#"{"nickname":"x"}"#, StatusCode::BAD_REQUEST, "nickname"),
    ];
    for (body, status, want) in cases {
        let msg = api
            .fails(
                Method::PATCH,
                "/api/networks/lab/members/node-1",
                Some(body),
                *status,
            )
            .await;
        assert!(msg.contains(want), "{body}: {msg}");
    }

    api.fails(
        Method::POST,
        "/api/networks/lab/members/ghost/authorize",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    api.fails(
        Method::POST,
        "/api/networks/lab/members/short/authorize",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    api.fails(
        Method::POST,
        "/api/networks/nope/members/node-1/authorize",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;

    assert_eq!(
        api.call(Method::DELETE, "/api/networks/lab/members/db", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    api.fails(
        Method::DELETE,
        "/api/networks/lab/members/db",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    let members: Vec<MemberView> = api
        .ok(
            Method::GET,
            "/api/networks/lab/members",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(members.len(), 2);

    // Deleting the network takes its members and tokens along.
    api.h.token("lab", true, None).await;
    assert_eq!(
        api.call(Method::DELETE, "/api/networks/lab", None).await.0,
        StatusCode::NO_CONTENT
    );
    api.h.network("lab").await;
    let members: Vec<MemberView> = api
        .ok(
            Method::GET,
            "/api/networks/lab/members",
            None,
            StatusCode::OK,
        )
        .await;
    assert!(members.is_empty());
    let tokens: Vec<TokenView> = api
        .ok(
            Method::GET,
            "/api/networks/lab/tokens",
            None,
            StatusCode::OK,
        )
        .await;
    assert!(tokens.is_empty());
}

#[tokio::test]
async fn ambiguous_prefixes_get_409_listing_candidates() {
    let api = Api::new();
    api.h.network("lab").await;
    // Two public keys sharing their first 8 base64 characters (6 bytes).
    let mut a = [7u8; 32];
    let mut b = [7u8; 32];
    a[31] = 1;
    b[31] = 2;
    for (key, name) in [(Key(a), "alpha"), (Key(b), "beta")] {
        let mut h = hello("lab", &private(1), None);
        h.public_key = key;
        h.name = name.into();
        api.h.coord.admit(&h, remote(1)).await.unwrap();
    }
    let prefix = Key(a).fingerprint().replace('+', "-").replace('/', "_");
    let msg = api
        .fails(
            Method::POST,
            &format!("/api/networks/lab/members/{prefix}/authorize"),
            None,
            StatusCode::CONFLICT,
        )
        .await;
    assert!(msg.contains("alpha (") && msg.contains("beta ("), "{msg}");
    // The full key is never ambiguous.
    let full = Key(a).to_base64().replace('+', "-").replace('/', "_");
    let v: MemberView = api
        .ok(
            Method::POST,
            &format!("/api/networks/lab/members/{full}/authorize"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v.name, "alpha");
}

#[tokio::test]
async fn public_endpoint_is_set_shown_and_cleared() {
    let api = Api::new();
    api.h.network("lab").await;
    api.h
        .coord
        .admit(&hello("lab", &private(1), None), remote(1))
        .await
        .unwrap();
    let path = "/api/networks/lab/members/node-1";
    let v: MemberView = api
        .ok(
            Method::PATCH,
            path,
            Some(r#"{"public-endpoint":"203.0.113.5:51820"}"#),
            StatusCode::OK,
        )
        .await;
    let public: std::net::SocketAddr = "203.0.113.5:51820".parse().unwrap();
    assert_eq!(v.public_endpoint, Some(public));
    assert_eq!(v.endpoints.first(), Some(&public));
    assert_eq!(v.name, "node-1");

    // Listed too; a PATCH that does not name it leaves it alone.
    let _: MemberView = api
        .ok(
            Method::PATCH,
            path,
            Some(r#"{"name":"web"}"#),
            StatusCode::OK,
        )
        .await;
    let members: Vec<MemberView> = api
        .ok(
            Method::GET,
            "/api/networks/lab/members",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(members[0].public_endpoint, Some(public));
    let (_, raw) = api
        .call(Method::GET, "/api/networks/lab/members", None)
        .await;
    assert!(String::from_utf8_lossy(&raw).contains(r#""public-endpoint":"203.0.113.5:51820""#));

    for (body, want) in [
        (r#"{"public-endpoint":"203.0.113.5:0"}"#, "port 0"),
        (r#"{"public-endpoint":"224.0.0.1:1"}"#, "not a unicast"),
        (r#"{"public-endpoint":"203.0.113.5"}"#, "bad request body"),
    ] {
        let msg = api
            .fails(
                Method::PATCH,
                "/api/networks/lab/members/web",
                Some(body),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(msg.contains(want), "{body}: {msg}");
    }

    let v: MemberView = api
        .ok(
            Method::PATCH,
            "/api/networks/lab/members/web",
            Some(r#"{"public-endpoint":"0.0.0.0:0"}"#),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v.public_endpoint, None);
    assert!(!v.endpoints.contains(&public));
}
