//! The admin side: one axum router ([`router_with`]) serving the JSON API ([`http`], its
//! OpenAPI document: [`openapi`]), the web dashboard ([`web`]) and `GET /metrics`
//! ([`metrics`]), over plain HTTP or TLS ([`https`]). What the routes share is in [`api`]
//! and [`error`]; the actor the audit log records, in [`audit`].
//!
//! Every request needs a credential except `GET /api/openapi.json` (the API's public
//! description) and the login page (`GET`/`POST /login`): either
//! `Authorization: Bearer <admin token>` (compared in constant time) or the session cookie
//! the login page sets. Cookie-authenticated requests are also checked against cross-site
//! request forgery ([`web`]). Without a credential, `/api/*` and `/metrics` answer 401 and
//! the pages redirect to `/login`.
//!
//! **Architecture Invariant:** the top layer: it builds on the control plane
//! ([`crate::control`]) and reads the UDP services' counters through it; nothing below
//! imports from here.

pub mod api;
pub mod audit;
pub mod error;
pub mod http;
pub mod https;
pub mod metrics;
pub mod openapi;
pub mod web;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest as _, Sha256};

use self::api::{token_matches, Api, Caller, HttpOptions, Web, BODY_LIMIT};
use self::error::{method_not_allowed, Failure};
use crate::control::audit::ACTOR;
use crate::control::state::Coordinator;

/// The admin API router with default [`HttpOptions`].
pub fn router(coord: Arc<Coordinator>, admin_token: &str) -> Router {
    router_with(coord, admin_token, HttpOptions::default())
}

/// The admin API and dashboard router.
pub fn router_with(coord: Arc<Coordinator>, admin_token: &str, opts: HttpOptions) -> Router {
    let coord_id = coord.id().to_owned();
    let api = Api {
        coord,
        token_hash: Sha256::digest(admin_token.as_bytes()).into(),
        web: Arc::new(Web::new(opts, admin_token, &coord_id)),
    };
    http::routes()
        // The dashboard's pages, assets, logout and change feed, behind the same check.
        .merge(web::protected_routes())
        .fallback(|| async { Failure(StatusCode::NOT_FOUND, "no such route".into()) })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        // Added after the credential check: the API's description is public
        // (`openapi`), and so is the login page.
        .route(openapi::PATH, get(openapi::serve))
        .merge(web::public_routes())
        .layer(middleware::from_fn(web::security_headers))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

/// The token of an `Authorization: Bearer <token>` value. The scheme name is
/// case-insensitive and followed by one or more spaces (RFC 9110 §11.1, §11.4).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Refuses requests without a credential: `/api/*` and `/metrics` with 401, pages with a
/// redirect to the login page. An `Authorization` header is judged alone (a wrong one is
/// not rescued by a cookie); a cookie session must also pass the CSRF checks.
async fn authenticate(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    let caller = match req.headers().get(header::AUTHORIZATION) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(bearer_token)
            .is_some_and(|t| token_matches(t, &api.token_hash))
            .then_some(Caller::Bearer),
        None => api.web.session_of(req.headers()),
    };
    let Some(caller) = caller else {
        return web::unauthenticated(req.uri().path());
    };
    if let Caller::Session { csrf, .. } = &caller {
        if let Err(refused) = web::check_browser_request(req.method(), req.headers(), csrf) {
            return refused.into_response();
        }
    }
    let actor = match &caller {
        Caller::Bearer => audit::ACTOR_API.to_owned(),
        Caller::Session { id, .. } => audit::session_actor(id),
    };
    req.extensions_mut().insert(caller);
    // The audit log's "who" for whatever this request changes.
    ACTOR.scope(actor, next.run(req)).await
}
