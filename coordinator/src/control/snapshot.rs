//! A network at one version as every member's session sees it, and the pure functions that
//! turn it into what a member is sent: its [`Netmap`], the changes between two snapshots
//! (exactly [`mesh_proto::netmap::diff`] of the two netmaps, without building them), and the
//! changes to resume from an older version via the change log.
//!
//! Snapshots are immutable and shared ([`Arc`]); peer entries are shared between
//! consecutive snapshots, so a change to one member costs one new entry, not a copy of
//! every peer, and comparing unchanged entries is a pointer comparison.
//!
//! What goes on the wire is encoded once and shared by every session
//! ([`mesh_proto::wire`]): each [`PeerEntry`] carries its encoding, joiners share the entries of a
//! full netmap ([`Checkpoint`]), and each version's changes are
//! encoded once when they are committed ([`Deltas`]). A session that is current sends the
//! frames of the versions it lacks; only one that fell further behind than [`Deltas`]
//! reaches costs work of its own.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ipnet::IpNet;
use mesh_proto::netmap::{Netmap, NetworkInfo, PeerChange, PeerInfo};
use mesh_proto::wire::{self, FrameBuilder};
use mesh_proto::Key;

use crate::control::views::Classes;
use crate::model::ChangeRecord;

/// Versions whose change frames are kept in memory per network.
pub const DELTAS_KEEP: usize = 512;
/// Bytes of change frames kept in memory per network (older versions go first).
pub const DELTAS_BYTES: usize = 8 << 20;

/// An authorised member as a peer, with its wire encoding ([`wire::encode_peer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    info: PeerInfo,
    wire: Box<[u8]>,
}

impl PeerEntry {
    /// Encodes `info` once.
    pub fn new(info: PeerInfo) -> PeerEntry {
        let mut wire = Vec::with_capacity(96);
        wire::encode_peer(&info, &mut wire);
        PeerEntry {
            info,
            wire: wire.into_boxed_slice(),
        }
    }

    /// The encoded entry.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }
}

impl Deref for PeerEntry {
    type Target = PeerInfo;

    fn deref(&self) -> &PeerInfo {
        &self.info
    }
}

/// The change frames of a network's recent versions, each encoded once when its version
/// was committed and shared by every session (a frame is `Bytes`: sending it to 10,000
/// sessions copies nothing). Bounded by [`DELTAS_KEEP`] and [`DELTAS_BYTES`].
#[derive(Debug, Default)]
pub struct Deltas {
    frames: Mutex<DeltaRing>,
    /// The latest full map whose entries are shared by joiners ([`Snapshot::first_frames`]).
    checkpoint: Mutex<Option<Arc<Checkpoint>>>,
}

/// Versions a checkpoint serves joiners for (they get it and the change frames since);
/// older than this, the next joiner makes a new one.
pub const CHECKPOINT_LAG: u64 = 256;

/// A full netmap's entries at one version, encoded once: during a join storm every joiner
/// is sent the same entries (and the shared change frames since), so memory and encoding do
/// not grow with the number of joiners in flight.
#[derive(Debug)]
pub struct Checkpoint {
    version: u64,
    network: NetworkInfo,
    /// Who is listed.
    peers: BTreeMap<Key, Arc<PeerEntry>>,
    entries: Bytes,
}

