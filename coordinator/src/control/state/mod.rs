//! The coordinator's state and every operation on it, shared by the admin HTTP API
//! ([`crate::admin::http`]) and the control sessions ([`crate::control::session`]).
//!
//! **Architecture Invariant:** every mutation runs under one async mutex ([`Coordinator`]'s
//! `state`): it is checked, written to the store as one atomic batch, and only then applied
//! to memory. So two members never get one address, whatever joins race. The lock is never
//! held across a disk flush.
//!
//! **Architecture Invariant:** nothing is acknowledged before it is durable. After its
//! batch, an operation waits in [`Coordinator::durable`] (group commit: one flush covers
//! every batch applied before it started, so concurrent joins share flushes) before it
//! answers the admin, admits a node or sends a netmap.
//!
//! Sessions learn about changes through one `watch` channel per network carrying an
//! immutable [`Snapshot`]; a slow session skips intermediate snapshots instead of queueing
//! them, so memory per session is bounded. The relay learns who is authorised where from
//! one [`Membership`] value behind an `ArcSwap`, replaced under the lock whenever any
//! network's set of authorised members changes.

mod admin;
mod changes;
mod cluster;
mod control;
mod follow;
mod policy;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use mesh_proto::admin::{FilterView, MemberView, PeerPathView};
use mesh_proto::control::{CertPin, PeerPathReport};
use mesh_proto::Key;
use tokio::sync::{oneshot, watch, Mutex};

pub use self::cluster::Registration;
pub use self::control::{AdmitError, Admitted, EndpointReport, PathsIgnored};
pub use self::policy::{clean_tags, FilterReport, PolicyState, Why};
use crate::control::audit::{AuditEntry, AuditLog, AUDIT_KEEP};
use crate::control::ipam::IpamError;
use crate::control::membership::Membership;
use crate::control::snapshot::{Deltas, PeerEntry, Snapshot};
use crate::control::stats::{ControlStats, NatStats};
use crate::control::views::{Classes, Compiled};
use crate::limit::{Rate, RateLimiter};
use crate::model::{ChangeRecord, Member, ModelError, Network, Token};
use crate::store::{Expect, Op, Revision, Store, StoreError};
use mesh_proto::policy::Policy;

/// Change-log entries kept per network: a node that missed fewer versions resumes with
/// changes, one that missed more gets a full netmap.
pub const LOG_KEEP: u64 = 1024;

/// Unix time in seconds. A trait so tests can move time.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock tests set by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: u64) -> ManualClock {
        ManualClock(AtomicU64::new(now))
    }

    /// Moves the clock forward.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What goes into join tokens besides the secret: where nodes dial, and the pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinInfo {
    /// Advertised QUIC addresses (`host:port`).
    pub coordinators: Vec<String>,
    /// The coordinator certificate's pin.
    pub pin: CertPin,
}

/// The NAT traversal services members are told about ([`ServerMsg::Services`]).
///
/// [`ServerMsg::Services`]: mesh_proto::control::ServerMsg::Services
#[derive(Clone)]
pub struct Services {
    /// Advertised reflector addresses (`host:port`).
    pub reflectors: Vec<String>,
    /// Advertised relay address (`host:port`), if the coordinator relays.
    pub relay: Option<String>,
    /// The relay's advertised address in every family (`relay` first), when there are
    /// several.
    pub relays: Vec<String>,
    /// The relay secret members' relay tokens derive from
    /// ([`mesh_proto::relay::token`]).
    pub relay_secret: Key,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("reflectors", &self.reflectors)
            .field("relay", &self.relay)
            .field("relays", &self.relays)
            .finish_non_exhaustive()
    }
}

/// Why an admin operation failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such network, member or token (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or names something impossible (400).
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with existing state (409).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed (500).
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    /// The operating system's random generator failed (500).
    #[error("random generator failed: {0}")]
    Random(getrandom::Error),
}

impl From<ModelError> for Error {
    fn from(e: ModelError) -> Error {
        Error::Invalid(e.to_string())
    }
}

impl From<IpamError> for Error {
    fn from(e: IpamError) -> Error {
        match e {
            // All clash with the network's state (its prefix is the network's), not with the
            // form of the request: 409, so that 400 stays "the request is malformed".
            IpamError::Taken { .. }
            | IpamError::Exhausted(_)
            | IpamError::Outside { .. }
            | IpamError::Reserved { .. } => Error::Conflict(e.to_string()),
        }
    }
}

