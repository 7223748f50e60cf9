//! The admin HTTP API: exactly the route table of [`mesh_proto::admin`], JSON in and out
//! (`routes`); the router ([`crate::admin::router_with`]) serves it behind the credential
//! check, beside the web dashboard ([`crate::admin::web`]: pages, assets, login and a
//! server-sent change feed) and the API's public description ([`crate::admin::openapi`]).
//!
//! Every failure answers with an [`ApiError`] body: 401 without the right token, 403 for a
//! cookie request without its CSRF token or from another origin, 400 for a malformed body,
//! path or query (an unknown query parameter included, and a path segment that cannot be a
//! network name, member reference or token id), 404 for an unknown
//! network/member/token/route, 405 for a wrong method, 409 for what clashes with the state
//! (address taken, outside the network or reserved; duplicate network or name; ambiguous
//! member; overlapping route), 415 without a JSON content type. A 5xx means the coordinator
//! itself failed (500: storage; 503: no quorum, retry).
//!
//! 400 is exactly what the OpenAPI document forbids ([`crate::admin::openapi::constraints`]):
//! a request the document allows never answers 400.
//!
//! The member and token lists page ([`mesh_proto::admin`]: paging): `limit`, an `after`
//! cursor, a `q` search, and for members a `status`; the body stays a JSON array, with
//! `X-Total-Count` and an RFC 8288 `Link: <…>; rel="next"` beside it.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
#[allow(unused_imports)] // `MemberView` and friends are named only in `utoipa::path`.
use mesh_proto::admin::{
    ApiError, CreateNetwork, CreateToken, MemberView, NetworkView, TokenCreated, TokenView,
    UpdateMember, MAX_PAGE, TOTAL_COUNT_HEADER,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin::api::{Api, BODY_LIMIT};
use crate::admin::error::Failure;
use crate::admin::openapi::constraints;
use crate::control::listing::{MemberFilter, Page, Search, MAX_SEARCH};
use crate::model::validate_network_name;

/// A JSON body whose rejection is an [`ApiError`]. Bodies are JSON objects (or `null`
/// where `T` is an `Option`): serde would also read a struct from an array of its fields
/// in order, which the document does not allow and no client means.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
            Failure(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            )
        })?;
        let array = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        match Json::<T>::from_request(req, state).await {
            Ok(_) if array => Err(Failure(
                StatusCode::BAD_REQUEST,
                "bad request body: expected a JSON object, not an array".into(),
            )),
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

/// Like [`Body`], but an empty body or JSON `null` means `T::default()` (`POST …/tokens`
/// with no options).
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
        let Body(v) = Body::<Option<T>>::from_request(req, state).await?;
        Ok(BodyOrDefault(v.unwrap_or_default()))
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

/// `{net}`: a network name ([`validate_network_name`]). Nothing else can name a network,
/// so anything else answers 400, as the document's pattern says.
#[derive(Debug, serde::Deserialize)]
#[serde(try_from = "String")]
struct Net(String);

impl TryFrom<String> for Net {
    type Error = String;

    fn try_from(s: String) -> Result<Net, String> {
        validate_network_name(&s).map_err(|e| e.to_string())?;
        Ok(Net(s))
    }
}

/// `{node}`: a member's name, public key (base64 or base64url) or key prefix: 1..=63 of
/// `[A-Za-z0-9._+/=-]` ([`constraints::MEMBER_REF`]); anything else answers 400.
#[derive(Debug, serde::Deserialize)]
#[serde(try_from = "String")]
struct Node(String);

impl TryFrom<String> for Node {
    type Error = String;

    fn try_from(s: String) -> Result<Node, String> {
        let ok = (1..=constraints::MAX_MEMBER_REF).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+/=-".contains(&b));
        if ok {
            Ok(Node(s))
        } else {
            Err(format!(
                "invalid member {:?}: expected its name, public key or a key prefix \
                 (1 to {} of A-Z a-z 0-9 . _ + / = -)",
                s.chars().take(70).collect::<String>(),
                constraints::MAX_MEMBER_REF
            ))
        }
    }
}

/// Whether `id` looks like a token id: 1..=[`constraints::MAX_TOKEN_ID`] of `[A-Za-z0-9_-]`.
fn is_token_id(id: &str) -> bool {
    (1..=constraints::MAX_TOKEN_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `{id}`: a token id ([`constraints::TOKEN_ID`]); anything else answers 400.
#[derive(Debug, serde::Deserialize)]
#[serde(try_from = "String")]
struct TokenId(String);

impl TryFrom<String> for TokenId {
    type Error = String;

    fn try_from(s: String) -> Result<TokenId, String> {
        if is_token_id(&s) {
            Ok(TokenId(s))
        } else {
            Err(format!(
                "invalid token id {:?}: expected 1 to {} of A-Z a-z 0-9 - _",
                s.chars().take(70).collect::<String>(),
                constraints::MAX_TOKEN_ID
            ))
        }
    }
}

/// Query parameters whose rejection (an unknown parameter, a value of the wrong type) is
/// a 400 [`ApiError`].
struct Query<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Query<T> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("bad query: {}", e.body_text().replace('\n', " ")),
            )),
        }
    }
}