#[derive(Debug, Default)]
struct DeltaRing {
    /// (version, frame bringing version - 1 to version), consecutive versions.
    frames: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Deltas {
    /// Records the frame that brings version `version - 1` to `version`. A gap (a version
    /// without a frame) forgets everything older.
    pub fn push(&self, version: u64, frame: Bytes) {
        let mut ring = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        if ring.frames.back().is_some_and(|(v, _)| v + 1 != version) {
            ring.frames.clear();
            ring.bytes = 0;
        }
        ring.bytes += frame.len();
        ring.frames.push_back((version, frame));
        while ring.frames.len() > DELTAS_KEEP || ring.bytes > DELTAS_BYTES {
            let Some((_, old)) = ring.frames.pop_front() else {
                break;
            };
            ring.bytes -= old.len();
        }
    }

    /// The frames that bring version `from` to `to`, in order, if all are kept.
    pub fn between(&self, from: u64, to: u64) -> Option<Vec<Bytes>> {
        if from >= to {
            return Some(Vec::new());
        }
        let ring = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        let first = ring.frames.front()?.0;
        if from + 1 < first {
            return None;
        }
        let start = usize::try_from(from + 1 - first).ok()?;
        let n = usize::try_from(to - from).ok()?;
        let out: Vec<Bytes> = ring
            .frames
            .iter()
            .skip(start)
            .take(n)
            .map(|(_, f)| f.clone())
            .collect();
        (out.len() == n && ring.frames.get(start + n - 1).map(|(v, _)| *v) == Some(to))
            .then_some(out)
    }
}

/// One network at one version.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The network's netmap version.
    pub version: u64,
    /// Its settings.
    pub network: NetworkInfo,
    /// Its DNS domain (`mesh_proto::dns`), sent to nodes as `ServerMsg::Names`.
    pub domain: Arc<str>,
    /// Authorised members as peers.
    pub peers: BTreeMap<Key, Arc<PeerEntry>>,
    /// Members waiting for (or deprived of) authorisation.
    pub pending: BTreeSet<Key>,
    /// The network was deleted: sessions end.
    pub deleted: bool,
    /// The store batch count once this version was written: it may be sent only once
    /// the store has flushed that many batches (`Coordinator::durable_upto`).
    pub seq: u64,
    /// The network's recent change frames (shared by all its snapshots).
    pub deltas: Arc<Deltas>,
    /// With a policy, its members' classes and what each class sees
    /// ([`crate::control::views`]); `None`: no policy, everyone sees everyone.
    pub classes: Option<Arc<Classes>>,
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

    /// What a member that holds no netmap (it just joined, or cannot resume) is sent to
    /// hold this version's: a full netmap and change frames. The entries of the full map are
    /// those of the network's current [`Checkpoint`] (made from this snapshot when there is
    /// none recent enough), shared by every joiner; only a small head, and the member's own
    /// entry when the checkpoint predates it, are its own. The change frames bring the
    /// checkpoint's version to this one (the member's own entry among them is a self
    /// update); applying it all gives exactly [`Snapshot::netmap_for`].
    pub fn first_frames(&self, key: &Key) -> Vec<Bytes> {
        let recent = {
            let cp = self
                .deltas
                .checkpoint
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            cp.clone().filter(|cp| {
                cp.version <= self.version && self.version - cp.version <= CHECKPOINT_LAG
            })
        };
        let (cp, deltas) = match recent.and_then(|cp| {
            let deltas = self.deltas.between(cp.version, self.version)?;
            Some((cp, deltas))
        }) {
            Some(found) => found,
            None => {
                let cp = Arc::new(self.checkpoint());
                *self
                    .deltas
                    .checkpoint
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(cp.clone());
                (cp, Vec::new())
            }
        };
        let own = self
            .peers
            .get(key)
            .filter(|_| !cp.peers.contains_key(key))
            .map(|me| Bytes::copy_from_slice(&me.wire));
        let count = u32::try_from(cp.peers.len() + usize::from(own.is_some())).unwrap_or(u32::MAX);
        let len = cp.entries.len() + own.as_ref().map_or(0, Bytes::len);
        let head = FrameBuilder::netmap_head(cp.version, &cp.network, count, len);
        let mut frames = vec![Bytes::from(head), cp.entries.clone()];
        frames.extend(own);
        frames.extend(deltas);
        frames
    }