/// How long an operation keeps being redone after losing races with other coordinators
/// before it gives up (each time it first catches up with the store). Under a join storm
/// through several coordinators one network's writes queue behind each other.
const RACE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// Failed joins a source may make (bad token secret, unknown token or network, a token of
/// another network): 10 at once, then one every 6 s. Past that its joins with a token are
/// refused unheard, so guessing a token online gets 10 tries a minute per address.
pub const JOIN_FAILURES: Rate = Rate {
    per_sec: 1.0 / 6.0,
    burst: 10.0,
};

/// An error that may mean the operation lost a race with another coordinator.
pub(crate) trait Raced {
    /// The network and the revision the failed batch expected, if it was a race.
    fn raced(&self) -> Option<(&str, Revision)>;
}

pub(crate) fn raced(e: &StoreError) -> Option<(&str, Revision)> {
    match e {
        StoreError::Conflict { network, expected } => Some((network.as_str(), *expected)),
        _ => None,
    }
}

impl Raced for Error {
    fn raced(&self) -> Option<(&str, Revision)> {
        match self {
            Error::Store(e) => raced(e),
            _ => None,
        }
    }
}

/// 32 random bytes from the operating system.
pub(crate) fn random32() -> Result<[u8; 32], getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b)?;
    Ok(b)
}

/// One network in memory.
struct NetState {
    network: Network,
    members: BTreeMap<Key, Member>,
    /// Address → holder, for assignment.
    by_addr: BTreeMap<IpAddr, Key>,
    /// Authorised members as peers; shared into snapshots.
    peers: BTreeMap<Key, Arc<PeerEntry>>,
    /// Each version's changes, encoded once for every session.
    deltas: Arc<Deltas>,
    /// The store batch count after the last change to this network ([`Snapshot::seq`]).
    seq: u64,
    /// The network's store revision this memory mirrors: every write is conditioned on it.
    rev: Revision,
    /// `rev` when a write conditioned on it was refused: memory is behind the store until
    /// the follower mirrors the newer batch, so writes fail fast instead of sending a
    /// transaction bound to fail.
    stale: Option<Revision>,
    tx: watch::Sender<Arc<Snapshot>>,
    /// The network's policy document parsed and compiled so far, with the text it was
    /// parsed from.
    policy: Option<(String, Arc<Compiled>)>,
}

/// `network`'s policy parsed. A stored document was checked when it was set; one that no
/// longer parses (a newer coordinator's syntax) fails closed: nothing allowed.
fn parse_policy(network: &Network) -> Option<(String, Arc<Compiled>)> {
    let text = network.policy.as_ref()?;
    let policy = Policy::parse(text).unwrap_or_else(|e| {
        tracing::error!(network = %network.name, "stored policy does not parse, denying everything: {e}");
        Policy {
            default: mesh_proto::policy::Action::Deny,
            ..Policy::default()
        }
    });
    Some((text.clone(), Arc::new(Compiled::new(Arc::new(policy)))))
}

impl NetState {
    fn new(network: Network, members: Vec<Member>) -> NetState {
        let mut by_addr = BTreeMap::new();
        let mut peers = BTreeMap::new();
        let mut map = BTreeMap::new();
        for m in members {
            by_addr.insert(m.address, m.public_key);
            if m.authorized {
                peers.insert(
                    m.public_key,
                    Arc::new(PeerEntry::new(m.peer_info(&network))),
                );
            }
            map.insert(m.public_key, m);
        }
        let deltas = Arc::new(Deltas::default());
        let policy = parse_policy(&network);
        let tx = watch::Sender::new(Arc::new(snapshot_of(
            &network,
            &map,
            &peers,
            &deltas,
            0,
            false,
            PolicyInput {
                compiled: policy.as_ref().map(|(_, p)| p),
                previous: None,
                changed: None,
            },
        )));
        NetState {
            network,
            members: map,
            by_addr,
            peers,
            deltas,
            seq: 0,
            rev: 0,
            stale: None,
            tx,
            policy,
        }
    }

    fn publish(&mut self, deleted: bool) {
        self.publish_changed(deleted, None);
    }

