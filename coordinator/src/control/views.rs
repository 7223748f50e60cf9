//! What each member of a network with a policy sees (issue 13): the peers its policy lets
//! it exchange traffic with (its netmap holds only those) and their filter entries,
//! compiled per **class** of members rather than per member.
//!
//! A class ([`ClassKey`]) is what the policy's decisions depend on: a member's tags (and
//! its name or prefixes only when the policy names members or prefixes). Members of one
//! class see the same peers with the same entries, so a snapshot computes a [`View`] once
//! per class in use (lazily, when a session first asks) and every member of the class
//! shares it: its peers' encoded entries for a full netmap, and the change frame from an
//! older snapshot's view ([`Snapshot::view_frame`]). Entries between two classes are
//! computed once per policy document ([`Compiled`]) and reused by every later snapshot;
//! a member joining or changing tags costs each class one pass over the members, not one
//! per member.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use mesh_proto::policy::{ClassKey, NodeFilter, PeerFilter, Policy};
use mesh_proto::wire::FrameBuilder;
use mesh_proto::Key;

use super::snapshot::{PeerEntry, Snapshot};

/// Pairs of classes remembered per policy document; beyond it the memo starts over (a
/// policy that names every member has a class per member).
const PAIRS_KEEP: usize = 1 << 20;

/// A policy document parsed, with the entries between the classes seen so far.
#[derive(Debug)]
pub struct Compiled {
    /// The policy.
    pub policy: Arc<Policy>,
    pairs: Mutex<HashMap<(ClassKey, ClassKey), Arc<PeerFilter>>>,
}

impl Compiled {
    /// Nothing compiled yet.
    pub fn new(policy: Arc<Policy>) -> Compiled {
        Compiled {
            policy,
            pairs: Mutex::default(),
        }
    }

    fn pair(&self, me: &ClassKey, peer: &ClassKey) -> Arc<PeerFilter> {
        let mut pairs = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pairs.get(&(me.clone(), peer.clone())) {
            return p.clone();
        }
        if pairs.len() >= PAIRS_KEEP {
            pairs.clear();
        }
        let p = Arc::new(self.policy.pair_filter(me, peer));
        pairs.insert((me.clone(), peer.clone()), p.clone());
        p
    }
}

/// The classes of one snapshot's authorised members.
#[derive(Debug)]
pub struct Classes {
    compiled: Arc<Compiled>,
    keys: Vec<ClassKey>,
    of: HashMap<Key, u32>,
    views: Vec<OnceLock<Arc<View>>>,
    /// Pairs by class index, filled from `compiled` as views are built.
    pairs: Mutex<HashMap<(u32, u32), Arc<PeerFilter>>>,
    /// Change frames between views, shared by the sessions that need the same one.
    frames: Mutex<HashMap<FrameKey, Option<Bytes>>>,
}

/// (older snapshot's version, its view: a class index or `None` for everyone, this
/// snapshot's class index).
type FrameKey = (u64, Option<u32>, u32);

/// What the members of one class see.
#[derive(Debug)]
pub struct View {
    /// The authorised members they exchange traffic with (the class's own members among
    /// them when it may talk to itself).
    pub peers: BTreeMap<Key, Arc<PeerEntry>>,
    /// Those peers' entries.
    pub filter: NodeFilter,
    entries: OnceLock<Bytes>,
}

impl View {
    /// The peers' encoded entries, one after the other (a full netmap's body).
    fn entries(&self) -> Bytes {
        self.entries
            .get_or_init(|| {
                let mut out = Vec::with_capacity(self.peers.values().map(|p| p.wire().len()).sum());
                for p in self.peers.values() {
                    out.extend_from_slice(p.wire());
                }
                Bytes::from(out)
            })
            .clone()
    }
}

