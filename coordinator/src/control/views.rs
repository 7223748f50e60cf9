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
use mesh_proto::control::ServerMsg;
use mesh_proto::policy::{
    Action, ClassKey, FilterDigest, FilterUpdate, NodeFilter, PeerFilter, Policy,
};
use mesh_proto::wire::FrameBuilder;
use mesh_proto::Key;

use super::frame::{json_frame, WriteError};
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
/// that sessions and caches tell filters apart without comparing them, and its digest
/// kept up to date edit by edit. Entry lists are shared (every peer of one class has the
/// same `Arc` from [`Compiled`]), so a copy costs a pointer per peer.
#[derive(Debug)]
pub struct SharedFilter {
    id: u64,
    /// What no entry decides.
    pub default: Action,
    /// Per peer, its entries.
    pub peers: BTreeMap<Key, Arc<PeerFilter>>,
    digest: FilterDigest,
    /// The update from the filter this one was edited from (by id), when it was: what a
    /// member one edit behind is sent, without comparing the filters.
    from_parent: Option<(u64, FilterUpdate)>,
}

fn next_filter_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl SharedFilter {
    /// A filter of `peers` and `default` under a new id.
    pub fn new(default: Action, peers: BTreeMap<Key, Arc<PeerFilter>>) -> Arc<SharedFilter> {
        Arc::new(SharedFilter {
            id: next_filter_id(),
            digest: FilterDigest::of_peers(default, &peers),
            default,
            peers,
            from_parent: None,
        })
    }

    /// `parent` with `edits` (per peer: its entries, or `None`: out of the filter), under
    /// a new id; the cost of the edits and of copying the map, not of hashing it again.
    pub fn edited(
        parent: &SharedFilter,
        edits: impl IntoIterator<Item = (Key, Option<Arc<PeerFilter>>)>,
    ) -> Arc<SharedFilter> {
        let mut peers = parent.peers.clone();
        let mut digest = parent.digest;
        let (mut upsert, mut remove) = (BTreeMap::new(), Vec::new());
        for (k, want) in edits {
            if let Some(old) = peers.get(&k) {
                digest.remove(&k, old);
            }
            match want {
                Some(pf) => {
                    digest.add(&k, &pf);
                    upsert.insert(k, (*pf).clone());
                    peers.insert(k, pf);
                }
                None => {
                    if peers.remove(&k).is_some() {
                        remove.push(k);
                    }
                }
            }
        }
        let update = FilterUpdate {
            full: false,
            default: parent.default,
            upsert,
            remove,
            hash: digest.hex(),
        };
        Arc::new(SharedFilter {
            id: next_filter_id(),
            default: parent.default,
            peers,
            digest,
            from_parent: Some((parent.id, update)),
        })
    }

    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// [`NodeFilter::hash`] of the filter.
    pub fn hash(&self) -> String {
        self.digest.hex()
    }

    /// The filter as a node holds it.
    pub fn node_filter(&self) -> NodeFilter {
        NodeFilter {
            default: self.default,
            peers: self
                .peers
                .iter()
                .map(|(k, p)| (*k, (**p).clone()))
                .collect(),
        }
    }

    /// Whether both say the same (entry lists compared by pointer first).
    fn same_as(&self, other: &SharedFilter) -> bool {
        // `Arc<PeerFilter>` (`PeerFilter: Eq`) compares by pointer before contents.
        self.default == other.default && self.peers == other.peers
    }

    /// The update that turns `old` (what a member was sent, if anything) into this
    /// filter; `None` when nothing changes.
    pub fn update_from(&self, old: Option<&SharedFilter>) -> Option<FilterUpdate> {
        if let Some(old) = old {
            if old.id == self.id {
                return None;
            }
            if let Some((parent, update)) = &self.from_parent {
                if *parent == old.id {
                    return Some(update.clone());
                }
            }
            if self.same_as(old) {
                return None;
            }
        }
        Some(FilterUpdate::between(
            self.default,
            old.map(|o| &o.peers),
            &self.peers,
            self.hash(),
        ))
    }
}

/// A filter update as sessions send it: encoded once, on first use, for all of them.
#[derive(Debug)]
pub struct FilterFrame {
    /// The update.
    pub update: FilterUpdate,
    frame: OnceLock<Bytes>,
}

impl FilterFrame {
    fn new(update: FilterUpdate) -> Arc<FilterFrame> {
        Arc::new(FilterFrame {
            update,
            frame: OnceLock::new(),
        })
    }

    /// The update as a control frame (`ServerMsg::Filter`).
    pub fn frame(&self) -> Result<Bytes, WriteError> {
        if let Some(f) = self.frame.get() {
            return Ok(f.clone());
        }
        let f = json_frame(&ServerMsg::Filter(self.update.clone()))?;
        Ok(self.frame.get_or_init(|| f).clone())
    }
}

