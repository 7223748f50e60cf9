//! The HTTP side of the audit log ([`crate::control::audit`]): the actor an admin request
//! acts as, which the router's credential check puts in [`crate::control::audit::ACTOR`]
//! for the state core to record, and what `GET /api/audit` answers by default.

/// Default number of entries `GET /api/audit` answers with.
pub const DEFAULT_LIMIT: usize = 100;
/// The actor of an action requested with `Authorization: Bearer <admin token>`.
pub const ACTOR_API: &str = "admin-token/api";

/// The actor of an action requested through the dashboard session `session_id`: its first
/// 8 hex digits of SHA-256 (the id itself is a credential and never logged).
pub fn session_actor(session_id: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(session_id.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("admin-token/dashboard-{hex}")
}

#[cfg(test)]
mod tests;
