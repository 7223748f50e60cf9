//! Persistence behind a trait: [`SledStore`] on disk (`DIR/db`, one coordinator),
//! [`EtcdStore`] on an etcd cluster (several coordinators at once), [`MemoryStore`] for
//! tests. All three pass one test suite (`store/tests.rs`).
//!
//! # The contract
//! - Writes come as a list of [`Op`]s applied atomically ([`Store::apply`]), each under
//!   conditions ([`Expect`]): the batch applies only if every network it names is still at
//!   the [`Revision`] the caller's state was made from, otherwise nothing is written and
//!   the caller gets [`StoreError::Conflict`]. Every batch that touches a network gives it
//!   the batch's revision. So two writers (two coordinators) never both allocate one
//!   address or spend one one-time token: the second one's condition fails.
//! - Nothing is acknowledged before it is durable: after [`Store::flush`] returns
//!   (sled: on disk; etcd: committed by its quorum when `apply` returns).
//! - A shared store ([`Store::follow`]) reports every batch other writers applied, in
//!   revision order, as the same [`Op`]s, so each coordinator mirrors the whole store.
//! - A store that cannot reach its quorum refuses writes with [`StoreError::Unavailable`]
//!   and never half-applies a batch.
//!
//! What a member was sent is identified by the network's netmap *version* plus a
//! per-network change log (`PutLog`: which members' peer entries each version touched,
//! the last [`LOG_KEEP`](crate::control::state::LOG_KEEP) versions), so a node resumes on
//! any coordinator from its version.
//!
//! **Architecture Invariant:** the store is not read on the hot path: each coordinator
//! mirrors it in memory ([`crate::control::state`]), reads it whole at start ([`Store::load`])
//! and afterwards only for the change log (resume) and what other writers report.

mod etcd;
mod memory;
mod sled;

use mesh_proto::admin::AuditEntry;
use mesh_proto::Key;

pub use self::etcd::{EtcdOptions, EtcdStore, LEASE_TTL};
pub use self::memory::MemoryStore;
pub use self::sled::SledStore;
use crate::model::{ChangeRecord, Member, Network, Token};

/// A store revision: increases with every applied batch. A network's revision is that of
/// the last batch that touched it; 0 means it does not exist.
pub type Revision = u64;

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
    /// A condition of the batch failed: another writer changed the network first.
    /// Nothing was written.
    #[error("network {network:?} changed concurrently (expected it at revision {expected})")]
    Conflict {
        /// The network whose condition failed.
        network: String,
        /// The revision the batch expected it at.
        expected: Revision,
    },
    /// The store cannot commit now (an etcd cluster without quorum, unreachable members).
    /// Nothing was acknowledged; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The batch is larger than the store takes in one transaction.
    #[error("batch too large: {0}")]
    TooLarge(String),
}

/// A condition on a batch: `network` is still at `revision` (0: does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The network's name.
    pub network: String,
    /// Its revision as the caller saw it.
    pub revision: Revision,
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Creates or replaces a network record.
    PutNetwork(Network),
    /// Deletes a network and everything under it: members, tokens and change log.
    DeleteNetwork(String),
    /// Creates or replaces a member of `network`.
    PutMember {
        /// Network name.
        network: String,
        /// The record.
        member: Member,
    },
    /// Deletes a member.
    DeleteMember {
        /// Network name.
        network: String,
        /// The member's key.
        key: Key,
    },
    /// Creates or replaces a token (under its `network`).
    PutToken(Token),
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
        /// Its sequence number (increasing; two coordinators may use the same one, the
        /// store keeps both).
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

impl Op {
    /// The network this op writes under, if any (audit entries are global).
    pub fn network(&self) -> Option<&str> {
        match self {
            Op::PutNetwork(n) => Some(&n.name),
            Op::DeleteNetwork(net) => Some(net),
            Op::PutMember { network, .. }
            | Op::DeleteMember { network, .. }
            | Op::PutLog { network, .. }
            | Op::PruneLog { network, .. } => Some(network),
            Op::PutToken(t) => Some(&t.network),
            Op::PutAudit { .. } | Op::PruneAudit { .. } => None,
        }
    }
}

