//! [`Store`] on an etcd cluster (v3 API): several coordinators share it, each mirroring
//! it in memory and following it with a watch.
//!
//! ```text
//! PREFIX n/<net>                   → Network (JSON)
//! PREFIX r/<net>                   → written by every batch touching <net>: its
//!                                    mod_revision is the network's revision
//! PREFIX m/<net>/<key: 64 hex>     → Member
//! PREFIX t/<net>/<id>              → Token
//! PREFIX l/<net>/<ver: 16 hex>     → ChangeRecord
//! PREFIX a/<seq: 16 hex>/<writer>  → AuditEntry (two coordinators may use one seq)
//! PREFIX p/<net>/<key: 64 hex>/<id> → a member is online at coordinator <id> (leased; each
//!                                    coordinator writes and deletes only its own)
//! PREFIX c/<id>                    → a coordinator's registration (leased)
//! PREFIX secret/<name>             → the coordinator set's shared identity
//! ```
//! A batch is one etcd transaction: `mod_revision(r/<net>) == expected` for each
//! [`Expect`], then the writes; a failed comparison is a [`StoreError::Conflict`] and
//! writes nothing. etcd acknowledges a transaction once its quorum committed it, so
//! `apply` is durable when it returns and `flush` has nothing to do.
//!
//! The store runs its own small tokio runtime: the [`Store`] trait is synchronous (the
//! coordinator calls it under its state lock, in `block_in_place`), and blocking on this
//! runtime from the coordinator's works on any of its flavours. Every request has a
//! deadline; one that misses it, or fails because the member it reached has no leader
//! (`require_leader`), is [`StoreError::Unavailable`]: a coordinator cut off from the
//! quorum refuses writes instead of guessing.
//!
//! Presence and registration live under one lease per process ([`LEASE_TTL`]), kept alive
//! by a task; when the lease is lost (a partition longer than its TTL) the task takes a new
//! one and writes everything again. Presence changes are written in batches.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    PutOptions, Txn, TxnOp, WatchOptions,
};
use mesh_proto::admin::AuditEntry;
use mesh_proto::Key;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{
    touched_networks, Dump, Event, Expect, Follow, Health, NetworkDump, Op, Presence, Revision,
    Store, StoreError,
};
use crate::model::{ChangeRecord, Member, Network, Token};

/// How long presence and registrations outlive a coordinator that stopped answering.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// Longest wait for a TCP connection to one etcd member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Keys per range request when loading.
const PAGE: i64 = 2000;
/// Presence writes per transaction (etcd's default limit is 128 operations).
const PRESENCE_BATCH: usize = 100;

/// How to reach etcd: `--store etcd:URL[,URL…]` and the `--etcd-*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs (`http://host:2379`, or `https://` with TLS).
    pub endpoints: Vec<String>,
    /// Key prefix, so several deployments can share one cluster.
    pub prefix: String,
    /// User name and password (etcd's auth).
    pub user: Option<(String, String)>,
    /// CA certificate (PEM) that signed the etcd members' certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), when etcd requires client certificates.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Deadline of every request.
    pub timeout: Duration,
    /// This coordinator's id (presence, registration, audit keys).
    pub id: String,
}

impl EtcdOptions {
    /// Options for `endpoints` with defaults: prefix `/wiremesh/`, 5 s deadline.
    pub fn new(endpoints: Vec<String>, id: String) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            prefix: "/wiremesh/".into(),
            user: None,
            ca: None,
            cert: None,
            timeout: Duration::from_secs(5),
            id,
        }
    }

    /// Parses the endpoint list of `--store etcd:URL[,URL…]` (the part after `etcd:`).
    pub fn parse_endpoints(list: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for url in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .ok_or_else(|| {
                    format!("etcd endpoint {url:?} must start with http:// or https://")
                })?;
            let host_port = rest.trim_end_matches('/');
            if host_port.is_empty() || host_port.contains('/') || !host_port.contains(':') {
                return Err(format!(
                    "etcd endpoint {url:?} must be http(s)://HOST:PORT, e.g. http://10.0.0.1:2379"
                ));
            }
            out.push(url.trim_end_matches('/').to_owned());
        }
        if out.is_empty() {
            return Err("etcd: needs at least one endpoint, e.g. etcd:http://10.0.0.1:2379".into());
        }
        Ok(out)
    }
}