    /// This version's full map as a [`Checkpoint`].
    fn checkpoint(&self) -> Checkpoint {
        let size = self.peers.values().map(|p| p.wire.len()).sum();
        let mut entries = Vec::with_capacity(size);
        for p in self.peers.values() {
            entries.extend_from_slice(&p.wire);
        }
        Checkpoint {
            version: self.version,
            network: self.network.clone(),
            peers: self.peers.clone(),
            entries: Bytes::from(entries),
        }
    }

    /// `changes` for member `key` (as [`Snapshot::changes_since`] or
    /// [`Snapshot::changes_from_log`] return them) as one binary frame: a self update is
    /// the member's own entry, which the node decodes as such.
    pub fn changes_frame(&self, key: &Key, changes: &[PeerChange]) -> Bytes {
        let mut b = FrameBuilder::changes(self.version, &self.network);
        let mut scratch = Vec::new();
        for change in changes {
            match change {
                PeerChange::Network { network } => b.network(network),
                PeerChange::Remove { public_key } => b.remove(public_key),
                PeerChange::Upsert { peer } => match self.peers.get(&peer.public_key) {
                    Some(entry) if entry.info == *peer => b.upsert(&entry.wire),
                    _ => {
                        scratch.clear();
                        wire::encode_peer(peer, &mut scratch);
                        b.upsert(&scratch);
                    }
                },
                PeerChange::SelfUpdate { .. } => {
                    if let Some(me) = self.peers.get(key) {
                        b.upsert(&me.wire);
                    }
                }
            }
        }
        Bytes::from(b.finish())
    }

    fn self_address(&self, me: &PeerInfo) -> IpNet {
        IpNet::new(me.address, self.network.cidr.prefix_len())
            .unwrap_or_else(|_| IpNet::from(me.address))
    }

    /// A member's IPv6 address with the network's IPv6 prefix length (dual stack).
    fn self_address6(&self, me: &PeerInfo) -> Option<IpNet> {
        let a = std::net::IpAddr::V6(me.address6?);
        let len = self.network.cidr6.map_or(128, |c| c.prefix_len());
        Some(IpNet::new(a, len).unwrap_or_else(|_| IpNet::from(a)))
    }

