//! The OpenAPI document against the admin table and the router itself: it parses, it lists
//! exactly the routes served, and every documented operation answers only documented
//! statuses (never 5xx, 4xx always with an `ApiError` body) for good and malformed input.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body as HttpBody;
use axum::http::{Method, Request, StatusCode};
use mesh_proto::admin::ApiError;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::admin::router;
use crate::testutil::{hello, private, remote, Harness};

mod draw;

use draw::{allowed, conforms, forbidden, Rng};

const TOKEN: &str = "test-admin-token";

/// The `| METHOD | path | … |` rows of `mesh_proto::admin`'s route table.
fn admin_table() -> BTreeSet<(String, String)> {
    include_str!("../../../../mesh-proto/src/admin.rs")
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.strip_prefix("//! |")?.split('|').map(str::trim).collect();
            let method = *cells.first()?;
            let path = cells.get(1)?.trim_matches('`').split('?').next()?;
            (method.chars().all(|c| c.is_ascii_uppercase()) && path.starts_with('/'))
                .then(|| (method.to_owned(), path.to_owned()))
        })
        .collect()
}

/// One documented operation.
#[derive(Debug, Clone)]
struct Op {
    method: Method,
    path: String,
    statuses: BTreeSet<u16>,
    has_body: bool,
    /// Its query parameters: name and schema.
    query: Vec<(String, Value)>,
}

fn doc_json() -> Value {
    serde_json::from_str(&super::json()).expect("the document is JSON")
}