/// The etcd store.
pub struct EtcdStore {
    /// Its own runtime (see the module doc); `Option` so `Drop` can shut it down without
    /// blocking whatever runtime drops the store.
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    client: Client,
    prefix: String,
    opts: EtcdOptions,
    /// The lease presence and registration hang from (0: none yet).
    lease: Arc<AtomicI64>,
    /// What must be under the lease: rewritten whenever a new lease is taken.
    leased: Arc<Mutex<Leased>>,
    /// Wakes the lease task to write presence changes.
    presence_tx: mpsc::UnboundedSender<()>,
    /// The last request's outcome (health).
    healthy: Arc<AtomicBool>,
    last_error: Arc<Mutex<String>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.opts.endpoints)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The leased keys this process wants to exist, and which presence changes are unwritten.
#[derive(Default)]
struct Leased {
    registration: Option<(String, Vec<u8>)>,
    online: BTreeMap<(String, Key), ()>,
    /// Presence changes not yet written: `true` online.
    dirty: BTreeMap<(String, Key), bool>,
    /// Everything must be rewritten (a new lease).
    rewrite: bool,
}

fn unavailable(e: &etcd_client::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("too many operations") || text.contains("request is too large") {
        return StoreError::TooLarge(format!(
            "{text} (raise etcd's --max-txn-ops / --max-request-bytes)"
        ));
    }
    StoreError::Unavailable(text)
}

/// Whether the request failed in transport to one member (refused, timed out connecting,
/// the connection broke under it): sent again, it reaches another member. A batch that
/// did commit before its answer was lost fails its condition when sent again, and the
/// operation is decided afresh after catching up (`Coordinator::retrying`).
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("ConnectError")
        || text.contains("tcp connect error")
        || text.contains("tonic::transport::Error(Transport")
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data records: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex_key(s: &str) -> Option<Key> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(Key(out))
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
enum Record {
    Network(String),
    Revision(String),
    Member(String, Key),
    Token(String, String),
    Log(String, u64),
    Audit(u64),
    Presence(String, Key, String),
    Coordinator(String),
    Other,
}

fn parse_key(tail: &str) -> Record {
    let mut parts = tail.splitn(3, '/');
    let kind = parts.next().unwrap_or("");
    let a = parts.next();
    let b = parts.next();
    match (kind, a, b) {
        ("n", Some(net), None) => Record::Network(net.to_owned()),
        ("r", Some(net), None) => Record::Revision(net.to_owned()),
        ("m", Some(net), Some(k)) => {
            unhex_key(k).map_or(Record::Other, |k| Record::Member(net.to_owned(), k))
        }
        ("t", Some(net), Some(id)) => Record::Token(net.to_owned(), id.to_owned()),
        ("l", Some(net), Some(v)) => {
            u64::from_str_radix(v, 16).map_or(Record::Other, |v| Record::Log(net.to_owned(), v))
        }
        ("a", Some(seq), Some(_)) => {
            u64::from_str_radix(seq, 16).map_or(Record::Other, Record::Audit)
        }
        ("p", Some(net), Some(rest)) => match rest.split_once('/') {
            Some((k, id)) if !id.is_empty() && !id.contains('/') => unhex_key(k)
                .map_or(Record::Other, |k| {
                    Record::Presence(net.to_owned(), k, id.to_owned())
                }),
            _ => Record::Other,
        },
        ("c", Some(id), None) => Record::Coordinator(id.to_owned()),
        _ => Record::Other,
    }
}

