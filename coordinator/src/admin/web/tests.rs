//! The dashboard through the router itself (`tower::ServiceExt::oneshot`), no sockets:
//! login and sessions, what answers without a credential, CSRF and origin checks, the
//! pages' headers and contents, the assets, and the change feed.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, Response, StatusCode};
use futures_util::StreamExt as _;
use mesh_proto::admin::ApiError;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::*;
use crate::admin::api::{token_matches, HttpOptions, SESSION_COOKIE};
use crate::admin::{router, router_with};
use crate::testutil::{hello, private, remote, Harness};

const TOKEN: &str = "test-admin-token-0123456789abcdefghijklmnopqrstuv";
const HOST: &str = "coord.test:8080";

struct App {
    h: Harness,
    app: axum::Router,
}

/// A logged-in browser: its cookie (`wm_session=…`) and the CSRF token of its page.
struct Browser {
    cookie: String,
    csrf: String,
}

impl App {
    fn new() -> App {
        let h = Harness::new();
        let app = router(h.coord.clone(), TOKEN);
        App { h, app }
    }

    fn with(opts: HttpOptions) -> App {
        let h = Harness::new();
        let app = router_with(h.coord.clone(), TOKEN, opts);
        App { h, app }
    }

    async fn send(&self, req: Request<Body>) -> Response<Body> {
        self.app.clone().oneshot(req).await.unwrap()
    }

    async fn login_with(&self, form: &str) -> Response<Body> {
        self.send(
            req(Method::POST, LOGIN_PATH)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form.to_owned()))
                .unwrap(),
        )
        .await
    }

    /// Logs in and loads the dashboard for its CSRF token.
    async fn login(&self) -> Browser {
        let res = self.login_with(&format!("token={TOKEN}")).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let set = set_cookie(&res).expect("a session cookie");
        let cookie = set.split(';').next().unwrap().to_owned();
        let res = self
            .send(
                req(Method::GET, "/")
                    .header(header::COOKIE, &cookie)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let page = text(res).await;
        let csrf = meta_csrf(&page).expect("a csrf meta tag");
        assert_eq!(csrf.len(), 43, "{csrf}");
        Browser { cookie, csrf }
    }

    /// A request with `b`'s cookie and, if given, an `X-CSRF-Token`.
    async fn as_browser(
        &self,
        b: &Browser,
        method: Method,
        path: &str,
        csrf: Option<&str>,
        json: Option<&str>,
    ) -> Response<Body> {
        let mut r = req(method, path).header(header::COOKIE, &b.cookie);
        if let Some(c) = csrf {
            r = r.header(CSRF_HEADER, c);
        }
        if json.is_some() {
            r = r.header(header::CONTENT_TYPE, "application/json");
        }
        self.send(
            r.body(Body::from(json.unwrap_or_default().to_owned()))
                .unwrap(),
        )
        .await
    }
}

/// A request as a browser sends it (with a `Host`).
fn req(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST)
}

fn set_cookie(res: &Response<Body>) -> Option<String> {
    res.headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn location(res: &Response<Body>) -> Option<&str> {
    res.headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap())
}

fn content_type(res: &Response<Body>) -> &str {
    res.headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

async fn text(res: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn api_error(res: Response<Body>) -> String {
    let body = text(res).await;
    serde_json::from_str::<ApiError>(&body)
        .unwrap_or_else(|e| panic!("not an ApiError ({e}): {body}"))
        .error
}

fn meta_csrf(page: &str) -> Option<String> {
    let tag = r#"<meta name="csrf-token" content=""#;
    let start = page.find(tag)? + tag.len();
    let len = page[start..].find('"')?;
    Some(page[start..start + len].to_owned())
}

#[tokio::test]
async fn login_sets_a_session_cookie() {
    for secure in [false, true] {
        let app = App::with(HttpOptions {
            closing: None,
            secure_cookies: secure,
        });
        // Surrounding whitespace (a pasted newline) is forgiven.
        let res = app.login_with(&format!("token=%20{TOKEN}%0A")).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), Some("/"));
        let cookie = set_cookie(&res).unwrap();
        let attrs: Vec<&str> = cookie.split("; ").collect();
        let (name, id) = attrs[0].split_once('=').unwrap();
        assert_eq!(name, SESSION_COOKIE);
        assert_eq!(
            id.len(),
            64,
            "48 bytes (expiry, origin, random, MAC) in base64url: {id}"
        );
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        for want in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(attrs.contains(&want), "{want} in {cookie}");
        }
        assert_eq!(attrs.contains(&"Secure"), secure, "{cookie}");

        // The session works, and the login page now sends to the dashboard.
        let b = app.login().await;
        let res = app
            .as_browser(&b, Method::GET, "/api/networks", None, None)
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = app
            .as_browser(&b, Method::GET, LOGIN_PATH, None, None)
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), Some("/"));

        // Logging out clears the cookie with the same attributes.
        let res = app
            .as_browser(&b, Method::POST, LOGOUT_PATH, Some(&b.csrf), None)
            .await;
        let cleared = set_cookie(&res).unwrap();
        assert!(cleared.starts_with("wm_session=;"), "{cleared}");
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
        assert_eq!(cleared.ends_with("; Secure"), secure, "{cleared}");
    }
}