    /// The full netmap of an authorised member (`None` when it is not authorised).
    pub fn netmap_for(&self, key: &Key) -> Option<Netmap> {
        let me = self.peers.get(key)?;
        Some(Netmap {
            version: self.version,
            network: self.network.clone(),
            address: self.self_address(me),
            address6: self.self_address6(me),
            name: me.name.clone(),
            peers: self
                .peers
                .iter()
                .filter(|(k, _)| *k != key)
                .map(|(k, p)| (*k, p.info.clone()))
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
            let (a6, b6) = (old.self_address6(was), self.self_address6(now));
            if a != b || a6 != b6 || was.name != now.name {
                changes.push(PeerChange::SelfUpdate {
                    address: b,
                    address6: b6,
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
                    peer: p.info.clone(),
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
                    address6: self.self_address6(me),
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
                    peer: p.info.clone(),
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

    fn peer(b: u8, host: u8, name: &str) -> Arc<PeerEntry> {
        let address = format!("10.9.8.{host}").parse().unwrap();
        Arc::new(PeerEntry::new(PeerInfo {
            address6: None,
            public_key: key(b),
            name: name.into(),
            address,
            allowed_ips: vec![IpNet::from(address)],
            endpoints: vec![format!("198.51.100.{b}:51820").parse().unwrap()],
        }))
    }

    fn snap(version: u64, mtu: u16, peers: &[Arc<PeerEntry>]) -> Snapshot {
        Snapshot {
            classes: None,
            version,
            network: NetworkInfo {
                cidr6: None,
                name: "lab".into(),
                cidr: "10.9.8.0/24".parse().unwrap(),
                mtu,
                keepalive: 25,
            },
            domain: Arc::from("mesh.internal"),
            peers: peers.iter().map(|p| (p.public_key, p.clone())).collect(),
            pending: BTreeSet::new(),
            deleted: false,
            seq: 0,
            deltas: Arc::default(),
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

    #[test]
    fn shared_frames_decode_to_each_members_netmap_and_changes() {
        for (name, old, new) in cases() {
            for member in [key(1), key(2)] {
                let (Some(old_map), Some(new_map)) =
                    (old.netmap_for(&member), new.netmap_for(&member))
                else {
                    continue;
                };
                let full: Vec<u8> = new
                    .first_frames(&member)
                    .iter()
                    .flat_map(|f| f.iter().copied())
                    .collect();
                assert_eq!(
                    mesh_proto::wire::decode_netmap(&full[4..], &member).unwrap(),
                    new_map,
                    "{name}"
                );
                let frame = new.changes_frame(&member, &new.changes_since(&old, &member));
                let (version, changes) =
                    mesh_proto::wire::decode_changes(&frame[4..], &member).unwrap();
                let mut applied = old_map.clone();
                applied.apply(version, &changes);
                assert_eq!(applied, new_map, "{name}");
            }
        }
    }

    #[test]
    fn deltas_cover_consecutive_versions_only() {
        let d = Deltas::default();
        assert_eq!(d.between(3, 3), Some(vec![]));
        assert_eq!(d.between(3, 4), None);
        for v in 5..=8 {
            d.push(v, Bytes::from(vec![v as u8]));
        }
        let got = |from, to| {
            d.between(from, to)
                .map(|f| f.iter().map(|b| b[0]).collect::<Vec<_>>())
        };
        assert_eq!(got(4, 8), Some(vec![5, 6, 7, 8]));
        assert_eq!(got(6, 7), Some(vec![7]));
        assert_eq!(got(3, 8), None, "version 4 was never kept");
        assert_eq!(got(7, 9), None, "version 9 does not exist yet");
        // A gap forgets the older frames.
        d.push(11, Bytes::from_static(b"k"));
        assert_eq!(got(8, 11), None);
        assert_eq!(got(10, 11), Some(vec![b'k']));
        // The bound holds.
        for v in 12..12 + DELTAS_KEEP as u64 + 10 {
            d.push(v, Bytes::from_static(b"x"));
        }
        assert_eq!(got(11, 12), None);
        assert!(got(30, 40).is_some());
    }

    #[test]
    fn joiners_share_a_checkpoint_and_reach_their_netmap() {
        let deltas = Arc::new(Deltas::default());
        let mut peers: Vec<Arc<PeerEntry>> = vec![peer(1, 1, "a"), peer(2, 2, "b")];
        let at = |version: u64, peers: &[Arc<PeerEntry>]| {
            let mut s = snap(version, 1280, peers);
            s.deltas = deltas.clone();
            s
        };
        let decode = |frames: &[Bytes], me: &Key| -> Netmap {
            let bytes: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
            let mut at = 0;
            let mut map: Option<Netmap> = None;
            while at < bytes.len() {
                let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
                let body = &bytes[at + 4..at + 4 + len];
                at += 4 + len;
                match mesh_proto::control::decode_server(body, me).unwrap() {
                    mesh_proto::control::ServerMsg::Netmap { netmap } => map = Some(netmap),
                    mesh_proto::control::ServerMsg::Changes { version, changes } => {
                        map.as_mut().unwrap().apply(version, &changes)
                    }
                    other => panic!("{other:?}"),
                }
            }
            map.unwrap()
        };
        let first = at(10, &peers);
        let frames = first.first_frames(&key(1));
        assert_eq!(decode(&frames, &key(1)), first.netmap_for(&key(1)).unwrap());
        let entries = frames[1].clone();
        // Three more members join, one version each, each version's frame recorded.
        let mut last = first;
        for (i, b) in [3u8, 4, 5].into_iter().enumerate() {
            peers.push(peer(b, b, "new"));
            let s = at(11 + i as u64, &peers);
            let changes = s.changes_since(&last, &key(1));
            deltas.push(s.version, s.changes_frame(&key(1), &changes));
            last = s;
        }
        // The newest joiner is not in the checkpoint: it gets the shared entries, its own
        // entry and the three change frames, and ends with exactly its netmap.
        let frames = last.first_frames(&key(5));
        assert_eq!(
            frames[1].as_ptr(),
            entries.as_ptr(),
            "the entries are shared"
        );
        assert_eq!(frames.len(), 2 + 1 + 3);
        assert_eq!(decode(&frames, &key(5)), last.netmap_for(&key(5)).unwrap());
        // A member already in the checkpoint gets no extra entry.
        let frames = last.first_frames(&key(2));
        assert_eq!(frames.len(), 2 + 3);
        assert_eq!(decode(&frames, &key(2)), last.netmap_for(&key(2)).unwrap());
        // Too far behind (or the frames in between forgotten): a new checkpoint.
        let far = at(11 + 3 + CHECKPOINT_LAG, &peers);
        let frames = far.first_frames(&key(3));
        assert_eq!(frames.len(), 2);
        assert_ne!(frames[1].as_ptr(), entries.as_ptr());
        assert_eq!(decode(&frames, &key(3)), far.netmap_for(&key(3)).unwrap());
    }

    /// Issue 13: with a policy each member is sent only the peers its policy lets it
    /// exchange traffic with. Over random changes (tags, the document, members leaving,
    /// coming back and being renamed), a member that applies its first view and then
    /// every view frame holds exactly that pruned netmap, as compiled member by member
    /// (`Policy::filter_for`, not the classes); and its filter is that compilation.
    #[test]
    fn views_decode_to_each_members_pruned_netmap_across_changes() {
        use crate::control::views::{Classes, Compiled};
        use mesh_proto::policy::Policy;

        let docs: Vec<Arc<Compiled>> = [
            "default = \"deny\"\n[[rule]]\nfrom = [\"tag:a\"]\nto = [\"tag:b\"]\nports = [\"tcp/22\"]\n",
            "default = \"deny\"\n[[rule]]\nfrom = [\"tag:a\", \"tag:b\"]\nto = [\"tag:a\"]\n",
            "default = \"deny\"\n[[rule]]\naction = \"deny\"\nfrom = [\"tag:a\"]\nto = [\"*\"]\n[[rule]]\nfrom = [\"*\"]\nto = [\"tag:c\"]\nports = [\"icmp\"]\n",
            "default = \"deny\"\n[[rule]]\nfrom = [\"member:n1\", \"tag:c\"]\nto = [\"*\"]\n",
        ]
        .iter()
        .map(|d| Arc::new(Compiled::new(Arc::new(Policy::parse(d).unwrap()))))
        .collect();
        let tag_names = ["a", "b", "c"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut below = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let n = 6u8;
        let mut entries: Vec<Arc<PeerEntry>> =
            (1..=n).map(|i| peer(i, i, &format!("n{i}"))).collect();
        let mut tags: Vec<BTreeSet<String>> = vec![BTreeSet::new(); n as usize];
        let mut present = vec![true; n as usize];
        let mut doc: Option<usize> = Some(0);
        // Each snapshot edits the previous one's views with the member that changed (as
        // the coordinator does), so the edits are checked against the compilation too.
        let build = |version: u64,
                     entries: &[Arc<PeerEntry>],
                     tags: &[BTreeSet<String>],
                     present: &[bool],
                     doc: Option<usize>,
                     previous: Option<&Snapshot>,
                     changed: Option<Vec<Key>>| {
            let here: Vec<Arc<PeerEntry>> = entries
                .iter()
                .zip(present)
                .filter(|(_, p)| **p)
                .map(|(e, _)| e.clone())
                .collect();
            let mut s = snap(version, 1280, &here);
            s.classes = doc.map(|d| {
                let compiled = docs[d].clone();
                let classify = compiled.policy.classifier();
                let previous = previous.and_then(|p| p.classes.as_deref());
                let class_of = |k: &Key| {
                    let e = here.iter().find(|e| e.public_key == *k)?;
                    Some(classify.class_of(&mesh_proto::policy::Subject {
                        name: &e.name,
                        tags: &tags[usize::from(k.0[0] - 1)],
                        prefixes: &e.allowed_ips,
                    }))
                };
                let all = here.iter().map(|e| e.public_key);
                Arc::new(Classes::new(compiled, previous, changed, all, class_of))
            });
            s
        };
        // What member `me` must hold and enforce, compiled member by member.
        let expected = |s: &Snapshot,
                        tags: &[BTreeSet<String>],
                        doc: Option<usize>,
                        me: &Key|
         -> (Netmap, Option<mesh_proto::policy::NodeFilter>) {
            let mut map = s.netmap_for(me).unwrap();
            let Some(d) = doc else {
                return (map, None);
            };
            let policy = &docs[d].policy;
            let subject = |k: &Key| {
                let e = &s.peers[k];
                mesh_proto::policy::Subject {
                    name: &e.name,
                    tags: &tags[usize::from(k.0[0] - 1)],
                    prefixes: &e.allowed_ips,
                }
            };
            let full = policy.filter_for(
                &subject(me),
                s.peers
                    .keys()
                    .filter(|k| *k != me)
                    .map(|k| (*k, subject(k))),
            );
            map.peers.retain(|k, _| full.reaches(k));
            let mut filter = full.clone();
            filter.peers.retain(|k, _| full.reaches(k));
            (map, Some(filter))
        };
        let decode_into = |map: &mut Option<Netmap>, frames: &[Bytes], me: &Key| {
            // A full netmap is several `Bytes` (head, shared entries, own entry).
            let all: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
            {
                let f = &all;
                let mut at = 0;
                while at < f.len() {
                    let len = u32::from_be_bytes(f[at..at + 4].try_into().unwrap()) as usize;
                    let body = &f[at + 4..at + 4 + len];
                    at += 4 + len;
                    match mesh_proto::control::decode_server(body, me).unwrap() {
                        mesh_proto::control::ServerMsg::Netmap { netmap } => *map = Some(netmap),
                        mesh_proto::control::ServerMsg::Changes { version, changes } => {
                            map.as_mut().unwrap().apply(version, &changes)
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }
        };
        let mut old = build(1, &entries, &tags, &present, doc, None, None);
        let mut held: Vec<Option<Netmap>> = vec![None; n as usize];
        // Per member: the filter its session sent last and what it holds.
        type Sent = (
            Arc<crate::control::views::SharedFilter>,
            mesh_proto::policy::NodeFilter,
        );
        let mut filters_sent: Vec<Option<Sent>> = vec![None; n as usize];
        for (i, h) in held.iter_mut().enumerate() {
            let k = key(i as u8 + 1);
            decode_into(h, &old.view_first_frames(&k).unwrap(), &k);
        }
        let mut latest = old.clone();
        let mut unsent = None;
        let (mut sent_frames, mut skipped, mut behind) = (0, 0, 0);
        for version in 2..400 {
            let mut changed = None;
            match below(6) {
                0 | 1 => {
                    let i = below(u64::from(n)) as usize;
                    changed = Some(vec![key(i as u8 + 1)]);
                    tags[i] = (0..below(3))
                        .map(|_| tag_names[below(3) as usize].to_owned())
                        .collect();
                }
                2 => doc = (below(5) < 4).then(|| below(docs.len() as u64) as usize),
                3 => {
                    let i = below(u64::from(n)) as usize;
                    present[i] = !present[i];
                    changed = Some(vec![key(i as u8 + 1)]);
                }
                4 => {
                    let i = below(u64::from(n)) as usize;
                    let b = i as u8 + 1;
                    entries[i] = peer(b, b, &format!("n{b}-{version}"));
                    changed = Some(vec![key(b)]);
                }
                _ => {
                    let i = below(u64::from(n)) as usize;
                    let b = i as u8 + 1;
                    entries[i] = peer(b, b + 20, &format!("n{b}"));
                    changed = Some(vec![key(b)]);
                }
            }
            // Mostly every view of the newest snapshot built (sessions asked), so edits
            // happen; sometimes none, so the next views are edited from older ones.
            if below(3) > 0 {
                for k in latest.peers.keys() {
                    let _ = latest.view_for(k);
                }
            }
            let made = build(
                version,
                &entries,
                &tags,
                &present,
                doc,
                Some(&latest),
                changed,
            );
            latest = made.clone();
            // Sometimes nobody hears of a snapshot before the next is made (a join storm),
            // and sometimes the members are sent one that is older than the newest, whose
            // views were built first (a session that waited for the store to flush).
            let (new, tags, doc) = match below(4) {
                0 => {
                    skipped += 1;
                    unsent = Some((made, tags.clone(), doc));
                    continue;
                }
                1 if unsent.is_some() => {
                    for k in latest.peers.keys() {
                        let _ = latest.view_for(k);
                    }
                    behind += 1;
                    unsent.take().unwrap()
                }
                _ => (made, tags.clone(), doc),
            };
            for (i, h) in held.iter_mut().enumerate() {
                let k = key(i as u8 + 1);
                if !new.peers.contains_key(&k) {
                    *h = None;
                    filters_sent[i] = None;
                    continue;
                }
                match (&*h, old.peers.contains_key(&k)) {
                    (Some(_), true) => {
                        let frames = match new.view_frame(&old, &k) {
                            Some(f) => f,
                            // Neither has a policy: everyone's change, as the deltas say.
                            None => vec![new.changes_frame(&k, &new.changes_since(&old, &k))],
                        };
                        sent_frames += frames.len();
                        decode_into(h, &frames, &k);
                    }
                    _ => {
                        *h = None;
                        let frames = new
                            .view_first_frames(&k)
                            .unwrap_or_else(|| new.first_frames(&k));
                        decode_into(h, &frames, &k);
                    }
                }
                let (want, filter) = expected(&new, &tags, doc, &k);
                let got = h.as_ref().unwrap();
                assert_eq!(
                    (got.address, &got.name, &got.peers, &got.network),
                    (want.address, &want.name, &want.peers, &want.network),
                    "member {} at version {version}, doc {doc:?}, tags {tags:?}",
                    i + 1
                );
                // A member's filter is its class's (its own key, if there, never matches),
                // and what it holds after applying each update it is sent (the edit's own
                // update or a diff; the announced hash checked by `apply`).
                let mut got_filter = new.filter_of(&k).map(|f| f.node_filter());
                if let Some(f) = got_filter.as_mut() {
                    f.peers.remove(&k);
                }
                assert_eq!(got_filter, filter, "member {} filter", i + 1);
                match new.filter_of(&k) {
                    Some(now) => {
                        let sent = &mut filters_sent[i];
                        if let Some(u) = new.filter_update(sent.as_ref().map(|s| &s.0), &now) {
                            let mut held = sent
                                .take()
                                .map_or_else(mesh_proto::policy::NodeFilter::allow_all, |s| s.1);
                            held.apply(&u.update).unwrap();
                            *sent = Some((now.clone(), held));
                        }
                        let held = &sent.as_ref().unwrap().1;
                        assert_eq!(*held, now.node_filter(), "member {} filter held", i + 1);
                        assert_eq!(held.hash(), now.hash());
                    }
                    None => filters_sent[i] = None,
                }
            }
            old = new;
        }
        assert!(
            sent_frames > 100 && skipped > 50 && behind > 10,
            "{sent_frames} {skipped} {behind}"
        );
    }
}