    /// [`NetState::publish`] knowing which members changed since the last snapshot (their
    /// entry, authorisation or tags; `None`: unknown), so views of a policy's classes are
    /// edited rather than rebuilt.
    fn publish_changed(&mut self, deleted: bool, changed: Option<Vec<Key>>) {
        if self.policy.as_ref().map(|(t, _)| t) != self.network.policy.as_ref() {
            self.policy = parse_policy(&self.network);
        }
        let previous = self.tx.borrow().classes.clone();
        let snap = snapshot_of(
            &self.network,
            &self.members,
            &self.peers,
            &self.deltas,
            self.seq,
            deleted,
            PolicyInput {
                compiled: self.policy.as_ref().map(|(_, p)| p),
                previous: previous.as_deref(),
                changed,
            },
        );
        self.tx.send_replace(Arc::new(snap));
    }

    /// Every authorised member's DNS name (as meshd answers for it), with `edited` in
    /// place of what is stored for its key when given (an admin change about to be made).
    fn dns_names(&self, edited: Option<&Member>) -> BTreeMap<Key, String> {
        let mut members: Vec<mesh_proto::dns::Member<'_>> = self
            .peers
            .values()
            .filter(|p| edited.is_none_or(|m| m.public_key != p.public_key))
            .map(|p| mesh_proto::dns::Member {
                address6: p.address6,
                key: &p.public_key,
                name: &p.name,
                address: p.address,
            })
            .collect();
        if let Some(m) = edited.filter(|m| m.authorized) {
            members.push(mesh_proto::dns::Member {
                address6: m.address6(&self.network),
                key: &m.public_key,
                name: &m.name,
                address: m.address,
            });
        }
        mesh_proto::dns::fqdns(&self.network.name, self.network.domain(), &members)
    }

    /// `m` as the admin API shows it, online state and reported paths from `sessions`.
    /// Paths are shown for an authorised member online, naming its peers as they are now
    /// (a peer since removed or deauthorised is left out).
    fn member_view(
        &self,
        sessions: &Sessions,
        elsewhere: &dyn Fn(&str, &Key) -> bool,
        names: &BTreeMap<Key, String>,
        m: &Member,
    ) -> MemberView {
        let slot = sessions.get(&(self.network.name.clone(), m.public_key));
        let mut view = m.view(
            &self.network,
            slot.is_some() || elsewhere(&self.network.name, &m.public_key),
        );
        view.dns_name = names.get(&m.public_key).cloned();
        if let Some(slot) = slot.filter(|_| m.authorized) {
            view.paths = slot
                .paths
                .iter()
                .filter_map(|r| {
                    let peer = self.members.get(&r.peer).filter(|p| p.authorized)?;
                    Some(PeerPathView {
                        peer: peer.public_key.fingerprint(),
                        name: peer.name.clone(),
                        path: r.path.as_str().to_owned(),
                        rtt_ms: r.rtt_ms,
                    })
                })
                .collect();
        }
        view.filter = slot.and_then(Slot::filter_view);
        view
    }
}

impl Slot {
    /// The filter this session sent and what the node reported, if either happened.
    fn filter_view(&self) -> Option<FilterView> {
        if self.filter_sent.is_none() && self.filter.is_none() {
            return None;
        }
        let reported = self.filter.as_ref().map(|r| r.hash.clone());
        Some(FilterView {
            // A node that failed to apply an update fails closed for the peers concerned:
            // not what it was sent, even when the filter it kept hashes the same.
            current: self.filter_sent.is_some()
                && reported == self.filter_sent
                && self.filter.as_ref().is_some_and(|r| r.error.is_none()),
            error: self.filter.as_ref().and_then(|r| r.error.clone()),
            sent: self.filter_sent.clone(),
            reported,
        })
    }
}

/// What a snapshot's policy classes are made from: the compiled policy (none: no
/// policy), the previous snapshot's classes and the members changed since.
struct PolicyInput<'a> {
    compiled: Option<&'a Arc<Compiled>>,
    previous: Option<&'a Classes>,
    changed: Option<Vec<Key>>,
}