impl Classes {
    /// The classes of `members` (authorised members: key and class) under `compiled`.
    pub fn new(
        compiled: Arc<Compiled>,
        members: impl IntoIterator<Item = (Key, ClassKey)>,
    ) -> Classes {
        let mut index: HashMap<ClassKey, u32> = HashMap::new();
        let mut keys = Vec::new();
        let mut of = HashMap::new();
        for (k, class) in members {
            let i = *index.entry(class.clone()).or_insert_with(|| {
                keys.push(class);
                u32::try_from(keys.len() - 1).unwrap_or(u32::MAX)
            });
            of.insert(k, i);
        }
        let views = (0..keys.len()).map(|_| OnceLock::new()).collect();
        Classes {
            compiled,
            keys,
            of,
            views,
            pairs: Mutex::default(),
            frames: Mutex::default(),
        }
    }

    /// The compiled policy.
    pub fn compiled(&self) -> &Arc<Compiled> {
        &self.compiled
    }

    /// How many classes the members fall into.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Member `key`'s class, if it is an authorised member.
    pub fn class_of(&self, key: &Key) -> Option<u32> {
        self.of.get(key).copied()
    }

    fn pair(&self, a: u32, b: u32) -> Arc<PeerFilter> {
        let mut pairs = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
        pairs
            .entry((a, b))
            .or_insert_with(|| {
                self.compiled
                    .pair(&self.keys[a as usize], &self.keys[b as usize])
            })
            .clone()
    }

    /// What class `class` sees of `peers` (the snapshot's authorised members).
    pub fn view(&self, class: u32, peers: &BTreeMap<Key, Arc<PeerEntry>>) -> Arc<View> {
        self.views[class as usize]
            .get_or_init(|| {
                let default = self.compiled.policy.default;
                let mut seen = BTreeMap::new();
                let mut filter = NodeFilter {
                    default,
                    peers: BTreeMap::new(),
                };
                for (k, entry) in peers {
                    let Some(&theirs) = self.of.get(k) else {
                        continue;
                    };
                    let pf = self.pair(class, theirs);
                    if pf.reaches(default) {
                        seen.insert(*k, entry.clone());
                        filter.peers.insert(*k, (*pf).clone());
                    }
                }
                Arc::new(View {
                    peers: seen,
                    filter,
                    entries: OnceLock::new(),
                })
            })
            .clone()
    }
}

impl Snapshot {
    /// Member `key`'s view, when the network has a policy and it is an authorised member.
    pub fn view_for(&self, key: &Key) -> Option<Arc<View>> {
        let classes = self.classes.as_ref()?;
        Some(classes.view(classes.class_of(key)?, &self.peers))
    }

