//! The admin web dashboard: a small console for networks, members, join tokens, the
//! policy and the audit log, served by the admin router ([`crate::admin::router_with`])
//! beside the JSON API it uses ([`crate::admin::http`]).
//!
//! Everything is in the binary: the pages, the stylesheet and the script are files under
//! `src/web/assets/` taken in with `include_str!` (plain HTML, CSS and JavaScript: no
//! build step, nothing fetched from elsewhere). The script renders what the JSON API
//! answers, with `textContent` only (names come from nodes: never markup), and refetches
//! when the change feed says something changed. Members come a page at a time (pending
//! ones first, then 100 authorised ones, with previous/next and a search box: the API's
//! `limit`, `after`, `q` and `status`), so a network of 10 000 members is never fetched
//! whole.
//!
//! **Policy** (issue 13). Members carry their tags (edited in a prompt, `PUT …/tags`) and
//! the state of the policy filter they run, in meshctl's words (`current`, `pending`,
//! `FAILED (reason)`, `-`). The policy panel edits the network's document in a text box:
//! Check (`POST …/policy/check`), Save (`PUT`) and Remove (`DELETE`, confirmed) answer in
//! the panel, and a refused document's error names a line, which the line numbers beside
//! the text mark; nothing is changed on the coordinator. The editor follows the stored
//! document until the user edits it, then keeps the edits (Revert drops them). A "why"
//! form asks `GET …/policy/why`; a member's Rules button asks it, for one port, from that
//! member to each other authorised member on the page and back: its effective rules, by
//! the same compiled rules the members enforce (a few requests at a time, asked again when
//! the document or the tags involved change). Every request the script makes is one the
//! OpenAPI document lists (checked by the tests).
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/login` | login form (public; inline CSS, no script) |
//! | POST | `/login` | form field `token`: the admin token → session cookie, 303 to `/` |
//! | POST | `/logout` | ends the session, clears the cookie, 303 to `/login` |
//! | GET | `/` | the dashboard, rendered per request with the session's CSRF token |
//! | GET | `/assets/…` | [`ASSETS`]: script, stylesheet, icon |
//! | GET | `/api/events` | server-sent events: `event: change` whenever what the dashboard shows changed |
//!
//! **Sessions** (kept in `Web`, beside the state every route shares: [`crate::admin::api`]).
//! A successful login makes a session: its expiry, this coordinator's tag, 16 random bytes
//! and a MAC with a key derived from the admin token (base64url, 64 characters) as the id,
//! in the `wm_session` cookie (`HttpOnly; SameSite=Strict; Path=/`, `Secure` with
//! [`HttpOptions::secure_cookies`](crate::admin::api::HttpOptions::secure_cookies)), and a
//! CSRF token derived from the id with the same key (32 bytes). This coordinator's own
//! sessions live in its memory (a restart logs them out), expire after
//! [`SESSION_TTL`](crate::admin::api::SESSION_TTL), and are bounded to
//! [`MAX_SESSIONS`](crate::admin::api::MAX_SESSIONS) (the oldest is evicted); the map is
//! keyed by the SHA-256 of the id. A session another coordinator of the set made is good
//! here until it expires, unless logged out here ([`crate::admin::api`]'s `Sessions`).
//!
//! **CSRF.** A cookie is an ambient credential, so a cookie-authenticated request is
//! refused (403) when the browser says it comes from another site (an `Origin` whose host
//! and port differ from the `Host`, or a `Sec-Fetch-Site` other than `same-origin`/`none`;
//! see `check_origin` for `Origin: null`), and, unless its method is GET, HEAD or
//! OPTIONS, when its `X-CSRF-Token` header is not the session's token (compared in
//! constant time). The page learns the token from a `<meta name="csrf-token">` in the HTML
//! served to that session. The login form gets the same origin check. A bearer token is
//! not ambient (a browser never adds it on its own), so bearer requests skip these checks.
//!
//! **Change feed.** Per connected client, every second: [`Coordinator::generation`], a
//! counter that moves whenever anything the admin API shows changed (a few atomic
//! operations, so open dashboards cost the same on a network of 10 000 members as on one
//! of three); a `change`
//! event when it differs from the last one sent (one right away on connect), a keep-alive
//! comment every 15 s. Polling keeps it bounded (at most one event per second per client,
//! whatever the rate of changes); the stream ends when the session does. The page then
//! refetches what it shows: one page of members, never all of them. The feed is not JSON,
//! so it is not in the OpenAPI document ([`UNDOCUMENTED_API_ROUTES`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{Extension, Form, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream::Stream;
use mesh_proto::control::ct_eq;
use sha2::{Digest as _, Sha256};
use tokio::time::{Instant, MissedTickBehavior};

use crate::admin::api::{digest, token_matches, Api, Caller, Web};
use crate::admin::error::{method_not_allowed, unauthorized, Failure};
use crate::control::state::Coordinator;

/// The login page.
pub const LOGIN_PATH: &str = "/login";
/// Ends the session.
pub const LOGOUT_PATH: &str = "/logout";
/// The change feed.
pub const EVENTS_PATH: &str = "/api/events";
/// The header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How often the change feed looks for changes.
pub const FEED_PERIOD: Duration = Duration::from_secs(1);
/// The Content-Security-Policy of every answer: nothing but this origin, no inline
/// script, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

/// Routes under `/api` that are deliberately not in the OpenAPI document (method, path,
/// why). The OpenAPI tests check each is served, behind the credential check, and absent
/// from the document.
pub const UNDOCUMENTED_API_ROUTES: &[(&str, &str, &str)] = &[(
    "GET",
    EVENTS_PATH,
    "server-sent events (text/event-stream), the dashboard's change feed: not JSON",
)];

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Where it is served.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its contents.
    pub body: &'static str,
}

/// The dashboard's static files (behind the session like the pages).
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("web/assets/app.js"),
    },
    Asset {
        path: "/assets/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("web/assets/app.css"),
    },
    Asset {
        path: "/assets/icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("web/assets/icon.svg"),
    },
];

/// The dashboard page; `{{csrf}}`, `{{version}}` and `{{host}}` are filled per request.
const INDEX_HTML: &str = include_str!("web/assets/index.html");
/// The login page; `{{version}}` and `{{error}}` are filled per request.
const LOGIN_HTML: &str = include_str!("web/assets/login.html");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const HTML: &str = "text/html; charset=utf-8";

/// The answer to a request without a credential: 401 for the API and the metrics, a
/// redirect to the login page for everything else (pages, assets, unknown paths).
pub(crate) fn unauthenticated(path: &str) -> Response {
    let api = path == "/api"
        || path.starts_with("/api/")
        || path == "/metrics"
        || path.starts_with("/metrics/");
    if api {
        unauthorized().into_response()
    } else {
        Redirect::to(LOGIN_PATH).into_response()
    }
}

/// The CSRF checks of a cookie-authenticated request: same origin if an `Origin` is
/// sent, and the session's token in `X-CSRF-Token` unless the method is safe.
pub(crate) fn check_browser_request(
    method: &Method,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(), Failure> {
    check_origin(headers)?;
    if [Method::GET, Method::HEAD, Method::OPTIONS].contains(method) {
        return Ok(());
    }
    let sent = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes);
    // Digests: fixed length, so the comparison time says nothing about the token.
    let ok = sent.is_some_and(|s| ct_eq(&Sha256::digest(s), &digest(csrf)));
    if ok {
        Ok(())
    } else {
        Err(Failure(
            StatusCode::FORBIDDEN,
            "missing or bad CSRF token".into(),
        ))
    }
}

/// Refuses a request a browser made on behalf of another site (like Go's
/// `http.CrossOriginProtection`):
///
/// - `Sec-Fetch-Site` (sent by current browsers), when present, must be `same-origin` or
///   `none` (the user typed the address);
/// - `Origin`, when present, must name the origin of the `Host` the request was sent to.
///   `Origin: null` names none: browsers send it for the page's own form posts and
///   fetches under `Referrer-Policy: no-referrer` (the dashboard's policy), and also for
///   sandboxed frames and cross-origin redirects. It passes only when `Sec-Fetch-Site`
///   vouches that the request is same-origin.
fn check_origin(headers: &HeaderMap) -> Result<(), Failure> {
    let refused = || {
        Failure(
            StatusCode::FORBIDDEN,
            "cross-origin request refused (Origin or Sec-Fetch-Site names another site)".into(),
        )
    };
    let vouched = match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
        None => false,
        Some(b"same-origin" | b"none") => true,
        Some(_) => return Err(refused()),
    };
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    if origin.as_bytes() == b"null" {
        return if vouched { Ok(()) } else { Err(refused()) };
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let same = match (origin.to_str(), host) {
        (Ok(origin), Some(host)) => same_origin(origin, host),
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(refused())
    }
}

/// Whether `origin` (`scheme://host[:port]`) names `host` (`host[:port]`), default
/// ports of the origin's scheme being implied.
pub(crate) fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return false;
    }
    let norm = |a: &str| {
        let a = a.to_ascii_lowercase();
        match a.strip_suffix(default) {
            Some(h) => h.to_owned(),
            None => a,
        }
    };
    norm(authority) == norm(host)
}