fn snapshot_of(
    network: &Network,
    members: &BTreeMap<Key, Member>,
    peers: &BTreeMap<Key, Arc<PeerEntry>>,
    deltas: &Arc<Deltas>,
    seq: u64,
    deleted: bool,
    policy: PolicyInput<'_>,
) -> Snapshot {
    let PolicyInput {
        compiled,
        previous,
        changed,
    } = policy;
    // Each authorised member's class under the policy (its name, tags, address and the
    // routes it is sent, as far as the policy looks at them); nothing without a policy.
    let classes = compiled.map(|c| {
        let policy = &c.policy;
        let classify = policy.classifier();
        Arc::new(Classes::new(
            c.clone(),
            previous,
            changed,
            peers.keys().copied(),
            |k| {
                let (m, p) = (members.get(k)?, peers.get(k)?);
                Some(classify.class_of(&mesh_proto::policy::Subject {
                    name: &m.name,
                    tags: &m.tags,
                    prefixes: &p.allowed_ips,
                }))
            },
        ))
    });
    Snapshot {
        classes,
        version: network.version,
        network: network.info(),
        domain: Arc::from(network.domain()),
        peers: peers.clone(),
        pending: members
            .values()
            .filter(|m| !m.authorized)
            .map(|m| m.public_key)
            .collect(),
        deleted,
        seq,
        deltas: deltas.clone(),
    }
}

/// The relay's view of `st`: each network's authorised keys.
fn membership_of(st: &State) -> Membership {
    Membership::build(st.networks.values().map(|ns| ns.peers.keys()))
}

/// Everything mirrored in memory.
#[derive(Default)]
struct State {
    networks: BTreeMap<String, NetState>,
    /// Tokens of every network, by id.
    tokens: BTreeMap<String, Token>,
    /// The newest admin actions.
    audit: AuditLog,
}

/// A change to one network, prepared before anything is written.
#[derive(Default)]
struct Change {
    /// Members to create or replace.
    put: Vec<Member>,
    /// Members to delete.
    delete: Vec<Key>,
    /// Tokens to create or replace.
    tokens: Vec<Token>,
    /// Admin actions to record with the change.
    audit: Vec<AuditEntry>,
    /// A new policy document for the network (`Some(None)`: none, everything allowed).
    policy: Option<Option<String>>,
}

/// What a change does to one network's peers, worked out before anything is written.
struct Prepared {
    /// Members whose peer entry appeared, changed or went away.
    touched: BTreeSet<Key>,
    /// The new peer entries (`None`: removed).
    peer_updates: Vec<(Key, Option<Arc<PeerEntry>>)>,
    /// A member was added or removed.
    membership: bool,
    /// Someone became or stopped being authorised (the relay's concern).
    authorised_set: bool,
}

impl Prepared {
    fn of(ns: &NetState, put: &[Member], delete: &[Key]) -> Prepared {
        let mut p = Prepared {
            touched: BTreeSet::new(),
            peer_updates: Vec::new(),
            membership: !delete.is_empty(),
            authorised_set: false,
        };
        for m in put {
            let new = m.authorized.then(|| m.peer_info(&ns.network));
            if ns.peers.get(&m.public_key).map(|p| &***p) != new.as_ref() {
                p.touched.insert(m.public_key);
                p.authorised_set |= ns.peers.contains_key(&m.public_key) != new.is_some();
                p.peer_updates
                    .push((m.public_key, new.map(|i| Arc::new(PeerEntry::new(i)))));
            }
            p.membership |= !ns.members.contains_key(&m.public_key);
        }
        for k in delete {
            if ns.peers.contains_key(k) {
                p.touched.insert(*k);
                p.authorised_set = true;
                p.peer_updates.push((*k, None));
            }
        }
        p
    }

    /// Version `version`'s changes as every session sends them, encoded once.
    fn frame(&self, version: u64, network: &mesh_proto::netmap::NetworkInfo) -> bytes::Bytes {
        let mut frame = mesh_proto::wire::FrameBuilder::changes(version, network);
        for (k, p) in &self.peer_updates {
            match p {
                Some(entry) => frame.upsert(entry.wire()),
                None => frame.remove(k),
            }
        }
        bytes::Bytes::from(frame.finish())
    }
}

/// A live control session slot: the newest session of a member replaces the older one.
/// What the member reports about itself that is not stored lives here, and goes with it.
struct Slot {
    id: u64,
    /// Dropping it tells the session it was replaced.
    _kick: oneshot::Sender<()>,
    /// Its latest path report, checked ([`Coordinator::report_paths`]); in memory only.
    paths: Vec<PeerPathReport>,
    /// What it reported it enforces ([`Coordinator::report_filter`]).
    filter: Option<FilterReport>,
    /// The hash of the filter its session sent it last ([`Coordinator::filter_sent`]).
    filter_sent: Option<String>,
}

/// The session registry: a slot per member online, by network and key.
type Sessions = HashMap<(String, Key), Slot>;