/// The JSON API's routes (the table of [`mesh_proto::admin`]) and `/metrics`; the router
/// ([`crate::admin::router_with`]) puts the credential check in front of them.
pub(crate) fn routes() -> Router<Api> {
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
        .route(
            "/api/networks/{net}/policy",
            get(policy::get_policy)
                .put(policy::set_policy)
                .delete(policy::clear_policy),
        )
        .route(
            "/api/networks/{net}/policy/check",
            post(policy::check_policy),
        )
        .route("/api/networks/{net}/policy/why", get(policy::why))
        .route(
            "/api/networks/{net}/members/{node}/tags",
            axum::routing::put(policy::set_tags),
        )
        .route("/api/audit", get(audit))
        .route("/metrics", get(metrics))
}

type Answer<T> = Result<T, Failure>;

#[utoipa::path(
    get,
    path = "/api/networks",
    responses(
        (status = 200, description = "every network", body = [NetworkView]),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
    ),
)]
async fn list_networks(State(api): State<Api>) -> impl IntoResponse {
    Json(api.coord.list_networks().await)
}

#[utoipa::path(
    post,
    path = "/api/networks",
    request_body = CreateNetwork,
    responses(
        (status = 201, description = "created", body = NetworkView),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 409, description = "conflict with the state (address taken, outside the network or reserved; duplicate name; ambiguous member; overlapping route)", body = ApiError),
        (status = 415, description = "body without a JSON content type", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
async fn create_network(
    State(api): State<Api>,
    Body(req): Body<CreateNetwork>,
) -> Answer<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(api.coord.create_network(req).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/api/networks/{net}",
    params(("net" = String, Path, description = "network name")),
    responses(
        (status = 200, description = "the network", body = NetworkView),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
    ),
)]
async fn get_network(
    State(api): State<Api>,
    Params(net): Params<Net>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.get_network(&net.0).await?))
}

#[utoipa::path(
    delete,
    path = "/api/networks/{net}",
    params(("net" = String, Path, description = "network name")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
async fn delete_network(State(api): State<Api>, Params(net): Params<Net>) -> Answer<StatusCode> {
    api.coord.delete_network(&net.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which members `GET …/members?status=` lists.
#[derive(Debug, Clone, Copy, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
enum MemberStatus {
    /// Waiting for an admin's approval.
    Pending,
    /// Authorised.
    Authorized,
}

/// Query of `GET /api/networks/{net}/members` (see [`mesh_proto::admin`]: paging).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersQuery {
    limit: Option<usize>,
    after: Option<String>,
    q: Option<String>,
    status: Option<MemberStatus>,
}

/// Query of `GET /api/networks/{net}/tokens`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensQuery {
    limit: Option<usize>,
    after: Option<String>,
    q: Option<String>,
}

/// A page size: none, or 1..=[`MAX_PAGE`].
fn page_limit(limit: Option<usize>) -> Result<Option<usize>, Failure> {
    match limit {
        Some(n) if n == 0 || n > MAX_PAGE => Err(Failure(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1..={MAX_PAGE}"),
        )),
        _ => Ok(limit),
    }
}

/// `q`: none or empty for no search, at most [`MAX_SEARCH`] characters (the document's
/// `maxLength` counts characters, not bytes).
fn search(q: Option<&str>) -> Result<Option<Search>, Failure> {
    let q = q.unwrap_or_default();
    if q.chars().count() > MAX_SEARCH {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!("q must be at most {MAX_SEARCH} characters"),
        ));
    }
    Ok(Search::new(q))
}

