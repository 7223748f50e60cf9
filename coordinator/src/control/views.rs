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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use mesh_proto::policy::{ClassKey, FilterUpdate, NodeFilter, PeerFilter, Policy};
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

/// A filter shared by every member that enforces it (a class's members: a member's own
/// key may be among its peers, which never matches a packet), with a process-unique id so
/// that sessions and caches tell filters apart without comparing them, and its hash
/// computed once.
#[derive(Debug)]
pub struct SharedFilter {
    id: u64,
    /// The filter.
    pub filter: NodeFilter,
    hash: OnceLock<String>,
}

impl SharedFilter {
    /// `filter` under a new id.
    pub fn new(filter: NodeFilter) -> Arc<SharedFilter> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(SharedFilter {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            filter,
            hash: OnceLock::new(),
        })
    }

    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// [`NodeFilter::hash`], computed once.
    pub fn hash(&self) -> &str {
        self.hash.get_or_init(|| self.filter.hash())
    }

    /// The update that turns `old` (what a member was sent, if anything) into this
    /// filter; `None` when nothing changes.
    pub fn update_from(&self, old: Option<&SharedFilter>) -> Option<FilterUpdate> {
        if let Some(old) = old {
            if old.id == self.id || old.filter == self.filter {
                return None;
            }
        }
        Some(
            self.filter
                .update_from_hashed(old.map(|o| &o.filter), self.hash().to_owned()),
        )
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
    /// Filter updates (from the filter with the first id to the one with the second),
    /// shared likewise.
    updates: Mutex<Updates>,
    /// The previous snapshot's views by class, reused when unchanged (so their ids, hash
    /// and encodings carry over and sessions of unaffected classes do nothing).
    previous: HashMap<ClassKey, Arc<View>>,
    /// The members whose entry, authorisation or tags changed since the previous snapshot
    /// (`None`: not known; views are then built from scratch).
    changed: Option<Vec<Key>>,
}

/// Filter updates by (old filter's id, new filter's id); `None`: nothing changes.
type Updates = HashMap<(u64, u64), Option<Arc<FilterUpdate>>>;

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
    pub filter: Arc<SharedFilter>,
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
    /// The classes of `members` (authorised members: key and class) under `compiled`;
    /// `previous`, the classes of the snapshot before (same policy), lends its views, which
    /// only the members in `changed` can have changed (all of them when `None`).
    pub fn new(
        compiled: Arc<Compiled>,
        members: impl IntoIterator<Item = (Key, ClassKey)>,
        previous: Option<&Classes>,
        changed: Option<Vec<Key>>,
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
        let previous = previous
            .filter(|p| Arc::ptr_eq(&p.compiled, &compiled))
            .map(|p| {
                p.keys
                    .iter()
                    .zip(&p.views)
                    .filter_map(|(k, v)| Some((k.clone(), v.get()?.clone())))
                    .collect()
            })
            .unwrap_or_default();
        Classes {
            compiled,
            keys,
            of,
            views,
            pairs: Mutex::default(),
            frames: Mutex::default(),
            updates: Mutex::default(),
            previous,
            changed,
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
                if let (Some(prev), Some(changed)) = (
                    self.previous.get(&self.keys[class as usize]),
                    self.changed.as_ref(),
                ) {
                    return self.edit(class, prev, changed, peers);
                }
                let mut seen = BTreeMap::new();
                let mut filter = NodeFilter {
                    default,
                    peers: BTreeMap::new(),
                };
                for (k, entry) in peers {
                    if let Some(pf) = self.sees(class, k) {
                        seen.insert(*k, entry.clone());
                        filter.peers.insert(*k, (*pf).clone());
                    }
                }
                // Unchanged since the previous snapshot: the same view, so that the
                // sessions of this class see nothing to do.
                if let Some(prev) = self.previous.get(&self.keys[class as usize]) {
                    let same_peers = prev.peers.len() == seen.len()
                        && prev
                            .peers
                            .iter()
                            .zip(&seen)
                            .all(|((a, p), (b, q))| a == b && Arc::ptr_eq(p, q));
                    if same_peers && prev.filter.filter == filter {
                        return prev.clone();
                    }
                }
                Arc::new(View {
                    peers: seen,
                    filter: SharedFilter::new(filter),
                    entries: OnceLock::new(),
                })
            })
            .clone()
    }
}

impl Classes {
    /// The entries between `class` and member `key`, if the policy lets them exchange
    /// any traffic (`None` too for a key that is not an authorised member).
    fn sees(&self, class: u32, key: &Key) -> Option<Arc<PeerFilter>> {
        let pf = self.pair(class, *self.of.get(key)?);
        pf.reaches(self.compiled.policy.default).then_some(pf)
    }

    /// The previous snapshot's view of `class`, with the members in `changed` put right:
    /// the same view when none of them changes it (a join in another group), else a copy
    /// with the edits (the cost of the view's size, not of the network's).
    fn edit(
        &self,
        class: u32,
        prev: &Arc<View>,
        changed: &[Key],
        peers: &BTreeMap<Key, Arc<PeerEntry>>,
    ) -> Arc<View> {
        let mut edits = Vec::new();
        for k in changed {
            let want = peers
                .get(k)
                .and_then(|entry| Some((entry.clone(), self.sees(class, k)?)));
            let same = match (&want, prev.peers.get(k)) {
                (None, None) => true,
                (Some((entry, pf)), Some(had)) => {
                    Arc::ptr_eq(entry, had) && prev.filter.filter.peers.get(k) == Some(&**pf)
                }
                _ => false,
            };
            if !same {
                edits.push((*k, want));
            }
        }
        if edits.is_empty() {
            return prev.clone();
        }
        let mut seen = prev.peers.clone();
        let mut filter = prev.filter.filter.clone();
        for (k, want) in edits {
            match want {
                Some((entry, pf)) => {
                    seen.insert(k, entry);
                    filter.peers.insert(k, (*pf).clone());
                }
                None => {
                    seen.remove(&k);
                    filter.peers.remove(&k);
                }
            }
        }
        Arc::new(View {
            peers: seen,
            filter: SharedFilter::new(filter),
            entries: OnceLock::new(),
        })
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

    /// The filter member `key` enforces in this snapshot (its class's): `None` when the
    /// network has no policy; nothing reachable for a member that is not authorised.
    pub fn filter_of(&self, key: &Key) -> Option<Arc<SharedFilter>> {
        let classes = self.classes.as_ref()?;
        Some(match self.view_for(key) {
            Some(view) => view.filter.clone(),
            None => SharedFilter::new(NodeFilter {
                default: classes.compiled.policy.default,
                peers: BTreeMap::new(),
            }),
        })
    }

    /// The update from `old` to `new` (as [`SharedFilter::update_from`]), computed once
    /// per pair of filters and shared by the sessions that need it.
    pub fn filter_update(
        &self,
        old: Option<&Arc<SharedFilter>>,
        new: &Arc<SharedFilter>,
    ) -> Option<Arc<FilterUpdate>> {
        let Some(classes) = self.classes.as_ref() else {
            return new.update_from(old.map(|o| &**o)).map(Arc::new);
        };
        let key = (old.map_or(0, |o| o.id), new.id);
        if let Some(u) = classes
            .updates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return u.clone();
        }
        let u = new.update_from(old.map(|o| &**o)).map(Arc::new);
        classes
            .updates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, u.clone());
        u
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