#[tokio::test]
async fn a_wrong_token_gets_401_and_no_cookie() {
    let app = App::new();
    let near = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
    for (form, status) in [
        ("token=wrong".to_owned(), StatusCode::UNAUTHORIZED),
        (format!("token={near}"), StatusCode::UNAUTHORIZED),
        (format!("token={TOKEN}x"), StatusCode::UNAUTHORIZED),
        ("token=".to_owned(), StatusCode::UNAUTHORIZED),
        ("nope=1".to_owned(), StatusCode::BAD_REQUEST),
        (String::new(), StatusCode::BAD_REQUEST),
    ] {
        let res = app.login_with(&form).await;
        assert_eq!(res.status(), status, "{form}");
        assert!(set_cookie(&res).is_none(), "{form}");
        assert!(content_type(&res).starts_with("text/html"));
        let page = text(res).await;
        assert!(page.contains(r#"id="login-error""#), "{form}: {page}");
        assert!(page.contains(r#"<input id="token" name="token" type="password""#));
    }
    // A JSON body is not the form.
    let res = app
        .send(
            req(Method::POST, LOGIN_PATH)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!(r#"{{"token":"{TOKEN}"}}"#)))
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(&res).is_none());
    // The first visit shows no error.
    let res = app
        .send(req(Method::GET, LOGIN_PATH).body(Body::empty()).unwrap())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = text(res).await;
    assert!(
        !page.contains("login-error") && !page.contains("{{"),
        "{page}"
    );
    assert!(page.contains(r#"<button id="login-submit" type="submit""#));
    // The login page works without a script.
    assert!(!page.contains("<script"));
}

/// Every documented operation, with its path parameters filled in.
fn documented_operations() -> Vec<(Method, String)> {
    let doc: Value = serde_json::from_str(&crate::admin::openapi::json()).unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let filled: Vec<String> = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "x".to_owned()
                } else {
                    seg.to_owned()
                }
            })
            .collect();
        for method in item.as_object().unwrap().keys() {
            if let Ok(m) = method.to_ascii_uppercase().parse::<Method>() {
                ops.push((m, filled.join("/")));
            }
        }
    }
    assert!(ops.len() >= 16, "{ops:?}");
    ops
}

/// The page routes (method, path) besides the login page.
fn page_routes() -> Vec<(Method, String)> {
    let mut pages = vec![
        (Method::GET, "/".to_owned()),
        (Method::HEAD, "/".to_owned()),
        (Method::POST, LOGOUT_PATH.to_owned()),
        (Method::GET, "/no/such/page".to_owned()),
        (Method::GET, "/favicon.ico".to_owned()),
        (Method::GET, "/assets/nope.js".to_owned()),
    ];
    pages.extend(ASSETS.iter().map(|a| (Method::GET, a.path.to_owned())));
    pages
}

#[tokio::test]
async fn without_a_credential_pages_redirect_and_the_api_answers_401() {
    let app = App::new();
    let logged_out = {
        let b = app.login().await;
        let res = app
            .as_browser(&b, Method::POST, LOGOUT_PATH, Some(&b.csrf), None)
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        b.cookie
    };
    let mut api = documented_operations();
    api.extend(
        UNDOCUMENTED_API_ROUTES
            .iter()
            .map(|(m, p, _)| (m.parse().unwrap(), (*p).to_owned())),
    );
    api.push((Method::GET, "/api/no/such/route".to_owned()));
    api.push((Method::GET, "/api".to_owned()));
    let credentials: [Option<(header::HeaderName, String)>; 5] = [
        None,
        Some((header::COOKIE, format!("{SESSION_COOKIE}=nope"))),
        Some((
            header::COOKIE,
            format!("{SESSION_COOKIE}={}", "A".repeat(64)),
        )),
        Some((header::COOKIE, logged_out.clone())),
        Some((header::AUTHORIZATION, "Bearer wrong".to_owned())),
    ];
    for cred in &credentials {
        for (method, path) in &api {
            let mut r = req(method.clone(), path);
            if let Some((name, value)) = cred {
                r = r.header(name, value);
            }
            let res = app.send(r.body(Body::empty()).unwrap()).await;
            assert_eq!(
                res.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {cred:?}"
            );
            assert!(set_cookie(&res).is_none());
            assert!(api_error(res).await.contains("admin token"));
        }
        for (method, path) in page_routes() {
            let mut r = req(method.clone(), &path);
            if let Some((name, value)) = cred {
                r = r.header(name, value);
            }
            let res = app.send(r.body(Body::empty()).unwrap()).await;
            assert_eq!(
                res.status(),
                StatusCode::SEE_OTHER,
                "{method} {path} {cred:?}"
            );
            assert_eq!(location(&res), Some(LOGIN_PATH), "{method} {path}");
        }
    }
    // Public: the login page and the API's description.
    for path in [LOGIN_PATH, crate::admin::openapi::PATH] {
        let res = app
            .send(req(Method::GET, path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn cookie_requests_need_the_csrf_token() {
    let app = App::new();
    let b = app.login().await;
    let json = r#"{"name":"lab","cidr":"10.9.8.0/24"}"#;
    let body = Some(json);
    let other = app.login().await;
    assert_ne!(b.csrf, other.csrf);
    for csrf in [
        None,
        Some("wrong"),
        Some(""),
        Some(&other.csrf[..]),
        Some(&b.csrf[..42]),
    ] {
        let res = app
            .as_browser(&b, Method::POST, "/api/networks", csrf, body)
            .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{csrf:?}");
        assert_eq!(api_error(res).await, "missing or bad CSRF token");
    }
    assert!(app.h.coord.list_networks().await.is_empty());
    let res = app
        .as_browser(&b, Method::POST, "/api/networks", Some(&b.csrf), body)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // Every unsafe method, also on page routes; safe ones need no token.
    let res = app
        .as_browser(&b, Method::DELETE, "/api/networks/lab", None, None)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app
        .as_browser(&b, Method::POST, LOGOUT_PATH, None, None)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app
        .as_browser(&b, Method::GET, "/api/networks/lab", None, None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .as_browser(&b, Method::DELETE, "/api/networks/lab", Some(&b.csrf), None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // The bearer token needs none: a browser never sends it on its own.
    let res = app
        .send(
            req(Method::POST, "/api/networks")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json))
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn cross_origin_requests_are_refused() {
    let app = App::new();
    let b = app.login().await;
    let body = r#"{"name":"lab","cidr":"10.9.8.0/24"}"#;
    let post_from = |origin: Option<&str>, site: Option<&str>| {
        let mut r = req(Method::POST, "/api/networks")
            .header(header::COOKIE, &b.cookie)
            .header(CSRF_HEADER, &b.csrf)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        r.body(Body::from(body)).unwrap()
    };
    let post = |origin: &str| post_from(Some(origin), None);
    for origin in [
        "http://evil.example",
        "http://coord.test:8081",
        "https://coord.test",
        "http://coord.test",
        "null",
        "http://coord.test:8080.evil.example",
        "http://user@coord.test:8080",
        "",
    ] {
        let res = app.send(post(origin)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origin}");
        assert!(api_error(res).await.contains("cross-origin"), "{origin}");
    }
    // What the browser says about the request's site: another one is refused, also with a
    // matching Origin; `Origin: null` (a same-origin post under `no-referrer`) passes only
    // when the browser vouches it is same-origin.
    for (origin, site) in [
        (Some("http://coord.test:8080"), "cross-site"),
        (Some("http://coord.test:8080"), "same-site"),
        (None, "cross-site"),
        (None, "same-site"),
        (Some("null"), "cross-site"),
        (Some("null"), "same-site"),
        (Some("http://evil.example"), "same-origin"),
    ] {
        let res = app.send(post_from(origin, Some(site))).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origin:?} {site}");
    }
    // Reading is refused too.
    let res = app
        .send(
            req(Method::GET, "/api/networks")
                .header(header::COOKIE, &b.cookie)
                .header(header::ORIGIN, "http://evil.example")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // A login from another origin.
    let res = app
        .send(
            req(Method::POST, LOGIN_PATH)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::ORIGIN, "http://evil.example")
                .body(Body::from(format!("token={TOKEN}")))
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&res).is_none());
    // The same origin (case and the default port do not matter) passes.
    let res = app.send(post("HTTP://Coord.Test:8080")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app.send(post_from(Some("null"), Some("same-origin"))).await;
    assert_eq!(res.status(), StatusCode::CONFLICT, "passed the checks");
    let res = app.send(post_from(None, Some("same-origin"))).await;
    assert_eq!(res.status(), StatusCode::CONFLICT, "passed the checks");
    // What Chromium sends for the login form under `Referrer-Policy: no-referrer`.
    let res = app
        .send(
            req(Method::POST, LOGIN_PATH)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::ORIGIN, "null")
                .header("sec-fetch-site", "same-origin")
                .body(Body::from(format!("token={TOKEN}")))
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

#[test]
fn origins_match_their_host() {
    for (origin, host, same) in [
        ("http://a.test:8080", "a.test:8080", true),
        ("http://a.test", "a.test", true),
        ("http://a.test", "a.test:80", true),
        ("http://a.test:80", "a.test", true),
        ("https://a.test", "a.test:443", true),
        ("https://a.test", "a.test:80", false),
        ("http://[::1]:9000", "[::1]:9000", true),
        ("http://127.0.0.1:9000", "127.0.0.1:9000", true),
        ("http://127.0.0.1:9000", "127.0.0.1:9001", false),
        ("http://a.test:8080", "a.test:80", false),
        ("http://a.test:8080", "a.test:8080.b", false),
        ("ftp://a.test", "a.test", false),
        ("a.test", "a.test", false),
        ("http://", "", false),
        ("http://a.test/", "a.test", false),
        ("http://x@a.test", "a.test", false),
    ] {
        assert_eq!(same_origin(origin, host), same, "{origin} vs {host}");
    }
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = App::new();
    let b = app.login().await;
    let keep = app.login().await;
    let res = app
        .as_browser(&b, Method::POST, LOGOUT_PATH, Some(&b.csrf), None)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), Some(LOGIN_PATH));
    let res = app
        .as_browser(&b, Method::GET, "/api/networks", None, None)
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app.as_browser(&b, Method::GET, "/", None, None).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), Some(LOGIN_PATH));
    // Another session is untouched.
    let res = app
        .as_browser(&keep, Method::GET, "/api/networks", None, None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_dashboard_carries_its_csrf_token_and_the_security_headers() {
    let app = App::new();
    let b = app.login().await;
    let res = app
        .send(
            Request::builder()
                .uri("/")
                .header(header::HOST, "<b>evil</b>")
                .header(header::COOKIE, &b.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let headers = res.headers().clone();
    assert_eq!(content_type(&res), "text/html; charset=utf-8");
    let page = text(res).await;
    for (name, want) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        assert_eq!(headers.get(&name).unwrap(), want, "{name}");
    }
    assert_eq!(
        CSP,
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
         form-action 'self'"
    );
    assert_eq!(meta_csrf(&page).as_deref(), Some(b.csrf.as_str()));
    assert!(page.contains(env!("CARGO_PKG_VERSION")));
    assert!(page.contains("&lt;b&gt;evil&lt;/b&gt;") && !page.contains("<b>evil"));
    assert!(!page.contains("{{"));
    // Scripts only from files (the policy forbids inline ones).
    for tag in page.split("<script").skip(1) {
        let tag = &tag[..tag.find('>').unwrap()];
        assert!(tag.contains(r#"src="/assets/"#), "<script{tag}>");
    }
    for handler in [
        "onclick=",
        "onload=",
        "onsubmit=",
        "onerror=",
        "javascript:",
    ] {
        assert!(!page.contains(handler), "{handler}");
    }
    // The elements the browser test and the script rely on.
    for id in [
        "logout",
        "live",
        "error",
        "networks",
        "net-name",
        "net-cidr",
        "net-mtu",
        "net-create",
        "net-delete",
        "members",
        "member-counts",
        "member-search",
        "pending-more",
        "members-empty",
        "members-no-match",
        "members-pager",
        "members-prev",
        "members-page",
        "members-next",
        "tokens",
        "token-expiry",
        "token-reusable",
        "token-create",
        "token-created",
        "token-secret",
        "token-copy",
        "audit",
        "policy-summary",
        "policy-lines",
        "policy-doc",
        "policy-check",
        "policy-save",
        "policy-revert",
        "policy-remove",
        "policy-result",
        "policy-stale",
        "why-form",
        "why-from",
        "why-to",
        "why-port",
        "why-ask",
        "why-result",
        "effective",
        "effective-title",
        "effective-close",
        "effective-rows",
        "effective-note",
    ] {
        assert!(page.contains(&format!(r#"id="{id}""#)), "#{id}");
    }
    // The API carries the headers too.
    let res = app
        .as_browser(&b, Method::GET, "/api/networks", None, None)
        .await;
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "no-store"
    );
    assert_eq!(
        res.headers().get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
        "nosniff"
    );
    // A bearer caller gets the page with no CSRF token (it needs none).
    let res = app
        .send(
            req(Method::GET, "/")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(meta_csrf(&text(res).await).as_deref(), Some(""));
}

#[tokio::test]
async fn assets_are_served_with_their_content_types() {
    let app = App::new();
    let b = app.login().await;
    for (path, want) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let res = app.as_browser(&b, Method::GET, path, None, None).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(content_type(&res), want, "{path}");
        assert_eq!(
            res.headers().get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
            "nosniff"
        );
        let body = text(res).await;
        let asset = ASSETS.iter().find(|a| a.path == path).unwrap();
        assert_eq!(body, asset.body);
    }
    assert_eq!(ASSETS.len(), 3);
}

#[test]
fn assets_fetch_nothing_from_elsewhere() {
    let files = [
        ("index.html", INDEX_HTML),
        ("login.html", LOGIN_HTML),
        ("app.js", ASSETS[0].body),
        ("app.css", ASSETS[1].body),
        ("icon.svg", ASSETS[2].body),
    ];
    for (name, body) in files {
        // The SVG namespace is a name, not a fetch.
        let body = body.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for bad in ["http://", "https://", "//fonts.", "@import", "url("] {
            assert!(!body.contains(bad), "{name} contains {bad}");
        }
    }
    // Data from the API reaches the page as text only.
    let js = ASSETS[0].body;
    for bad in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(bad), "app.js uses {bad}");
    }
    assert!(js.contains("window.wmLoadedAt = Date.now()"));
    assert!(!js.contains("location.reload"));
}

/// The page never asks for every member of a network: members come a page at a time
/// (pending ones and authorised ones apart), within the API's limit, with the search.
#[test]
fn the_page_asks_for_members_a_page_at_a_time() {
    let js = ASSETS[0].body;
    assert!(
        js.contains("'/members?limit=' + PAGE + '&status=' + status"),
        "app.js lost its paged members request"
    );
    assert!(!js.contains("/members')"), "app.js asks for every member");
    let page: usize = js
        .split_once("var PAGE = ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map(|(n, _)| n.parse().unwrap())
        .expect("var PAGE = N; in app.js");
    assert!((1..=mesh_proto::admin::MAX_PAGE).contains(&page), "{page}");
    for uses in [
        "'&q=' + enc(state.query)",
        "'&after=' + enc(after)",
        "X-Total-Count",
    ] {
        assert!(js.contains(uses), "app.js does not use {uses}");
    }
}

/// Every request the script makes through `api(…)` and the paged members request: the
/// documented operation (method, path) and the call in app.js. A call the script gains
/// must be listed here, and each listed operation must be one the API documents (and so
/// serves: the OpenAPI tests hold the document and the router together).
const SCRIPT_REQUESTS: &[(&str, &str, &str)] = &[
    ("get", "/api/networks", "api('GET', '/api/networks')"),
    (
        "post",
        "/api/networks",
        "api('POST', '/api/networks', body)",
    ),
    (
        "delete",
        "/api/networks/{net}",
        "api('DELETE', '/api/networks/' + enc(net))",
    ),
    (
        "get",
        "/api/networks/{net}/members",
        "apiPage(membersPath(sel, ",
    ),
    (
        "post",
        "/api/networks/{net}/members/{node}/authorize",
        "api('POST', path + '/authorize')",
    ),
    (
        "post",
        "/api/networks/{net}/members/{node}/deauthorize",
        "api('POST', path + '/deauthorize')",
    ),
    (
        "patch",
        "/api/networks/{net}/members/{node}",
        "api('PATCH', path, {",
    ),
    (
        "delete",
        "/api/networks/{net}/members/{node}",
        "api('DELETE', path)",
    ),
    (
        "put",
        "/api/networks/{net}/members/{node}/tags",
        "api('PUT', path + '/tags', { tags: want })",
    ),
    (
        "get",
        "/api/networks/{net}/tokens",
        "api('GET', '/api/networks/' + enc(sel) + '/tokens')",
    ),
    (
        "post",
        "/api/networks/{net}/tokens",
        "api('POST', '/api/networks/' + enc(net) + '/tokens', body)",
    ),
    (
        "delete",
        "/api/networks/{net}/tokens/{id}",
        "api('DELETE', '/api/networks/' + enc(net) + '/tokens/' + enc(t.id))",
    ),
    ("get", "/api/audit", "api('GET', '/api/audit?limit=50')"),
    (
        "get",
        "/api/networks/{net}/policy",
        "api('GET', policyPath(sel))",
    ),
    (
        "put",
        "/api/networks/{net}/policy",
        "api('PUT', policyPath(net), { document: doc })",
    ),
    (
        "delete",
        "/api/networks/{net}/policy",
        "api('DELETE', policyPath(net))",
    ),
    (
        "post",
        "/api/networks/{net}/policy/check",
        "api('POST', policyPath(net) + '/check', { document: doc })",
    ),
    (
        "get",
        "/api/networks/{net}/policy/why",
        "api('GET', whyPath(net, ",
    ),
];

#[test]
fn the_script_asks_only_for_documented_operations() {
    let js = ASSETS[0].body;
    let doc: Value = serde_json::from_str(&crate::admin::openapi::json()).unwrap();
    let mut listed = 0;
    for (method, path, call) in SCRIPT_REQUESTS {
        let n = js.matches(call).count();
        assert!(n > 0, "app.js no longer has {call}");
        listed += n;
        assert!(
            doc["paths"][path][method].is_object(),
            "app.js calls {method} {path}, which the API does not document"
        );
    }
    let calls = js.matches("api('").count() + js.matches("apiPage(membersPath(").count();
    assert_eq!(
        calls, listed,
        "app.js makes a request SCRIPT_REQUESTS lacks"
    );
    // The helpers behind `path`, `policyPath`, `whyPath` and `membersPath` build the
    // paths named above.
    for helper in [
        "var path = memberPath(net, m);",
        "return '/api/networks/' + enc(net) + '/members/' + enc(urlKey(m['public-key']));",
        "return '/api/networks/' + enc(net) + '/policy';",
        "policyPath(net) + '/why?from=' + enc(from) + '&to=' + enc(to) + '&port=' + enc(port)",
        "var path = '/api/networks/' + enc(net) + '/members?limit=' + PAGE",
    ] {
        assert!(js.contains(helper), "app.js lost {helper}");
    }
    // The member table shows the filter in meshctl's words.
    for word in [
        "'-'",
        "'FAILED (' + f.error + ')'",
        "'current'",
        "'pending'",
    ] {
        assert!(js.contains(word), "app.js lost the filter word {word}");
    }
}

/// The policy panel's requests as the script sends them from a dashboard session (the
/// bodies, the member's key as `enc(urlKey(key))`, the CSRF header): check sets nothing, a
/// refused document answers 422 with the line the page marks and changes nothing, `why`
/// names the deciding rule's line, tags are replaced.
#[tokio::test]
async fn the_policy_panel_requests_work_from_a_session() {
    use mesh_proto::admin::{MemberView, PolicyView, WhyView};
    let app = App::new();
    app.h.network("lab").await;
    app.h
        .coord
        .admit(&hello("lab", &private(1), None), remote(1))
        .await
        .unwrap();
    let b = app.login().await;
    let key = private(1).public_key().to_base64();
    // encodeURIComponent of the URL-safe key, and of the key itself.
    let in_path = key.replace('+', "-").replace('/', "_").replace('=', "%3D");
    let in_query = key
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let send = |method: Method, path: String, csrf: bool, json: Option<String>| {
        let b = &b;
        let app = &app;
        async move {
            let csrf = csrf.then_some(b.csrf.as_str());
            app.as_browser(b, method, &path, csrf, json.as_deref())
                .await
        }
    };
    let policy = || async {
        let res = send(Method::GET, "/api/networks/lab/policy".into(), false, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        serde_json::from_str::<PolicyView>(&text(res).await).unwrap()
    };

    let res = send(
        Method::PUT,
        format!("/api/networks/lab/members/{in_path}/tags"),
        true,
        Some(r#"{"tags":["web","ops"]}"#.into()),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let m: MemberView = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(m.tags, ["ops", "web"]);

    let doc = r#"default = "allow"

[[rule]]
action = "deny"
from = ["tag:ops"]
to = ["*"]
ports = ["tcp/10250"]
"#;
    let body = |doc: &str| Some(serde_json::json!({ "document": doc }).to_string());
    let res = send(
        Method::POST,
        "/api/networks/lab/policy/check".into(),
        true,
        body(doc),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let checked: PolicyView = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!((checked.rules, checked.tests), (1, 0));
    assert_eq!(policy().await.document, None, "check set the policy");

    let res = send(
        Method::PUT,
        "/api/networks/lab/policy".into(),
        false,
        body(doc),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(policy().await.document, None);
    let res = send(
        Method::PUT,
        "/api/networks/lab/policy".into(),
        true,
        body(doc),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(policy().await.document.as_deref(), Some(doc));

    // An unknown group on line 5: refused with its line (what the page marks).
    let bad = doc.replace("tag:ops", "group:nope");
    let res = send(
        Method::PUT,
        "/api/networks/lab/policy".into(),
        true,
        body(&bad),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error = api_error(res).await;
    assert!(error.starts_with("policy line 5: "), "{error}");
    assert_eq!(policy().await.document.as_deref(), Some(doc));

    let res = send(
        Method::GET,
        format!("/api/networks/lab/policy/why?from={in_query}&to=tag%3Aweb&port=tcp%2F10250"),
        false,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let why: WhyView = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(
        (why.action, why.line),
        (mesh_proto::policy::Action::Deny, Some(3))
    );

    let res = send(
        Method::DELETE,
        "/api/networks/lab/policy".into(),
        true,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(policy().await.document, None);
}

/// Reads `body` until `want` has appeared `times` times or `within` passed; answers
/// what was read.
async fn read_until(
    body: &mut axum::body::BodyDataStream,
    seen: &mut String,
    want: &str,
    times: usize,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while seen.matches(want).count() < times {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) | Err(_) => return false,
        }
    }
    true
}

#[tokio::test]
async fn the_change_feed_reports_changes() {
    let app = App::new();
    let b = app.login().await;
    let res = app
        .as_browser(&b, Method::GET, EVENTS_PATH, None, None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(content_type(&res), "text/event-stream");
    let mut body = res.into_body().into_data_stream();
    let mut seen = String::new();
    // One on connect, so a client that reconnects refetches what it missed.
    assert!(
        read_until(
            &mut body,
            &mut seen,
            "event: change",
            1,
            Duration::from_secs(20)
        )
        .await,
        "{seen}"
    );
    // Nothing changes: no event for a while (the feed looks every second).
    assert!(
        !read_until(
            &mut body,
            &mut seen,
            "event: change",
            2,
            Duration::from_millis(2500)
        )
        .await,
        "{seen}"
    );
    app.h.network("lab").await;
    assert!(
        read_until(
            &mut body,
            &mut seen,
            "event: change",
            2,
            Duration::from_secs(20)
        )
        .await,
        "{seen}"
    );
    // Logging out ends the stream.
    let res = app
        .as_browser(&b, Method::POST, LOGOUT_PATH, Some(&b.csrf), None)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the feed outlived its session");

    // The bearer token opens it too.
    let res = app
        .send(
            req(Method::GET, EVENTS_PATH)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(content_type(&res), "text/event-stream");
}

/// The feed follows [`Coordinator::generation`]: a member coming online, which changes
/// nothing in the store, is an event; an idle coordinator sends none. (Virtual time: the
/// feed's ticks pass as soon as nothing else is runnable.)
#[tokio::test(start_paused = true)]
async fn the_change_feed_follows_the_generation() {
    let app = App::new();
    app.h.network("lab").await;
    app.h
        .coord
        .admit(&hello("lab", &private(1), None), remote(1))
        .await
        .unwrap();
    let res = app
        .send(
            req(Method::GET, EVENTS_PATH)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let mut body = res.into_body().into_data_stream();
    let mut seen = String::new();
    let within = Duration::from_secs(5);
    assert!(read_until(&mut body, &mut seen, "event: change", 1, within).await);
    assert!(
        seen.contains(&format!("data: {}", app.h.coord.generation())),
        "{seen}"
    );
    assert!(!read_until(&mut body, &mut seen, "event: change", 2, within).await);
    let session = app
        .h
        .coord
        .register_session("lab", &private(1).public_key());
    assert!(read_until(&mut body, &mut seen, "event: change", 2, within).await);
    drop(session);
    assert!(read_until(&mut body, &mut seen, "event: change", 3, within).await);
    assert!(!read_until(&mut body, &mut seen, "event: change", 4, within).await);
}

#[test]
fn html_is_escaped() {
    assert_eq!(
        escape_html(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    let page = render_login(Some("<script>alert(1)</script>"));
    assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"));
}

#[test]
fn the_token_check_compares_digests() {
    let hash: [u8; 32] = Sha256::digest(TOKEN.as_bytes()).into();
    assert!(token_matches(TOKEN, &hash));
    let near = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
    let far = "Z".repeat(TOKEN.len());
    for wrong in [
        near.as_str(),
        far.as_str(),
        "",
        &TOKEN[..TOKEN.len() - 1],
        &format!("{TOKEN}x"),
        &TOKEN.to_uppercase(),
    ] {
        assert!(!token_matches(wrong, &hash), "{wrong}");
    }
}

/// Median nanoseconds per call of `token_matches` for `a` and for `b`, measured in
/// interleaved batches (so drift in machine load hits both alike).
fn medians(a: &str, b: &str, hash: &[u8; 32]) -> (f64, f64) {
    const BATCHES: usize = 401;
    const PER_BATCH: u32 = 200;
    let time = |guess: &str| {
        let start = std::time::Instant::now();
        for _ in 0..PER_BATCH {
            std::hint::black_box(token_matches(
                std::hint::black_box(guess),
                std::hint::black_box(hash),
            ));
        }
        start.elapsed().as_nanos() as f64 / f64::from(PER_BATCH)
    };
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for i in 0..BATCHES {
        // Alternate which goes first.
        if i % 2 == 0 {
            ta.push(time(a));
            tb.push(time(b));
        } else {
            tb.push(time(b));
            ta.push(time(a));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(ta), median(tb))
}

/// The time of a failed check does not depend on how much of the token was guessed.
/// Both sides are hashed first, so the comparison sees two unrelated 32-byte digests
/// either way, and `ct_eq` reads all of them. Medians of many interleaved batches keep
/// this stable on a loaded machine; the bound (2x) is far above the noise and far below
/// what an early-exit comparison of a 48-byte prefix would show against a long input.
#[test]
fn the_token_check_takes_as_long_for_a_near_miss_as_for_a_far_one() {
    let hash: [u8; 32] = Sha256::digest(TOKEN.as_bytes()).into();
    let near = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
    let far = "Z".repeat(TOKEN.len());
    // Warm up.
    medians(&near, &far, &hash);
    let mut ratios = Vec::new();
    for _ in 0..3 {
        let (n, f) = medians(&near, &far, &hash);
        let ratio = n / f;
        if (0.5..2.0).contains(&ratio) {
            return;
        }
        ratios.push(ratio);
    }
    panic!("near/far time ratios {ratios:?} outside 0.5..2.0");
}

/// The audit log tells the API from the dashboard, and one dashboard session from another,
/// without writing a session id (a credential) into the log.
#[tokio::test]
async fn the_audit_log_names_the_way_in() {
    let app = App::new();
    let one = app.login().await;
    let two = app.login().await;
    let create = |name: &str| format!(r#"{{"name":"{name}","cidr":"10.9.8.0/24"}}"#);
    for (b, name) in [(&one, "by-one"), (&two, "by-two")] {
        let res = app
            .as_browser(
                b,
                Method::POST,
                "/api/networks",
                Some(&b.csrf),
                Some(&create(name)),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let res = app
        .send(
            req(Method::DELETE, "/api/networks/by-one")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let log = app.h.coord.audit(10).await;
    let actor = |action: &str, target: &str| {
        log.iter()
            .find(|e| e.action == action && e.target == target)
            .map(|e| e.actor.clone())
            .unwrap_or_else(|| panic!("no {action} {target} in {log:?}"))
    };
    let (a1, a2) = (
        actor("network.create", "by-one"),
        actor("network.create", "by-two"),
    );
    for a in [&a1, &a2] {
        let hex = a
            .strip_prefix("admin-token/dashboard-")
            .unwrap_or_else(|| panic!("{a}"));
        assert!(
            hex.len() == 8 && hex.bytes().all(|c| c.is_ascii_hexdigit()),
            "{a}"
        );
    }
    assert_ne!(a1, a2, "two sessions, one actor");
    for b in [&one, &two] {
        let id = b.cookie.split_once('=').unwrap().1;
        assert!(!a1.contains(id) && !a2.contains(id));
    }
    assert_eq!(
        actor("network.delete", "by-one"),
        crate::admin::audit::ACTOR_API
    );
}

/// A graceful shutdown does not wait for open dashboards: their feeds end when the server
/// starts closing (or drops the closing channel), though the sessions are still live.
#[tokio::test]
async fn change_feeds_end_when_the_server_closes() {
    for drop_sender in [false, true] {
        let (closing, rx) = tokio::sync::watch::channel(false);
        let app = App::with(HttpOptions {
            secure_cookies: false,
            closing: Some(rx),
        });
        let b = app.login().await;
        let res = app
            .as_browser(&b, Method::GET, EVENTS_PATH, None, None)
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let mut body = res.into_body().into_data_stream();
        let mut seen = String::new();
        assert!(
            read_until(
                &mut body,
                &mut seen,
                "event: change",
                1,
                Duration::from_secs(20)
            )
            .await,
            "{seen}"
        );
        if drop_sender {
            drop(closing);
        } else {
            closing.send(true).unwrap();
        }
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(chunk) = body.next().await {
                chunk.unwrap();
            }
        })
        .await;
        assert!(ended.is_ok(), "the feed outlived the server's closing");
        // The session itself is untouched.
        let res = app
            .as_browser(&b, Method::GET, "/api/networks", None, None)
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}