/// What is escaped in a link's path segments and query values: all but `A-Z a-z 0-9 - _ . ~`.
const URL_TEXT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `path?k=v&…` with each value given percent-encoded.
fn link(path: &str, query: &[(&str, Option<&str>)]) -> String {
    let mut url = path.to_owned();
    let mut sep = '?';
    for (k, v) in query {
        if let Some(v) = v {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.extend(utf8_percent_encode(v, URL_TEXT));
            sep = '&';
        }
    }
    url
}

/// A listing's answer: the page's items as a JSON array, [`TOTAL_COUNT_HEADER`], and
/// `Link: <next>; rel="next"` when `next` is given.
fn paged<T: Serialize>(page: Page<T>, next: Option<String>) -> Response {
    let mut res = Json(page.items).into_response();
    let headers = res.headers_mut();
    headers.insert(TOTAL_COUNT_HEADER, header::HeaderValue::from(page.total));
    // Percent-encoded, so always a valid header value.
    if let Some(Ok(value)) =
        next.map(|url| header::HeaderValue::try_from(format!("<{url}>; rel=\"next\"")))
    {
        headers.insert(header::LINK, value);
    }
    res
}

/// `GET /api/networks/{net}/members`: every member by key, or one page of those a search
/// and status keep ([`mesh_proto::admin`]: paging).
#[utoipa::path(
    get,
    path = "/api/networks/{net}/members",
    params(
        ("net" = String, Path, description = "network name"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "page size, 1..=1000; without it every matching member is answered (clients of large networks should page)"),
        ("after" = Option<String>, Query, description = "cursor: only members whose public key sorts after this one (base64, standard or URL-safe): the key of the previous page's last member"),
        ("q" = Option<String>, Query, max_length = 256, description = "case-insensitive substring of the member's name, overlay address, fingerprint or base64 key"),
        ("status" = inline(Option<MemberStatus>), Query, description = "only pending or only authorized members"),
    ),
    responses(
        (status = 200, description = "its members, by public key", body = [MemberView], headers(
            ("x-total-count" = u64, description = "how many members match, over all pages"),
            ("link" = String, description = "`<url>; rel=\"next\"` (RFC 8288) when more match after this page"),
        )),
        (status = 400, description = "malformed path or query", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
    ),
)]
async fn list_members(
    State(api): State<Api>,
    Params(Net(net)): Params<Net>,
    Query(query): Query<MembersQuery>,
) -> Answer<Response> {
    let limit = page_limit(query.limit)?;
    // A key in base64 or base64url, a space standing for `+` ([`constraints::KEY`]); the
    // state core checks the rest. (Its parser would also trim other white space.)
    let key_like = |a: &str| {
        a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/_ =-".contains(&b))
    };
    if query.after.as_deref().is_some_and(|a| !key_like(a)) {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "after: expected a member's public key in base64 or base64url".into(),
        ));
    }
    let filter = MemberFilter {
        search: search(query.q.as_deref())?,
        authorized: query.status.map(|s| matches!(s, MemberStatus::Authorized)),
    };
    let page = api
        .coord
        .list_members_page(
            &net,
            &filter,
            query.after.as_deref(),
            limit.unwrap_or(usize::MAX),
        )
        .await?;
    let next = match (limit, page.items.last()) {
        (Some(limit), Some(last)) if page.more => {
            let (limit, after) = (limit.to_string(), last.public_key.to_base64());
            let status = query.status.map(|s| match s {
                MemberStatus::Pending => "pending",
                MemberStatus::Authorized => "authorized",
            });
            Some(link(
                &format!(
                    "/api/networks/{}/members",
                    utf8_percent_encode(&net, URL_TEXT)
                ),
                &[
                    ("limit", Some(&limit)),
                    ("after", Some(&after)),
                    ("q", query.q.as_deref().filter(|q| !q.is_empty())),
                    ("status", status),
                ],
            ))
        }
        _ => None,
    };
    Ok(paged(page, next))
}