/// The coordinator: state, store and sessions. Shared as `Arc<Coordinator>`.
pub struct Coordinator {
    state: Mutex<State>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    join: JoinInfo,
    /// Batches applied to the store (for group commit).
    applied: AtomicU64,
    /// Serialises flushes; holds the `applied` count the last flush covered.
    flushed: Mutex<u64>,
    /// The same count, readable without waiting (sessions check it before every push).
    flushed_upto: AtomicU64,
    sessions: StdMutex<Sessions>,
    next_session: AtomicU64,
    /// Authorised members by network, for the relay; replaced under `state`.
    membership: Arc<ArcSwap<Membership>>,
    services: Option<Services>,
    stats: Arc<NatStats>,
    control_stats: ControlStats,
    /// Failed join attempts per source ([`Coordinator::join_wait`]).
    join_failures: StdMutex<RateLimiter>,
    changes: changes::Changes,
    /// This coordinator's id (presence, registration, `/metrics`).
    id: String,
    /// Whether other coordinators share the store (it reports their batches).
    shared: bool,
    /// Revisions of this coordinator's own batches not yet seen back from the store.
    own_revisions: StdMutex<BTreeSet<Revision>>,
    /// Woken after each batch the follower mirrored.
    followed: tokio::sync::Notify,
    /// The coordinator set: presence elsewhere, registrations, services.
    cluster: cluster::Cluster,
    /// Joins waiting for the state lock, admitted together ([`Coordinator::admit`]).
    joins: StdMutex<Vec<control::PendingJoin>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("join", &self.join)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Loads every network, member and token from `store`; no NAT traversal services.
    pub fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        join: JoinInfo,
    ) -> Result<Arc<Coordinator>, StoreError> {
        Coordinator::open_with_services(store, clock, join, None)
    }

    /// Loads every network, member and token from `store`; authorised members are told
    /// about `services` before their first netmap on each connection.
    pub fn open_with_services(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        join: JoinInfo,
        services: Option<Services>,
    ) -> Result<Arc<Coordinator>, StoreError> {
        Coordinator::open_as(store, clock, join, services, "local".into())
    }

    /// Loads everything from `store` as coordinator `id`. When the store is shared
    /// ([`Store::follow`]), a task follows what other coordinators commit (needs a tokio
    /// runtime).
    pub fn open_as(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        join: JoinInfo,
        services: Option<Services>,
        id: String,
    ) -> Result<Arc<Coordinator>, StoreError> {
        let dump = store.load()?;
        let mut state = State {
            audit: AuditLog::from_entries(dump.audit, AUDIT_KEEP),
            ..State::default()
        };
        for n in dump.networks {
            for t in n.tokens {
                state.tokens.insert(t.id.clone(), t);
            }
            let mut ns = NetState::new(n.network, n.members);
            ns.rev = n.revision;
            state.networks.insert(ns.network.name.clone(), ns);
        }
        let membership = Arc::new(ArcSwap::from_pointee(membership_of(&state)));
        let follow = store.follow(dump.revision);
        let cluster = cluster::Cluster::new(&dump.presence, &dump.coordinators);
        let coord = Arc::new(Coordinator {
            state: Mutex::new(state),
            store,
            clock,
            join,
            applied: AtomicU64::new(0),
            flushed: Mutex::new(0),
            flushed_upto: AtomicU64::new(0),
            sessions: StdMutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            membership,
            services,
            stats: Arc::new(NatStats::default()),
            control_stats: ControlStats::default(),
            join_failures: StdMutex::new(RateLimiter::new(JOIN_FAILURES)),
            changes: changes::Changes::default(),
            id,
            shared: follow.is_some(),
            own_revisions: StdMutex::new(BTreeSet::new()),
            followed: tokio::sync::Notify::new(),
            cluster,
            joins: StdMutex::new(Vec::new()),
        });
        if let Some(rx) = follow {
            tokio::spawn(follow::run(Arc::downgrade(&coord), rx));
        }
        Ok(coord)
    }

    /// This coordinator's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which store, where (`sled`, `etcd http://…`).
    pub fn store_name(&self) -> String {
        self.store.describe()
    }

    /// Whether the store says it takes writes now.
    pub fn store_health(&self) -> crate::store::Health {
        self.store.health()
    }

    /// The NAT traversal services members are told about, if any.
    pub fn services(&self) -> Option<&Services> {
        self.services.as_ref()
    }

    /// Who is authorised where, always current (for the relay).
    pub fn membership(&self) -> Arc<ArcSwap<Membership>> {
        self.membership.clone()
    }

    /// Counters of the reflectors and the relay.
    pub fn stats(&self) -> &Arc<NatStats> {
        &self.stats
    }

    /// Counters of the control plane (joins, netmap pushes).
    pub fn control_stats(&self) -> &ControlStats {
        &self.control_stats
    }

    /// How long joins with a token from `ip` are refused unheard (zero: not at all), after
    /// the failures [`Coordinator::join_failed`] counted ([`JOIN_FAILURES`]).
    pub fn join_wait(&self, ip: IpAddr, now: std::time::Instant) -> std::time::Duration {
        self.join_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wait(ip, now)
    }

    /// A join from `ip` failed on its token or network.
    pub fn join_failed(&self, ip: IpAddr, now: std::time::Instant) {
        self.control_stats.join_failures.inc();
        self.join_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .charge(ip, now);
    }

    /// An audit entry for an action taken now by the caller of the request being served
    /// ([`crate::control::audit::current_actor`]).
    fn audit_entry(&self, action: &str, net: &str, target: &str, detail: String) -> AuditEntry {
        AuditEntry {
            time: self.now(),
            actor: crate::control::audit::current_actor(),
            action: action.to_owned(),
            network: net.to_owned(),
            target: target.to_owned(),
            detail,
        }
    }

    /// The newest `limit` admin actions, newest first (`GET /api/audit`).
    pub async fn audit(&self, limit: usize) -> Vec<AuditEntry> {
        self.state.lock().await.audit.latest(limit)
    }

    /// Per network (by name): members, authorised members, members online now.
    pub async fn member_counts(&self) -> Vec<(String, usize, usize, usize)> {
        let counts: Vec<(String, usize, usize)> = {
            let st = self.state.lock().await;
            st.networks
                .iter()
                .map(|(name, ns)| (name.clone(), ns.members.len(), ns.peers.len()))
                .collect()
        };
        let elsewhere = self.online_elsewhere_counts();
        let sessions = self.sessions();
        counts
            .into_iter()
            .map(|(name, total, authorized)| {
                let here = sessions.keys().filter(|(n, _)| *n == name).count();
                let online = here + elsewhere.get(&name).copied().unwrap_or(0);
                (name, total, authorized, online)
            })
            .collect()
    }

    /// Rebuilds the relay's view of the authorised members (under the state lock).
    fn publish_membership(&self, st: &State) {
        self.membership.store(Arc::new(membership_of(st)));
    }

    /// Unix seconds now.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Applies `ops` to the store (one atomic batch). The batch is written in memory (the
    /// flush comes later, in [`Coordinator::durable`]) but sled may still block on its IO
    /// buffers, so on a multi-threaded runtime it runs in `block_in_place`: the worker's
    /// other tasks (sessions, pushes) move to another worker meanwhile. It stays under the
    /// state lock on purpose: the batch and the memory it mirrors change together.
    fn apply(&self, ops: &[Op], expect: &[Expect]) -> Result<Revision, StoreError> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let rev = if multi_thread {
            tokio::task::block_in_place(|| self.store.apply(ops, expect))?
        } else {
            self.store.apply(ops, expect)?
        };
        if self.shared {
            self.own_revisions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(rev);
        }
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(rev)
    }

    /// Returns once every batch applied before the call is on disk. Concurrent callers
    /// share flushes: whoever flushes covers everyone whose batch came before.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.durable_upto(self.applied.load(Ordering::SeqCst)).await
    }

    /// Returns once the first `seq` batches are on disk (at once when they are already):
    /// a session holds back a snapshot until its [`Snapshot::seq`] is durable, so no node
    /// is ever sent a version the coordinator could lose in a crash.
    pub async fn durable_upto(&self, seq: u64) -> Result<(), StoreError> {
        if self.flushed_upto.load(Ordering::SeqCst) >= seq {
            return Ok(());
        }
        let mut flushed = self.flushed.lock().await;
        if *flushed >= seq {
            return Ok(());
        }
        let target = self.applied.load(Ordering::SeqCst);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|_| StoreError::Interrupted)??;
        *flushed = target;
        self.flushed_upto.store(target, Ordering::SeqCst);
        Ok(())
    }

    /// Writes `change` to the store, then to memory. When a netmap changes (an authorised
    /// member's peer entry appeared, changed or went away) the version is bumped and the
    /// change logged in the same batch; sessions are woken when any netmap or membership
    /// changed. Returns whether the version was bumped.
    fn commit(&self, st: &mut State, net: &str, change: Change) -> Result<bool, Error> {
        let ns = st
            .networks
            .get(net)
            .ok_or_else(|| Error::NotFound(format!("no network {net:?}")))?;
        if ns.stale == Some(ns.rev) {
            // Memory is behind the store: a batch conditioned on it is bound to fail.
            return Err(Error::Store(StoreError::Conflict {
                network: net.to_owned(),
                expected: ns.rev,
            }));
        }
        let prepared = Prepared::of(ns, &change.put, &change.delete);
        // Under a policy, netmaps depend on the policy and on tags too (a member sees only
        // the peers its policy lets it reach): changing either is a new version, logged as
        // touching whom it may change for (everyone, for the document itself), so a node
        // resuming from before it gets those peers again.
        let policy_changed = change
            .policy
            .as_ref()
            .is_some_and(|p| *p != ns.network.policy);
        let under_policy =
            ns.network.policy.is_some() || change.policy.as_ref().is_some_and(Option::is_some);
        let retagged: Vec<Key> = change
            .put
            .iter()
            .filter(|m| {
                under_policy
                    && ns.peers.contains_key(&m.public_key)
                    && ns
                        .members
                        .get(&m.public_key)
                        .is_some_and(|old| old.tags != m.tags)
            })
            .map(|m| m.public_key)
            .collect();
        let mut touched = prepared.touched.clone();
        touched.extend(retagged);
        if policy_changed {
            touched.extend(ns.peers.keys().copied());
        }
        let bump = !touched.is_empty() || policy_changed;
        let mut network = ns.network.clone();
        let expect = [Expect {
            network: net.to_owned(),
            revision: ns.rev,
        }];
        let mut ops = Vec::new();
        for m in &change.put {
            ops.push(Op::PutMember {
                network: net.to_owned(),
                member: m.clone(),
            });
        }
        for k in &change.delete {
            ops.push(Op::DeleteMember {
                network: net.to_owned(),
                key: *k,
            });
        }
        for t in &change.tokens {
            ops.push(Op::PutToken(t.clone()));
        }
        ops.extend(st.audit.ops(&change.audit));
        if let Some(policy) = &change.policy {
            network.policy.clone_from(policy);
            if !bump {
                ops.push(Op::PutNetwork(network.clone()));
            }
        }
        if bump {
            network.version += 1;
            ops.push(Op::PutNetwork(network.clone()));
            ops.push(Op::PutLog {
                network: net.to_owned(),
                version: network.version,
                record: ChangeRecord {
                    network: false,
                    touched: touched.iter().copied().collect(),
                },
            });
            if network.version > LOG_KEEP {
                ops.push(Op::PruneLog {
                    network: net.to_owned(),
                    upto: network.version - LOG_KEEP,
                });
            }
        }
        if ops.is_empty() {
            return Ok(false);
        }
        let rev = match self.apply(&ops, &expect) {
            Ok(rev) => rev,
            Err(e @ StoreError::Conflict { .. }) => {
                if let Some(ns) = st.networks.get_mut(net) {
                    ns.stale = Some(ns.rev);
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        self.mirror(st, net, change, &prepared, network, rev);
        Ok(bump)
    }

    /// Mirrors a committed change of network `net` (which exists) in memory: members,
    /// peers, the version's change frame, tokens, audit; wakes sessions and the relay.
    fn mirror(
        &self,
        st: &mut State,
        net: &str,
        change: Change,
        prepared: &Prepared,
        network: Network,
        rev: Revision,
    ) {
        let Some(ns) = st.networks.get_mut(net) else {
            return;
        };
        let bump = network.version > ns.network.version;
        let delta = bump.then(|| prepared.frame(network.version, &network.info()));
        // Tags are not in any netmap, but the policy's filters depend on them.
        let retagged: Vec<Key> = change
            .put
            .iter()
            .filter(|m| {
                ns.members
                    .get(&m.public_key)
                    .is_some_and(|old| old.tags != m.tags)
            })
            .map(|m| m.public_key)
            .collect();
        let tags_changed = !retagged.is_empty();
        for m in change.put {
            let key = m.public_key;
            let addr = m.address;
            if let Some(old) = ns.members.insert(key, m) {
                if old.address != addr && ns.by_addr.get(&old.address) == Some(&key) {
                    ns.by_addr.remove(&old.address);
                }
            }
            ns.by_addr.insert(addr, key);
        }
        for k in &change.delete {
            if let Some(old) = ns.members.remove(k) {
                if ns.by_addr.get(&old.address) == Some(k) {
                    ns.by_addr.remove(&old.address);
                }
            }
        }
        for (k, p) in &prepared.peer_updates {
            match p {
                Some(p) => ns.peers.insert(*k, p.clone()),
                None => ns.peers.remove(k),
            };
        }
        let record_changed = network != ns.network;
        ns.network = network;
        ns.rev = rev;
        ns.seq = self.applied.load(Ordering::SeqCst);
        if let Some(frame) = delta {
            ns.deltas.push(ns.network.version, frame);
        }
        if bump || prepared.membership || record_changed || tags_changed {
            let mut changed: Vec<Key> = prepared.touched.iter().copied().collect();
            changed.extend(retagged);
            ns.publish_changed(false, Some(changed));
        }
        for t in change.tokens {
            st.tokens.insert(t.id.clone(), t);
        }
        st.audit.committed(change.audit);
        if prepared.authorised_set {
            self.publish_membership(st);
        }
    }

    /// Mirrors a change another coordinator committed to network `net` at `rev`;
    /// `network` is its record when the batch wrote it. (The relay index, if the
    /// authorised set changed, is republished by [`Coordinator::mirror`].)
    fn mirror_remote(
        &self,
        st: &mut State,
        net: &str,
        change: Change,
        network: Option<Network>,
        rev: Revision,
    ) {
        let Some(ns) = st.networks.get(net) else {
            return;
        };
        let prepared = Prepared::of(ns, &change.put, &change.delete);
        let network = network.unwrap_or_else(|| ns.network.clone());
        self.mirror(st, net, change, &prepared, network, rev);
    }

    /// Runs `op`, and again after catching up with the store while it loses races with
    /// other coordinators (its batch's condition failed: memory was behind). Every
    /// decision (address, token use, version) is made afresh on each attempt.
    async fn retrying<T, E, F, Fut>(&self, mut op: F) -> Result<T, E>
    where
        E: Raced,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let deadline = tokio::time::Instant::now() + RACE_DEADLINE;
        loop {
            let e = match op().await {
                Err(e) => e,
                ok => return ok,
            };
            let Some((net, expected)) = e.raced() else {
                return Err(e);
            };
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(network = %net, "gave up after losing races for {RACE_DEADLINE:?}");
                return Err(e);
            }
            self.control_stats.races.inc();
            let net = net.to_owned();
            self.catch_up(&net, expected).await;
        }
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Members online now (control sessions), across networks.
    pub fn online(&self) -> usize {
        self.sessions().len()
    }

    /// Whether a member holds an authenticated control connection now.
    pub fn is_online(&self, net: &str, key: &Key) -> bool {
        self.sessions().contains_key(&(net.to_owned(), *key)) || self.online_elsewhere(net, key)
    }

    /// Registers a member's session; an older session of the same member is told to end
    /// (the returned receiver fires when this one is replaced in turn).
    pub(crate) fn register_session(&self, net: &str, key: &Key) -> SessionGuard<'_> {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.sessions().insert(
            (net.to_owned(), *key),
            Slot {
                id,
                _kick: tx,
                paths: Vec::new(),
                filter: None,
                filter_sent: None,
            },
        );
        self.store.set_presence(net, key, true);
        self.changes.bump();
        SessionGuard {
            coord: self,
            net: net.to_owned(),
            key: *key,
            id,
            replaced: rx,
        }
    }
}

/// A registered session; unregisters on drop (also when the task is cancelled).
pub(crate) struct SessionGuard<'a> {
    coord: &'a Coordinator,
    net: String,
    key: Key,
    id: u64,
    /// Resolves when a newer session of the same member replaced this one.
    pub replaced: oneshot::Receiver<()>,
}

impl SessionGuard<'_> {
    /// The session's id in the registry.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        let mut sessions = self.coord.sessions();
        let slot = (std::mem::take(&mut self.net), self.key);
        if sessions.get(&slot).is_some_and(|s| s.id == self.id) {
            sessions.remove(&slot);
            self.coord.store.set_presence(&slot.0, &slot.1, false);
            self.coord.changes.bump();
        }
    }
}

#[cfg(test)]
mod tests;
