//! The audit log of admin actions: who did what, when, to which network and target.
//!
//! Every successful admin operation ([`crate::control::state`]'s admin methods) appends one
//! [`AuditEntry`] per action in the same store batch as the change itself, so it is as
//! durable as the change (flushed before the admin gets an answer). Entries carry an
//! increasing sequence number; only the newest [`AUDIT_KEEP`] are kept, older ones are
//! pruned in the same batch. The log is mirrored in memory ([`AuditLog`], under the state
//! lock) and read through `GET /api/audit?limit=N`, newest first ([`crate::admin::audit`]
//! is the HTTP side).
//!
//! The actor says which credential and which way in: the admin token is the only credential
//! so far, used either as a bearer token (`admin-token/api`, `meshctl admin`, scripts) or
//! through a dashboard login (`admin-token/dashboard-<8 hex>`, a fingerprint of the session
//! that tells one browser's actions from another's). The HTTP layer names it
//! ([`crate::admin::audit`]) and sets it around each request in the [`ACTOR`] task-local,
//! so the state core's admin methods need no extra parameter; an action taken outside any
//! request (tests, tools) is [`ACTOR_ADMIN_TOKEN`].

use std::collections::VecDeque;

pub use mesh_proto::admin::AuditEntry;

use crate::store::{Op, Store, StoreError};

/// Entries kept.
pub const AUDIT_KEEP: u64 = 10_000;
/// The actor of an action taken outside an HTTP request.
pub const ACTOR_ADMIN_TOKEN: &str = "admin-token";

tokio::task_local! {
    /// Who the admin request being served comes from (set by the credential check of
    /// [`crate::admin::router`]).
    pub static ACTOR: String;
}

/// The actor of the request being served, or [`ACTOR_ADMIN_TOKEN`] outside one.
pub fn current_actor() -> String {
    ACTOR
        .try_with(String::clone)
        .unwrap_or_else(|_| ACTOR_ADMIN_TOKEN.to_owned())
}

/// The newest entries of the log, in memory.
#[derive(Debug)]
pub struct AuditLog {
    keep: u64,
    /// Sequence number of the next entry.
    next: u64,
    /// Oldest first.
    entries: VecDeque<AuditEntry>,
}

impl Default for AuditLog {
    fn default() -> AuditLog {
        AuditLog::new(AUDIT_KEEP)
    }
}

impl AuditLog {
    /// An empty log keeping `keep` entries (at least one).
    pub fn new(keep: u64) -> AuditLog {
        AuditLog {
            keep: keep.max(1),
            next: 0,
            entries: VecDeque::new(),
        }
    }

    /// The log from the store's entries (sequence number, entry), oldest first.
    pub fn from_entries(entries: Vec<(u64, AuditEntry)>, keep: u64) -> AuditLog {
        let mut log = AuditLog::new(keep);
        for (seq, entry) in entries {
            log.next = log.next.max(seq.saturating_add(1));
            log.entries.push_back(entry);
        }
        while log.entries.len() as u64 > log.keep {
            log.entries.pop_front();
        }
        log
    }

    /// The log as `store` holds it.
    pub fn load(store: &dyn Store, keep: u64) -> Result<AuditLog, StoreError> {
        Ok(AuditLog::from_entries(store.load()?.audit, keep))
    }

    /// Mirrors entry `seq` another coordinator committed.
    pub fn remote(&mut self, seq: u64, entry: AuditEntry) {
        self.next = self.next.max(seq.saturating_add(1));
        self.entries.push_back(entry);
        while self.entries.len() as u64 > self.keep {
            self.entries.pop_front();
        }
    }

    /// The store writes that append `entries` (and prune what falls out of the window).
    /// Apply them, then call [`AuditLog::committed`] with the same entries.
    pub fn ops(&self, entries: &[AuditEntry]) -> Vec<Op> {
        let mut ops = Vec::with_capacity(entries.len() + 1);
        let mut seq = self.next;
        for entry in entries {
            ops.push(Op::PutAudit {
                seq,
                entry: entry.clone(),
            });
            seq += 1;
        }
        // Entries `seq - keep ..= seq - 1` stay.
        if !entries.is_empty() && seq > self.keep {
            ops.push(Op::PruneAudit {
                upto: seq - self.keep - 1,
            });
        }
        ops
    }

    /// Mirrors entries whose [`AuditLog::ops`] were applied.
    pub fn committed(&mut self, entries: Vec<AuditEntry>) {
        for entry in entries {
            self.next += 1;
            self.entries.push_back(entry);
        }
        while self.entries.len() as u64 > self.keep {
            self.entries.pop_front();
        }
    }

    /// The newest `limit` entries, newest first.
    pub fn latest(&self, limit: usize) -> Vec<AuditEntry> {
        self.entries.iter().rev().take(limit).cloned().collect()
    }

    /// Number of entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