fn operations(doc: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Ok(m) = method.to_ascii_uppercase().parse::<Method>() else {
                continue;
            };
            let statuses = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|s| s.parse().expect("numeric status"))
                .collect();
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .map(|p| {
                    (
                        p["name"].as_str().expect("name").to_owned(),
                        p["schema"].clone(),
                    )
                })
                .collect();
            ops.push(Op {
                method: m,
                path: path.clone(),
                statuses,
                has_body: op.get("requestBody").is_some(),
                query,
            });
        }
    }
    ops
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn document_is_valid_openapi_3() {
    let text = super::json();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    // utoipa's own model of OpenAPI 3 reads it back unchanged, but for the responses'
    // links: its `Link` reads and writes `operation_id` where OpenAPI says `operationId`
    // (the independent model below reads the links).
    let parsed: utoipa::openapi::OpenApi = serde_json::from_str(&text).unwrap();
    let without_links = |mut v: Value| {
        for item in v["paths"].as_object_mut().unwrap().values_mut() {
            for op in item.as_object_mut().unwrap().values_mut() {
                for r in op["responses"].as_object_mut().unwrap().values_mut() {
                    r.as_object_mut().unwrap().remove("links");
                }
            }
        }
        v
    };
    assert_eq!(
        without_links(serde_json::to_value(&parsed).unwrap()),
        without_links(doc.clone())
    );

    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (scheme["type"].as_str(), scheme["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
    assert_eq!(doc["security"], serde_json::json!([{ "bearer": [] }]));

    // Every reference resolves.
    let mut rs = Vec::new();
    refs(&doc, &mut rs);
    assert!(!rs.is_empty());
    for r in rs {
        let name = r.strip_prefix("#/components/schemas/").expect(r);
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling {r}"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            // Every path parameter is declared, in the path, as a required string.
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] != "query")
                        .inspect(|p| {
                            assert_eq!(p["in"], "path", "{method} {path}");
                            assert_eq!(p["required"], true, "{method} {path}");
                            assert_eq!(p["schema"]["type"], "string", "{method} {path}");
                        })
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(declared, templated, "{method} {path}");
            // 2xx first, every failure an ApiError, 401 everywhere.
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path}"
            );
            assert!(responses.contains_key("401"), "{method} {path}");
            for (status, r) in responses {
                if !status.starts_with('2') {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ApiError",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    // An empty body is fine only when creating a token.
    let paths = &doc["paths"];
    // (`required` is left out when false, its default.)
    assert_ne!(
        paths["/api/networks/{net}/tokens"]["post"]["requestBody"]["required"],
        true
    );
    assert_eq!(
        paths["/api/networks"]["post"]["requestBody"]["required"],
        true
    );
    assert_eq!(
        paths["/api/networks/{net}/members/{node}"]["patch"]["requestBody"]["required"],
        true
    );
    // The bodies' field names are the wire's (kebab-case).
    let member = &doc["components"]["schemas"]["MemberView"]["properties"];
    assert!(member["public-key"].is_object() && member["approved-routes"].is_object());
}

/// The paged listings document their parameters with the bounds the server enforces, and
/// the headers they answer with.
#[test]
fn paging_is_documented() {
    let doc = doc_json();
    let ops = operations(&doc);
    for path in ["/api/networks/{net}/members", "/api/networks/{net}/tokens"] {
        let op = ops
            .iter()
            .find(|op| op.path == path && op.method == Method::GET)
            .unwrap();
        let names: Vec<&str> = op.query.iter().map(|(n, _)| n.as_str()).collect();
        let mut want = vec!["limit", "after", "q"];
        if path.ends_with("/members") {
            want.push("status");
        }
        assert_eq!(names, want, "{path}");
        let limit = &op.query[0].1;
        assert_eq!(limit["minimum"], 1, "{path}");
        assert_eq!(
            limit["maximum"].as_u64(),
            Some(mesh_proto::admin::MAX_PAGE as u64),
            "{path}"
        );
        let headers = &doc["paths"][path]["get"]["responses"]["200"]["headers"];
        assert!(headers["link"].is_object(), "{path}");
        assert!(
            headers[mesh_proto::admin::TOTAL_COUNT_HEADER].is_object(),
            "{path}"
        );
    }
    let status = &ops
        .iter()
        .find(|op| op.path == "/api/networks/{net}/members" && op.method == Method::GET)
        .unwrap()
        .query[3]
        .1;
    assert_eq!(status["enum"], serde_json::json!(["pending", "authorized"]));
}

/// An OpenAPI 3.1 model written independently of utoipa (the `oas3` crate) accepts the
/// document, and every reference in it (responses, request bodies, parameters, their
/// schemas) resolves there too.
#[test]
fn document_validates_with_an_independent_openapi_model() {
    let spec = oas3::from_json(super::json()).expect("oas3 rejects the document");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let mut operations = 0;
    for (path, item) in spec.paths.iter().flatten() {
        for (method, op) in item.methods() {
            operations += 1;
            let what = format!("{method} {path}");
            let responses = op.responses.as_ref().unwrap_or_else(|| panic!("{what}"));
            assert!(!responses.is_empty(), "{what}: no responses");
            for (status, r) in responses {
                let r = r
                    .resolve(&spec)
                    .unwrap_or_else(|e| panic!("{what} {status}: {e}"));
                for (media, content) in &r.content {
                    if let Some(schema) = &content.schema {
                        schema
                            .resolve(&spec)
                            .unwrap_or_else(|e| panic!("{what} {status} {media}: {e}"));
                    }
                }
            }
            if let Some(body) = &op.request_body {
                let body = body
                    .resolve(&spec)
                    .unwrap_or_else(|e| panic!("{what} body: {e}"));
                assert!(body.content.contains_key("application/json"), "{what}");
            }
            for p in &op.parameters {
                p.resolve(&spec)
                    .unwrap_or_else(|e| panic!("{what} parameter: {e}"));
            }
        }
    }
    assert_eq!(operations, operations_count(), "oas3 sees other operations");
}

/// How many operations the document has, counted on the raw JSON.
fn operations_count() -> usize {
    operations(&doc_json()).len()
}

#[test]
fn document_lists_exactly_the_admin_table() {
    let documented: BTreeSet<(String, String)> = operations(&doc_json())
        .into_iter()
        .map(|op| (op.method.to_string(), op.path))
        .collect();
    let table = admin_table();
    assert!(table.len() >= 14, "the table parses: {table:?}");
    assert_eq!(documented, table);
}

/// A network `lab` with member `node-1` (approved route 10.244.3.0/24) and a token.
async fn fixture() -> (axum::Router, String) {
    let h = Harness::new();
    h.network("lab").await;
    let mut hi = hello("lab", &private(1), None);
    hi.routes = vec!["10.244.3.0/24".parse().unwrap()];
    h.coord.admit(&hi, remote(1)).await.unwrap();
    h.coord
        .approve_route("lab", "node-1", "10.244.3.0/24")
        .await
        .unwrap();
    let secret = h.token("lab", false, None).await;
    (router(h.coord.clone(), TOKEN), secret.id)
}

async fn send(
    app: &axum::Router,
    method: &Method,
    uri: &str,
    body: Option<(&str, &str)>,
    auth: bool,
) -> Option<(StatusCode, Vec<u8>)> {
    let mut req = Request::builder().method(method.clone()).uri(uri);
    if auth {
        req = req.header("authorization", format!("Bearer {TOKEN}"));
    }
    if let Some((ct, _)) = body {
        req = req.header("content-type", ct);
    }
    // Some junk is not even a URI; the HTTP layer refuses it before the router.
    let req = req
        .body(HttpBody::from(
            body.map(|(_, b)| b.to_owned()).unwrap_or_default(),
        ))
        .ok()?;
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Some((status, bytes.to_vec()))
}

fn fill(path: &str, values: &BTreeMap<&str, String>) -> String {
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => values[name].clone(),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

fn check(op: &Op, what: &str, status: StatusCode, bytes: &[u8]) {
    let ctx = format!(
        "{} {} [{what}] -> {status}: {}",
        op.method,
        op.path,
        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
    );
    assert!(!status.is_server_error(), "{ctx}");
    assert!(
        op.statuses.contains(&status.as_u16()),
        "undocumented status: {ctx}"
    );
    if status.is_client_error() {
        let err: ApiError = serde_json::from_slice(bytes).expect(&ctx);
        assert!(!err.error.is_empty() && !err.error.contains('\n'), "{ctx}");
    }
}

#[tokio::test]
async fn router_serves_exactly_the_documented_routes() {
    let (app, id) = fixture().await;
    let ops = operations(&doc_json());
    let good: BTreeMap<&str, String> = [
        ("net", "lab".to_owned()),
        ("node", "node-1".to_owned()),
        ("prefix", "10.244.3.0%2F24".to_owned()),
        ("id", id),
    ]
    .into();
    let by_path: BTreeMap<&str, Vec<&Method>> = ops.iter().fold(BTreeMap::new(), |mut m, op| {
        m.entry(op.path.as_str()).or_default().push(&op.method);
        m
    });
    for (path, methods) in by_path {
        let uri = fill(path, &good);
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            // Unauthenticated: 401 everywhere (so the route exists behind the check).
            let (status, _) = send(&app, &method, &uri, None, false).await.unwrap();
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            if !methods.contains(&&method) {
                let (status, _) = send(&app, &method, &uri, None, true).await.unwrap();
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            }
        }
    }
    // The document itself is public and is what `json()` makes.
    let (status, bytes) = send(&app, &Method::GET, super::PATH, None, false)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8(bytes).unwrap(), super::json());
}

