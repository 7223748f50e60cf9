//! [`Store`] in memory, for tests: typed maps behind a mutex. It counts flushes so tests
//! can check that the coordinator flushed before it answered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use mesh_proto::admin::AuditEntry;
use mesh_proto::Key;

use super::{Op, Store, StoreError};
use crate::model::{ChangeRecord, Member, Network, Token};

#[derive(Debug, Clone, Default)]
struct Maps {
    networks: BTreeMap<String, Network>,
    members: BTreeMap<(String, Key), Member>,
    tokens: BTreeMap<(String, String), Token>,
    sent: BTreeMap<(String, Key), u64>,
    log: BTreeMap<(String, u64), ChangeRecord>,
    audit: BTreeMap<u64, AuditEntry>,
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    maps: Mutex<Maps>,
    applied: AtomicU64,
    flushed: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
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
    fn networks(&self) -> Result<Vec<Network>, StoreError> {
        Ok(self.maps().networks.values().cloned().collect())
    }

    fn members(&self, network: &str) -> Result<Vec<Member>, StoreError> {
        Ok(self
            .maps()
            .members
            .iter()
            .filter(|((n, _), _)| n == network)
            .map(|(_, m)| m.clone())
            .collect())
    }

    fn tokens(&self, network: &str) -> Result<Vec<Token>, StoreError> {
        Ok(self
            .maps()
            .tokens
            .iter()
            .filter(|((n, _), _)| n == network)
            .map(|(_, t)| t.clone())
            .collect())
    }

    fn last_sent(&self, network: &str, key: &Key) -> Result<Option<u64>, StoreError> {
        Ok(self.maps().sent.get(&(network.to_owned(), *key)).copied())
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

    fn audit(&self) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        Ok(self
            .maps()
            .audit
            .iter()
            .map(|(s, e)| (*s, e.clone()))
            .collect())
    }

    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut guard = self.maps();
        let mut m = guard.clone();
        for op in ops {
            match op {
                Op::PutNetwork(n) => {
                    m.networks.insert(n.name.clone(), n.clone());
                }
                Op::DeleteNetwork(net) => {
                    m.networks.remove(net);
                    m.members.retain(|(n, _), _| n != net);
                    m.tokens.retain(|(n, _), _| n != net);
                    m.sent.retain(|(n, _), _| n != net);
                    m.log.retain(|(n, _), _| n != net);
                }
                Op::PutMember { network, member } => {
                    m.members
                        .insert((network.clone(), member.public_key), member.clone());
                }
                Op::DeleteMember { network, key } => {
                    m.members.remove(&(network.clone(), *key));
                    m.sent.remove(&(network.clone(), *key));
                }
                Op::PutToken(t) => {
                    m.tokens
                        .insert((t.network.clone(), t.id.clone()), t.clone());
                }
                Op::PutSent {
                    network,
                    key,
                    version,
                } => {
                    m.sent.insert((network.clone(), *key), *version);
                }
                Op::DeleteSent { network, key } => {
                    m.sent.remove(&(network.clone(), *key));
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
                    m.audit.insert(*seq, entry.clone());
                }
                Op::PruneAudit { upto } => {
                    m.audit.retain(|s, _| s > upto);
                }
            }
        }
        *guard = m;
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let applied = self.applied.load(Ordering::SeqCst);
        self.flushed.fetch_max(applied, Ordering::SeqCst);
        Ok(())
    }
}