/// The classes of one snapshot's authorised members.
///
/// Successive snapshots of a network under one compiled policy form a **lineage**: class
/// indices stay the same along it (new classes are appended), so a snapshot starts from
/// the previous one's assignments and reclassifies only the members that changed, and a
/// class's view is the newest view built anywhere along the lineage, edited with the
/// members changed since (however many snapshots ago that was: in a join storm the
/// snapshots outrun the sessions, and most are never asked for a view).
#[derive(Debug)]
pub struct Classes {
    compiled: Arc<Compiled>,
    /// Class index → class, shared along the lineage until a class is added.
    keys: Arc<Vec<ClassKey>>,
    /// Class → index.
    index: Arc<HashMap<ClassKey, u32>>,
    of: HashMap<Key, u32>,
    views: Vec<OnceLock<Arc<View>>>,
    lineage: Arc<Lineage>,
    /// This snapshot's place in the lineage's log of changed members.
    at: usize,
    /// Change frames between views, shared by the sessions that need the same one.
    frames: Mutex<HashMap<FrameKey, Option<Bytes>>>,
    /// Filter updates (from the filter with the first id to the one with the second),
    /// shared likewise.
    updates: Mutex<Updates>,
}

/// Along a lineage of [`Classes`]: the members changed snapshot after snapshot, the
/// newest view built per class and the entries between classes by index.
#[derive(Debug, Default)]
struct Lineage {
    /// Members whose entry, authorisation or class changed, in the order of the
    /// snapshots (a snapshot's `at` is the length after its own).
    log: Mutex<Vec<Key>>,
    /// Per class index: the newest view built and the log position it reflects.
    built: Mutex<HashMap<u32, (usize, Arc<View>)>>,
    /// Entries between two classes by index, filled from the compiled policy.
    pairs: Mutex<HashMap<(u32, u32), Arc<PeerFilter>>>,
}

/// Changed members logged along one lineage before it starts over (views are then built
/// over all members once).
const LOG_KEEP: usize = 1 << 20;

