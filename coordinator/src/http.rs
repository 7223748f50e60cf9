//! The admin HTTP API: exactly the route table of [`mesh_proto::admin`], JSON in and out,
//! `Authorization: Bearer <admin token>` on every request (compared in constant time).
//!
//! Every failure answers with an [`ApiError`] body: 401 without the right token, 400 for
//! a malformed body or path, 404 for an unknown network/member/token/route, 405 for a wrong
//! method, 409 for conflicts (address taken, duplicate network, ambiguous member), 415
//! without a JSON content type. A 5xx means the coordinator itself failed (storage).

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use mesh_proto::admin::{ApiError, CreateNetwork, CreateToken, UpdateMember};
use mesh_proto::control::ct_eq;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use crate::state::{Coordinator, Error};

/// An error answer: a status and one line.
#[derive(Debug)]
pub struct Failure(pub StatusCode, pub String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut res = (self.0, Json(ApiError { error: self.1 })).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let status = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Store(_) | Error::Random(_) => {
                tracing::error!("admin request failed: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Failure(status, e.to_string())
    }
}

/// A JSON body whose rejection is an [`ApiError`].
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a JSON body (Content-Type: application/json)".into(),
            )),
            Err(e) => Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("bad request body: {}", e.body_text().replace('\n', " ")),
            )),
        }
    }
}

/// Largest admin request body.
const BODY_LIMIT: usize = 64 * 1024;

/// Like [`Body`], but an empty body means `T::default()` (`POST …/tokens` with no options).
struct BodyOrDefault<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for BodyOrDefault<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
            Failure(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            )
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(BodyOrDefault(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        let Body(v) = Body::from_request(req, state).await?;
        Ok(BodyOrDefault(v))
    }
}

/// Path parameters whose rejection is an [`ApiError`].
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Params(v)),
            Err(e) => {
                let status = match e {
                    PathRejection::FailedToDeserializePathParams(_) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                Err(Failure(status, format!("bad path: {}", e.body_text())))
            }
        }
    }
}

#[derive(Clone)]
struct Api {
    coord: Arc<Coordinator>,
    token_hash: [u8; 32],
}

/// The admin API router.
pub fn router(coord: Arc<Coordinator>, admin_token: &str) -> Router {
    let api = Api {
        coord,
        token_hash: Sha256::digest(admin_token.as_bytes()).into(),
    };
    Router::new()
        .route("/api/networks", get(list_networks).post(create_network))
        .route(
            "/api/networks/{net}",
            get(get_network).delete(delete_network),
        )
        .route("/api/networks/{net}/members", get(list_members))
        .route(
            "/api/networks/{net}/members/{node}",
            patch(update_member).delete(delete_member),
        )
        .route(
            "/api/networks/{net}/members/{node}/authorize",
            post(authorize),
        )
        .route(
            "/api/networks/{net}/members/{node}/deauthorize",
            post(deauthorize),
        )
        .route(
            "/api/networks/{net}/members/{node}/routes/{prefix}/approve",
            post(approve_route),
        )
        .route(
            "/api/networks/{net}/members/{node}/routes/{prefix}",
            axum::routing::delete(unapprove_route),
        )
        .route(
            "/api/networks/{net}/tokens",
            get(list_tokens).post(create_token),
        )
        .route(
            "/api/networks/{net}/tokens/{id}",
            axum::routing::delete(revoke_token),
        )
        .fallback(|| async { Failure(StatusCode::NOT_FOUND, "no such route".into()) })
        .method_not_allowed_fallback(|| async {
            Failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route".into(),
            )
        })
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

/// Refuses requests without the admin token. Both sides are hashed first so the
/// comparison takes the same time whatever the length of what was sent.
async fn authenticate(State(api): State<Api>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = presented.is_some_and(|t| ct_eq(&Sha256::digest(t.as_bytes()), &api.token_hash));
    if !ok {
        return Failure(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (send Authorization: Bearer <contents of DIR/admin.token>)"
                .into(),
        )
        .into_response();
    }
    next.run(req).await
}

type Answer<T> = Result<T, Failure>;

async fn list_networks(State(api): State<Api>) -> impl IntoResponse {
    Json(api.coord.list_networks().await)
}

async fn create_network(
    State(api): State<Api>,
    Body(req): Body<CreateNetwork>,
) -> Answer<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(api.coord.create_network(req).await?),
    ))
}

async fn get_network(
    State(api): State<Api>,
    Params(net): Params<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.get_network(&net).await?))
}

async fn delete_network(State(api): State<Api>, Params(net): Params<String>) -> Answer<StatusCode> {
    api.coord.delete_network(&net).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_members(
    State(api): State<Api>,
    Params(net): Params<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.list_members(&net).await?))
}

async fn update_member(
    State(api): State<Api>,
    Params((net, node)): Params<(String, String)>,
    Body(req): Body<UpdateMember>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.update_member(&net, &node, req).await?))
}

async fn authorize(
    State(api): State<Api>,
    Params((net, node)): Params<(String, String)>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.authorize(&net, &node).await?))
}

async fn deauthorize(
    State(api): State<Api>,
    Params((net, node)): Params<(String, String)>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.deauthorize(&net, &node).await?))
}

async fn approve_route(
    State(api): State<Api>,
    Params((net, node, prefix)): Params<(String, String, String)>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.approve_route(&net, &node, &prefix).await?))
}

async fn unapprove_route(
    State(api): State<Api>,
    Params((net, node, prefix)): Params<(String, String, String)>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.unapprove_route(&net, &node, &prefix).await?))
}

async fn delete_member(
    State(api): State<Api>,
    Params((net, node)): Params<(String, String)>,
) -> Answer<StatusCode> {
    api.coord.delete_member(&net, &node).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tokens(
    State(api): State<Api>,
    Params(net): Params<String>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.list_tokens(&net).await?))
}

async fn create_token(
    State(api): State<Api>,
    Params(net): Params<String>,
    BodyOrDefault(req): BodyOrDefault<CreateToken>,
) -> Answer<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(api.coord.create_token(&net, req).await?),
    ))
}

async fn revoke_token(
    State(api): State<Api>,
    Params((net, id)): Params<(String, String)>,
) -> Answer<StatusCode> {
    api.coord.revoke_token(&net, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests;
