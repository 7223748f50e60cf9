//! The admin API against the router itself (`tower::ServiceExt::oneshot`), no sockets.

use axum::body::Body as HttpBody;
use axum::http::{Method, Request, StatusCode};
use mesh_proto::admin::{ApiError, MemberView, NetworkView, TokenCreated, TokenView};
use mesh_proto::control::JoinToken;
use mesh_proto::Key;
use serde::de::DeserializeOwned;
use tower::ServiceExt as _;

use crate::admin::router;
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
        // Outside the API, a browser is sent to the login page ([`crate::admin::web`]).
        let (status, bytes) = api.raw(Method::GET, "/no/such/route", None, auth).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{auth:?}");
        assert!(bytes.is_empty());
    }
}

/// The scheme name is case-insensitive (RFC 9110 §11.1): `bearer`, `BEARER`, extra spaces.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let api = Api::new();
    let token = TOKEN;
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        for gap in [" ", "   "] {
            let header = format!("{scheme}{gap}{token}");
            let (status, _) = api
                .raw(Method::GET, "/api/networks", None, Some(&header))
                .await;
            assert_eq!(status, StatusCode::OK, "{header:?}");
        }
    }
    for bad in ["bearer", "bearertoken", "Bear er x", "Basic x"] {
        let (status, _) = api.raw(Method::GET, "/api/networks", None, Some(bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}");
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
        // Well-formed but clashing with the network's prefix: 409 like a taken address,
        // since no schema can forbid them (400 is only what the OpenAPI document forbids).
        (r#"{"address":"10.9.9.1"}"#, StatusCode::CONFLICT, "outside"),
        (
            r#"{"address":"10.9.8.255"}"#,
            StatusCode::CONFLICT,
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

/// A GET answered 200: the body as `T`, the `X-Total-Count` and the `Link` target, if any.
async fn page<T: DeserializeOwned>(api: &Api, path: &str) -> (T, usize, Option<String>) {
    let req = Request::builder()
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(HttpBody::empty())
        .unwrap();
    let res = api.app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let total = headers
        .get(mesh_proto::admin::TOTAL_COUNT_HEADER)
        .unwrap_or_else(|| panic!("{path}: no X-Total-Count"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let next = headers.get("link").map(|v| {
        let v = v.to_str().unwrap();
        let url = v
            .strip_prefix('<')
            .and_then(|v| v.strip_suffix(">; rel=\"next\""))
            .unwrap_or_else(|| panic!("{path}: Link {v}"));
        url.to_owned()
    });
    (serde_json::from_slice(&bytes).unwrap(), total, next)
}

/// Network `lab` with members `node-1`..=`node-{n}`; the even ones joined with a token
/// (authorised), the odd ones without (pending).
async fn members(n: u8) -> Api {
    let api = Api::new();
    api.h.network("lab").await;
    let token = api.h.token("lab", true, None).await;
    for seed in 1..=n {
        let join = (seed % 2 == 0).then(|| token.clone());
        api.h
            .coord
            .admit(&hello("lab", &private(seed), join), remote(seed))
            .await
            .unwrap();
    }
    api
}

fn keys(members: &[MemberView]) -> Vec<Key> {
    members.iter().map(|m| m.public_key).collect()
}

#[tokio::test]
async fn members_page_by_key_following_the_link() {
    let api = members(30).await;
    let (all, total, next): (Vec<MemberView>, _, _) = page(&api, "/api/networks/lab/members").await;
    // Without a limit: everything, by key, as always; no link.
    assert_eq!((all.len(), total, next), (30, 30, None));
    let mut sorted = keys(&all);
    sorted.sort();
    assert_eq!(keys(&all), sorted);

    // Pages of 7 by following the links: 7, 7, 7, 7, 2, each in order, none twice.
    let mut walked = Vec::new();
    let mut sizes = Vec::new();
    let mut at = Some("/api/networks/lab/members?limit=7".to_owned());
    while let Some(path) = at {
        let (got, total, next): (Vec<MemberView>, _, _) = page(&api, &path).await;
        assert_eq!(total, 30);
        sizes.push(got.len());
        if let Some(next) = &next {
            let last = got.last().unwrap().public_key.to_base64();
            let encoded = last
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D");
            assert_eq!(
                next,
                &format!("/api/networks/lab/members?limit=7&after={encoded}")
            );
        }
        walked.extend(got);
        at = next;
    }
    assert_eq!(sizes, [7, 7, 7, 7, 2]);
    assert_eq!(keys(&walked), keys(&all));
    // A last page that ends exactly at the end has no link.
    let (got, _, next): (Vec<MemberView>, _, _) =
        page(&api, "/api/networks/lab/members?limit=30").await;
    assert_eq!((got.len(), next), (30, None));

    // The cursor in every form a client may send: URL-safe base64 (with or without
    // padding), and standard base64 with its `+` not escaped (a query turns it into a space).
    let key = all[9].public_key.to_base64();
    let url_safe = key.replace('+', "-").replace('/', "_");
    for after in [
        key.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D"),
        url_safe.clone(),
        url_safe.trim_end_matches('=').to_owned(),
        key.replace('/', "%2F"),
    ] {
        let (got, total, _): (Vec<MemberView>, _, _) = page(
            &api,
            &format!("/api/networks/lab/members?limit=3&after={after}"),
        )
        .await;
        assert_eq!(keys(&got), keys(&all[10..13]), "{after}");
        assert_eq!(total, 30);
    }
    // A cursor needs no member behind it: it is a position.
    let low = Key([0; 32]).to_base64().replace('=', "%3D");
    let high = Key([0xff; 32])
        .to_base64()
        .replace('/', "%2F")
        .replace('=', "%3D");
    let (got, _, _): (Vec<MemberView>, _, _) =
        page(&api, &format!("/api/networks/lab/members?after={low}")).await;
    assert_eq!(keys(&got), keys(&all));
    let (got, total, next): (Vec<MemberView>, _, _) = page(
        &api,
        &format!("/api/networks/lab/members?limit=5&after={high}"),
    )
    .await;
    assert_eq!((got.len(), total, next), (0, 30, None));
}

#[tokio::test]
async fn members_search_and_status() {
    let api = members(30).await;
    let names = |got: &[MemberView]| {
        let mut n: Vec<String> = got.iter().map(|m| m.name.clone()).collect();
        n.sort();
        n
    };
    // Name, case-insensitive: node-1 and node-10..=node-19.
    let (got, total, _): (Vec<MemberView>, _, _) =
        page(&api, "/api/networks/lab/members?q=NODE-1").await;
    assert_eq!(total, 11);
    assert_eq!(names(&got)[..3], ["node-1", "node-10", "node-11"]);
    // Paged with the search: the link keeps it.
    let (got, total, next): (Vec<MemberView>, _, _) =
        page(&api, "/api/networks/lab/members?limit=4&q=NODE-1").await;
    assert_eq!((got.len(), total), (4, 11));
    let next = next.unwrap();
    assert!(next.ends_with("&q=NODE-1"), "{next}");
    let (rest, _, more): (Vec<MemberView>, _, _) = page(&api, &next).await;
    assert_eq!(rest.len(), 4);
    assert!(more.is_some());

    // Address, fingerprint (any case), key (either base64).
    let m = page::<Vec<MemberView>>(&api, "/api/networks/lab/members")
        .await
        .0
        .remove(3);
    let address = m.address.to_string();
    let (got, _, _): (Vec<MemberView>, _, _) =
        page(&api, &format!("/api/networks/lab/members?q={address}")).await;
    assert!(got.iter().any(|g| g.public_key == m.public_key));
    assert!(got.iter().all(|g| g.address.to_string().contains(&address)));
    let enc = |s: &str| s.replace('+', "%2B").replace('/', "%2F");
    let url_key = m.public_key.to_base64().replace('+', "-").replace('/', "_");
    for q in [
        enc(&m.fingerprint.to_lowercase()),
        enc(&m.fingerprint.to_uppercase()),
        url_key[10..30].to_owned(),
    ] {
        let (got, _, _): (Vec<MemberView>, _, _) =
            page(&api, &format!("/api/networks/lab/members?q={q}")).await;
        assert_eq!(keys(&got), [m.public_key], "{q}");
    }
    let (got, total, _): (Vec<MemberView>, _, _) =
        page(&api, "/api/networks/lab/members?q=nobody").await;
    assert_eq!((got.len(), total), (0, 0));
    // An empty search is none.
    let (_, total, _): (Vec<MemberView>, _, _) = page(&api, "/api/networks/lab/members?q=").await;
    assert_eq!(total, 30);

    // Status: 15 pending (odd), 15 authorised (even); with a search; paged.
    let (got, total, _): (Vec<MemberView>, _, _) =
        page(&api, "/api/networks/lab/members?status=pending").await;
    assert_eq!((got.len(), total), (15, 15));
    assert!(got.iter().all(|m| !m.authorized));
    let (got, total, next): (Vec<MemberView>, _, _) =
        page(&api, "/api/networks/lab/members?status=authorized&limit=10").await;
    assert_eq!((got.len(), total), (10, 15));
    assert!(got.iter().all(|m| m.authorized));
    assert!(next.unwrap().ends_with("&status=authorized"));
    let (got, total, _): (Vec<MemberView>, _, _) =
        page(&api, "/api/networks/lab/members?status=authorized&q=node-1").await;
    assert_eq!(total, 5);
    assert_eq!(
        names(&got),
        ["node-10", "node-12", "node-14", "node-16", "node-18"]
    );
}

#[tokio::test]
async fn bad_paging_values_get_400() {
    let api = members(3).await;
    let long = "x".repeat(257);
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "limit=",
        "limit=99999999999999999999999",
        "after=",
        "after=nope",
        "after=AAAA",
        "after=%FF",
        "status=online",
        "status=",
        &format!("q={long}"),
        "page=2",
        "limit=1&limit=2",
    ] {
        let path = format!("/api/networks/lab/members?{query}");
        let err = api
            .fails(Method::GET, &path, None, StatusCode::BAD_REQUEST)
            .await;
        assert!(!err.is_empty(), "{query}");
    }
    for query in [
        "limit=0",
        "after=a%2Fb",
        "after=",
        "status=pending",
        &format!("after={}", "a".repeat(65)),
    ] {
        let path = format!("/api/networks/lab/tokens?{query}");
        api.fails(Method::GET, &path, None, StatusCode::BAD_REQUEST)
            .await;
    }
    // Limits at the bounds are fine; a missing network stays a 404.
    for path in [
        "/api/networks/lab/members?limit=1",
        "/api/networks/lab/members?limit=1000",
        "/api/networks/lab/tokens?limit=1000",
    ] {
        assert_eq!(
            api.call(Method::GET, path, None).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    api.fails(
        Method::GET,
        "/api/networks/nope/members?limit=10",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn tokens_page_by_id() {
    let api = Api::new();
    api.h.network("lab").await;
    api.h.network("other").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        api.h.clock.advance(1);
        ids.push(api.h.token("lab", i % 2 == 0, None).await.id);
        api.h.token("other", false, None).await;
    }
    // Unpaged: oldest first, as always.
    let (all, total, next): (Vec<TokenView>, _, _) = page(&api, "/api/networks/lab/tokens").await;
    assert_eq!(all.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), ids);
    assert_eq!((total, next), (5, None));
    // Paged: by id, the other network's tokens left out.
    let mut by_id = ids.clone();
    by_id.sort();
    let mut walked = Vec::new();
    let mut at = Some("/api/networks/lab/tokens?limit=2".to_owned());
    while let Some(path) = at {
        let (got, total, next): (Vec<TokenView>, _, _) = page(&api, &path).await;
        assert_eq!(total, 5);
        walked.extend(got.into_iter().map(|t| t.id));
        at = next;
    }
    assert_eq!(walked, by_id);
    // Search by id, paged or not.
    let q = &ids[2][..6];
    let (got, _, _): (Vec<TokenView>, _, _) = page(
        &api,
        &format!("/api/networks/lab/tokens?q={}", q.to_uppercase()),
    )
    .await;
    assert!(got.iter().any(|t| t.id == ids[2]));
    let (got, _, _): (Vec<TokenView>, _, _) =
        page(&api, &format!("/api/networks/lab/tokens?limit=10&q={q}")).await;
    assert!(got.iter().all(|t| t.id.contains(q)) && !got.is_empty());
}

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

fn policy_body(doc: &str) -> String {
    serde_json::json!({ "document": doc }).to_string()
}

/// Issue 13: the policy routes. A document is set and read back; a malformed one and one
/// whose own test fails are refused with 422, the line and the reason, and change nothing;
/// `check` checks without setting; `DELETE` removes it.
#[tokio::test]
async fn policy_is_set_checked_refused_and_removed() {
    use mesh_proto::admin::PolicyView;
    let api = members(2).await;
    let path = "/api/networks/lab/policy";
    let none: PolicyView = api.ok(Method::GET, path, None, StatusCode::OK).await;
    assert_eq!(none.document, None);
    assert_eq!(none.default, mesh_proto::policy::Action::Allow);

    let set: PolicyView = api
        .ok(
            Method::PUT,
            path,
            Some(&policy_body(POLICY)),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (set.document.as_deref(), set.default, set.rules, set.tests),
        (Some(POLICY), mesh_proto::policy::Action::Deny, 2, 1)
    );
    let got: PolicyView = api.ok(Method::GET, path, None, StatusCode::OK).await;
    assert_eq!(got, set);

    // Malformed (an unclosed list on line 4: found on line 5), an unknown group (line 4),
    // a failing test: 422, nothing changes.
    let broken = POLICY.replace("from = [\"tag:worker\"]", "from = [\"tag:worker\"");
    let unknown = POLICY.replace("tag:worker", "group:nope");
    let failing = POLICY.replace("expect = \"allow\"", "expect = \"deny\"");
    for (doc, want) in [(broken, "line 5"), (unknown, "line 4"), (failing, "test")] {
        for (method, route) in [
            (Method::PUT, path.to_owned()),
            (Method::POST, format!("{path}/check")),
        ] {
            let err = api
                .fails(
                    method,
                    &route,
                    Some(&policy_body(&doc)),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            assert!(err.contains(want), "{err:?} should name {want}");
        }
        let still: PolicyView = api.ok(Method::GET, path, None, StatusCode::OK).await;
        assert_eq!(still, set, "a refused document changed the policy");
    }
    // JSON that is not `{document}`: 400 as every body.
    api.fails(
        Method::PUT,
        path,
        Some(r#"{"doc":"x"}"#),
        StatusCode::BAD_REQUEST,
    )
    .await;
    api.fails(
        Method::PUT,
        path,
        Some(r#"{"document":7}"#),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let long = "#".repeat(super::policy::MAX_DOCUMENT + 1);
    api.fails(
        Method::PUT,
        path,
        Some(&policy_body(&long)),
        StatusCode::BAD_REQUEST,
    )
    .await;
    // No such network.
    api.fails(
        Method::PUT,
        "/api/networks/nope/policy",
        Some(&policy_body(POLICY)),
        StatusCode::NOT_FOUND,
    )
    .await;

    // Check: answers as PUT would, sets nothing.
    let open = "default = \"allow\"\n";
    let checked: PolicyView = api
        .ok(
            Method::POST,
            &format!("{path}/check"),
            Some(&policy_body(open)),
            StatusCode::OK,
        )
        .await;
    assert_eq!(checked.default, mesh_proto::policy::Action::Allow);
    let still: PolicyView = api.ok(Method::GET, path, None, StatusCode::OK).await;
    assert_eq!(still, set);

    let cleared: PolicyView = api.ok(Method::DELETE, path, None, StatusCode::OK).await;
    assert_eq!(cleared.document, None);
    let audit: Vec<mesh_proto::admin::AuditEntry> = api
        .ok(Method::GET, "/api/audit", None, StatusCode::OK)
        .await;
    assert_eq!(
        audit.iter().filter(|e| e.action == "policy.set").count(),
        2,
        "one set, one removal; refused documents leave no entry"
    );
}

/// Issue 13: tags by member, `why` by member or description, tags given by a token.
#[tokio::test]
async fn tags_and_why() {
    use mesh_proto::admin::WhyView;
    let api = members(2).await;
    api.ok::<mesh_proto::admin::PolicyView>(
        Method::PUT,
        "/api/networks/lab/policy",
        Some(&policy_body(POLICY)),
        StatusCode::OK,
    )
    .await;
    let tagged: MemberView = api
        .ok(
            Method::PUT,
            "/api/networks/lab/members/node-1/tags",
            Some(r#"{"tags":["tag:control","control","worker"]}"#),
            StatusCode::OK,
        )
        .await;
    assert_eq!(tagged.tags, ["control", "worker"]);
    for bad in [
        r#"{"tags":["Bad"]}"#,
        r#"{"tags":["-x"]}"#,
        r#"{"tags":"x"}"#,
    ] {
        api.fails(
            Method::PUT,
            "/api/networks/lab/members/node-1/tags",
            Some(bad),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    api.fails(
        Method::PUT,
        "/api/networks/lab/members/node-9/tags",
        Some(r#"{"tags":[]}"#),
        StatusCode::NOT_FOUND,
    )
    .await;
    let listed: Vec<MemberView> = api
        .ok(
            Method::GET,
            "/api/networks/lab/members",
            None,
            StatusCode::OK,
        )
        .await;
    let n1 = listed.iter().find(|m| m.name == "node-1").unwrap();
    assert_eq!(n1.tags, ["control", "worker"]);

    let why = |from: &str, to: &str, port: &str| {
        format!(
            "/api/networks/lab/policy/why?from={}&to={}&port={}",
            from.replace(':', "%3A").replace(' ', "%20"),
            to.replace(':', "%3A"),
            port.replace('/', "%2F")
        )
    };
    // A worker (node-1 is one) to a control member: rule 1, line 3.
    let w: WhyView = api
        .ok(
            Method::GET,
            &why("node-1", "tag:control", "tcp/6443"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (w.action, w.line),
        (mesh_proto::policy::Action::Allow, Some(3))
    );
    assert_eq!(w.rule, "allow tag:worker -> tag:control : tcp/6443");
    let w: WhyView = api
        .ok(
            Method::GET,
            &why("tag:ops tag:x", "node-2", "icmp"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (w.action, w.line),
        (mesh_proto::policy::Action::Allow, Some(8))
    );
    let w: WhyView = api
        .ok(
            Method::GET,
            &why("node-2", "node-1", "udp/53"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!((w.action, w.line), (mesh_proto::policy::Action::Deny, None));
    assert_eq!(w.rule, "default deny");
    // Not a member nor a description: 422; a bad port or a missing one: 400.
    api.fails(
        Method::GET,
        &why("who?", "node-1", "tcp/1"),
        None,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    for port in ["tcp/1-2", "tcp", "sctp/1", "tcp/65536"] {
        api.fails(
            Method::GET,
            &why("node-2", "node-1", port),
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    api.fails(
        Method::GET,
        "/api/networks/lab/policy/why?from=node-1&to=node-2",
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // A token with tags: what it admits carries them; the listing shows them.
    let created: TokenCreated = api
        .ok(
            Method::POST,
            "/api/networks/lab/tokens",
            Some(r#"{"reusable":true,"tags":["ops","tag:worker"]}"#),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created.token.tags, ["ops", "worker"]);
    api.fails(
        Method::POST,
        "/api/networks/lab/tokens",
        Some(r#"{"tags":["NOPE"]}"#),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let secret: JoinToken = created.join_token.parse().unwrap();
    api.h
        .coord
        .admit(&hello("lab", &private(7), Some(secret.secret)), remote(7))
        .await
        .unwrap();
    let listed: Vec<MemberView> = api
        .ok(
            Method::GET,
            "/api/networks/lab/members",
            None,
            StatusCode::OK,
        )
        .await;
    let n7 = listed
        .iter()
        .find(|m| m.public_key == private(7).public_key())
        .unwrap();
    assert_eq!(n7.tags, ["ops", "worker"]);
}