/// Path segments that must never reach a 5xx.
fn bad_segments() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "%2F",
        "a%2Fb",
        "..",
        "%2E%2E",
        "%2e%2e%2F%2e%2e",
        "%00",
        "%FF",
        "%C3%28",
        "%",
        "%zz",
        "%20",
        "Lab",
        "-",
        "a.b",
        "%C3%A9t%C3%A9",
        "0",
        "AAAAAAAA",
        "10.0.0.0%2F33",
        "10.0.0.1%2F24",
        "%3A%3A%2F0",
        "node-1%2F..",
        "%2Fapi%2Fnetworks",
        "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE%3D",
        "____________________________________________",
        "%2B%2B%2B%2B%2B%2B%2B%2B",
    ]
    .map(str::to_owned)
    .into();
    v.push("a".repeat(10_000));
    v.push("%41".repeat(5_000));
    v
}

fn junk_queries() -> Vec<String> {
    let mut v: Vec<String> = [
        "?",
        "?a=b",
        "?&&==&",
        "?%zz",
        "?%00=%FF",
        "?net=other&node=x",
        "?a[]=1&a[]=2",
        "?;;",
    ]
    .map(str::to_owned)
    .into();
    v.push(format!("?x={}", "y".repeat(20_000)));
    v
}

/// Values every documented query parameter is tried with: out of range, mistyped, not
/// UTF-8, empty, oversized.
fn bad_query_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "0",
        "-1",
        "1001",
        "10001",
        "1e3",
        "99999999999999999999999",
        "abc",
        "%FF",
        "%00",
        "%20",
        "+",
        "%2B%2F%3D",
        "AAAAAAAA",
        "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE%3D",
        "____________________________________________",
        "pending",
        "node-1",
        "a%2Fb",
        "%C3%A9",
    ]
    .map(str::to_owned)
    .into();
    v.push("x".repeat(5_000));
    v
}

/// Malformed, mistyped, incomplete, unknown and oversized bodies.
fn bad_bodies() -> Vec<String> {
    let long = "x".repeat(40_000);
    let mut v: Vec<String> = [
        "{",
        "}",
        "[]",
        "null",
        "0",
        "\"s\"",
        "{}",
        "{\"name\":",
        "{\"name\":5}",
        "{\"cidr\":5}",
        "{\"name\":\"n\",\"cidr\":\"nope\"}",
        "{\"name\":\"n\",\"cidr\":\"10.0.0.0/24\",\"mtu\":-1}",
        "{\"name\":\"n\",\"cidr\":\"10.0.0.0/24\",\"mtu\":70000}",
        "{\"name\":\"n\",\"cidr\":\"10.0.0.0/24\",\"extra\":1}",
        "{\"name\":null,\"cidr\":null}",
        "{\"address\":\"10.9.8.300\"}",
        "{\"address\":5}",
        "{\"public-endpoint\":\"nope\"}",
        "{\"public-endpoint\":\"1.2.3.4:99999\"}",
        "{\"reusable\":\"yes\"}",
        "{\"expires-in-secs\":-5}",
        "{\"expires-in-secs\":1e400}",
        "{\"expires-in-secs\":18446744073709551615}",
        "{\"reusable\":true,\"reusable\":false}",
        "\u{feff}{}",
        "{\"name\":\"\\ud800\"}",
    ]
    .map(str::to_owned)
    .into();
    v.push(format!("{{\"name\":\"{long}\",\"cidr\":\"10.0.0.0/24\"}}"));
    v.push(format!("{{\"name\":\"{long}\"}}"));
    v.push(format!("{{\"name\":\"{}\"}}", "x".repeat(100_000)));
    v.push(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)));
    v.push(format!("{{\"address\":\"{long}\"}}"));
    v
}

