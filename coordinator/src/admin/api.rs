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

/// Largest admin request body: a policy document of
/// [`crate::admin::http::policy::MAX_DOCUMENT`] characters fits even with every character
/// escaped (`\\uXXXX`, twice for those outside the BMP).
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

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
    /// Sessions signed with a key derived from the admin token, which every coordinator
    /// of a set shares, so a session from one is good on the others; `origin` (this
    /// coordinator's id) tells its own sessions from theirs.
    pub(crate) fn new(opts: HttpOptions, admin_token: &str, origin: &str) -> Web {
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"wiremesh dashboard sessions\0")
            .chain_update(admin_token.as_bytes())
            .finalize()
            .into();
        Web {
            sessions: Mutex::new(Sessions::with_key(MAX_SESSIONS, key, origin)),
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
///
/// An id is `expiry (unix s, 8 B) | origin (8 B) | random (16 B) | MAC (16 B)` in base64url,
/// the MAC (HMAC-SHA256, truncated) over the rest with the set's session key, and its CSRF
/// token is derived from it with the same key. This coordinator's own sessions must be in
/// `by_id` (so eviction and logout end them here); one another coordinator of the set
/// made is good until its expiry unless logged out here (`revoked`). A logout therefore
/// ends the session on the coordinator that served it; the cookie, and with it the session
/// elsewhere, lapses at its expiry (rotating the admin token ends every session at once).
pub(crate) struct Sessions {
    max: usize,
    by_id: HashMap<[u8; 32], Session>,
    /// Creation counter, to find the oldest.
    next_seq: u64,
    key: ring::hmac::Key,
    origin: [u8; 8],
    /// Other coordinators' sessions logged out here, by id digest, with their expiry.
    revoked: HashMap<[u8; 32], u64>,
}

/// Bytes of a session id before base64url.
const ID_BYTES: usize = 48;

struct Session {
    csrf: String,
    expires: Instant,
    seq: u64,
}

impl Sessions {
    /// No sessions; at most `max` (at least one) at once; a random key (no other
    /// coordinator accepts its sessions).
    #[cfg(test)]
    pub(crate) fn new(max: usize) -> Sessions {
        let mut key = [0u8; 32];
        let _ = getrandom::getrandom(&mut key);
        Sessions::with_key(max, key, "test")
    }

    /// No sessions yet, signed with `key` as coordinator `origin`.
    pub(crate) fn with_key(max: usize, key: [u8; 32], origin: &str) -> Sessions {
        let tag: [u8; 32] = Sha256::digest(origin.as_bytes()).into();
        let mut o = [0u8; 8];
        o.copy_from_slice(&tag[..8]);
        Sessions {
            max: max.max(1),
            by_id: HashMap::new(),
            next_seq: 0,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            origin: o,
            revoked: HashMap::new(),
        }
    }

    fn csrf_of(&self, id: &str) -> String {
        let tag = ring::hmac::sign(&self.key, &[b"csrf\0", id.as_bytes()].concat());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Makes a session valid until `now + SESSION_TTL`; answers its id and CSRF token.
    pub(crate) fn create(&mut self, now: Instant) -> Result<(String, String), getrandom::Error> {
        self.create_at(now, unix_now())
    }

    /// [`Sessions::create`] with the Unix time given (tests).
    pub(crate) fn create_at(
        &mut self,
        now: Instant,
        unix: u64,
    ) -> Result<(String, String), getrandom::Error> {
        let mut raw = [0u8; ID_BYTES];
        raw[..8].copy_from_slice(&(unix + SESSION_TTL.as_secs()).to_be_bytes());
        raw[8..16].copy_from_slice(&self.origin);
        getrandom::getrandom(&mut raw[16..32])?;
        let mac = ring::hmac::sign(&self.key, &raw[..32]);
        raw[32..].copy_from_slice(&mac.as_ref()[..16]);
        let id = URL_SAFE_NO_PAD.encode(raw);
        let csrf = self.csrf_of(&id);
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
        self.lookup_at(id, now, unix_now())
    }

    /// [`Sessions::lookup`] with the Unix time given (tests).
    pub(crate) fn lookup_at(&mut self, id: &str, now: Instant, unix: u64) -> Option<String> {
        // Ids are 64 base64url characters; anything else is not worth hashing.
        if id.len() != 64 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(id).ok()?;
        if raw.len() != ID_BYTES
            || !ct_eq(
                &ring::hmac::sign(&self.key, &raw[..32]).as_ref()[..16],
                &raw[32..],
            )
        {
            return None;
        }
        let key = digest(id);
        if raw[8..16] != self.origin {
            // Another coordinator's: good until its expiry unless logged out here.
            let expires = u64::from_be_bytes(raw[..8].try_into().ok()?);
            if expires <= unix || self.revoked.contains_key(&key) {
                return None;
            }
            return Some(self.csrf_of(id));
        }
        let session = self.by_id.get(&key)?;
        if session.expires <= now {
            self.by_id.remove(&key);
            return None;
        }
        Some(session.csrf.clone())
    }

    /// Ends session `id` here.
    pub(crate) fn remove(&mut self, id: &str) {
        let key = digest(id);
        if self.by_id.remove(&key).is_none() {
            if let Some(raw) = URL_SAFE_NO_PAD
                .decode(id)
                .ok()
                .filter(|r| r.len() == ID_BYTES)
            {
                let expires = u64::from_be_bytes(raw[..8].try_into().unwrap_or([0; 8]));
                let unix = unix_now();
                self.revoked.retain(|_, e| *e > unix);
                if self.revoked.len() < self.max {
                    self.revoked.insert(key, expires);
                }
            }
        }
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
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