    /// The peers member `key` is sent: its view's with a policy, everyone's without.
    pub fn peers_for(&self, key: &Key) -> PeersOf<'_> {
        match self.view_for(key) {
            Some(v) => PeersOf::View(v),
            None => PeersOf::All(&self.peers),
        }
    }

    /// A full netmap for member `key` of a network with a policy: its view's entries
    /// (shared by its class) and its own entry when the view lacks it.
    pub fn view_first_frames(&self, key: &Key) -> Option<Vec<Bytes>> {
        let view = self.view_for(key)?;
        let own = self
            .peers
            .get(key)
            .filter(|_| !view.peers.contains_key(key))
            .map(|me| Bytes::copy_from_slice(me.wire()));
        let entries = view.entries();
        let count =
            u32::try_from(view.peers.len() + usize::from(own.is_some())).unwrap_or(u32::MAX);
        let len = entries.len() + own.as_ref().map_or(0, Bytes::len);
        let head = FrameBuilder::netmap_head(self.version, &self.network, count, len);
        let mut frames = vec![Bytes::from(head), entries];
        frames.extend(own);
        Some(frames)
    }

    /// The frames that bring member `key` from what `old` sent it to what this snapshot
    /// sends it, when either has a policy (`None` otherwise: the shared change frames do).
    /// The change between the two views is encoded once per pair of views and shared; a
    /// change of the member's own entry that its view does not carry goes after it. No
    /// frame at all when neither changed (a join elsewhere in the network is nothing to
    /// the classes that do not see it).
    pub fn view_frame(&self, old: &Snapshot, key: &Key) -> Option<Vec<Bytes>> {
        if self.classes.is_none() && old.classes.is_none() {
            return None;
        }
        let new_view = self.view_for(key);
        let shared = match (&self.classes, new_view.as_ref()) {
            (Some(classes), Some(view)) => {
                let old_class = old.classes.as_ref().and_then(|c| c.class_of(key));
                let class = classes.class_of(key).unwrap_or_default();
                let fk: FrameKey = (old.version, old_class, class);
                let cached = classes
                    .frames
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&fk)
                    .cloned();
                match cached {
                    Some(f) => f,
                    None => {
                        let f = self.diff_frame(&old.peers_for(key), &view.peers, old);
                        classes
                            .frames
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(fk, f.clone());
                        f
                    }
                }
            }
            // The policy went away (or the member is not authorised): to everyone's.
            _ => self.diff_frame(&old.peers_for(key), &self.peers, old),
        };
        let mut frames: Vec<Bytes> = shared.into_iter().collect();
        let carried = new_view.as_ref().is_none_or(|v| v.peers.contains_key(key));
        let (was, now) = (old.peers.get(key), self.peers.get(key));
        let own_changed = match (was, now) {
            (Some(a), Some(b)) => !(Arc::ptr_eq(a, b) || **a == **b),
            (None, Some(_)) => true,
            _ => false,
        };
        if !carried && (own_changed || old.network != self.network) {
            if let Some(me) = now {
                let mut b = FrameBuilder::changes(self.version, self.network.cidr.prefix_len());
                b.upsert(me.wire());
                frames.push(Bytes::from(b.finish()));
            }
        }
        Some(frames)
    }

    /// The change from `old` (what `old_snap` sent) to `new`; `None` when nothing changed.
    fn diff_frame(
        &self,
        old: &PeersOf<'_>,
        new: &BTreeMap<Key, Arc<PeerEntry>>,
        old_snap: &Snapshot,
    ) -> Option<Bytes> {
        let old = old.map();
        let mut b = FrameBuilder::changes(self.version, self.network.cidr.prefix_len());
        let mut any = false;
        if old_snap.network != self.network {
            b.network(&self.network);
            any = true;
        }
        for k in old.keys() {
            if !new.contains_key(k) {
                b.remove(k);
                any = true;
            }
        }
        for (k, p) in new {
            let same = old.get(k).is_some_and(|q| Arc::ptr_eq(p, q) || **p == **q);
            if !same {
                b.upsert(p.wire());
                any = true;
            }
        }
        any.then(|| Bytes::from(b.finish()))
    }

    /// The filter member `key` enforces in this snapshot: `None` when the network has no
    /// policy; nothing reachable for a member that is not authorised.
    pub fn filter_for(&self, key: &Key) -> Option<NodeFilter> {
        let classes = self.classes.as_ref()?;
        let Some(view) = self.view_for(key) else {
            return Some(NodeFilter {
                default: classes.compiled.policy.default,
                peers: BTreeMap::new(),
            });
        };
        let mut filter = view.filter.clone();
        filter.peers.remove(key);
        Some(filter)
    }
}

/// The peers a member was sent: a view's, or everyone's.
#[derive(Debug)]
pub enum PeersOf<'a> {
    /// A class's view.
    View(Arc<View>),
    /// Every authorised member (no policy).
    All(&'a BTreeMap<Key, Arc<PeerEntry>>),
}

impl PeersOf<'_> {
    /// The map.
    pub fn map(&self) -> &BTreeMap<Key, Arc<PeerEntry>> {
        match self {
            PeersOf::View(v) => &v.peers,
            PeersOf::All(m) => m,
        }
    }
}