/// Adds the security headers to every answer: pages, assets, API.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `<`, `>`, `&`, `"` and `'` as entities.
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HTML)], body).into_response()
}

/// The routes behind the credential check.
pub(crate) fn protected_routes() -> Router<Api> {
    let mut r = Router::new()
        .route("/", get(dashboard))
        .route(LOGOUT_PATH, post(logout))
        .route(EVENTS_PATH, get(events));
    for asset in ASSETS {
        r = r.route(
            asset.path,
            get(move || async move { ([(header::CONTENT_TYPE, asset.content_type)], asset.body) }),
        );
    }
    r
}

/// The login page (public).
pub(crate) fn public_routes() -> Router<Api> {
    Router::new().route(
        LOGIN_PATH,
        get(login_page).post(login).fallback(method_not_allowed),
    )
}

fn render_login(error: Option<&str>) -> String {
    let error = error
        .map(|e| {
            format!(
                r#"<p id="login-error" class="error" role="alert">{}</p>"#,
                escape_html(e)
            )
        })
        .unwrap_or_default();
    LOGIN_HTML
        .replace("{{version}}", VERSION)
        .replace("{{error}}", &error)
}

/// `GET /login`: the form, or straight to the dashboard with a live session.
async fn login_page(State(api): State<Api>, headers: HeaderMap) -> Response {
    if api.web.session_of(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    html(StatusCode::OK, render_login(None))
}

/// The login form.
#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /login`: the admin token in, a session cookie out.
async fn login(
    State(api): State<Api>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if let Err(refused) = check_origin(&headers) {
        return refused.into_response();
    }
    let Ok(Form(form)) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            render_login(Some("expected a form with the admin token")),
        );
    };
    if !token_matches(form.token.trim(), &api.token_hash) {
        return html(
            StatusCode::UNAUTHORIZED,
            render_login(Some("wrong admin token")),
        );
    }
    let created = api.web.sessions().create(Instant::now());
    match created {
        Ok((id, _csrf)) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_owned()),
                (header::SET_COOKIE, api.web.cookie(&id)),
            ],
        )
            .into_response(),
        Err(e) => {
            tracing::error!("making a dashboard session: {e}");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                render_login(Some("the coordinator could not make a session")),
            )
        }
    }
}

