//! [`Store`] on sled: one tree, keys prefixed by record kind, values JSON.
//!
//! ```text
//! n/<net>               → Network
//! m/<net>/<key: 32 B>   → Member
//! t/<net>/<id>          → Token
//! l/<net>/<ver: u64 BE> → ChangeRecord
//! a/<seq: u64 BE>       → AuditEntry
//! r/<net>               → the network's revision (u64 BE)
//! rev                   → the store's revision (u64 BE)
//! ```
//! Network names never contain `/`, so `m/lab/` does not match members of `lab2`. A list of
//! [`Op`]s becomes one `sled::Batch`, which sled applies atomically; conditions are checked
//! under a mutex (one process writes a sled store). Databases from before revisions
//! (no `rev`) read as revision 0 with every network at revision 1. Old `s/` records (last
//! sent versions, no longer kept) go with their member or network.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{touched_networks, Dump, Expect, NetworkDump, Op, Revision, Store, StoreError};
use crate::model::{ChangeRecord, Network};

/// sled's page cache (its default, 1 GiB, is more than the coordinator's whole state).
const CACHE_BYTES: u64 = 64 << 20;

/// The on-disk store.
#[derive(Debug)]
pub struct SledStore {
    pub(super) db: ::sled::Db,
    /// Checking conditions and applying is one step.
    write: std::sync::Mutex<()>,
}

impl SledStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        let db = ::sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        Ok(SledStore {
            db,
            write: std::sync::Mutex::new(()),
        })
    }
}

fn network_key(net: &str) -> Vec<u8> {
    format!("n/{net}").into_bytes()
}

fn prefix(kind: char, net: &str) -> Vec<u8> {
    format!("{kind}/{net}/").into_bytes()
}

fn keyed(kind: char, net: &str, tail: &[u8]) -> Vec<u8> {
    let mut k = prefix(kind, net);
    k.extend_from_slice(tail);
    k
}

fn audit_key(seq: u64) -> Vec<u8> {
    let mut k = b"a/".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data records: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn read_u64(v: Option<::sled::IVec>) -> Option<u64> {
    let bytes: [u8; 8] = v?.as_ref().try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

impl SledStore {
    /// The store's revision.
    fn revision(&self) -> Result<Revision, StoreError> {
        Ok(read_u64(self.db.get(b"rev")?).unwrap_or(0))
    }

    /// A network's revision (0: it does not exist).
    fn net_revision(&self, net: &str) -> Result<Revision, StoreError> {
        if let Some(r) = read_u64(self.db.get(format!("r/{net}"))?) {
            return Ok(r);
        }
        Ok(u64::from(self.db.contains_key(network_key(net))?))
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(prefix) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }
}

impl Store for SledStore {
    fn load(&self) -> Result<Dump, StoreError> {
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut networks = Vec::new();
        for network in self.scan::<Network>(b"n/")? {
            networks.push(NetworkDump {
                revision: self.net_revision(&network.name)?,
                members: self.scan(&prefix('m', &network.name))?,
                tokens: self.scan(&prefix('t', &network.name))?,
                network,
            });
        }
        let mut audit = Vec::new();
        for item in self.db.scan_prefix(b"a/") {
            let (k, v) = item?;
            let tail = &k[k.len().saturating_sub(8)..];
            let seq = u64::from_be_bytes(tail.try_into().unwrap_or([0; 8]));
            audit.push((seq, decode(&k, &v)?));
        }
        Ok(Dump {
            revision: self.revision()?,
            networks,
            audit,
            ..Dump::default()
        })
    }

    fn log_after(&self, network: &str, after: u64) -> Result<Vec<(u64, ChangeRecord)>, StoreError> {
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let start = keyed('l', network, &from.to_be_bytes());
        let end = keyed('l', network, &u64::MAX.to_be_bytes());
        let mut out = Vec::new();
        for item in self.db.range(start..=end) {
            let (k, v) = item?;
            let tail = &k[k.len().saturating_sub(8)..];
            let version = u64::from_be_bytes(tail.try_into().unwrap_or([0; 8]));
            out.push((version, decode(&k, &v)?));
        }
        Ok(out)
    }

    fn apply(&self, ops: &[Op], expect: &[Expect]) -> Result<Revision, StoreError> {
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        for e in expect {
            if self.net_revision(&e.network)? != e.revision {
                return Err(StoreError::Conflict {
                    network: e.network.clone(),
                    expected: e.revision,
                });
            }
        }
        let rev = self.revision()? + 1;
        // Collect into an ordered map first so a delete-by-prefix also drops puts earlier
        // in the same list, then hand sled one atomic batch.
        let mut writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::PutNetwork(n) => {
                    writes.insert(network_key(&n.name), Some(encode(n)));
                }
                Op::DeleteNetwork(net) => {
                    writes.insert(network_key(net), None);
                    writes.insert(format!("r/{net}").into_bytes(), None);
                    for kind in ['m', 't', 's', 'l'] {
                        let p = prefix(kind, net);
                        for item in self.db.scan_prefix(&p) {
                            let (k, _) = item?;
                            writes.insert(k.to_vec(), None);
                        }
                        for (k, v) in writes.iter_mut() {
                            if k.starts_with(&p) {
                                *v = None;
                            }
                        }
                    }
                }
                Op::PutMember { network, member } => {
                    writes.insert(
                        keyed('m', network, &member.public_key.0),
                        Some(encode(member)),
                    );
                }
                Op::DeleteMember { network, key } => {
                    writes.insert(keyed('m', network, &key.0), None);
                    writes.insert(keyed('s', network, &key.0), None);
                }
                Op::PutToken(t) => {
                    writes.insert(keyed('t', &t.network, t.id.as_bytes()), Some(encode(t)));
                }
                Op::PutLog {
                    network,
                    version,
                    record,
                } => {
                    writes.insert(
                        keyed('l', network, &version.to_be_bytes()),
                        Some(encode(record)),
                    );
                }
                Op::PruneLog { network, upto } => {
                    let start = keyed('l', network, &0u64.to_be_bytes());
                    let end = keyed('l', network, &upto.to_be_bytes());
                    for item in self.db.range(start.clone()..=end.clone()) {
                        let (k, _) = item?;
                        writes.insert(k.to_vec(), None);
                    }
                    for (k, v) in writes.iter_mut() {
                        if *k >= start && *k <= end {
                            *v = None;
                        }
                    }
                }
                Op::PutAudit { seq, entry } => {
                    writes.insert(audit_key(*seq), Some(encode(entry)));
                }
                Op::PruneAudit { upto } => {
                    let (start, end) = (audit_key(0), audit_key(*upto));
                    for item in self.db.range(start.clone()..=end.clone()) {
                        let (k, _) = item?;
                        writes.insert(k.to_vec(), None);
                    }
                    for (k, v) in writes.iter_mut() {
                        if *k >= start && *k <= end {
                            *v = None;
                        }
                    }
                }
            }
        }
        for net in touched_networks(ops) {
            let exists = match writes.get(&network_key(net)) {
                Some(v) => v.is_some(),
                None => self.db.contains_key(network_key(net))?,
            };
            let value = exists.then(|| rev.to_be_bytes().to_vec());
            writes.insert(format!("r/{net}").into_bytes(), value);
        }
        writes.insert(b"rev".to_vec(), Some(rev.to_be_bytes().to_vec()));
        let mut batch = ::sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.db.apply_batch(batch)?;
        Ok(rev)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn describe(&self) -> String {
        "sled".into()
    }
}