/// The smallest key above every key starting with `prefix` (etcd's prefix range end).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Writes of one batch, as etcd takes them: no key twice, no put inside a deleted range.
#[derive(Default)]
struct Writes {
    points: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Writes {
    fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), StoreError> {
        let key = key.into_bytes();
        if self.ranges.iter().any(|(s, e)| key >= *s && key < *e) {
            return Err(StoreError::TooLarge(format!(
                "a write to {} follows the deletion of its range in one batch",
                String::from_utf8_lossy(&key)
            )));
        }
        self.points.insert(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: String) {
        let key = key.into_bytes();
        if !self.ranges.iter().any(|(s, e)| key >= *s && key < *e) {
            self.points.insert(key, None);
        }
    }

    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
        self.points.retain(|k, _| !(*k >= start && *k < end));
        self.ranges.push((start, end));
    }

    fn into_ops(self) -> Vec<TxnOp> {
        let mut ops = Vec::with_capacity(self.points.len() + self.ranges.len());
        for (start, end) in self.ranges {
            ops.push(TxnOp::delete(
                start,
                Some(DeleteOptions::new().with_range(end)),
            ));
        }
        for (k, v) in self.points {
            ops.push(match v {
                Some(v) => TxnOp::put(k, v, None),
                None => TxnOp::delete(k, None),
            });
        }
        ops
    }
}

