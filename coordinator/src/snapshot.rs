//! A network at one version as every member's session sees it, and the pure functions that
//! turn it into what a member is sent: its [`Netmap`], the changes between two snapshots
//! (exactly [`mesh_proto::netmap::diff`] of the two netmaps, without building them), and the
//! changes to resume from an older version via the change log.
//!
//! Snapshots are immutable and shared ([`Arc`]); peer entries are shared between
//! consecutive snapshots, so a change to one member costs one new entry, not a copy of
//! every peer, and comparing unchanged entries is a pointer comparison.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ipnet::IpNet;
use mesh_proto::netmap::{Netmap, NetworkInfo, PeerChange, PeerInfo};
use mesh_proto::Key;

use crate::model::ChangeRecord;

/// One network at one version.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The network's netmap version.
    pub version: u64,
    /// Its settings.
    pub network: NetworkInfo,
    /// Authorised members as peers.
    pub peers: BTreeMap<Key, Arc<PeerInfo>>,
    /// Members waiting for (or deprived of) authorisation.
    pub pending: BTreeSet<Key>,
    /// The network was deleted: sessions end.
    pub deleted: bool,
}

/// Where a member stands in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Gets netmaps.
    Authorized,
    /// Known, not authorised.
    Pending,
    /// Not a member (deleted, or the network is gone).
    Absent,
}

impl Snapshot {
    /// The member's standing.
    pub fn status(&self, key: &Key) -> Status {
        if self.deleted {
            Status::Absent
        } else if self.peers.contains_key(key) {
            Status::Authorized
        } else if self.pending.contains(key) {
            Status::Pending
        } else {
            Status::Absent
        }
    }

    fn self_address(&self, me: &PeerInfo) -> IpNet {
        IpNet::new(me.address, self.network.cidr.prefix_len())
            .unwrap_or_else(|_| IpNet::from(me.address))
    }

    /// The full netmap of an authorised member (`None` when it is not authorised).
    pub fn netmap_for(&self, key: &Key) -> Option<Netmap> {
        let me = self.peers.get(key)?;
        Some(Netmap {
            version: self.version,
            network: self.network.clone(),
            address: self.self_address(me),
            name: me.name.clone(),
            peers: self
                .peers
                .iter()
                .filter(|(k, _)| *k != key)
                .map(|(k, p)| (*k, PeerInfo::clone(p)))
                .collect(),
        })
    }

    /// `diff(old.netmap_for(key), self.netmap_for(key))` for a member authorised in both,
    /// computed by walking both peer maps once.
    pub fn changes_since(&self, old: &Snapshot, key: &Key) -> Vec<PeerChange> {
        let mut changes = Vec::new();
        if old.network != self.network {
            changes.push(PeerChange::Network {
                network: self.network.clone(),
            });
        }
        if let (Some(was), Some(now)) = (old.peers.get(key), self.peers.get(key)) {
            let (a, b) = (old.self_address(was), self.self_address(now));
            if a != b || was.name != now.name {
                changes.push(PeerChange::SelfUpdate {
                    address: b,
                    name: now.name.clone(),
                });
            }
        }
        for k in old.peers.keys() {
            if k != key && !self.peers.contains_key(k) {
                changes.push(PeerChange::Remove { public_key: *k });
            }
        }
        for (k, p) in &self.peers {
            if k == key {
                continue;
            }
            let same = old
                .peers
                .get(k)
                .is_some_and(|q| Arc::ptr_eq(p, q) || **p == **q);
            if !same {
                changes.push(PeerChange::Upsert {
                    peer: PeerInfo::clone(p),
                });
            }
        }
        changes
    }

