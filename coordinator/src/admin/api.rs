//! What the admin routes share: their state (`Api`: the coordinator, the admin token's
//! digest, and `Web`, the dashboard's login sessions), who is calling (`Caller`), the
//! admin token check (`token_matches`) and the server's [`HttpOptions`]. The JSON API
//! ([`crate::admin::http`]) and the dashboard ([`crate::admin::web`], which says how
//! sessions work) both build on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mesh_proto::control::ct_eq;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::control::state::Coordinator;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "wm_session";
/// How long a session lasts (fixed from login, not sliding).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; a login beyond evicts the oldest.
pub const MAX_SESSIONS: usize = 1000;

/// Largest admin request body.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) coord: Arc<Coordinator>,
    /// SHA-256 of the admin token.
    pub(crate) token_hash: [u8; 32],
    /// The dashboard's sessions and options.
    pub(crate) web: Arc<Web>,
}

/// Options of the admin HTTP server beyond the API itself.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Mark the dashboard's session cookie `Secure` (sent over HTTPS only). Set it when
    /// the admin listener is reached through TLS (a reverse proxy); leave it off for plain
    /// HTTP on localhost, or browsers would never send the cookie back.
    pub secure_cookies: bool,
    /// Once this turns true (or its sender is dropped), long-lived answers (the dashboard's
    /// change feeds) end, so a graceful shutdown need not wait for open dashboards. None:
    /// a feed ends only with its session or its client.
    pub closing: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Whether `presented` is the admin token whose SHA-256 is `token_hash`. Both sides are
/// fixed-length digests, compared in constant time, so neither the length of what was
/// sent nor how long a prefix it shares with the token changes how long this takes.
pub(crate) fn token_matches(presented: &str, token_hash: &[u8; 32]) -> bool {
    ct_eq(&Sha256::digest(presented.as_bytes()), token_hash)
}

/// Who a request came from, once the router's credential check
/// ([`crate::admin::router_with`]) let it through (a request extension). No `Debug`: it
/// holds the session's secrets.
#[derive(Clone)]
pub(crate) enum Caller {
    /// `Authorization: Bearer <admin token>`: not an ambient credential, so no CSRF check.
    Bearer,
    /// The dashboard's session cookie (already checked against CSRF).
    Session {
        /// The session id (the cookie's value).
        id: String,
        /// The session's CSRF token.
        csrf: String,
    },
}

/// The dashboard's server-side state: sessions and options.
pub(crate) struct Web {
    sessions: Mutex<Sessions>,
    opts: HttpOptions,
}

impl Web {
    pub(crate) fn new(opts: HttpOptions) -> Web {
        Web {
            sessions: Mutex::new(Sessions::new(MAX_SESSIONS)),
            opts,
        }
    }

    /// A receiver of [`HttpOptions::closing`], for a new change feed.
    pub(crate) fn closing(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.opts.closing.clone()
    }

    pub(crate) fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The caller a request's session cookie names, if it names a live session.
    pub(crate) fn session_of(&self, headers: &HeaderMap) -> Option<Caller> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        cookies(headers)
            .filter(|(name, _)| *name == SESSION_COOKIE)
            .find_map(|(_, id)| {
                let csrf = sessions.lookup(id, now)?;
                Some(Caller::Session {
                    id: id.to_owned(),
                    csrf,
                })
            })
    }

    /// Whether session `id` is still live.
    pub(crate) fn is_live(&self, id: &str) -> bool {
        self.sessions().lookup(id, Instant::now()).is_some()
    }

    /// `Set-Cookie` value for a new session.
    pub(crate) fn cookie(&self, id: &str) -> String {
        format!(
            "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
            SESSION_TTL.as_secs(),
            self.secure()
        )
    }

    /// `Set-Cookie` value that removes the session cookie.
    pub(crate) fn clear_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
            self.secure()
        )
    }

    fn secure(&self) -> &'static str {
        if self.opts.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    }
}

/// Live sessions by the SHA-256 of their id, bounded. No `Debug`: it holds CSRF tokens.
pub(crate) struct Sessions {
    max: usize,
    by_id: HashMap<[u8; 32], Session>,
    /// Creation counter, to find the oldest.
    next_seq: u64,
}

struct Session {
    csrf: String,
    expires: Instant,
    seq: u64,
}

impl Sessions {
    /// No sessions; at most `max` (at least one) at once.
    pub(crate) fn new(max: usize) -> Sessions {
        Sessions {
            max: max.max(1),
            by_id: HashMap::new(),
            next_seq: 0,
        }
    }

    /// Makes a session valid until `now + SESSION_TTL`; answers its id and CSRF token.
    pub(crate) fn create(&mut self, now: Instant) -> Result<(String, String), getrandom::Error> {
        let id = random_token()?;
        let csrf = random_token()?;
        if self.by_id.len() >= self.max {
            self.by_id.retain(|_, s| s.expires > now);
        }
        while self.by_id.len() >= self.max {
            let oldest = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.seq)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => self.by_id.remove(&k),
                None => break,
            };
        }
        self.by_id.insert(
            digest(&id),
            Session {
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
                seq: self.next_seq,
            },
        );
        self.next_seq += 1;
        Ok((id, csrf))
    }

    /// The CSRF token of live session `id` (an expired one is forgotten).
    pub(crate) fn lookup(&mut self, id: &str, now: Instant) -> Option<String> {
        // Ids are 43 base64url characters; anything else is not worth hashing.
        if id.len() != 43 {
            return None;
        }
        let key = digest(id);
        let session = self.by_id.get(&key)?;
        if session.expires <= now {
            self.by_id.remove(&key);
            return None;
        }
        Some(session.csrf.clone())
    }

    /// Ends session `id`.
    pub(crate) fn remove(&mut self, id: &str) {
        self.by_id.remove(&digest(id));
    }

    /// Number of sessions held (live or not yet noticed expired).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// SHA-256 of `s`.
pub(crate) fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// 32 random bytes, base64url without padding (43 characters).
fn random_token() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b)?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// Every `name=value` pair of the request's `Cookie` headers.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
}

#[cfg(test)]
mod tests;