impl EtcdStore {
    /// Connects (the first request checks that etcd answers: a coordinator that cannot
    /// reach its store at start says so and exits, and its service manager retries).
    pub fn connect(opts: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("starting the etcd client: {e}")))?;
        // A member that died must cost a request far less than its deadline: connections
        // to it fail within a second and dead connections are noticed within two, so the
        // request goes to another member in time ([`never_sent`]).
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT.min(opts.timeout))
            .with_timeout(opts.timeout)
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((user, password)) = &opts.user {
            connect = connect.with_user(user.clone(), password.clone());
        }
        if opts.ca.is_some() || opts.cert.is_some() {
            connect = connect.with_tls(tls_options(&opts)?);
        }
        let endpoints = opts.endpoints.clone();
        let timeout = opts.timeout;
        let client = rt
            .block_on(async move {
                tokio::time::timeout(timeout, async {
                    let mut client = Client::connect(endpoints, Some(connect)).await?;
                    client.status().await?;
                    Ok::<_, etcd_client::Error>(client)
                })
                .await
            })
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "etcd at {} did not answer within {timeout:?}",
                    opts.endpoints.join(",")
                ))
            })?
            .map_err(|e| {
                StoreError::Unavailable(format!("etcd at {}: {e}", opts.endpoints.join(",")))
            })?;
        let (presence_tx, presence_rx) = mpsc::unbounded_channel();
        let store = EtcdStore {
            client,
            prefix: opts.prefix.clone(),
            lease: Arc::new(AtomicI64::new(0)),
            leased: Arc::new(Mutex::new(Leased::default())),
            presence_tx,
            healthy: Arc::new(AtomicBool::new(true)),
            last_error: Arc::new(Mutex::new(String::new())),
            opts,
            handle: rt.handle().clone(),
            rt: Some(rt),
        };
        store.handle().spawn(lease_task(
            store.client.clone(),
            store.prefix.clone(),
            store.opts.id.clone(),
            store.lease.clone(),
            store.leased.clone(),
            presence_rx,
            store.healthy.clone(),
            store.last_error.clone(),
        ));
        Ok(store)
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    fn key(&self, tail: &str) -> String {
        format!("{}{tail}", self.prefix)
    }

    /// Runs `f` on the store's runtime and waits for it (at most the deadline). A
    /// request that never left (the client picked a member that refuses connections) is
    /// tried again, on another member, within the same deadline.
    fn call<T, F>(
        &self,
        what: &str,
        f: impl Fn(Client) -> F + Send + Sync + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let client = self.client.clone();
        let timeout = self.opts.timeout;
        self.handle().spawn(async move {
            let attempts = async {
                loop {
                    match f(client.clone()).await {
                        Err(e) if never_sent(&e) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => return other,
                    }
                }
            };
            let _ = tx.send(tokio::time::timeout(timeout, attempts).await);
        });
        let result = match rx.recv() {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(unavailable(&e)),
            Ok(Err(_)) => Err(StoreError::Unavailable(format!(
                "{what}: no answer from etcd within {timeout:?}"
            ))),
            Err(_) => Err(StoreError::Interrupted),
        };
        match &result {
            Ok(_) => self.healthy.store(true, Ordering::Relaxed),
            Err(StoreError::Unavailable(e)) => {
                self.healthy.store(false, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e.clone();
            }
            Err(_) => {}
        }
        result
    }

    /// The coordinator set's shared secret `name`: `candidate` if none is stored yet
    /// (the first coordinator to start makes the set's identity), else the stored one.
    pub fn adopt_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = self.key(&format!("secret/{name}"));
        let value = candidate.to_vec();
        self.call("storing the shared identity", move |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                let txn = Txn::new()
                    .when(vec![Compare::create_revision(
                        key.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![TxnOp::put(key.clone(), value.clone(), None)])
                    .or_else(vec![TxnOp::get(key, None)]);
                let resp = c.txn(txn).await?;
                if resp.succeeded() {
                    return Ok(value);
                }
                for r in resp.op_responses() {
                    if let etcd_client::TxnOpResponse::Get(g) = r {
                        if let Some(kv) = g.kvs().first() {
                            return Ok(kv.value().to_vec());
                        }
                    }
                }
                Err(etcd_client::Error::InvalidArgs(
                    "secret vanished while read".into(),
                ))
            }
        })
    }

    /// Reads every key under the prefix at one revision, a page at a time.
    fn read_all(&self) -> Result<(Revision, Vec<KeyValue>), StoreError> {
        let prefix = self.prefix.clone();
        self.call("loading the store", move |mut c| {
            let prefix = prefix.clone();
            async move {
                let end = range_end(prefix.as_bytes());
                let mut out = Vec::new();
                let mut from = prefix.into_bytes();
                let mut revision = 0i64;
                loop {
                    let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
                    if revision > 0 {
                        opts = opts.with_revision(revision);
                    }
                    let resp = c.get(from.clone(), Some(opts)).await?;
                    if revision == 0 {
                        revision = resp.header().map_or(0, |h| h.revision());
                    }
                    let more = resp.more();
                    let kvs = resp.kvs();
                    let Some(last) = kvs.last() else { break };
                    from = last.key().to_vec();
                    from.push(0);
                    out.extend_from_slice(kvs);
                    if !more {
                        break;
                    }
                }
                Ok((u64::try_from(revision).unwrap_or(0), out))
            }
        })
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn tls_options(opts: &EtcdOptions) -> Result<etcd_client::TlsOptions, StoreError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| StoreError::Unavailable(format!("{}: {e}", p.display())))
    };
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &opts.ca {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    if let Some((cert, key)) = &opts.cert {
        tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Dump, StoreError> {
        let (revision, kvs) = self.read_all()?;
        let plen = self.prefix.len();
        let mut networks: BTreeMap<String, NetworkDump> = BTreeMap::new();
        let mut revisions: BTreeMap<String, Revision> = BTreeMap::new();
        let mut members: Vec<(String, Member)> = Vec::new();
        let mut tokens: Vec<(String, Token)> = Vec::new();
        let mut dump = Dump {
            revision,
            ..Dump::default()
        };
        let mut audit: Vec<((u64, i64), AuditEntry)> = Vec::new();
        for kv in &kvs {
            let Ok(key) = std::str::from_utf8(kv.key()) else {
                continue;
            };
            let tail = key.get(plen..).unwrap_or("");
            match parse_key(tail) {
                Record::Network(net) => {
                    let network: Network = decode(key, kv.value())?;
                    networks.insert(
                        net,
                        NetworkDump {
                            network,
                            revision: 0,
                            members: Vec::new(),
                            tokens: Vec::new(),
                        },
                    );
                }
                Record::Revision(net) => {
                    revisions.insert(net, u64::try_from(kv.mod_revision()).unwrap_or(0));
                }
                Record::Member(net, _) => members.push((net, decode(key, kv.value())?)),
                Record::Token(net, _) => tokens.push((net, decode(key, kv.value())?)),
                Record::Audit(seq) => {
                    audit.push(((seq, kv.mod_revision()), decode(key, kv.value())?))
                }
                Record::Presence(network, key, coordinator) => dump.presence.push(Presence {
                    network,
                    key,
                    coordinator,
                    online: true,
                }),
                Record::Coordinator(id) => dump.coordinators.push((id, kv.value().to_vec())),
                Record::Log(..) | Record::Other => {}
            }
        }
        for (net, m) in members {
            if let Some(n) = networks.get_mut(&net) {
                n.members.push(m);
            }
        }
        for (net, t) in tokens {
            if let Some(n) = networks.get_mut(&net) {
                n.tokens.push(t);
            }
        }
        for (net, n) in &mut networks {
            // A network written before its first marker still exists: revision 1.
            n.revision = revisions.get(net).copied().unwrap_or(1);
            n.members.sort_by_key(|m| m.public_key);
        }
        audit.sort_by_key(|(k, _)| *k);
        dump.audit = audit.into_iter().map(|((seq, _), e)| (seq, e)).collect();
        dump.networks = networks.into_values().collect();
        Ok(dump)
    }

    fn log_after(&self, network: &str, after: u64) -> Result<Vec<(u64, ChangeRecord)>, StoreError> {
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let start = self.key(&format!("l/{network}/{from:016x}"));
        let end = range_end(self.key(&format!("l/{network}/")).as_bytes());
        let plen = self.prefix.len();
        let kvs = self.call("reading the change log", move |mut c| {
            let (start, end) = (start.clone(), end.clone());
            async move {
                let resp = c
                    .get(start, Some(GetOptions::new().with_range(end)))
                    .await?;
                Ok(resp.kvs().to_vec())
            }
        })?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if let Record::Log(_, v) = parse_key(key.get(plen..).unwrap_or("")) {
                out.push((v, decode(&key, kv.value())?));
            }
        }
        Ok(out)
    }

    fn apply(&self, ops: &[Op], expect: &[Expect]) -> Result<Revision, StoreError> {
        let mut w = Writes::default();
        let mut deleted_networks = Vec::new();
        for op in ops {
            match op {
                Op::PutNetwork(n) => {
                    w.put(self.key(&format!("n/{}", n.name)), encode(n))?;
                    deleted_networks.retain(|d| *d != n.name);
                }
                Op::DeleteNetwork(net) => {
                    w.delete(self.key(&format!("n/{net}")));
                    w.delete(self.key(&format!("r/{net}")));
                    for kind in ['m', 't', 'l', 'p'] {
                        let p = self.key(&format!("{kind}/{net}/"));
                        let end = range_end(p.as_bytes());
                        w.delete_range(p.into_bytes(), end);
                    }
                    deleted_networks.push(net.clone());
                }
                Op::PutMember { network, member } => w.put(
                    self.key(&format!("m/{network}/{}", hex(&member.public_key.0))),
                    encode(member),
                )?,
                Op::DeleteMember { network, key } => {
                    w.delete(self.key(&format!("m/{network}/{}", hex(&key.0))));
                }
                Op::PutToken(t) => {
                    w.put(self.key(&format!("t/{}/{}", t.network, t.id)), encode(t))?;
                }
                Op::PutLog {
                    network,
                    version,
                    record,
                } => w.put(
                    self.key(&format!("l/{network}/{version:016x}")),
                    encode(record),
                )?,
                Op::PruneLog { network, upto } => {
                    let start = self.key(&format!("l/{network}/"));
                    let end = self.key(&format!("l/{network}/{:016x}", upto.saturating_add(1)));
                    w.delete_range(start.into_bytes(), end.into_bytes());
                }
                Op::PutAudit { seq, entry } => w.put(
                    self.key(&format!("a/{seq:016x}/{}", self.opts.id)),
                    encode(entry),
                )?,
                Op::PruneAudit { upto } => {
                    let start = self.key("a/");
                    let end = self.key(&format!("a/{:016x}", upto.saturating_add(1)));
                    w.delete_range(start.into_bytes(), end.into_bytes());
                }
            }
        }
        for net in touched_networks(ops) {
            if !deleted_networks.iter().any(|d| d == net) {
                w.put(
                    self.key(&format!("r/{net}")),
                    self.opts.id.clone().into_bytes(),
                )?;
            }
        }
        let compares: Vec<Compare> = expect
            .iter()
            .map(|e| {
                Compare::mod_revision(
                    self.key(&format!("r/{}", e.network)),
                    CompareOp::Equal,
                    i64::try_from(e.revision).unwrap_or(i64::MAX),
                )
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(w.into_ops());
        let resp = self.call("writing", move |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        let revision = resp
            .header()
            .map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0));
        if !resp.succeeded() {
            let first = expect.first();
            return Err(StoreError::Conflict {
                network: first.map(|e| e.network.clone()).unwrap_or_default(),
                expected: first.map_or(0, |e| e.revision),
            });
        }
        Ok(revision)
    }

    fn flush(&self) -> Result<(), StoreError> {
        // etcd acknowledged every transaction after its quorum committed it.
        Ok(())
    }

    fn follow(&self, after: Revision) -> Option<mpsc::Receiver<Follow>> {
        let (tx, rx) = mpsc::channel(1024);
        self.handle().spawn(follow_task(
            self.client.clone(),
            self.prefix.clone(),
            after,
            tx,
        ));
        Some(rx)
    }

    fn describe(&self) -> String {
        format!("etcd {}", self.opts.endpoints.join(","))
    }

    fn health(&self) -> Health {
        let ok = self.healthy.load(Ordering::Relaxed);
        Health {
            ok,
            detail: if ok {
                self.describe()
            } else {
                self.last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            },
        }
    }

    fn set_presence(&self, network: &str, key: &Key, online: bool) {
        {
            let mut l = self.leased.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (network.to_owned(), *key);
            if online {
                l.online.insert(slot.clone(), ());
            } else {
                l.online.remove(&slot);
            }
            l.dirty.insert(slot, online);
        }
        let _ = self.presence_tx.send(());
    }

    fn register(&self, id: &str, info: Vec<u8>) {
        {
            let mut l = self.leased.lock().unwrap_or_else(|e| e.into_inner());
            l.registration = Some((id.to_owned(), info));
            l.rewrite = true;
        }
        let _ = self.presence_tx.send(());
    }
}

/// Follows every change under `prefix` after `after`, reconnecting the watch after errors
/// from the last revision it delivered.
async fn follow_task(client: Client, prefix: String, after: Revision, tx: mpsc::Sender<Follow>) {
    let plen = prefix.len();
    let mut next = after.saturating_add(1);
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut c = client.clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(i64::try_from(next).unwrap_or(i64::MAX));
        let mut stream = match c.watch(prefix.clone(), Some(opts)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("etcd watch: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(3));
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    backoff = Duration::from_millis(200);
                    if resp.compact_revision() > 0 {
                        tracing::warn!(
                            "etcd history compacted past revision {next}: reloading the store"
                        );
                        let _ = tx.send(Follow::Reload).await;
                        return;
                    }
                    if resp.canceled() {
                        tracing::warn!("etcd watch cancelled: {}", resp.cancel_reason());
                        break;
                    }
                    let mut batch: Option<Event> = None;
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let rev = u64::try_from(kv.mod_revision()).unwrap_or(0);
                        if batch.as_ref().is_some_and(|b| b.revision != rev) {
                            if let Some(b) = batch.take() {
                                if tx.send(Follow::Batch(b)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        next = next.max(rev.saturating_add(1));
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let put = ev.event_type() == EventType::Put;
                        let tail = key.get(plen..).unwrap_or("");
                        let op = match event_op(tail, &key, put, kv.value()) {
                            Ok(Some(EventOp::Op(op))) => *op,
                            Ok(Some(EventOp::Other(f))) => {
                                if tx.send(f).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::error!("etcd: {e}");
                                continue;
                            }
                        };
                        batch
                            .get_or_insert_with(|| Event {
                                revision: rev,
                                ops: Vec::new(),
                            })
                            .ops
                            .push(op);
                    }
                    if let Some(b) = batch {
                        if tx.send(Follow::Batch(b)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("etcd watch: {e}");
                    break;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(3));
    }
}

enum EventOp {
    Op(Box<Op>),
    Other(Follow),
}

/// What one watch event means to a follower.
fn event_op(tail: &str, key: &str, put: bool, value: &[u8]) -> Result<Option<EventOp>, StoreError> {
    let op = match (parse_key(tail), put) {
        (Record::Network(_), true) => Op::PutNetwork(decode(key, value)?),
        (Record::Network(net), false) => Op::DeleteNetwork(net),
        (Record::Member(network, _), true) => Op::PutMember {
            network,
            member: decode(key, value)?,
        },
        (Record::Member(network, key), false) => Op::DeleteMember { network, key },
        (Record::Token(..), true) => Op::PutToken(decode(key, value)?),
        (Record::Audit(seq), true) => Op::PutAudit {
            seq,
            entry: decode(key, value)?,
        },
        (Record::Presence(network, key, coordinator), online) => {
            return Ok(Some(EventOp::Other(Follow::Presence(Presence {
                network,
                key,
                coordinator,
                online,
            }))))
        }
        (Record::Coordinator(id), put) => {
            return Ok(Some(EventOp::Other(Follow::Coordinator {
                id,
                info: put.then(|| value.to_vec()),
            })))
        }
        _ => return Ok(None),
    };
    Ok(Some(EventOp::Op(Box::new(op))))
}

/// Keeps this process's lease alive and the leased keys written; takes a new lease (and
/// rewrites everything) when the old one is lost.
#[allow(clippy::too_many_arguments)]
async fn lease_task(
    client: Client,
    prefix: String,
    id: String,
    lease: Arc<AtomicI64>,
    leased: Arc<Mutex<Leased>>,
    mut wake: mpsc::UnboundedReceiver<()>,
    healthy: Arc<AtomicBool>,
    last_error: Arc<Mutex<String>>,
) {
    let ttl = i64::try_from(LEASE_TTL.as_secs()).unwrap_or(6);
    let mut keepalive = tokio::time::interval(LEASE_TTL / 3);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let fail = |e: String| {
        healthy.store(false, Ordering::Relaxed);
        *last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    };
    loop {
        tokio::select! {
            _ = keepalive.tick() => {}
            w = wake.recv() => if w.is_none() { return },
        }
        let mut c = client.clone();
        let current = lease.load(Ordering::SeqCst);
        let timeout = LEASE_TTL / 2;
        // Keep the lease, or take a new one.
        let alive = if current == 0 {
            false
        } else {
            match tokio::time::timeout(timeout, keep_alive_once(&mut c, current)).await {
                Ok(Ok(ttl_left)) => ttl_left > 0,
                Ok(Err(e)) => {
                    fail(format!("etcd lease: {e}"));
                    false
                }
                Err(_) => {
                    fail("etcd lease: no answer".into());
                    continue;
                }
            }
        };
        if !alive {
            match tokio::time::timeout(timeout, c.lease_grant(ttl, None)).await {
                Ok(Ok(resp)) => {
                    lease.store(resp.id(), Ordering::SeqCst);
                    let mut l = leased.lock().unwrap_or_else(|p| p.into_inner());
                    l.rewrite = true;
                    if current != 0 {
                        tracing::warn!("etcd lease lost; took a new one and rewrote presence");
                    }
                }
                Ok(Err(e)) => {
                    fail(format!("etcd lease: {e}"));
                    continue;
                }
                Err(_) => {
                    fail("etcd lease: no answer".into());
                    continue;
                }
            }
        }
        let lease_id = lease.load(Ordering::SeqCst);
        // What to write: everything after a new lease, else what changed.
        let (puts, deletes) = {
            let mut l = leased.lock().unwrap_or_else(|p| p.into_inner());
            let mut puts: Vec<(String, Vec<u8>)> = Vec::new();
            let mut deletes: Vec<String> = Vec::new();
            if l.rewrite {
                l.rewrite = false;
                l.dirty.clear();
                if let Some((rid, info)) = &l.registration {
                    puts.push((format!("{prefix}c/{rid}"), info.clone()));
                }
                for (net, key) in l.online.keys() {
                    puts.push((format!("{prefix}p/{net}/{}/{id}", hex(&key.0)), Vec::new()));
                }
            } else {
                for ((net, key), online) in std::mem::take(&mut l.dirty) {
                    let k = format!("{prefix}p/{net}/{}/{id}", hex(&key.0));
                    if online {
                        puts.push((k, Vec::new()));
                    } else {
                        deletes.push(k);
                    }
                }
            }
            (puts, deletes)
        };
        let mut ops: Vec<TxnOp> = Vec::new();
        for (k, v) in puts {
            ops.push(TxnOp::put(
                k,
                v,
                Some(PutOptions::new().with_lease(lease_id)),
            ));
        }
        for k in deletes {
            ops.push(TxnOp::delete(k, None));
        }
        for chunk in ops.chunks(PRESENCE_BATCH) {
            let txn = Txn::new().and_then(chunk.to_vec());
            match tokio::time::timeout(timeout, c.txn(txn)).await {
                Ok(Ok(_)) => healthy.store(true, Ordering::Relaxed),
                Ok(Err(e)) => {
                    fail(format!("etcd presence: {e}"));
                    leased.lock().unwrap_or_else(|p| p.into_inner()).rewrite = true;
                    break;
                }
                Err(_) => {
                    fail("etcd presence: no answer".into());
                    leased.lock().unwrap_or_else(|p| p.into_inner()).rewrite = true;
                    break;
                }
            }
        }
    }
}

/// One keep-alive round trip; the lease's remaining TTL (0: gone).
async fn keep_alive_once(c: &mut Client, lease: i64) -> Result<i64, etcd_client::Error> {
    let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
    keeper.keep_alive().await?;
    match stream.message().await? {
        Some(resp) => Ok(resp.ttl()),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let k = Key([0xab; 32]);
        assert_eq!(parse_key("n/lab"), Record::Network("lab".into()));
        assert_eq!(
            parse_key(&format!("m/lab/{}", hex(&k.0))),
            Record::Member("lab".into(), k)
        );
        assert_eq!(parse_key("m/lab/zz"), Record::Other);
        assert_eq!(
            parse_key("t/lab/tok1"),
            Record::Token("lab".into(), "tok1".into())
        );
        assert_eq!(
            parse_key("l/lab/00000000000000ff"),
            Record::Log("lab".into(), 255)
        );
        assert_eq!(parse_key("a/0000000000000010/c1"), Record::Audit(16));
        assert_eq!(
            parse_key(&format!("p/lab/{}/c1", hex(&k.0))),
            Record::Presence("lab".into(), k, "c1".into())
        );
        assert_eq!(parse_key(&format!("p/lab/{}", hex(&k.0))), Record::Other);
        assert_eq!(
            parse_key("c/coord-1"),
            Record::Coordinator("coord-1".into())
        );
        assert_eq!(parse_key("secret/cert"), Record::Other);
        assert_eq!(range_end(b"/w/"), b"/w0".to_vec());
        assert_eq!(range_end(&[0x61, 0xff]), vec![0x62]);
    }

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            EtcdOptions::parse_endpoints("http://10.0.0.1:2379, https://h:2379/").unwrap(),
            vec![
                "http://10.0.0.1:2379".to_owned(),
                "https://h:2379".to_owned()
            ]
        );
        for bad in [
            "",
            "10.0.0.1:2379",
            "http://host",
            "http://h:1/x",
            "ftp://h:1",
        ] {
            let e = EtcdOptions::parse_endpoints(bad).unwrap_err();
            assert!(e.contains("etcd"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_batch_never_names_a_key_twice() {
        let mut w = Writes::default();
        w.put("/w/m/lab/1".into(), b"a".to_vec()).unwrap();
        w.delete("/w/m/lab/1".into());
        w.delete_range(b"/w/m/lab/".to_vec(), range_end(b"/w/m/lab/"));
        w.delete("/w/m/lab/2".into());
        assert!(w.put("/w/m/lab/3".into(), b"c".to_vec()).is_err());
        w.put("/w/n/lab".into(), b"n".to_vec()).unwrap();
        assert_eq!(w.points.len(), 1);
        assert_eq!(w.into_ops().len(), 2);
    }
}
