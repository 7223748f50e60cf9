//! The policy routes (issue 13): a network's policy document, checking one without setting
//! it, which rule decides a connection, and members' tags.
//!
//! The document is a language of its own (see [`mesh_proto::policy`]): the JSON around it
//! is checked like every body (400 when malformed), but a document that does not parse,
//! names what is not there or fails its own tests is refused with **422** and the line
//! and reason, and nothing changes. The same for `why` naming neither a member nor a
//! description of one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
#[allow(unused_imports)] // Named only in `utoipa::path`.
use mesh_proto::admin::{ApiError, MemberView, PolicyView, SetPolicy, SetTags, WhyView};

use super::{Answer, Body, Net, Node, Params, Query};
use crate::admin::api::Api;
use crate::admin::error::Failure;
use crate::control::state::{Error, PolicyState};

/// Largest policy document, in characters (the schema's `maxLength`).
pub const MAX_DOCUMENT: usize = 64 * 1024;

/// Longest `from`/`to` of `why`.
pub const MAX_DESCRIPTION: usize = 256;

fn view(state: PolicyState) -> PolicyView {
    PolicyView::of(state.document, &state.policy)
}

/// A refused document (or description) is 422; everything else as usual.
fn refused(e: Error) -> Failure {
    match e {
        Error::Invalid(reason) => Failure(StatusCode::UNPROCESSABLE_ENTITY, reason),
        e => e.into(),
    }
}

fn document(req: SetPolicy) -> Answer<String> {
    let chars = req.document.chars().count();
    if chars > MAX_DOCUMENT {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!(
                "the policy document has {chars} characters, at most {MAX_DOCUMENT} are allowed"
            ),
        ));
    }
    Ok(req.document)
}

#[utoipa::path(
    get,
    path = "/api/networks/{net}/policy",
    params(("net" = String, Path, description = "network name")),
    responses(
        (status = 200, description = "the network's policy (no document: everything allowed between members)", body = PolicyView),
        (status = 400, description = "malformed path", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network", body = ApiError),
    ),
)]
pub(super) async fn get_policy(
    State(api): State<Api>,
    Params(Net(net)): Params<Net>,
) -> Answer<impl IntoResponse> {
    Ok(Json(view(api.coord.policy(&net).await?)))
}

