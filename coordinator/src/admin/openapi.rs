//! The admin API's OpenAPI 3 document, generated from the handlers' `utoipa::path`
//! annotations (in [`crate::admin::http`]) and the `ToSchema` derives of [`mesh_proto::admin`]
//! (its `openapi` feature), so it cannot drift from the code by hand-copying.
//!
//! It is served at `GET /api/openapi.json` **without** the admin token: it describes the
//! API's shape and carries no data, and tools (Swagger UI, code generators) fetch it
//! without credentials. Every operation in it requires the `bearer` scheme.
//!
//! It documents the JSON API only. Left out on purpose: the dashboard's pages, assets,
//! login and logout ([`crate::admin::web`]: HTML, not part of the API), and the `/api` routes in
//! [`crate::admin::web::UNDOCUMENTED_API_ROUTES`] (the change feed: server-sent events, not
//! JSON); the tests check that list against the document.
//!
//! [`constraints`] adds what the annotations cannot say: the patterns, lengths and bounds
//! of every input, exactly as the handlers check them, examples that name the README's
//! network, and links from each answer to the operations on what it names.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::admin::http;

pub mod constraints;

/// Path of the document.
pub const PATH: &str = "/api/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wiremesh coordinator admin API",
        description = "Networks, members, routes and join tokens of a wiremesh coordinator. \
            Every operation needs `Authorization: Bearer <admin token>`; every failure \
            answers with an `ApiError` body."
    ),
    paths(
        http::list_networks,
        http::create_network,
        http::get_network,
        http::delete_network,
        http::list_members,
        http::update_member,
        http::authorize,
        http::deauthorize,
        http::delete_member,
        http::approve_route,
        http::unapprove_route,
        http::list_tokens,
        http::create_token,
        http::revoke_token,
        http::policy::get_policy,
        http::policy::set_policy,
        http::policy::clear_policy,
        http::policy::check_policy,
        http::policy::why,
        http::policy::set_tags,
        http::audit,
        http::metrics,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// Adds the `bearer` security scheme.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the contents of DIR/admin.token"))
                    .build(),
            ),
        );
    }
}

/// The document as the annotations make it, without [`constraints`].
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as JSON (what `GET /api/openapi.json` answers): [`document`] with
/// [`constraints::apply`]'s patterns, bounds, examples and links. Made once.
///
/// The constraints are applied to the JSON, not to utoipa's model: its `Link` writes its
/// fields in snake case (`operation_id`), which no OpenAPI tool reads.
pub fn json() -> String {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        // Serialising a tree of strings, maps and vectors cannot fail.
        let mut doc = serde_json::to_value(document()).unwrap_or_default();
        constraints::apply(&mut doc);
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    })
    .clone()
}

/// `GET /api/openapi.json`.
pub async fn serve() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json(),
    )
}

#[cfg(test)]
mod tests;