#[utoipa::path(
    patch,
    path = "/api/networks/{net}/members/{node}",
    request_body = UpdateMember,
    params(("net" = String, Path, description = "network name"), ("node" = String, Path, description = "member name, public key (base64url or URL-encoded base64) or unique key prefix of at least 8 characters")),
    responses(
        (status = 200, description = "the updated member", body = MemberView),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
        (status = 409, description = "conflict with the state (address taken, outside the network or reserved; duplicate name; ambiguous member; overlapping route)", body = ApiError),
        (status = 415, description = "body without a JSON content type", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
async fn update_member(
    State(api): State<Api>,
    Params((Net(net), Node(node))): Params<(Net, Node)>,
    Body(req): Body<UpdateMember>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.update_member(&net, &node, req).await?))
}

#[utoipa::path(
    post,
    path = "/api/networks/{net}/members/{node}/authorize",
    params(("net" = String, Path, description = "network name"), ("node" = String, Path, description = "member name, public key (base64url or URL-encoded base64) or unique key prefix of at least 8 characters")),
    responses(
        (status = 200, description = "the authorised member", body = MemberView),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
        (status = 409, description = "conflict with the state (address taken, outside the network or reserved; duplicate name; ambiguous member; overlapping route)", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
async fn authorize(
    State(api): State<Api>,
    Params((Net(net), Node(node))): Params<(Net, Node)>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.authorize(&net, &node).await?))
}

#[utoipa::path(
    post,
    path = "/api/networks/{net}/members/{node}/deauthorize",
    params(("net" = String, Path, description = "network name"), ("node" = String, Path, description = "member name, public key (base64url or URL-encoded base64) or unique key prefix of at least 8 characters")),
    responses(
        (status = 200, description = "the deauthorised member", body = MemberView),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
        (status = 409, description = "conflict with the state (address taken, outside the network or reserved; duplicate name; ambiguous member; overlapping route)", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
async fn deauthorize(
    State(api): State<Api>,
    Params((Net(net), Node(node))): Params<(Net, Node)>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.deauthorize(&net, &node).await?))
}

#[utoipa::path(
    post,
    path = "/api/networks/{net}/members/{node}/routes/{prefix}/approve",
    params(("net" = String, Path, description = "network name"), ("node" = String, Path, description = "member name, public key (base64url or URL-encoded base64) or unique key prefix of at least 8 characters"), ("prefix" = String, Path, description = "CIDR without host bits, its `/` URL-encoded (`10.244.3.0%2F24`)")),
    responses(
        (status = 200, description = "the member, route approved", body = MemberView),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
        (status = 409, description = "conflict with the state (address taken, outside the network or reserved; duplicate name; ambiguous member; overlapping route)", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
async fn approve_route(
    State(api): State<Api>,
    Params((Net(net), Node(node), prefix)): Params<(Net, Node, String)>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.approve_route(&net, &node, &prefix).await?))
}

#[utoipa::path(
    delete,
    path = "/api/networks/{net}/members/{node}/routes/{prefix}",
    params(("net" = String, Path, description = "network name"), ("node" = String, Path, description = "member name, public key (base64url or URL-encoded base64) or unique key prefix of at least 8 characters"), ("prefix" = String, Path, description = "CIDR without host bits, its `/` URL-encoded (`10.244.3.0%2F24`)")),
    responses(
        (status = 200, description = "the member, route unapproved", body = MemberView),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
        (status = 409, description = "conflict with the state (address taken, outside the network or reserved; duplicate name; ambiguous member; overlapping route)", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
async fn unapprove_route(
    State(api): State<Api>,
    Params((Net(net), Node(node), prefix)): Params<(Net, Node, String)>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.unapprove_route(&net, &node, &prefix).await?))
}

