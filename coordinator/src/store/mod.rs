//! Persistence behind a trait: [`SledStore`] on disk (`DIR/db`), [`MemoryStore`] for tests.
//!
//! Writes come as a list of [`Op`]s applied atomically ([`Store::apply`]); nothing is
//! durable until [`Store::flush`] returns. The coordinator applies every mutation under its
//! one state lock and flushes before it acknowledges anything (an admin answer, a join, a
//! netmap), so an acknowledged change survives `kill -9`.
//!
//! What a member was last sent is kept as the netmap *version* (`PutSent`) plus a
//! per-network change log (`PutLog`: which members' peer entries each version touched,
//! the last [`LOG_KEEP`](crate::control::state::LOG_KEEP) versions). A member's netmap is a pure
//! function of the network at a version, so this identifies the last-sent map exactly while
//! writing O(members) bytes per change instead of a full map per member (O(members²)).
//!
//! **Architecture Invariant:** the store is not the source of truth while the coordinator
//! runs; the in-memory state in [`crate::control::state`] is. The store is read whole at start, and
//! afterwards only for what is not mirrored: last-sent versions and the change log.

mod memory;
mod sled;

use mesh_proto::admin::AuditEntry;
use mesh_proto::Key;

pub use self::memory::MemoryStore;
pub use self::sled::SledStore;
use crate::model::{ChangeRecord, Member, Network, Token};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database: {0}")]
    Db(#[from] ::sled::Error),
    /// A stored record does not decode.
    #[error("corrupt record {key}: {source}")]
    Corrupt {
        /// The record's key, printable.
        key: String,
        /// The decode error.
        source: serde_json::Error,
    },
    /// The flush task went away (the runtime is shutting down).
    #[error("flush interrupted")]
    Interrupted,
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Creates or replaces a network record.
    PutNetwork(Network),
    /// Deletes a network and everything under it: members, tokens, last-sent versions and
    /// change log.
    DeleteNetwork(String),
    /// Creates or replaces a member of `network`.
    PutMember {
        /// Network name.
        network: String,
        /// The record.
        member: Member,
    },
    /// Deletes a member and its last-sent version.
    DeleteMember {
        /// Network name.
        network: String,
        /// The member's key.
        key: Key,
    },
    /// Creates or replaces a token (under its `network`).
    PutToken(Token),
    /// Records the netmap version last sent to a member.
    PutSent {
        /// Network name.
        network: String,
        /// The member's key.
        key: Key,
        /// The version sent.
        version: u64,
    },
    /// Forgets the netmap last sent to a member (it was told it is no longer authorised).
    DeleteSent {
        /// Network name.
        network: String,
        /// The member's key.
        key: Key,
    },
    /// Records what netmap `version` of `network` changed.
    PutLog {
        /// Network name.
        network: String,
        /// The version the change produced.
        version: u64,
        /// What changed.
        record: ChangeRecord,
    },
    /// Drops change-log entries of `network` with versions up to `upto` inclusive.
    PruneLog {
        /// Network name.
        network: String,
        /// Highest version to drop.
        upto: u64,
    },
    /// Appends entry `seq` to the audit log ([`crate::control::audit`]).
    PutAudit {
        /// Its sequence number (increasing, never reused).
        seq: u64,
        /// The entry.
        entry: AuditEntry,
    },
    /// Drops audit entries with sequence numbers up to `upto` inclusive.
    PruneAudit {
        /// Highest sequence number to drop.
        upto: u64,
    },
}

/// What the coordinator persists.
pub trait Store: Send + Sync + 'static {
    /// Every network.
    fn networks(&self) -> Result<Vec<Network>, StoreError>;
    /// Every member of `network`, in key order.
    fn members(&self, network: &str) -> Result<Vec<Member>, StoreError>;
    /// Every token of `network`.
    fn tokens(&self, network: &str) -> Result<Vec<Token>, StoreError>;
    /// The netmap version last sent to a member, if one is recorded.
    fn last_sent(&self, network: &str, key: &Key) -> Result<Option<u64>, StoreError>;
    /// Change-log entries of `network` with versions above `after`, in version order.
    fn log_after(&self, network: &str, after: u64) -> Result<Vec<(u64, ChangeRecord)>, StoreError>;
    /// Every audit entry kept, by sequence number, oldest first.
    fn audit(&self) -> Result<Vec<(u64, AuditEntry)>, StoreError>;
    /// Applies `ops` atomically (all or none), in order.
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError>;
    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests;