    /// The changes that bring a member holding its netmap of an older version up to this
    /// snapshot, given the change-log records of every version in between.
    ///
    /// Every peer touched in between is sent as it is now (upsert, or remove when gone), so
    /// the result may repeat a state the node already has; applying changes is idempotent,
    /// and applying these gives exactly [`Snapshot::netmap_for`].
    pub fn changes_from_log<'a>(
        &self,
        key: &Key,
        records: impl IntoIterator<Item = &'a ChangeRecord>,
    ) -> Vec<PeerChange> {
        let mut network = false;
        let mut touched = BTreeSet::new();
        for r in records {
            network |= r.network;
            touched.extend(r.touched.iter().copied());
        }
        let mut changes = Vec::new();
        if network {
            changes.push(PeerChange::Network {
                network: self.network.clone(),
            });
        }
        if touched.contains(key) || network {
            if let Some(me) = self.peers.get(key) {
                changes.push(PeerChange::SelfUpdate {
                    address: self.self_address(me),
                    name: me.name.clone(),
                });
            }
        }
        for k in &touched {
            if k != key && !self.peers.contains_key(k) {
                changes.push(PeerChange::Remove { public_key: *k });
            }
        }
        for k in &touched {
            if let Some(p) = self.peers.get(k).filter(|_| k != key) {
                changes.push(PeerChange::Upsert {
                    peer: PeerInfo::clone(p),
                });
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::netmap::diff;

    fn key(b: u8) -> Key {
        Key([b; 32])
    }

    fn peer(b: u8, host: u8, name: &str) -> Arc<PeerInfo> {
        let address = format!("10.9.8.{host}").parse().unwrap();
        Arc::new(PeerInfo {
            public_key: key(b),
            name: name.into(),
            address,
            allowed_ips: vec![IpNet::from(address)],
            endpoints: vec![format!("198.51.100.{b}:51820").parse().unwrap()],
        })
    }

    fn snap(version: u64, mtu: u16, peers: &[Arc<PeerInfo>]) -> Snapshot {
        Snapshot {
            version,
            network: NetworkInfo {
                name: "lab".into(),
                cidr: "10.9.8.0/24".parse().unwrap(),
                mtu,
                keepalive: 25,
            },
            peers: peers.iter().map(|p| (p.public_key, p.clone())).collect(),
            pending: BTreeSet::new(),
            deleted: false,
        }
    }

    #[test]
    fn status_and_netmap() {
        let mut s = snap(4, 1280, &[peer(1, 1, "a"), peer(2, 2, "b")]);
        s.pending.insert(key(3));
        assert_eq!(s.status(&key(1)), Status::Authorized);
        assert_eq!(s.status(&key(3)), Status::Pending);
        assert_eq!(s.status(&key(4)), Status::Absent);
        let m = s.netmap_for(&key(1)).unwrap();
        assert_eq!(m.version, 4);
        assert_eq!(m.address.to_string(), "10.9.8.1/24");
        assert_eq!(m.name, "a");
        assert_eq!(m.peers.keys().copied().collect::<Vec<_>>(), vec![key(2)]);
        assert!(s.netmap_for(&key(3)).is_none());
        s.deleted = true;
        assert_eq!(s.status(&key(1)), Status::Absent);
    }

    /// Pairs of snapshots in which member 1 is authorised in both.
    fn cases() -> Vec<(&'static str, Snapshot, Snapshot)> {
        let (a, b, c) = (peer(1, 1, "a"), peer(2, 2, "b"), peer(3, 3, "c"));
        vec![
            (
                "same",
                snap(1, 1280, &[a.clone(), b.clone()]),
                snap(2, 1280, &[a.clone(), b.clone()]),
            ),
            (
                "add",
                snap(1, 1280, std::slice::from_ref(&a)),
                snap(2, 1280, &[a.clone(), b.clone(), c.clone()]),
            ),
            (
                "remove",
                snap(1, 1280, &[a.clone(), b.clone(), c.clone()]),
                snap(2, 1280, &[a.clone(), c.clone()]),
            ),
            (
                "rename peer",
                snap(1, 1280, &[a.clone(), b.clone()]),
                snap(2, 1280, &[a.clone(), peer(2, 2, "bee")]),
            ),
            (
                "readdress self",
                snap(1, 1280, &[a.clone(), b.clone()]),
                snap(2, 1280, &[peer(1, 9, "a"), b.clone()]),
            ),
            (
                "rename self",
                snap(1, 1280, std::slice::from_ref(&a)),
                snap(2, 1280, &[peer(1, 1, "aa")]),
            ),
            (
                "equal but not shared",
                snap(1, 1280, &[a.clone(), b.clone()]),
                snap(2, 1280, &[a.clone(), peer(2, 2, "b")]),
            ),
            (
                "network",
                snap(1, 1280, &[a.clone(), b.clone()]),
                snap(2, 1400, &[a.clone(), c.clone()]),
            ),
        ]
    }

    #[test]
    fn changes_since_equals_netmap_diff() {
        for (name, old, new) in cases() {
            let (old_map, new_map) = (
                old.netmap_for(&key(1)).unwrap(),
                new.netmap_for(&key(1)).unwrap(),
            );
            assert_eq!(
                new.changes_since(&old, &key(1)),
                diff(&old_map, &new_map),
                "{name}"
            );
        }
    }

    #[test]
    fn changes_from_log_reach_the_new_netmap() {
        for (name, old, new) in cases() {
            // The log names every member whose entry changed (and possibly more).
            let mut touched: Vec<Key> = old.peers.keys().chain(new.peers.keys()).copied().collect();
            touched.retain(|k| old.peers.get(k) != new.peers.get(k));
            let record = ChangeRecord {
                network: old.network != new.network,
                touched,
            };
            let extra = ChangeRecord {
                network: false,
                touched: vec![key(2), key(77)],
            };
            let mut applied = old.netmap_for(&key(1)).unwrap();
            let changes = new.changes_from_log(&key(1), [&record, &extra]);
            applied.apply(new.version, &changes);
            assert_eq!(Some(applied), new.netmap_for(&key(1)), "{name}");
        }
        // Nothing logged, nothing sent.
        let s = snap(3, 1280, &[peer(1, 1, "a")]);
        assert!(s.changes_from_log(&key(1), []).is_empty());
    }
}
