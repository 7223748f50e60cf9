//! The admin side's one failure answer: [`Failure`], a status and one line, sent as an
//! [`ApiError`] body; what a state [`Error`] maps to.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mesh_proto::admin::ApiError;

use crate::control::state::Error;
use crate::store::StoreError;

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
            // No quorum (or a race lost too often): nothing was written; retry later.
            Error::Store(StoreError::Unavailable(_) | StoreError::Conflict { .. }) => {
                tracing::warn!("admin request refused: {e}");
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Store(_) | Error::Random(_) => {
                tracing::error!("admin request failed: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Failure(status, e.to_string())
    }
}

/// The 401 answer.
pub(crate) fn unauthorized() -> Failure {
    Failure(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token (send Authorization: Bearer <contents of DIR/admin.token>)"
            .into(),
    )
}

/// The 405 answer.
pub(crate) async fn method_not_allowed() -> Failure {
    Failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route".into(),
    )
}