/// One network as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDump {
    /// The record.
    pub network: Network,
    /// Its revision.
    pub revision: Revision,
    /// Its members, in key order.
    pub members: Vec<Member>,
    /// Its tokens.
    pub tokens: Vec<Token>,
}

/// Everything the coordinator mirrors, read at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dump {
    /// The store's revision the dump is of; [`Store::follow`] continues after it.
    pub revision: Revision,
    /// Every network.
    pub networks: Vec<NetworkDump>,
    /// Every audit entry kept, oldest first.
    pub audit: Vec<(u64, AuditEntry)>,
    /// Members online at some coordinator (a shared store only).
    pub presence: Vec<Presence>,
    /// Every live coordinator's registration: its id and what it advertises (a shared
    /// store only; opaque bytes to the store).
    pub coordinators: Vec<(String, Vec<u8>)>,
}

/// A member online (or not) at a coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The member's network.
    pub network: String,
    /// The member's key.
    pub key: Key,
    /// The coordinator holding (or no longer holding) its session.
    pub coordinator: String,
    /// Online there.
    pub online: bool,
}

/// Whether the store takes writes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Writes go through.
    pub ok: bool,
    /// Why not, or where it is.
    pub detail: String,
}

/// A batch another writer applied, as the ops it consisted of (deletes of a whole network
/// arrive as `DeleteNetwork`; change-log ops are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The batch's revision.
    pub revision: Revision,
    /// What it wrote.
    pub ops: Vec<Op>,
}

/// What a shared store reports: batches, or that the follower fell behind and must reload.
#[derive(Debug)]
pub enum Follow {
    /// A batch applied by anyone (this coordinator's own included; callers skip revisions
    /// they already mirror).
    Batch(Event),
    /// The history after the revision asked for is gone (compacted): reload from
    /// [`Store::load`] and follow again from its revision.
    Reload,
    /// A member came online at, or went offline from, a coordinator.
    Presence(Presence),
    /// A coordinator registered (`Some`: what it advertises) or went away (`None`).
    Coordinator {
        /// Its id.
        id: String,
        /// Its registration.
        info: Option<Vec<u8>>,
    },
}

/// What the coordinator persists.
pub trait Store: Send + Sync + 'static {
    /// Every network, member, token and audit entry, at one revision.
    fn load(&self) -> Result<Dump, StoreError>;
    /// Change-log entries of `network` with versions above `after`, in version order.
    fn log_after(&self, network: &str, after: u64) -> Result<Vec<(u64, ChangeRecord)>, StoreError>;
    /// Applies `ops` atomically (all or none), in order, if every `expect` holds; returns
    /// the batch's revision.
    fn apply(&self, ops: &[Op], expect: &[Expect]) -> Result<Revision, StoreError>;
    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// For a store several coordinators share: every batch after revision `after`, as it
    /// commits. `None`: this process is the store's only writer.
    fn follow(&self, after: Revision) -> Option<tokio::sync::mpsc::Receiver<Follow>> {
        let _ = after;
        None
    }
    /// A line for `/metrics` and logs: which backend, where.
    fn describe(&self) -> String;
    /// Whether writes go through now. Stores on local disk are always healthy.
    fn health(&self) -> Health {
        Health {
            ok: true,
            detail: self.describe(),
        }
    }
    /// Tells the other coordinators that a member is online here (or no longer). Kept for
    /// as long as this process lives (etcd: under its lease); never blocks. A store with
    /// one writer keeps nothing.
    fn set_presence(&self, network: &str, key: &Key, online: bool) {
        let _ = (network, key, online);
    }
    /// Registers this coordinator under `id` with what it advertises, kept while it lives.
    fn register(&self, id: &str, info: Vec<u8>) {
        let _ = (id, info);
    }
}

/// The networks a batch writes under, each once, in order of first appearance.
pub(crate) fn touched_networks(ops: &[Op]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for net in ops.iter().filter_map(Op::network) {
        if !out.contains(&net) {
            out.push(net);
        }
    }
    out
}

#[cfg(test)]
mod tests;
