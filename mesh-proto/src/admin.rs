//! The coordinator's admin HTTP API: JSON bodies shared by the coordinator (server) and
//! `meshctl admin` (client). Every route needs `Authorization: Bearer <admin token>`.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/api/networks` | | `[NetworkView]` |
//! | POST | `/api/networks` | [`CreateNetwork`] | 201 [`NetworkView`] |
//! | GET | `/api/networks/{net}` | | [`NetworkView`] |
//! | DELETE | `/api/networks/{net}` | | 204 |
//! | GET | `/api/networks/{net}/members` | | `[MemberView]` |
//! | PATCH | `/api/networks/{net}/members/{node}` | [`UpdateMember`] | [`MemberView`] |
//! | POST | `/api/networks/{net}/members/{node}/authorize` | | [`MemberView`] |
//! | POST | `/api/networks/{net}/members/{node}/deauthorize` | | [`MemberView`] |
//! | DELETE | `/api/networks/{net}/members/{node}` | | 204 |
//! | POST | `/api/networks/{net}/members/{node}/routes/{prefix}/approve` | | [`MemberView`] |
//! | DELETE | `/api/networks/{net}/members/{node}/routes/{prefix}` | | [`MemberView`] (unapproved) |
//! | GET | `/api/networks/{net}/tokens` | | `[TokenView]` |
//! | POST | `/api/networks/{net}/tokens` | [`CreateToken`] | 201 [`TokenCreated`] |
//! | DELETE | `/api/networks/{net}/tokens/{id}` | | 204 (revoked) |
//!
//! `{node}` is a member's name, its public key (base64url or URL-encoded base64) or a
//! unique prefix (at least 8 characters) of its base64 key (the fingerprint). Errors
//! answer with a 4xx/5xx status and an [`ApiError`] body.
//!
//! `{prefix}` is a CIDR with no host bits, its `/` URL-encoded (`10.244.3.0%2F24`). An
//! approved route reaches peers (in the member's allowed IPs) only while the member also
//! advertises it; approving one that overlaps the network's prefix or another member's
//! approved route answers 409, unapproving one that is not approved 404.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Key;

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// One line saying what was wrong.
    pub error: String,
}

/// `POST /api/networks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CreateNetwork {
    /// 1..=32 characters of `[a-z0-9-]`, starting with a letter or digit.
    pub name: String,
    /// Overlay prefix, e.g. `10.9.8.0/24`.
    pub cidr: IpNet,
    /// Interface MTU for members (default 1280).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Persistent keepalive seconds (default 25; 0 = off).
    #[serde(default)]
    pub keepalive: Option<u16>,
}

/// A network as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NetworkView {
    /// Its name.
    pub name: String,
    /// Overlay prefix.
    pub cidr: IpNet,
    /// Member MTU.
    pub mtu: u16,
    /// Persistent keepalive seconds.
    pub keepalive: u16,
    /// Number of members (authorised or not).
    pub members: usize,
    /// Current netmap version.
    pub version: u64,
}

/// `PATCH /api/networks/{net}/members/{node}`: fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UpdateMember {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New overlay address (must be inside the network and free).
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// A public endpoint for the member's WireGuard port that the admin set up (port
    /// forwarding, a cloud load balancer); offered to peers before discovered candidates.
    /// An unspecified address (`0.0.0.0:0`) clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_endpoint: Option<SocketAddr>,
}

/// A member as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MemberView {
    /// Its public key.
    pub public_key: Key,
    /// First 8 characters of the key.
    pub fingerprint: String,
    /// Its name.
    pub name: String,
    /// Its overlay address.
    pub address: IpAddr,
    /// Whether it may be in the network.
    pub authorized: bool,
    /// Whether it holds a control connection now.
    pub online: bool,
    /// Unix seconds of its last control-connection activity.
    pub last_seen: Option<u64>,
    /// meshd version it reported.
    pub version: String,
    /// Endpoint candidates other members get.
    pub endpoints: Vec<SocketAddr>,
    /// The admin-set public endpoint, if any.
    #[serde(default)]
    pub public_endpoint: Option<SocketAddr>,
    /// Prefixes the node advertises (its `advertise-routes`).
    #[serde(default)]
    pub advertised_routes: Vec<IpNet>,
    /// Prefixes an admin approved for it; in effect where also advertised.
    #[serde(default)]
    pub approved_routes: Vec<IpNet>,
}

/// `POST /api/networks/{net}/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CreateToken {
    /// Usable more than once (default: one-time).
    #[serde(default)]
    pub reusable: bool,
    /// Seconds until it expires (default: never).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A join token as the API lists it (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TokenView {
    /// Its id.
    pub id: String,
    /// The network it admits to.
    pub network: String,
    /// Usable more than once.
    pub reusable: bool,
    /// Unix seconds it expires at.
    pub expires_at: Option<u64>,
    /// Revoked by an admin.
    pub revoked: bool,
    /// Times used.
    pub uses: u64,
    /// Unix seconds it was made.
    pub created_at: u64,
}

/// Answer to token creation: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TokenCreated {
    /// The token's metadata.
    pub token: TokenView,
    /// The `wm1_…` string for `meshctl join --token`.
    pub join_token: String,
}