/// `POST /logout`: ends the session (CSRF-checked like every cookie request).
async fn logout(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    if let Caller::Session { id, .. } = &caller {
        api.web.sessions().remove(id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, LOGIN_PATH.to_owned()),
            (header::SET_COOKIE, api.web.clear_cookie()),
        ],
    )
        .into_response()
}

/// `GET /`: the dashboard, with this session's CSRF token (empty for a bearer caller,
/// which needs none).
async fn dashboard(Extension(caller): Extension<Caller>, headers: HeaderMap) -> Response {
    let csrf = match &caller {
        Caller::Session { csrf, .. } => csrf.as_str(),
        Caller::Bearer => "",
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let page = INDEX_HTML
        .replace("{{csrf}}", &escape_html(csrf))
        .replace("{{version}}", VERSION)
        .replace("{{host}}", &escape_html(host));
    html(StatusCode::OK, page)
}

/// One client's change feed.
struct Feed {
    coord: Arc<Coordinator>,
    web: Arc<Web>,
    /// The session it belongs to (none for a bearer caller).
    session: Option<String>,
    tick: tokio::time::Interval,
    /// The [`Coordinator::generation`] of the last event sent.
    last: Option<u64>,
    /// [`HttpOptions::closing`](crate::admin::api::HttpOptions::closing).
    closing: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Resolves when the server starts closing (never without a `closing` channel).
async fn closed(closing: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match closing {
        Some(rx) => crate::admin::https::stopped(rx).await,
        None => std::future::pending().await,
    }
}

/// The change feed's events: a `change` whenever [`Coordinator::generation`] moves; ends
/// with the session or when the server closes.
fn feed(mut f: Feed) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    f.tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    futures_util::stream::unfold(f, |mut f| async move {
        loop {
            tokio::select! {
                _ = f.tick.tick() => {}
                () = closed(&mut f.closing) => return None,
            }
            if let Some(id) = &f.session {
                if !f.web.is_live(id) {
                    return None;
                }
            }
            let now = f.coord.generation();
            if f.last != Some(now) {
                f.last = Some(now);
                let event = Event::default().event("change").data(now.to_string());
                return Some((Ok(event), f));
            }
        }
    })
}

/// `GET /api/events`: the change feed.
async fn events(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    let session = match caller {
        Caller::Session { id, .. } => Some(id),
        Caller::Bearer => None,
    };
    let stream = feed(Feed {
        coord: api.coord.clone(),
        web: api.web.clone(),
        session,
        tick: tokio::time::interval(FEED_PERIOD),
        last: None,
        closing: api.web.closing(),
    });
    let sse = Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    );
    // Proxies (nginx) must not buffer the stream.
    ([("x-accel-buffering", "no")], sse).into_response()
}

#[cfg(test)]
mod tests;
