//! [`Store`] in memory, for tests: typed maps behind a mutex. It counts flushes so tests
//! can check that the coordinator flushed before it answered, and [`MemoryStore::shared`]
//! reports every batch to followers, so several coordinators in one test process can
//! share it the way they share an etcd cluster.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use mesh_proto::admin::AuditEntry;
use mesh_proto::Key;

use tokio::sync::mpsc;

use super::{
    touched_networks, Dump, Event, Expect, Follow, NetworkDump, Op, Revision, Store, StoreError,
};
use crate::model::{ChangeRecord, Member, Network, Token};

#[derive(Debug, Clone, Default)]
struct Maps {
    networks: BTreeMap<String, Network>,
    members: BTreeMap<(String, Key), Member>,
    tokens: BTreeMap<(String, String), Token>,
    log: BTreeMap<(String, u64), ChangeRecord>,
    /// Audit entries by (sequence number, batch revision): two writers may use one number.
    audit: BTreeMap<(u64, Revision), AuditEntry>,
    revision: Revision,
    net_revision: BTreeMap<String, Revision>,
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    maps: Mutex<Maps>,
    applied: AtomicU64,
    flushed: AtomicU64,
    /// `Some` when followers may subscribe ([`MemoryStore::shared`]).
    followers: Option<Mutex<Vec<mpsc::Sender<Follow>>>>,
    /// Fails the next `n` batches with [`StoreError::Unavailable`] (tests of lost quorum).
    fail_next: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// An empty store that reports every batch to [`Store::follow`]ers.
    pub fn shared() -> MemoryStore {
        MemoryStore {
            followers: Some(Mutex::new(Vec::new())),
            ..MemoryStore::default()
        }
    }

    /// Refuses the next `n` batches as a store without quorum would.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Whether everything applied so far has been flushed.
    pub fn is_flushed(&self) -> bool {
        self.flushed.load(Ordering::SeqCst) == self.applied.load(Ordering::SeqCst)
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves consistent maps (apply swaps whole copies).
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Dump, StoreError> {
        let m = self.maps();
        let networks = m
            .networks
            .values()
            .map(|n| NetworkDump {
                network: n.clone(),
                revision: m.net_revision.get(&n.name).copied().unwrap_or(0),
                members: m
                    .members
                    .iter()
                    .filter(|((net, _), _)| *net == n.name)
                    .map(|(_, v)| v.clone())
                    .collect(),
                tokens: m
                    .tokens
                    .iter()
                    .filter(|((net, _), _)| *net == n.name)
                    .map(|(_, t)| t.clone())
                    .collect(),
            })
            .collect();
        Ok(Dump {
            revision: m.revision,
            networks,
            audit: m.audit.iter().map(|((s, _), e)| (*s, e.clone())).collect(),
            ..Dump::default()
        })
    }

    fn log_after(&self, network: &str, after: u64) -> Result<Vec<(u64, ChangeRecord)>, StoreError> {
        Ok(self
            .maps()
            .log
            .iter()
            .filter(|((n, v), _)| n == network && *v > after)
            .map(|((_, v), r)| (*v, r.clone()))
            .collect())
    }

    fn apply(&self, ops: &[Op], expect: &[Expect]) -> Result<Revision, StoreError> {
        let mut guard = self.maps();
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Unavailable("no quorum (test)".into()));
        }
        for e in expect {
            if guard.net_revision.get(&e.network).copied().unwrap_or(0) != e.revision {
                return Err(StoreError::Conflict {
                    network: e.network.clone(),
                    expected: e.revision,
                });
            }
        }
        let mut m = guard.clone();
        m.revision += 1;
        let rev = m.revision;
        for op in ops {
            match op {
                Op::PutNetwork(n) => {
                    m.networks.insert(n.name.clone(), n.clone());
                }
                Op::DeleteNetwork(net) => {
                    m.networks.remove(net);
                    m.members.retain(|(n, _), _| n != net);
                    m.tokens.retain(|(n, _), _| n != net);
                    m.log.retain(|(n, _), _| n != net);
                }
                Op::PutMember { network, member } => {
                    m.members
                        .insert((network.clone(), member.public_key), member.clone());
                }
                Op::DeleteMember { network, key } => {
                    m.members.remove(&(network.clone(), *key));
                }
                Op::PutToken(t) => {
                    m.tokens
                        .insert((t.network.clone(), t.id.clone()), t.clone());
                }
                Op::PutLog {
                    network,
                    version,
                    record,
                } => {
                    m.log.insert((network.clone(), *version), record.clone());
                }
                Op::PruneLog { network, upto } => {
                    m.log.retain(|(n, v), _| n != network || v > upto);
                }
                Op::PutAudit { seq, entry } => {
                    m.audit.insert((*seq, rev), entry.clone());
                }
                Op::PruneAudit { upto } => {
                    m.audit.retain(|(s, _), _| s > upto);
                }
            }
        }
        for net in touched_networks(ops) {
            if m.networks.contains_key(net) {
                m.net_revision.insert(net.to_owned(), rev);
            } else {
                m.net_revision.remove(net);
            }
        }
        *guard = m;
        self.applied.fetch_add(1, Ordering::SeqCst);
        if let Some(followers) = &self.followers {
            let event = Event {
                revision: rev,
                ops: ops
                    .iter()
                    .filter(|op| !matches!(op, Op::PutLog { .. } | Op::PruneLog { .. }))
                    .cloned()
                    .collect(),
            };
            let mut followers = followers.lock().unwrap_or_else(|e| e.into_inner());
            // Sent under the maps' lock, so followers see batches in revision order.
            followers.retain(|tx| tx.try_send(Follow::Batch(event.clone())).is_ok());
        }
        Ok(rev)
    }

    fn flush(&self) -> Result<(), StoreError> {
        let applied = self.applied.load(Ordering::SeqCst);
        self.flushed.fetch_max(applied, Ordering::SeqCst);
        Ok(())
    }

    fn follow(&self, after: Revision) -> Option<mpsc::Receiver<Follow>> {
        let followers = self.followers.as_ref()?;
        let (tx, rx) = mpsc::channel(4096);
        let maps = self.maps();
        if after < maps.revision {
            // No history kept: a follower that is behind reloads.
            let _ = tx.try_send(Follow::Reload);
        }
        followers.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        Some(rx)
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