#[utoipa::path(
    put,
    path = "/api/networks/{net}/policy",
    request_body = SetPolicy,
    params(("net" = String, Path, description = "network name")),
    responses(
        (status = 200, description = "set; every member's filter follows within a second", body = PolicyView),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network", body = ApiError),
        (status = 415, description = "body without a JSON content type", body = ApiError),
        (status = 422, description = "the document was refused (syntax, an unknown name, a failing test): the error names the line and reason; nothing changed", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
pub(super) async fn set_policy(
    State(api): State<Api>,
    Params(Net(net)): Params<Net>,
    Body(req): Body<SetPolicy>,
) -> Answer<impl IntoResponse> {
    let doc = document(req)?;
    let state = api
        .coord
        .set_policy(&net, Some(doc))
        .await
        .map_err(refused)?;
    Ok(Json(view(state)))
}

#[utoipa::path(
    delete,
    path = "/api/networks/{net}/policy",
    params(("net" = String, Path, description = "network name")),
    responses(
        (status = 200, description = "removed: everything allowed between members", body = PolicyView),
        (status = 400, description = "malformed path", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
pub(super) async fn clear_policy(
    State(api): State<Api>,
    Params(Net(net)): Params<Net>,
) -> Answer<impl IntoResponse> {
    Ok(Json(view(api.coord.set_policy(&net, None).await?)))
}

#[utoipa::path(
    post,
    path = "/api/networks/{net}/policy/check",
    request_body = SetPolicy,
    params(("net" = String, Path, description = "network name")),
    responses(
        (status = 200, description = "the document would be accepted (nothing was set)", body = PolicyView),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network", body = ApiError),
        (status = 415, description = "body without a JSON content type", body = ApiError),
        (status = 422, description = "the document would be refused: the error names the line and reason", body = ApiError),
    ),
)]
pub(super) async fn check_policy(
    State(api): State<Api>,
    Params(Net(net)): Params<Net>,
    Body(req): Body<SetPolicy>,
) -> Answer<impl IntoResponse> {
    let doc = document(req)?;
    // The network must exist, as for `PUT`.
    api.coord.policy(&net).await?;
    let policy = crate::control::state::Coordinator::check_policy(&doc).map_err(refused)?;
    Ok(Json(PolicyView::of(Some(doc), &policy)))
}

/// Query of `GET …/policy/why`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WhyQuery {
    from: String,
    to: String,
    port: String,
}

/// Whether `port` is `icmp`, or `tcp/N` or `udp/N` with N 0..=65535 without leading zeros
/// ([`crate::admin::openapi::constraints::why_port`]).
fn is_port_spec(port: &str) -> bool {
    if port == "icmp" {
        return true;
    }
    let Some(n) = port
        .strip_prefix("tcp/")
        .or_else(|| port.strip_prefix("udp/"))
    else {
        return false;
    };
    !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && (n == "0" || !n.starts_with('0'))
        && n.parse::<u16>().is_ok()
}

#[utoipa::path(
    get,
    path = "/api/networks/{net}/policy/why",
    params(
        ("net" = String, Path, description = "network name"),
        ("from" = String, Query, description = "the sender: a member (name, key or key prefix) or a description (`tag:ops`, `member:web-1`, `10.9.8.7`, several separated by spaces)"),
        ("to" = String, Query, description = "the receiver, as `from`"),
        ("port" = String, Query, description = "`tcp/N`, `udp/N` or `icmp`"),
    ),
    responses(
        (status = 200, description = "the decision and the rule that made it, by the same compiled rules the members enforce", body = WhyView),
        (status = 400, description = "malformed path or query", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network", body = ApiError),
        (status = 422, description = "`from` or `to` names neither a member nor a description of one", body = ApiError),
    ),
)]
pub(super) async fn why(
    State(api): State<Api>,
    Params(Net(net)): Params<Net>,
    Query(q): Query<WhyQuery>,
) -> Answer<impl IntoResponse> {
    for (name, v) in [("from", &q.from), ("to", &q.to)] {
        if v.is_empty() || v.chars().count() > MAX_DESCRIPTION {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("{name} must be 1 to {MAX_DESCRIPTION} characters"),
            ));
        }
    }
    if !is_port_spec(&q.port) {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!(
                "port {:?}: expected tcp/N, udp/N (0-65535) or icmp",
                q.port.chars().take(40).collect::<String>()
            ),
        ));
    }
    let why = api
        .coord
        .why(&net, &q.from, &q.to, &q.port)
        .await
        .map_err(refused)?;
    Ok(Json(why.view()))
}

#[utoipa::path(
    put,
    path = "/api/networks/{net}/members/{node}/tags",
    request_body = SetTags,
    params(("net" = String, Path, description = "network name"), ("node" = String, Path, description = "member name, public key (base64url or URL-encoded base64) or unique key prefix of at least 8 characters")),
    responses(
        (status = 200, description = "the member with its new tags; filters follow within a second", body = MemberView),
        (status = 400, description = "malformed path or body", body = ApiError),
        (status = 401, description = "missing or wrong admin token", body = ApiError),
        (status = 403, description = "a dashboard session's request without its CSRF token or from another site", body = ApiError),
        (status = 404, description = "no such network or member", body = ApiError),
        (status = 409, description = "ambiguous member", body = ApiError),
        (status = 415, description = "body without a JSON content type", body = ApiError),
        (status = 500, description = "the coordinator failed (storage)", body = ApiError),
        (status = 503, description = "the shared store has no quorum, or the write lost too many races with other coordinators: nothing was written; retry", body = ApiError),
    ),
)]
pub(super) async fn set_tags(
    State(api): State<Api>,
    Params((Net(net), Node(node))): Params<(Net, Node)>,
    Body(req): Body<SetTags>,
) -> Answer<impl IntoResponse> {
    Ok(Json(api.coord.set_tags(&net, &node, &req.tags).await?))
}

#[cfg(test)]
mod tests {
    use super::is_port_spec;

    #[test]
    fn port_specs_are_one_protocol_and_one_port() {
        for ok in ["icmp", "tcp/22", "udp/53", "tcp/0", "udp/65535"] {
            assert!(is_port_spec(ok), "{ok}");
        }
        for bad in [
            "",
            "ICMP",
            "tcp",
            "tcp/",
            "tcp/022",
            "tcp/65536",
            "tcp/1-2",
            "icmp/0",
            "sctp/1",
            "tcp/+1",
            " tcp/1",
        ] {
            assert!(!is_port_spec(bad), "{bad}");
        }
    }
}