#[utoipa::path(
    delete,
    path = "/api/networks/{net}/members/{node}",
    params(("net" = String, Path, description = "network name"), ("node" = String, Path, description = "member name, public key (base64url or URL-encoded base64) or unique key prefix of at least 8 characters")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
        (status = 409, description = "conflict with the state (address taken, outside the network or reserved; duplicate name; ambiguous member; overlapping route)", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
async fn delete_member(
    State(api): State<Api>,
    Params((Net(net), Node(node))): Params<(Net, Node)>,
) -> Answer<StatusCode> {
    api.coord.delete_member(&net, &node).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/networks/{net}/tokens`: every token oldest first, or by id when paged.
#[utoipa::path(
    get,
    path = "/api/networks/{net}/tokens",
    params(
        ("net" = String, Path, description = "network name"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "page size, 1..=1000; a paged listing is in id order; without limit and after, every matching token is answered, oldest first"),
        ("after" = Option<String>, Query, max_length = 64, description = "cursor: only tokens whose id sorts after this one (the previous page's last id)"),
        ("q" = Option<String>, Query, max_length = 256, description = "case-insensitive substring of the token id"),
    ),
    responses(
        (status = 200, description = "its join tokens, without secrets", body = [TokenView], headers(
            ("x-total-count" = u64, description = "how many tokens match, over all pages"),
            ("link" = String, description = "`<url>; rel=\"next\"` (RFC 8288) when more match after this page"),
        )),
        (status = 400, description = "malformed path or query", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
    ),
)]
async fn list_tokens(
    State(api): State<Api>,
    Params(Net(net)): Params<Net>,
    Query(query): Query<TokensQuery>,
) -> Answer<Response> {
    let limit = page_limit(query.limit)?;
    let search = search(query.q.as_deref())?;
    let after = query.after.as_deref();
    if after.is_some_and(|id| !is_token_id(id)) {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!(
                "after: expected a token id (1..={} of A-Z a-z 0-9 - _)",
                constraints::MAX_TOKEN_ID
            ),
        ));
    }
    if limit.is_none() && after.is_none() {
        let mut items = api.coord.list_tokens(&net).await?;
        if let Some(s) = &search {
            items.retain(|t| s.finds(&t.id));
        }
        let total = items.len();
        let page = Page {
            items,
            total,
            more: false,
        };
        return Ok(paged(page, None));
    }
    let page = api
        .coord
        .list_tokens_page(&net, search.as_ref(), after, limit.unwrap_or(usize::MAX))
        .await?;
    let next = match (limit, page.items.last()) {
        (Some(limit), Some(last)) if page.more => Some(link(
            &format!(
                "/api/networks/{}/tokens",
                utf8_percent_encode(&net, URL_TEXT)
            ),
            &[
                ("limit", Some(&limit.to_string())),
                ("after", Some(&last.id)),
                ("q", query.q.as_deref().filter(|q| !q.is_empty())),
            ],
        )),
        _ => None,
    };
    Ok(paged(page, next))
}

#[utoipa::path(
    post,
    path = "/api/networks/{net}/tokens",
    request_body = Option<CreateToken>,
    params(("net" = String, Path, description = "network name")),
    responses(
        (status = 201, description = "created; the only time the secret is shown", body = TokenCreated),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
        (status = 415, description = "body without a JSON content type", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
async fn create_token(
    State(api): State<Api>,
    Params(Net(net)): Params<Net>,
    BodyOrDefault(req): BodyOrDefault<CreateToken>,
) -> Answer<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(api.coord.create_token(&net, req).await?),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/networks/{net}/tokens/{id}",
    params(("net" = String, Path, description = "network name"), ("id" = String, Path, description = "token id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network, member, token or route", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
async fn revoke_token(
    State(api): State<Api>,
    Params((Net(net), TokenId(id))): Params<(Net, TokenId)>,
) -> Answer<StatusCode> {
    api.coord.revoke_token(&net, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /api/audit`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
}

/// `GET /api/audit?limit=N`: the newest admin actions, newest first ([`crate::control::audit`]).
#[utoipa::path(
    get,
    path = "/api/audit",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "how many entries, 1..=10000 (default 100)")),
    responses(
        (status = 200, description = "the newest admin actions, newest first", body = [mesh_proto::admin::AuditEntry]),
        (status = 400, description = "malformed query", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
    ),
)]
async fn audit(State(api): State<Api>, Query(q): Query<AuditQuery>) -> Answer<impl IntoResponse> {
    let limit = q.limit.unwrap_or(crate::admin::audit::DEFAULT_LIMIT);
    if limit == 0 || limit as u64 > crate::control::audit::AUDIT_KEEP {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1..={}", crate::control::audit::AUDIT_KEEP),
        ));
    }
    Ok(Json(api.coord.audit(limit).await))
}

/// `GET /metrics`: Prometheus text format ([`crate::admin::metrics`]), behind the admin token.
#[utoipa::path(
    get,
    path = "/metrics",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
    ),
)]
async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::admin::metrics::CONTENT_TYPE)],
        crate::admin::metrics::render(&api.coord).await,
    )
}

pub(super) mod policy;

#[cfg(test)]
mod tests;