/// Filter updates by (old filter's id, new filter's id); `None`: nothing changes.
type Updates = HashMap<(u64, u64), Option<Arc<FilterFrame>>>;

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
    /// The classes of a snapshot's authorised members under `compiled`: `class_of` says a
    /// member's class (`None`: not an authorised member). With `previous` (the snapshot
    /// before, same policy) and `changed` (the members whose entry, authorisation or
    /// class changed since; `None`: not known) only those are classified again and the
    /// lineage goes on; otherwise every key of `all` is classified and a lineage starts.
    pub fn new(
        compiled: Arc<Compiled>,
        previous: Option<&Classes>,
        changed: Option<Vec<Key>>,
        all: impl IntoIterator<Item = Key>,
        class_of: impl Fn(&Key) -> Option<ClassKey>,
    ) -> Classes {
        let go_on = previous
            .filter(|p| Arc::ptr_eq(&p.compiled, &compiled))
            .zip(changed)
            .and_then(|(p, changed)| {
                // Classes nobody is in any more (a policy naming members has one per
                // member) and a long log are dropped by starting over; so is a lineage
                // that already went on from `previous` (the coordinator makes each
                // snapshot from the newest, so never), whose log says other changes.
                if p.keys.len() > 2 * p.of.len() + 64 || p.at + changed.len() > LOG_KEEP {
                    return None;
                }
                let mut log = p.lineage.log.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() != p.at {
                    return None;
                }
                log.extend_from_slice(&changed);
                Some((p, log.len(), changed))
            });
        let (mut keys, mut index, mut of, lineage, at, todo) = match go_on {
            Some((p, at, changed)) => (
                p.keys.clone(),
                p.index.clone(),
                p.of.clone(),
                p.lineage.clone(),
                at,
                changed,
            ),
            None => (
                Arc::default(),
                Arc::default(),
                HashMap::new(),
                Arc::default(),
                0,
                all.into_iter().collect(),
            ),
        };
        for k in todo {
            match class_of(&k) {
                Some(class) => {
                    let i = match index.get(&class) {
                        Some(i) => *i,
                        None => {
                            let i = u32::try_from(keys.len()).unwrap_or(u32::MAX);
                            Arc::make_mut(&mut keys).push(class.clone());
                            Arc::make_mut(&mut index).insert(class, i);
                            i
                        }
                    };
                    of.insert(k, i);
                }
                None => {
                    of.remove(&k);
                }
            }
        }
        let views = (0..keys.len()).map(|_| OnceLock::new()).collect();
        Classes {
            compiled,
            keys,
            index,
            of,
            views,
            lineage,
            at,
            frames: Mutex::default(),
            updates: Mutex::default(),
        }
    }

    /// The compiled policy.
    pub fn compiled(&self) -> &Arc<Compiled> {
        &self.compiled
    }

    /// Member `key`'s class, if it is an authorised member.
    pub fn class_of(&self, key: &Key) -> Option<u32> {
        self.of.get(key).copied()
    }

    fn pair(&self, a: u32, b: u32) -> Arc<PeerFilter> {
        let mut pairs = self.lineage.pairs.lock().unwrap_or_else(|e| e.into_inner());
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
                let newest = self
                    .lineage
                    .built
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&class)
                    .cloned();
                let view = match newest {
                    Some((at, view)) if at == self.at => view,
                    // Edited from the newest view, older or newer than this snapshot (a
                    // session that waited for the store to flush while others went on):
                    // what differs between the two is what changed in between.
                    Some((at, view)) => {
                        let mut between =
                            self.lineage.log.lock().unwrap_or_else(|e| e.into_inner())
                                [at.min(self.at)..at.max(self.at)]
                                .to_vec();
                        between.sort_unstable();
                        between.dedup();
                        if between.len() <= self.of.len() {
                            self.edit(class, &view, &between, peers)
                        } else {
                            self.build(class, Some(&view), peers)
                        }
                    }
                    None => self.build(class, None, peers),
                };
                let mut built = self.lineage.built.lock().unwrap_or_else(|e| e.into_inner());
                if built.get(&class).is_none_or(|(at, _)| *at < self.at) {
                    built.insert(class, (self.at, view.clone()));
                }
                view
            })
            .clone()
    }

    /// What class `class` sees, over every member; `like` when that is what it holds (so
    /// that its id, hash and encodings carry over and the class's sessions do nothing).
    fn build(
        &self,
        class: u32,
        like: Option<&Arc<View>>,
        peers: &BTreeMap<Key, Arc<PeerEntry>>,
    ) -> Arc<View> {
        let mut seen = BTreeMap::new();
        let mut entries = BTreeMap::new();
        for (k, entry) in peers {
            if let Some(pf) = self.sees(class, k) {
                seen.insert(*k, entry.clone());
                entries.insert(*k, pf);
            }
        }
        let filter = SharedFilter::new(self.compiled.policy.default, entries);
        if let Some(like) = like {
            let same_peers = like.peers.len() == seen.len()
                && like
                    .peers
                    .iter()
                    .zip(&seen)
                    .all(|((a, p), (b, q))| a == b && Arc::ptr_eq(p, q));
            if same_peers && like.filter.same_as(&filter) {
                return like.clone();
            }
        }
        Arc::new(View {
            peers: seen,
            filter,
            entries: OnceLock::new(),
        })
    }
}

impl Classes {
    /// The entries between `class` and member `key`, if the policy lets them exchange
    /// any traffic (`None` too for a key that is not an authorised member).
    fn sees(&self, class: u32, key: &Key) -> Option<Arc<PeerFilter>> {
        let pf = self.pair(class, *self.of.get(key)?);
        pf.reaches(self.compiled.policy.default).then_some(pf)
    }

    /// `prev`, a view of `class` built for another snapshot of the lineage, with the
    /// members in `changed` (every member changed between the two) put right: the same view when none of them
    /// changes it (a join in another group), else a copy with the edits (the cost of the
    /// view's size, not of the network's).
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
                    Arc::ptr_eq(entry, had) && prev.filter.peers.get(k) == Some(pf)
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
        let mut filter_edits = Vec::with_capacity(edits.len());
        for (k, want) in edits {
            match want {
                Some((entry, pf)) => {
                    seen.insert(k, entry);
                    filter_edits.push((k, Some(pf)));
                }
                None => {
                    seen.remove(&k);
                    filter_edits.push((k, None));
                }
            }
        }
        Arc::new(View {
            peers: seen,
            filter: SharedFilter::edited(&prev.filter, filter_edits),
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
                let mut b = FrameBuilder::changes(self.version, &self.network);
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
        let mut b = FrameBuilder::changes(self.version, &self.network);
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
            None => SharedFilter::new(classes.compiled.policy.default, BTreeMap::new()),
        })
    }

    /// The update from `old` to `new` (as [`SharedFilter::update_from`]), computed and
    /// encoded once per pair of filters and shared by the sessions that need it.
    pub fn filter_update(
        &self,
        old: Option<&Arc<SharedFilter>>,
        new: &Arc<SharedFilter>,
    ) -> Option<Arc<FilterFrame>> {
        let compute = || new.update_from(old.map(|o| &**o)).map(FilterFrame::new);
        let Some(classes) = self.classes.as_ref() else {
            return compute();
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
        let u = compute();
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