/// The good request for each operation: path values, body, and the 2xx it must answer.
fn good_request(op: &Op, id: &str) -> (BTreeMap<&'static str, String>, Option<&'static str>) {
    let values = [
        ("net", "lab".to_owned()),
        ("node", "node-1".to_owned()),
        ("prefix", "10.244.3.0%2F24".to_owned()),
        ("id", id.to_owned()),
    ]
    .into();
    let body = match (op.method.as_str(), op.path.as_str()) {
        ("POST", "/api/networks") => Some(r#"{"name":"fresh","cidr":"10.77.0.0/24"}"#),
        ("PATCH", _) => Some(r#"{"name":"renamed"}"#),
        ("POST", p) if p.ends_with("/tokens") => Some(r#"{"reusable":true}"#),
        ("PUT", p) if p.ends_with("/policy") => Some(GOOD_POLICY),
        ("POST", p) if p.ends_with("/policy/check") => Some(GOOD_POLICY),
        ("PUT", p) if p.ends_with("/tags") => Some(r#"{"tags":["worker","tag:ops"]}"#),
        _ => None,
    };
    (values, body)
}

/// A policy that parses and passes its test.
const GOOD_POLICY: &str = r#"{"document":"default = \"deny\"\n[[rule]]\nfrom = [\"tag:ops\"]\nto = [\"*\"]\nports = [\"tcp/22\"]\n[[test]]\nfrom = \"tag:ops\"\nto = \"tag:worker\"\nport = \"tcp/22\"\nexpect = \"allow\"\n"}"#;

/// The good request's query parameters (the required ones).
fn good_query(op: &Op) -> Vec<(&'static str, &'static str)> {
    if op.path.ends_with("/policy/why") {
        vec![("from", "tag:ops"), ("to", "node-1"), ("port", "tcp/22")]
    } else {
        Vec::new()
    }
}

/// `?a=1&b=2` of `pairs` (empty for none).
fn query_string(pairs: &[(&str, String)]) -> String {
    let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// Whether `slot` of `op` is written in a language of its own (the policy document, a
/// description of a member), which the handler may refuse with the documented 422.
fn is_language(op: &Op, slot: &Slot) -> bool {
    op.statuses.contains(&422)
        && matches!(slot, Slot::Body(n) | Slot::Query(n) if ["document", "from", "to"].contains(&n.as_str()))
}

#[tokio::test]
async fn every_documented_route_answers_as_documented() {
    let ops = operations(&doc_json());
    assert!(ops.len() >= 14);
    let mut requests = 0;
    for op in &ops {
        // A fresh coordinator per operation: the bad requests first, the good one last.
        let (app, id) = fixture().await;
        let (good, good_body) = good_request(op, &id);
        let good_body = good_body.map(|b| ("application/json", b));
        let good_uri = fill(&op.path, &good);

        // (c) malformed path parameters, one parameter at a time.
        for name in good
            .keys()
            .filter(|n| op.path.contains(&format!("{{{n}}}")))
        {
            for seg in bad_segments() {
                let mut values = good.clone();
                values.insert(name, seg.clone());
                let uri = fill(&op.path, &values);
                if let Some((status, bytes)) = send(&app, &op.method, &uri, good_body, true).await {
                    requests += 1;
                    check(op, &format!("{name}={seg:.40}"), status, &bytes);
                }
            }
        }
        // (d) junk query strings on the good path.
        for q in junk_queries() {
            let uri = format!("{good_uri}{q}");
            if let Some((status, bytes)) = send(&app, &op.method, &uri, None, true).await {
                requests += 1;
                check(op, &format!("query {q:.40}"), status, &bytes);
            }
        }
        // (e) each documented query parameter with bad values, then at and just past the
        // bounds the document gives it: inside answers 2xx, outside 400.
        for (name, schema) in &op.query {
            for v in bad_query_values() {
                let uri = format!("{good_uri}?{name}={v}");
                if let Some((status, bytes)) = send(&app, &op.method, &uri, good_body, true).await {
                    requests += 1;
                    check(op, &format!("{name}={v:.40}"), status, &bytes);
                }
            }
            let (Some(min), Some(max)) = (schema["minimum"].as_u64(), schema["maximum"].as_u64())
            else {
                continue;
            };
            for (v, inside) in [(min, true), (max, true), (min - 1, false), (max + 1, false)] {
                let uri = format!("{good_uri}?{name}={v}");
                let (status, bytes) = send(&app, &op.method, &uri, good_body, true).await.unwrap();
                requests += 1;
                check(op, &format!("{name}={v}"), status, &bytes);
                let want = if inside { "2xx" } else { "400" };
                assert!(
                    if inside {
                        status.is_success()
                    } else {
                        status == StatusCode::BAD_REQUEST
                    },
                    "{} {uri}: {status}, want {want}",
                    op.method
                );
            }
        }
        // (b) bad bodies (ignored by body-less operations, which must still answer as
        // documented), wrong and missing content types.
        for body in bad_bodies() {
            for ct in ["application/json", "text/plain"] {
                let (status, bytes) = send(&app, &op.method, &good_uri, Some((ct, &body)), true)
                    .await
                    .unwrap();
                requests += 1;
                check(op, &format!("{ct} body {body:.40}"), status, &bytes);
            }
        }
        if op.has_body {
            let (status, bytes) = send(&app, &op.method, &good_uri, None, true).await.unwrap();
            check(op, "no content type", status, &bytes);
        }
        // Without the token.
        let (status, bytes) = send(&app, &op.method, &good_uri, good_body, false)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        check(op, "no token", status, &bytes);

        // (a) the good request, on a fresh coordinator, answers its documented 2xx.
        let (app, id) = fixture().await;
        let (good, _) = good_request(op, &id);
        let query: Vec<(&str, String)> = good_query(op)
            .into_iter()
            .map(|(k, v)| (k, url_value(&Value::String(v.to_owned()))))
            .collect();
        let good_uri = format!("{}{}", fill(&op.path, &good), query_string(&query));
        let (status, bytes) = send(&app, &op.method, &good_uri, good_body, true)
            .await
            .unwrap();
        check(op, "good", status, &bytes);
        let want = op
            .statuses
            .iter()
            .find(|s| (200..300).contains(*s))
            .unwrap();
        assert_eq!(
            status.as_u16(),
            *want,
            "{} {}: {}",
            op.method,
            op.path,
            String::from_utf8_lossy(&bytes)
        );
        answer_conforms(&doc_json(), op, status, &bytes);
        requests += 1;
    }
    assert!(requests > 1000, "{requests}");
}

/// The answer's body is what the document says for its status: the exact fields of the
/// response schema (every one of them: the views always carry all their fields), with
/// their types and constraints.
fn answer_conforms(doc: &Value, op: &Op, status: StatusCode, bytes: &[u8]) {
    let response = &doc["paths"][&op.path][op.method.as_str().to_ascii_lowercase()]["responses"]
        [status.as_str()];
    let what = format!("{} {} -> {status}", op.method, op.path);
    let Some(schema) = response["content"]["application/json"]
        .get("schema")
        .filter(|_| status != StatusCode::NO_CONTENT)
    else {
        assert!(
            bytes.is_empty() || op.path == "/metrics",
            "{what}: a body where none is documented"
        );
        return;
    };
    let value: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    conforms(doc, schema, &value, "").unwrap_or_else(|e| panic!("{what}: {e}\n{value:#}"));
}

/// Routes under `/api` the document leaves out on purpose
/// ([`crate::admin::web::UNDOCUMENTED_API_ROUTES`]: the dashboard's change feed is server-sent
/// events, not JSON). Each is absent from the document, answers 401 without a credential
/// like the documented ones, and is served with one.
#[tokio::test]
async fn undocumented_api_routes_are_listed_and_served() {
    let doc = doc_json();
    let (app, _) = fixture().await;
    assert!(!crate::admin::web::UNDOCUMENTED_API_ROUTES.is_empty());
    for (method, path, why) in crate::admin::web::UNDOCUMENTED_API_ROUTES {
        assert!(!why.is_empty() && path.starts_with("/api/"), "{path}");
        assert!(doc["paths"].get(*path).is_none(), "{path} is documented");
        assert!(
            !admin_table().iter().any(|(_, p)| p == path),
            "{path} is in the admin table"
        );
        let m: Method = method.parse().unwrap();
        let (status, bytes) = send(&app, &m, path, None, false).await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        serde_json::from_slice::<ApiError>(&bytes).unwrap();
        // Served: look at the head only (the body of a stream does not end).
        let req = Request::builder()
            .method(m)
            .uri(*path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(HttpBody::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{method} {path}");
    }
}

/// Where a drawn value goes in a request.
#[derive(Debug, Clone)]
enum Slot {
    Path(String),
    Query(String),
    Body(String),
}

/// Every input of `op` the document constrains: path and query parameters and the fields
/// of its JSON body, each with its schema.
fn inputs(doc: &Value, op: &Op) -> Vec<(Slot, Value)> {
    let raw = &doc["paths"][&op.path][op.method.as_str().to_ascii_lowercase()];
    let mut out = Vec::new();
    for p in raw["parameters"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap().to_owned();
        let slot = match p["in"].as_str() {
            Some("path") => Slot::Path(name),
            _ => Slot::Query(name),
        };
        out.push((slot, p["schema"].clone()));
    }
    let body = &raw["requestBody"]["content"]["application/json"]["schema"];
    let body = draw::resolve(doc, body);
    // `POST …/tokens` takes `null` or a `CreateToken`: its fields are the object's.
    let body = body["oneOf"]
        .as_array()
        .and_then(|alts| alts.iter().find(|a| a.get("$ref").is_some()))
        .map_or(body, |r| draw::resolve(doc, r));
    for (name, schema) in body["properties"].as_object().into_iter().flatten() {
        out.push((Slot::Body(name.clone()), schema.clone()));
    }
    out
}

/// `v` as it goes into a URL: strings percent-encoded whole, numbers as written.
fn url_value(v: &Value) -> String {
    match v {
        Value::String(s) => {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        }
        other => other.to_string(),
    }
}

/// The good request of `op` with `slot` set to `value`: the URI and the JSON body.
fn request_with(op: &Op, id: &str, slot: &Slot, value: &Value) -> (String, Option<String>) {
    let (mut values, body) = good_request(op, id);
    // The member by key: a drawn name may rename it.
    let key = private(1).public_key().to_base64();
    values.insert("node", url_value(&Value::String(key)));
    let mut query: Vec<(&str, String)> = good_query(op)
        .into_iter()
        .map(|(k, v)| (k, url_value(&Value::String(v.to_owned()))))
        .collect();
    let mut body: Option<Value> = body.map(|b| serde_json::from_str(b).unwrap());
    match slot {
        Slot::Path(name) => {
            let key = values.keys().copied().find(|k| k == name).unwrap();
            values.insert(key, url_value(value));
        }
        Slot::Query(name) => {
            query.retain(|(k, _)| k != name);
            query.push((name.as_str(), url_value(value)));
        }
        Slot::Body(name) => {
            body.get_or_insert_with(|| serde_json::json!({}))[name] = value.clone();
        }
    }
    (
        format!("{}{}", fill(&op.path, &values), query_string(&query)),
        body.map(|b| b.to_string()),
    )
}

/// Issue 12, defect 2: the document is exactly as strict as the handlers. For every input
/// of every operation, values drawn from what the document allows (as a schema-based
/// fuzzer draws them: patterns, bounds and lengths at their edges) are never refused as
/// malformed (400) and the answer matches its documented schema; values just outside each
/// constraint (past a bound or length, a character no pattern takes, an unlisted enum
/// value) answer 400. The document of before (names, routes, addresses and cursors as any
/// string, `expires-in-secs: 0`, an MTU of 0 or 70000) fails this.
#[tokio::test]
async fn what_the_document_allows_is_accepted_and_what_it_forbids_refused() {
    let doc = doc_json();
    let mut rng = Rng::new(12);
    let (mut accepted, mut refused) = (0, 0);
    for op in operations(&doc) {
        for (slot, schema) in inputs(&doc, &op) {
            let (app, id) = fixture().await;
            for round in 0..40 {
                let mut value = allowed(&doc, &schema, &mut rng);
                // JSON Schema's integers include numbers with a zero fraction (`1280.0`),
                // which JSON writers produce and schemathesis sends.
                if let (Slot::Body(_), Some(n)) = (&slot, value.as_i64()) {
                    if round % 4 == 3 && n.unsigned_abs() < 1 << 53 {
                        value = serde_json::json!(n as f64);
                    }
                }
                let (uri, body) = request_with(&op, &id, &slot, &value);
                let what = format!("{slot:?} = {value} (round {round})");
                let body = body.as_deref().map(|b| ("application/json", b));
                let (status, bytes) = send(&app, &op.method, &uri, body, true).await.unwrap();
                check(&op, &what, status, &bytes);
                let language = is_language(&op, &slot) && status.as_u16() == 422;
                assert!(
                    language || ![400, 415, 422].contains(&status.as_u16()),
                    "{} {uri} {body:?}: the document allows {what}, the server refused it: {}",
                    op.method,
                    String::from_utf8_lossy(&bytes)
                );
                answer_conforms(&doc, &op, status, &bytes);
                accepted += 1;
            }
            for value in forbidden(&doc, &schema, &mut rng) {
                let (uri, body) = request_with(&op, &id, &slot, &value);
                let what = format!("{slot:?} = {value:.80}");
                let body = body.as_deref().map(|b| ("application/json", b));
                let (status, bytes) = send(&app, &op.method, &uri, body, true).await.unwrap();
                check(&op, &what, status, &bytes);
                // An empty path segment matches no route at all.
                let empty_segment = matches!(slot, Slot::Path(_)) && value == "";
                assert!(
                    status == StatusCode::BAD_REQUEST
                        || (empty_segment && status == StatusCode::NOT_FOUND),
                    "{} {uri} {body:?}: the document forbids {what}, the server answered {status}: {}",
                    op.method,
                    String::from_utf8_lossy(&bytes)
                );
                refused += 1;
            }
        }
    }
    assert!(accepted > 1000 && refused > 50, "{accepted} {refused}");

    // A body is an object: the same fields as an array (which serde would read in order)
    // is refused (schemathesis found `[]` accepted as a token request).
    for op in operations(&doc).iter().filter(|op| op.has_body) {
        let (app, id) = fixture().await;
        let (values, good) = good_request(op, &id);
        let good: Value = serde_json::from_str(good.unwrap()).unwrap();
        let fields: Vec<Value> = good.as_object().unwrap().values().cloned().collect();
        for body in [serde_json::json!([]), Value::Array(fields)] {
            let uri = fill(&op.path, &values);
            let body = body.to_string();
            let (status, bytes) = send(
                &app,
                &op.method,
                &uri,
                Some(("application/json", &body)),
                true,
            )
            .await
            .unwrap();
            check(op, &body, status, &bytes);
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{} {uri} {body}",
                op.method
            );
        }
    }
}

/// `s` with one to three random edits (a character replaced, inserted or removed), from
/// the pattern's own characters and others: strings on both sides of a pattern's edge.
fn near(s: &str, extra: &[char], rng: &mut Rng) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let alphabet: Vec<char> = s
        .chars()
        .chain(extra.iter().copied())
        .chain(['!', ' ', '%', 'é', '.', '-', '_', '+', '/', '=', ':'])
        .collect();
    for _ in 0..=rng.below(3) {
        let c = *rng.pick(&alphabet);
        let at = rng.below(chars.len() as u64 + 1) as usize;
        match rng.below(3) {
            0 if at < chars.len() => chars[at] = c,
            1 if at < chars.len() => {
                chars.remove(at);
            }
            _ => chars.insert(at, c),
        }
    }
    chars.into_iter().collect()
}

/// Where a pattern is the handler's rule exactly (names, member references, token ids,
/// keys), strings near its edge answer 400 exactly when the pattern refuses them.
#[tokio::test]
async fn exact_patterns_are_exactly_the_handlers_rules() {
    use super::constraints::{KEY, MEMBER_NAME, MEMBER_REF, NETWORK_NAME, TOKEN_ID};
    let (app, id) = fixture().await;
    let key = private(1).public_key().to_base64();
    let seeds: &[(&str, &str, &[&str])] = &[
        (NETWORK_NAME, "/api/networks/{}", &["lab", "a-1", "0"]),
        (
            MEMBER_REF,
            "/api/networks/lab/members/{}/routes/10.244.3.0%2F24/approve",
            &["node-1", &key, "AAAAAAAA"],
        ),
        (TOKEN_ID, "/api/networks/lab/tokens/{}", &[&id, "a_b-C"]),
        (KEY, "/api/networks/lab/members?after={}", &[&key]),
        (TOKEN_ID, "/api/networks/lab/tokens?after={}", &[&id]),
    ];
    let mut rng = Rng::new(2);
    let mut seen = [0; 2];
    for (pattern, template, examples) in seeds {
        let re = regex::Regex::new(pattern).unwrap();
        let method = match *template {
            t if t.ends_with("/approve") => Method::POST,
            t if t.contains("/tokens/") => Method::DELETE,
            _ => Method::GET,
        };
        for _ in 0..400 {
            let start = match rng.below(2) {
                0 => (*rng.pick(examples)).to_owned(),
                _ => draw::from_regex(pattern, &mut rng),
            };
            let s = near(&start, &[], &mut rng);
            if s.is_empty() {
                continue;
            }
            let uri = template.replace("{}", &url_value(&Value::String(s.clone())));
            let (status, bytes) = send(&app, &method, &uri, None, true).await.unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!status.is_server_error(), "{uri}: {status} {text}");
            assert_eq!(
                status == StatusCode::BAD_REQUEST,
                !re.is_match(&s),
                "{method} {uri}: {status} {text}"
            );
            seen[usize::from(re.is_match(&s))] += 1;
        }
    }
    assert!(seen[0] > 200 && seen[1] > 200, "{seen:?}");

    // The body's names go through the same checks as the paths.
    let (network, member) = (
        regex::Regex::new(NETWORK_NAME).unwrap(),
        regex::Regex::new(MEMBER_NAME).unwrap(),
    );
    for _ in 0..2000 {
        let s = near(&draw::from_regex(NETWORK_NAME, &mut rng), &[], &mut rng);
        assert_eq!(
            crate::model::validate_network_name(&s).is_ok(),
            network.is_match(&s),
            "{s:?}"
        );
        let s = near(&draw::from_regex(MEMBER_NAME, &mut rng), &[], &mut rng);
        assert_eq!(
            crate::model::validate_member_name(&s).is_ok(),
            member.is_match(&s),
            "{s:?}"
        );
    }
}

/// The address patterns against the parsers behind the handlers: every IPv4 route is
/// matched exactly when it has no host bits; every value drawn from the route, network,
/// address and endpoint patterns parses (and is a valid overlay prefix, or an endpoint
/// peers can use).
#[test]
fn address_patterns_take_only_what_the_parsers_take() {
    use super::constraints::{endpoint, ip_address, network_cidr, route};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let mut rng = Rng::new(3);
    let route_re = regex::Regex::new(&route()).unwrap();
    for _ in 0..20_000 {
        let addr = Ipv4Addr::from(rng.next() as u32 >> rng.below(32));
        let len = rng.below(33);
        let text = format!("{addr}/{len}");
        assert_eq!(
            route_re.is_match(&text),
            crate::model::parse_route(&text).is_ok(),
            "{text}"
        );
    }
    for _ in 0..5_000 {
        let text = draw::from_regex(&route(), &mut rng);
        crate::model::parse_route(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let text = draw::from_regex(&network_cidr(), &mut rng);
        let cidr: ipnet::IpNet = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        crate::model::validate_network(cidr, crate::model::DEFAULT_MTU)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let text = draw::from_regex(&ip_address(), &mut rng);
        text.parse::<IpAddr>()
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let text = draw::from_regex(&endpoint(), &mut rng);
        let ep: SocketAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        let ip = ep.ip().to_canonical();
        assert!(
            ip.is_unspecified()
                || (ep.port() != 0 && !ip.is_multicast() && ip != IpAddr::V4(Ipv4Addr::BROADCAST)),
            "{text}"
        );
    }
    // What the patterns leave out on purpose: IPv6 spelled with fewer groups than the
    // prefix holds, embedded IPv4, and addresses that are not unicast.
    for (pattern, text) in [
        (route(), "10.244.3.1/24"),
        (route(), "10.244.3.0/33"),
        (route(), "fd00::1/8"),
        (network_cidr(), "10.9.8.0/31"),
        (network_cidr(), "fd00::/127"),
        (ip_address(), "10.9.8.300"),
        (endpoint(), "224.0.0.1:1"),
        (endpoint(), "255.255.255.255:1"),
        (endpoint(), "10.0.0.1:0"),
        (endpoint(), "[ff02::1]:1"),
        (endpoint(), "[::ffff:224.0.0.1]:1"),
        (endpoint(), "10.0.0.1:65536"),
    ] {
        assert!(
            !regex::Regex::new(&pattern).unwrap().is_match(text),
            "{text}"
        );
    }
}

/// The document's links: each names an operation that exists, gives exactly its path
/// parameters, from expressions that point into the source's own path or answer; and
/// followed from the network list, they reach the fixture's real member with 2xx answers
/// (so a tool that walks the document tests members that exist, not 404s).
#[tokio::test]
async fn links_name_real_operations_and_reach_real_members() {
    let doc = doc_json();
    let ops = operations(&doc);
    let by_id: BTreeMap<&str, &Value> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| (op["operationId"].as_str().unwrap(), op))
        .collect();
    let mut count = 0;
    for op in &ops {
        let raw = &doc["paths"][&op.path][op.method.as_str().to_ascii_lowercase()];
        for (status, response) in raw["responses"].as_object().unwrap() {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                count += 1;
                let what = format!("{} {} {status} → {name}", op.method, op.path);
                let target = by_id[link["operationId"].as_str().unwrap()];
                let wanted: BTreeSet<&str> = target["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                let given: BTreeSet<&str> = link["parameters"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                assert_eq!(given, wanted, "{what}");
                for expr in link["parameters"].as_object().unwrap().values() {
                    let expr = expr.as_str().unwrap();
                    if let Some(p) = expr.strip_prefix("$request.path.") {
                        assert!(op.path.contains(&format!("{{{p}}}")), "{what}: {expr}");
                    } else {
                        let pointer = expr.strip_prefix("$response.body#").expect(expr);
                        let mut schema =
                            draw::resolve(&doc, &response["content"]["application/json"]["schema"]);
                        for seg in pointer.split('/').skip(1) {
                            schema = if seg.parse::<usize>().is_ok() {
                                draw::resolve(&doc, &schema["items"])
                            } else {
                                draw::resolve(&doc, &schema["properties"][seg])
                            };
                            assert!(schema.is_object(), "{what}: {expr} at {seg}");
                        }
                        assert!(
                            schema["type"] == "string" || schema["type"][0] == "string",
                            "{what}: {expr}"
                        );
                    }
                }
            }
        }
    }
    assert!(count >= 20, "{count} links");

    // Followed from the network list: network → members → each member operation.
    let (app, _) = fixture().await;
    let follow = |op: &str, status: &str, link: &str| {
        let (path, method) = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(p, item)| {
                item.as_object()
                    .unwrap()
                    .iter()
                    .map(move |(m, o)| (p, m, o))
            })
            .find(|(_, _, o)| o["operationId"] == op)
            .map(|(p, m, _)| (p.clone(), m.clone()))
            .unwrap();
        doc["paths"][&path][&method]["responses"][status]["links"][link].clone()
    };
    let get = |v: &Value, ptr: &str| v.pointer(ptr).unwrap().as_str().unwrap().to_owned();
    let (_, bytes) = send(&app, &Method::GET, "/api/networks", None, true)
        .await
        .unwrap();
    let networks: Value = serde_json::from_slice(&bytes).unwrap();
    let link = follow("list_networks", "200", "ListMembers");
    let net = get(
        &networks,
        link["parameters"]["net"]
            .as_str()
            .unwrap()
            .trim_start_matches("$response.body#"),
    );
    assert_eq!(net, "lab");
    let uri = format!("/api/networks/{net}/members");
    let (status, bytes) = send(&app, &Method::GET, &uri, None, true).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let members: Value = serde_json::from_slice(&bytes).unwrap();
    let links = doc["paths"]["/api/networks/{net}/members"]["get"]["responses"]["200"]["links"]
        .as_object()
        .unwrap()
        .clone();
    // Deleting last: the other links use the member.
    let mut names: Vec<&String> = links.keys().collect();
    names.sort_by_key(|n| *n == "DeleteMember");
    for name in names {
        let link = &links[name];
        let target = link["operationId"].as_str().unwrap();
        let op = ops
            .iter()
            .find(|o| {
                doc["paths"][&o.path][o.method.as_str().to_ascii_lowercase()]["operationId"]
                    == target
            })
            .unwrap();
        let mut values = BTreeMap::new();
        for (p, expr) in link["parameters"].as_object().unwrap() {
            let expr = expr.as_str().unwrap();
            let v = match expr.strip_prefix("$response.body#") {
                Some(ptr) => get(&members, ptr),
                None => net.clone(),
            };
            values.insert(p.as_str(), url_value(&Value::String(v)));
        }
        let uri = fill(&op.path, &values);
        let body = op.has_body.then_some(("application/json", "{}"));
        let (status, bytes) = send(&app, &op.method, &uri, body, true).await.unwrap();
        assert!(
            status.is_success(),
            "{name}: {} {uri}: {status} {}",
            op.method,
            String::from_utf8_lossy(&bytes)
        );
        answer_conforms(&doc, op, status, &bytes);
    }
}

#[test]
fn the_example_policy_is_accepted() {
    let p = mesh_proto::policy::Policy::parse(super::constraints::EXAMPLE_POLICY).unwrap();
    assert_eq!((p.rules.len(), p.tests.len()), (2, 1));
}
