//! The control-plane load generator behind `wm-loadgen` and the scale test: N simulated
//! nodes in one process, each with its own key and its own QUIC connection to a real
//! `coordinator` process on loopback, speaking the real protocol (key-possession proof,
//! binary netmaps and changes, resume after a reconnect). No TUN, no WireGuard.
//!
//! What it measures (see [`Report`]): the time until every node holds the full netmap
//! after a cold concurrent start, how long admin changes take to reach every node, the
//! bytes a change costs each node, the coordinator's RSS and CPU from `/proc`, and the time
//! until every node is back and current after a coordinator restart.
//!
//! With `coordinators > 1` the coordinators share an etcd cluster of `etcd` members on
//! loopback ([`crate::etcd::EtcdCluster::start_loopback`]); node `i` dials coordinator
//! `i mod n` first and moves to the next when its session ends (as meshd does with several
//! coordinators), the restart phase kills one coordinator for good (its nodes move), and
//! `storm` runs the join storm of the HA issue instead of changes and restart: half the
//! nodes join at once; once a third of all are in, the other half starts and one
//! coordinator and one etcd member are killed with `kill -9` while those joins are in
//! flight (with a single coordinator: it is killed with `kill -9` and started again on its
//! data); then every node must be in with a distinct address and every join acknowledged
//! before the kill must have kept its address.
//!
//! How it verifies: **every** node follows its netmap by key (a bitset over the members
//! the generator created, updated from each frame with [`wire::for_each_key`]), so its
//! version and its exact peer set are checked; a **sample** of nodes applies every message
//! with the real decoder and [`Netmap::apply`], and their maps are compared field by field
//! with what the admin API lists. Decoding 10,000 full netmaps per change on the same two
//! cores as the coordinator would measure the generator, not the coordinator.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ipnet::IpNet;
use mesh_proto::control::{
    self, CertPin, ClientMsg, Hello, JoinSecret, JoinToken, ServerMsg, ALPN, EXPORTER_LABEL,
};
use mesh_proto::netmap::{Netmap, PeerInfo};
use mesh_proto::wire::{self, KeyOp};
use mesh_proto::Key;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::util::{self, TempDir};

/// Simulated nodes per client UDP socket: real nodes each have their own socket (and its
/// receive buffer); a few thousand connections on one socket would lose the bursts a
/// coordinator sends all nodes at once (a change, the close on restart) in that one buffer.
pub const NODES_PER_SOCKET: usize = 32;

/// The network the generator creates.
pub const NETWORK: &str = "scale";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Simulated nodes.
    pub nodes: usize,
    /// Nodes that decode and apply every message fully and are compared field by field.
    pub sample: usize,
    /// Admin changes (renames) timed to every node.
    pub changes: usize,
    /// Handshakes in flight at once during the cold start (all nodes start together; this
    /// bounds the burst of QUIC Initial packets at the coordinator's socket).
    pub connect_concurrency: usize,
    /// Client UDP sockets the nodes' connections are spread over.
    pub sockets: usize,
    /// Restart the coordinator with every node connected and time the reconnect.
    pub restart: bool,
    /// Restart it by `kill -9` (a crash: nodes learn of it from a stateless reset on
    /// their next packet) instead of SIGTERM (it closes every connection first).
    pub crash: bool,
    /// Give up on any phase after this long.
    pub timeout: Duration,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Instead of changes and a restart: once every node holds the full netmap, send the
    /// join token here and keep the nodes connected until the flag is set (for measuring
    /// a real meshd among them: `wm-idle`). Members the generator did not create are then
    /// tolerated in netmaps.
    pub hold: Option<(std::sync::mpsc::Sender<String>, Arc<AtomicBool>)>,
    /// Coordinators (more than one needs `etcd`).
    pub coordinators: usize,
    /// etcd members on loopback (0: each coordinator on its own sled).
    pub etcd: usize,
    /// The join storm (see the module doc) instead of changes and a restart.
    pub storm: bool,
    /// Issue 13: split the nodes into this many groups under a policy (each group's
    /// members may reach only each other; node `i` joins with group `i mod groups`'s
    /// token, which tags it `gJ`), and stop after the cold start. 0: no policy.
    pub groups: usize,
}

impl Options {
    /// Defaults for `nodes` nodes.
    pub fn new(nodes: usize) -> Options {
        Options {
            nodes,
            sample: nodes.clamp(1, 20),
            changes: 20,
            connect_concurrency: 256,
            sockets: nodes.div_ceil(NODES_PER_SOCKET),
            restart: true,
            crash: false,
            timeout: Duration::from_secs(600),
            progress: false,
            hold: None,
            coordinators: 1,
            etcd: 0,
            storm: false,
            groups: 0,
        }
    }
}

/// What a run measured. `to_json` is `wm-loadgen --json`'s output contract.
#[derive(Debug, Clone)]
pub struct Report {
    /// Simulated nodes.
    pub nodes: usize,
    /// Cold concurrent start until every node held the full netmap (all N-1 peers).
    pub full_netmap_s: f64,
    /// Arrival of one admin change at every node, over all changes and nodes (ms).
    pub change_p50_ms: f64,
    /// 99th percentile of the same.
    pub change_p99_ms: f64,
    /// Slowest arrival.
    pub change_max_ms: f64,
    /// Changes timed.
    pub changes: usize,
    /// Peak RSS of the coordinator process (VmHWM) before the restart, MB.
    pub coordinator_rss_mb: f64,
    /// CPU seconds (user + system) of the coordinator process before the restart.
    pub coordinator_cpu_s: f64,
    /// Control-frame bytes each node received per change.
    pub bytes_per_change_per_node: f64,
    /// UDP bytes (QUIC included: headers, acks, keep-alives meanwhile) per node per change.
    pub udp_bytes_per_change_per_node: f64,
    /// Coordinator restarted (SIGTERM, start again): until every node was back and current.
    pub reconnect_s: Option<f64>,
    /// The restart was a `kill -9`.
    pub crash: bool,
    /// Full netmaps nodes got on reconnecting (0: every node resumed from its version).
    pub reconnect_full_netmaps: u64,
    /// Peak RSS of the restarted coordinator, MB.
    pub restarted_rss_mb: Option<f64>,
    /// Nodes compared field by field with the admin API.
    pub sampled: usize,
    /// CPU seconds of the generator itself.
    pub generator_cpu_s: f64,
    /// Coordinators sharing the store.
    pub coordinators: usize,
    /// `sled` or `etcd (N members)`.
    pub store: String,
    /// The join storm's outcome, when it ran.
    pub storm: Option<Storm>,
    /// Groups under a policy (0: none, the full mesh).
    pub groups: usize,
    /// Control-frame bytes (netmaps, changes and, under a policy, filters) each node
    /// received from its start until every node held its full netmap.
    pub cold_bytes_per_node: f64,
    /// Peers each node holds once the netmaps are complete (mean).
    pub peers_per_node: f64,
    /// Of `cold_bytes_per_node`, the netmap frames (full maps and changes).
    pub cold_netmap_bytes_per_node: f64,
}

/// What the join storm found.
#[derive(Debug, Clone)]
pub struct Storm {
    /// Nodes that held a netmap (an acknowledged join) when the kills came.
    pub acknowledged_before_kill: usize,
    /// From the start until every node held the full netmap.
    pub all_joined_s: f64,
    /// Members sharing an address with another (must be 0).
    pub duplicate_addresses: usize,
    /// Joins acknowledged before the kill whose member is gone or readdressed (must be 0).
    pub lost_joins: usize,
    /// Members the admin API lists at the end.
    pub members: usize,
}

impl Report {
    /// A run of `nodes` that timed no changes and no restart (`--storm`, `hold`): the
    /// coordinators' (peak RSS MB, CPU s), the rest zero.
    fn without_changes(
        nodes: usize,
        usage: (f64, f64),
        coordinators: usize,
        store: String,
    ) -> Report {
        Report {
            groups: 0,
            cold_bytes_per_node: 0.0,
            peers_per_node: 0.0,
            cold_netmap_bytes_per_node: 0.0,
            nodes,
            full_netmap_s: 0.0,
            change_p50_ms: 0.0,
            change_p99_ms: 0.0,
            change_max_ms: 0.0,
            changes: 0,
            coordinator_rss_mb: usage.0,
            coordinator_cpu_s: usage.1,
            bytes_per_change_per_node: 0.0,
            udp_bytes_per_change_per_node: 0.0,
            reconnect_s: None,
            crash: false,
            reconnect_full_netmaps: 0,
            restarted_rss_mb: None,
            sampled: 0,
            generator_cpu_s: 0.0,
            coordinators,
            store,
            storm: None,
        }
    }

    /// The `--json` object.
    pub fn to_json(&self) -> Value {
        json!({
            "nodes": self.nodes,
            "full_netmap_s": round(self.full_netmap_s, 3),
            "change_p50_ms": round(self.change_p50_ms, 1),
            "change_p99_ms": round(self.change_p99_ms, 1),
            "change_max_ms": round(self.change_max_ms, 1),
            "changes": self.changes,
            "coordinator_rss_mb": round(self.coordinator_rss_mb, 1),
            "coordinator_cpu_s": round(self.coordinator_cpu_s, 2),
            "bytes_per_change_per_node": round(self.bytes_per_change_per_node, 1),
            "udp_bytes_per_change_per_node": round(self.udp_bytes_per_change_per_node, 1),
            "reconnect_s": self.reconnect_s.map(|s| round(s, 3)),
            "restart": if self.crash { "kill -9" } else { "SIGTERM" },
            "reconnect_full_netmaps": self.reconnect_full_netmaps,
            "restarted_rss_mb": self.restarted_rss_mb.map(|m| round(m, 1)),
            "generator_cpu_s": round(self.generator_cpu_s, 2),
            "coordinators": self.coordinators,
            "store": self.store,
            "groups": self.groups,
            "cold_bytes_per_node": round(self.cold_bytes_per_node, 0),
            "cold_netmap_bytes_per_node": round(self.cold_netmap_bytes_per_node, 0),
            "peers_per_node": round(self.peers_per_node, 1),
            "storm": self.storm.as_ref().map(|s| json!({
                "acknowledged_before_kill": s.acknowledged_before_kill,
                "all_joined_s": round(s.all_joined_s, 3),
                "duplicate_addresses": s.duplicate_addresses,
                "lost_joins": s.lost_joins,
                "members": s.members,
            })),
            "verification": if self.groups > 0 { format!(
                "every node: its exact peer set by key, only members of its own group (of {})",
                self.groups
            ) } else { format!(
                "every node: netmap version and exact peer set by key; {} sampled nodes: \
                 every message decoded and applied (mesh-proto), final map compared field \
                 by field with the admin API",
                self.sampled
            ) },
        })
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// Runs the whole scenario.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    if opts.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    if opts.nodes > 60_000 {
        bail!("--nodes above 60000 do not fit the generator's port and address plan");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the generator's runtime")?;
    let cpu_before = self_cpu_s();
    let mut report = runtime.block_on(scenario(opts))?;
    report.generator_cpu_s = self_cpu_s() - cpu_before;
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// The coordinator process.

/// A coordinator on loopback with its own data directory; killed on drop.
struct CoordProc {
    /// Extra `serve` flags (the shared store, the id).
    extra: Vec<String>,
    dir: TempDir,
    listen: SocketAddr,
    http: SocketAddr,
    child: Option<Child>,
    token: String,
}

impl CoordProc {
    fn start(extra: Vec<String>) -> anyhow::Result<CoordProc> {
        let dir = TempDir::new("loadgen")?;
        let listen = free_udp_block(4)?;
        let http = free_tcp()?;
        let mut c = CoordProc {
            extra,
            dir,
            listen,
            http,
            child: None,
            token: String::new(),
        };
        c.spawn()?;
        c.wait_ready()?;
        let out = Command::new(util::binary("coordinator")?)
            .args(["admin-token", "--data-dir"])
            .arg(c.data_dir())
            .output()
            .context("running coordinator admin-token")?;
        c.token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if c.token.is_empty() {
            bail!(
                "coordinator admin-token printed nothing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        c.wait_ready()?;
        Ok(c)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("coordinator.log"))?;
        let child = Command::new(util::binary("coordinator")?)
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen", &self.listen.to_string()])
            .args(["--advertise", &self.listen.to_string()])
            .args(["--http", &self.http.to_string()])
            .arg("--no-relay")
            .args(&self.extra)
            .env(
                "COORDINATOR_LOG",
                std::env::var("COORDINATOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the coordinator")?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "the coordinator exited ({status}):\n{}",
                        util::tail(&self.dir.path().join("coordinator.log"), 20)
                    );
                }
            }
            if !self.token.is_empty() && self.api("GET", "/api/networks", None).is_ok() {
                return Ok(());
            }
            if self.token.is_empty() && TcpStream::connect(self.http).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the coordinator's admin API did not answer within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (a graceful stop closes every QUIC connection) or, with `crash`, SIGKILL;
    /// then wait for the exit.
    fn stop(&mut self, crash: bool) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let signal = if crash { "-KILL" } else { "-TERM" };
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the coordinator did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// One admin API request (HTTP/1.1 on loopback); the JSON answer of a 2xx.
    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut s = TcpStream::connect(self.http)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.http,
            self.token,
            body.len()
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .context("malformed HTTP answer")?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("malformed HTTP status line")?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: HTTP {status}: {rest}");
        }
        if rest.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(rest).with_context(|| format!("{method} {path}: not JSON"))
    }

    fn version(&self) -> anyhow::Result<u64> {
        self.api("GET", &format!("/api/networks/{NETWORK}"), None)?["version"]
            .as_u64()
            .context("network without a version")
    }
}

impl Drop for CoordProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_tcp() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A UDP port `p` on loopback with `p..p+n` free (QUIC, two reflectors, relay).
fn free_udp_block(n: u16) -> anyhow::Result<SocketAddr> {
    for _ in 0..200 {
        let first = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port > u16::MAX - n {
            continue;
        }
        drop(first);
        let all: Result<Vec<_>, _> = (0..n)
            .map(|i| std::net::UdpSocket::bind(("127.0.0.1", port + i)))
            .collect();
        if all.is_ok() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    bail!("no block of {n} free UDP ports on loopback")
}

/// (peak RSS MB, CPU seconds) of a process, from /proc.
fn proc_usage(pid: u32) -> (f64, f64) {
    (util::proc_memory_mb(pid, "VmHWM"), util::proc_cpu_s(pid))
}

fn self_cpu_s() -> f64 {
    util::proc_cpu_s(std::process::id())
}

// ---------------------------------------------------------------------------------------
// Simulated nodes.

/// What the orchestration sees of one node.
#[derive(Debug, Default)]
struct NodeShared {
    /// Netmap version held.
    version: AtomicU64,
    /// Peers held.
    peers: AtomicU32,
    /// Sessions that delivered a netmap or changes.
    sessions: AtomicU32,
    /// Full netmaps received.
    full_maps: AtomicU64,
    /// Control-frame bytes received (length prefixes included).
    frame_bytes: AtomicU64,
    /// Of those, the JSON messages (policy filters, services, …), not netmaps.
    json_bytes: AtomicU64,
    /// (version, when it was reached), newest last.
    history: Mutex<VecDeque<(u64, Instant)>>,
    /// The connection, for its UDP statistics.
    conn: Mutex<Option<quinn::Connection>>,
    /// The applied map of a sampled node.
    netmap: Mutex<Option<Netmap>>,
    /// Sessions the coordinator refused (e.g. a handshake it timed out under load).
    denials: AtomicU32,
    /// Why the node stopped, if it did.
    failed: Mutex<Option<String>>,
    /// The coordinator (index) of its current or last session.
    on: AtomicU32,
}

/// Everything nodes share.
struct Fleet {
    coordinators: Vec<SocketAddr>,
    /// Node `i` joins with `tokens[i % len]` (one per group under a policy).
    tokens: Vec<JoinSecret>,
    /// Groups (0: none): node `i` may hold only peers `j` with `j % groups == i % groups`.
    groups: usize,
    /// Peers node `i` holds once its netmap is complete.
    expected: Vec<u32>,
    /// Every simulated member's key → its index.
    index: HashMap<Key, u32>,
    privates: Vec<Key>,
    nodes: Vec<Arc<NodeShared>>,
    sample: usize,
    /// Members the generator did not create are expected (a real meshd among the nodes).
    foreign_ok: bool,
    endpoints: Vec<quinn::Endpoint>,
    client: quinn::ClientConfig,
    handshakes: Semaphore,
    stop: AtomicBool,
}

/// A private key per node, from the run's seed.
/// The loopback address client socket `i` binds: 127.0.1.1, 127.0.1.2, … (every 127/8
/// address is this host's own on Linux).
fn loopback_source(i: usize) -> std::net::Ipv4Addr {
    let i = i % (250 * 250);
    std::net::Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

fn private_key(seed: &[u8; 16], i: usize) -> Key {
    let mut h = Sha256::new();
    h.update(b"wm-loadgen");
    h.update(seed);
    h.update((i as u64).to_be_bytes());
    Key::clamp_private(h.finalize().into())
}

fn client_config(pin: CertPin, several: bool) -> anyhow::Result<quinn::ClientConfig> {
    let tls = mesh_pin::quic_client_config(pin, &[ALPN]);
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    // As meshd: keep-alive 5 s, idle timeout 15 s; 1.5 s and 4 s with several coordinators
    // (meshd/src/control/quic.rs, `Liveness`).
    let (keep_alive, idle) = if several {
        (Duration::from_millis(1500), Duration::from_secs(4))
    } else {
        (Duration::from_secs(5), Duration::from_secs(15))
    };
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(keep_alive));
    transport.max_idle_timeout(Some(idle.try_into()?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Runs node `i` until the fleet stops: connect, handshake, follow the netmap; after a
/// lost session reconnect like meshd (spread over up to 3 s) and resume from its version.
async fn node_task(fleet: Arc<Fleet>, i: usize) {
    let me = &fleet.nodes[i];
    let mut state = NodeMap::new(fleet.index.len(), i < fleet.sample);
    let several = fleet.coordinators.len() > 1;
    let mut which = i % fleet.coordinators.len();
    loop {
        me.on.store(which as u32, Ordering::Relaxed);
        let result = session(&fleet, i, which, &mut state).await;
        if fleet.stop.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = result {
            // A node does not give up: meshd retries a refusal too (later). Three in a row
            // mean the scenario is broken.
            if e.to_string().contains("denied") {
                let n = me.denials.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= 3 {
                    *me.failed.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("denied {n} times, last: {e:#}"));
                    return;
                }
            }
        }
        // The session ended: with several coordinators, move to the next one (meshd tries
        // another first after a failure) and come back within 0.1-1 s.
        if several {
            which = (which + 1) % fleet.coordinators.len();
        }
        let window = if several { 900 } else { 2900 };
        let spread = 100 + (fastrand_u64(i as u64 ^ state.version) % window);
        tokio::time::sleep(Duration::from_millis(spread)).await;
    }
}

/// A cheap per-call pseudo-random number (reconnect spread; no need for quality).
fn fastrand_u64(seed: u64) -> u64 {
    let nanos = Instant::now().elapsed().as_nanos() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// A node's netmap as the generator keeps it: a bitset over the fleet by key for every
/// node, the real [`Netmap`] for sampled ones.
struct NodeMap {
    bits: Vec<u64>,
    count: u32,
    version: u64,
    sampled: bool,
    has_map: bool,
}

impl NodeMap {
    fn new(members: usize, sampled: bool) -> NodeMap {
        NodeMap {
            bits: vec![0; members.div_ceil(64)],
            count: 0,
            version: 0,
            sampled,
            has_map: false,
        }
    }

    fn set(&mut self, i: u32, on: bool) {
        let (w, b) = ((i / 64) as usize, 1u64 << (i % 64));
        let was = self.bits[w] & b != 0;
        if on && !was {
            self.bits[w] |= b;
            self.count += 1;
        } else if !on && was {
            self.bits[w] &= !b;
            self.count -= 1;
        }
    }

    /// Applies one binary body as node `me` (index `own`); a sampled node also applies it
    /// to its real netmap, `full` (kept where the orchestration reads it, never copied).
    fn apply(
        &mut self,
        body: &[u8],
        me: &Key,
        own: u32,
        fleet: &Fleet,
        full: &Mutex<Option<Netmap>>,
    ) -> anyhow::Result<()> {
        let mut unknown = 0usize;
        let header = wire::peek(body)?;
        if header.kind == wire::KIND_NETMAP {
            self.bits.iter_mut().for_each(|w| *w = 0);
            self.count = 0;
        } else if !self.has_map {
            bail!("protocol error: changes without a netmap");
        }
        let mut updates = Vec::new();
        let mut outside = 0usize;
        wire::for_each_key(body, |op, key| match fleet.index.get(key) {
            Some(&j) if j == own => {}
            Some(&j) => {
                let g = fleet.groups.max(1) as u32;
                if op != KeyOp::Remove && j % g != own % g {
                    outside += 1;
                }
                updates.push((j, op != KeyOp::Remove));
            }
            None => unknown += 1,
        })?;
        if outside > 0 {
            bail!("{outside} peers outside the node's group: the netmap is not pruned");
        }
        for (j, on) in updates {
            self.set(j, on);
        }
        if unknown > 0 && !fleet.foreign_ok {
            bail!("{unknown} peers the generator did not create");
        }
        if self.sampled {
            let mut full = full.lock().unwrap_or_else(|e| e.into_inner());
            match control::decode_server(body, me)? {
                ServerMsg::Netmap { netmap } => *full = Some(netmap),
                ServerMsg::Changes { version, changes } => match full.as_mut() {
                    Some(m) => m.apply(version, &changes),
                    None => bail!("protocol error: changes without a netmap"),
                },
                _ => {}
            }
        }
        self.version = self.version.max(header.version);
        self.has_map = true;
        Ok(())
    }
}

async fn read_frame(r: &mut quinn::RecvStream) -> anyhow::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = control::body_len(header)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

async fn session(fleet: &Fleet, i: usize, which: usize, state: &mut NodeMap) -> anyhow::Result<()> {
    let me = &fleet.nodes[i];
    let private = &fleet.privates[i];
    let key = private.public_key();
    let own = fleet.index[&key];
    let permit = fleet.handshakes.acquire().await?;
    let endpoint = &fleet.endpoints[i % fleet.endpoints.len()];
    let conn = endpoint.connect_with(
        fleet.client.clone(),
        fleet.coordinators[which],
        "wiremesh-coordinator",
    )?;
    // A dead coordinator must not hold a node for a whole idle timeout.
    let conn = if fleet.coordinators.len() > 1 {
        tokio::time::timeout(Duration::from_secs(2), conn)
            .await
            .map_err(|_| anyhow::anyhow!("no answer from coordinator {which}"))??
    } else {
        conn.await?
    };
    let mut exporter = [0u8; 32];
    conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .map_err(|_| anyhow::anyhow!("TLS exporter unavailable"))?;
    let (mut send, mut recv) = conn.open_bi().await?;
    *me.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
    let hello = Hello {
        network: NETWORK.into(),
        public_key: key,
        name: format!("sim-{i:05}"),
        version: "wm-loadgen".into(),
        join: Some(fleet.tokens[i % fleet.tokens.len()].clone()),
        resume: state.has_map.then_some(state.version),
        listen_port: 10_000 + i as u16,
        local: Vec::new(),
        routes: Vec::new(),
        protocol: control::PROTOCOL,
    };
    send.write_all(&control::encode(&ClientMsg::Hello(hello)))
        .await?;
    let Some(body) = read_frame(&mut recv).await? else {
        bail!("closed during the handshake");
    };
    match control::decode::<ServerMsg>(&body)? {
        ServerMsg::Challenge { ephemeral, nonce } => {
            let proof = control::node_proof(private, &ephemeral, &nonce, &exporter);
            send.write_all(&control::encode(&ClientMsg::Proof { proof }))
                .await?;
        }
        ServerMsg::Denied { reason } => bail!("denied: {reason}"),
        other => bail!("expected a challenge, got {other:?}"),
    }
    let mut permit = Some(permit);
    let mut counted = false;
    loop {
        let Some(body) = read_frame(&mut recv).await? else {
            return Ok(());
        };
        me.frame_bytes
            .fetch_add(body.len() as u64 + 4, Ordering::Relaxed);
        if body.first() == Some(&b'{') {
            me.json_bytes
                .fetch_add(body.len() as u64 + 4, Ordering::Relaxed);
            match control::decode::<ServerMsg>(&body)? {
                ServerMsg::Denied { reason } => bail!("denied: {reason}"),
                ServerMsg::Pending { message } => bail!("denied (pending): {message}"),
                _ => continue,
            }
        }
        drop(permit.take());
        if wire::peek(&body)?.kind == wire::KIND_NETMAP {
            me.full_maps.fetch_add(1, Ordering::Relaxed);
        }
        state.apply(&body, &key, own, fleet, &me.netmap)?;
        me.peers.store(state.count, Ordering::Relaxed);
        me.version.store(state.version, Ordering::Relaxed);
        {
            let mut h = me.history.lock().unwrap_or_else(|e| e.into_inner());
            h.push_back((state.version, Instant::now()));
            if h.len() > 64 {
                h.pop_front();
            }
        }
        if !counted {
            counted = true;
            me.sessions.fetch_add(1, Ordering::Relaxed);
            me.denials.store(0, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The scenario.

fn progress(opts: &Options, line: impl FnOnce() -> String) {
    if opts.progress {
        eprintln!("wm-loadgen: {}", line());
    }
}

/// Waits (polling every 50 ms) until `done` holds, printing `status` every 5 s.
async fn wait_for(
    opts: &Options,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
    status: impl Fn() -> String,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut last = Instant::now();
    loop {
        if done()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > opts.timeout {
            bail!("{what}: not done after {:?}: {}", opts.timeout, status());
        }
        if last.elapsed() > Duration::from_secs(5) {
            last = Instant::now();
            progress(opts, || {
                format!(
                    "{what}: {} ({:.0} s)",
                    status(),
                    start.elapsed().as_secs_f64()
                )
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn failures(fleet: &Fleet) -> anyhow::Result<()> {
    for (i, n) in fleet.nodes.iter().enumerate() {
        if let Some(e) = n.failed.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bail!("node sim-{i:05} stopped: {e}");
        }
    }
    Ok(())
}

fn udp_rx(fleet: &Fleet) -> u64 {
    fleet
        .nodes
        .iter()
        .filter_map(|n| {
            n.conn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|c| c.stats().udp_rx.bytes)
        })
        .sum()
}

fn frame_rx(fleet: &Fleet) -> u64 {
    fleet
        .nodes
        .iter()
        .map(|n| n.frame_bytes.load(Ordering::Relaxed))
        .sum()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

async fn scenario(opts: &Options) -> anyhow::Result<Report> {
    let n = opts.nodes;
    let k = opts.coordinators.max(1);
    if k > 1 && opts.etcd == 0 {
        bail!("several coordinators need a shared store: give --etcd N");
    }
    if opts.storm && k > 1 && (k < 3 || opts.etcd < 3) {
        bail!("the join storm needs one coordinator, or at least 3 and --etcd 3");
    }
    let members = opts.etcd;
    let mut etcd = if members > 0 {
        Some(blocking(move || crate::etcd::EtcdCluster::start_loopback(members)).await?)
    } else {
        None
    };
    let mut coords = Vec::new();
    for c in 0..k {
        let extra = match &etcd {
            Some(e) => vec![
                "--store".to_owned(),
                e.store_arg(),
                "--id".to_owned(),
                format!("c{c}"),
            ],
            None => Vec::new(),
        };
        coords.push(Arc::new(Mutex::new(
            blocking(move || CoordProc::start(extra)).await?,
        )));
    }
    let coord = coords[0].clone();
    let api = {
        let coord = coord.clone();
        move |method: &'static str, path: String, body: Option<Value>| {
            let coord = coord.clone();
            blocking(move || {
                coord
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .api(method, &path, body.as_ref())
            })
        }
    };
    let prefix = if n < 250 { 24 } else { 16 };
    api(
        "POST",
        "/api/networks".into(),
        Some(json!({ "name": NETWORK, "cidr": format!("10.77.0.0/{prefix}") })),
    )
    .await?;
    let created = api(
        "POST",
        format!("/api/networks/{NETWORK}/tokens"),
        Some(json!({ "reusable": true })),
    )
    .await?;
    let token: JoinToken = created["join-token"]
        .as_str()
        .context("no join-token in the answer")?
        .parse()
        .context("parsing the join token")?;
    // Under a policy: a token per group, tagging its members, and the policy.
    let mut tokens = vec![token.secret.clone()];
    if opts.groups > 0 {
        tokens.clear();
        let mut doc = String::from("default = \"deny\"\n");
        for g in 0..opts.groups {
            let t = api(
                "POST",
                format!("/api/networks/{NETWORK}/tokens"),
                Some(json!({ "reusable": true, "tags": [format!("g{g}")] })),
            )
            .await?;
            let t: JoinToken = t["join-token"]
                .as_str()
                .context("no join-token in the answer")?
                .parse()
                .context("parsing the join token")?;
            tokens.push(t.secret);
            doc.push_str(&format!(
                "\n[[rule]]\nfrom = [\"tag:g{g}\"]\nto = [\"tag:g{g}\"]\n"
            ));
        }
        api(
            "PUT",
            format!("/api/networks/{NETWORK}/policy"),
            Some(json!({ "document": doc })),
        )
        .await?;
    }
    let expected: Vec<u32> = (0..n)
        .map(|i| match opts.groups {
            0 => (n - 1) as u32,
            g => ((0..n).filter(|j| j % g == i % g).count() - 1) as u32,
        })
        .collect();
    // The network's version, asked on a blocking thread (the admin client is blocking).
    let version = {
        let coord = coord.clone();
        move || {
            let c = coord.clone();
            blocking(move || c.lock().unwrap_or_else(|e| e.into_inner()).version())
        }
    };
    let listen: Vec<SocketAddr> = coords
        .iter()
        .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).listen)
        .collect();
    let pids: Vec<u32> = coords
        .iter()
        .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).pid())
        .collect();
    // Peak RSS (the largest coordinator) and CPU (all of them).
    let usage = move |pids: &[u32]| -> (f64, f64) {
        pids.iter().fold((0.0, 0.0), |(rss, cpu), p| {
            let (r, c) = proc_usage(*p);
            (f64::max(rss, r), cpu + c)
        })
    };

    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(
        &(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64)
            .to_be_bytes(),
    );
    seed[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    let privates: Vec<Key> = (0..n).map(|i| private_key(&seed, i)).collect();
    let index: HashMap<Key, u32> = privates
        .iter()
        .enumerate()
        .map(|(i, k)| (k.public_key(), i as u32))
        .collect();
    // Each socket on its own loopback address, as each site has its own: the coordinator
    // limits connection attempts per source address (about NODES_PER_SOCKET nodes each).
    let mut endpoints = Vec::new();
    for i in 0..opts.sockets.max(1) {
        endpoints.push(quinn::Endpoint::client(SocketAddr::from((
            loopback_source(i),
            0,
        )))?);
    }
    let fleet = Arc::new(Fleet {
        coordinators: listen.clone(),
        tokens,
        groups: opts.groups,
        expected,
        index,
        privates,
        nodes: (0..n).map(|_| Arc::new(NodeShared::default())).collect(),
        sample: if opts.hold.is_some() {
            0
        } else if opts.storm {
            // Every node's own address is checked after the storm.
            n
        } else {
            opts.sample.min(n)
        },
        foreign_ok: opts.hold.is_some(),
        endpoints,
        client: client_config(token.pin, k > 1)?,
        handshakes: Semaphore::new(opts.connect_concurrency.max(1)),
        stop: AtomicBool::new(false),
    });

    // 1. Cold concurrent start.
    progress(opts, || format!("starting {n} nodes against {listen:?}"));
    let mut tasks = Vec::with_capacity(n);
    // The storm starts half the nodes, the rest together with the kills (so joins are in
    // flight when they land, however fast the first half got in).
    let first = if opts.storm { n / 2 } else { n };
    for i in 0..first {
        tasks.push(tokio::spawn(node_task(fleet.clone(), i)));
    }
    let full = (n - 1) as u32;
    let store_name = match &etcd {
        Some(_) => format!("etcd ({} members)", opts.etcd),
        None => "sled".to_owned(),
    };
    if opts.storm {
        let storm = join_storm(opts, &fleet, &coords, etcd.as_mut(), &mut tasks).await?;
        let (rss, cpu) = usage(&pids);
        fleet.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        return Ok(Report {
            full_netmap_s: storm.all_joined_s,
            crash: true,
            sampled: n,
            storm: Some(storm),
            ..Report::without_changes(n, (rss, cpu), k, store_name)
        });
    }
    let full_netmap = wait_for(
        opts,
        "cold start",
        || {
            failures(&fleet)?;
            Ok(fleet
                .nodes
                .iter()
                .zip(&fleet.expected)
                .all(|(s, want)| s.peers.load(Ordering::Relaxed) == *want))
        },
        || {
            let connected = fleet
                .nodes
                .iter()
                .filter(|s| s.sessions.load(Ordering::Relaxed) > 0)
                .count();
            let complete = fleet
                .nodes
                .iter()
                .zip(&fleet.expected)
                .filter(|(s, want)| s.peers.load(Ordering::Relaxed) == **want)
                .count();
            format!("{connected}/{n} connected, {complete}/{n} with the full netmap")
        },
    )
    .await?;
    progress(opts, || {
        format!(
            "every node holds the full netmap after {:.2} s",
            full_netmap.as_secs_f64()
        )
    });
    let cold_bytes_per_node = frame_rx(&fleet) as f64 / n as f64;
    let json: u64 = fleet
        .nodes
        .iter()
        .map(|s| s.json_bytes.load(Ordering::Relaxed))
        .sum();
    let cold_netmap_bytes_per_node = cold_bytes_per_node - json as f64 / n as f64;
    let peers_per_node = fleet.expected.iter().map(|&e| f64::from(e)).sum::<f64>() / n as f64;
    if opts.groups > 0 {
        // A grouped run ends here: what it measures is the cold start's cost per node.
        let (rss, cpu) = usage(&pids);
        fleet.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        return Ok(Report {
            full_netmap_s: full_netmap.as_secs_f64(),
            groups: opts.groups,
            cold_bytes_per_node,
            peers_per_node,
            cold_netmap_bytes_per_node,
            ..Report::without_changes(n, (rss, cpu), k, store_name)
        });
    }

    // Settle: every node at the network's version.
    let settle = |fleet: Arc<Fleet>, target: u64| {
        move || {
            failures(&fleet)?;
            Ok(fleet
                .nodes
                .iter()
                .all(|s| s.version.load(Ordering::Relaxed) >= target))
        }
    };
    let v = version().await?;
    wait_for(opts, "settle", settle(fleet.clone(), v), String::new).await?;

    if let Some((tx, release)) = &opts.hold {
        let text = created["join-token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        tx.send(text).context("nobody waits for the join token")?;
        while !release.load(Ordering::Relaxed) {
            failures(&fleet)?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (rss, cpu) = usage(&pids);
        fleet.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        return Ok(Report {
            full_netmap_s: full_netmap.as_secs_f64(),
            ..Report::without_changes(n, (rss, cpu), k, store_name)
        });
    }

    // 2. Admin changes, one at a time, each timed to every node.
    let mut latencies: Vec<f64> = Vec::with_capacity(opts.changes * n);
    let (udp0, frames0) = (udp_rx(&fleet), frame_rx(&fleet));
    for c in 0..opts.changes {
        let target = (c * 7919) % n;
        let sent = Instant::now();
        api(
            "PATCH",
            format!("/api/networks/{NETWORK}/members/sim-{target:05}"),
            Some(json!({ "name": format!("sim-{target:05}-r{c}") })),
        )
        .await?;
        // Renaming the member changes its name: look it up by key from now on.
        let v = version().await?;
        wait_for(opts, "change", settle(fleet.clone(), v), || {
            let behind = fleet
                .nodes
                .iter()
                .filter(|s| s.version.load(Ordering::Relaxed) < v)
                .count();
            format!("{behind} nodes not at version {v}")
        })
        .await?;
        for (i, s) in fleet.nodes.iter().enumerate() {
            if i == target {
                continue;
            }
            let h = s.history.lock().unwrap_or_else(|e| e.into_inner());
            let at = h
                .iter()
                .find(|(ver, _)| *ver >= v)
                .map(|(_, t)| *t)
                .context("a node reached the version but its history lost it")?;
            latencies.push(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        }
        // Restore the name for the next rounds' lookups.
        api(
            "PATCH",
            format!("/api/networks/{NETWORK}/members/sim-{target:05}-r{c}"),
            Some(json!({ "name": format!("sim-{target:05}") })),
        )
        .await?;
        let v = version().await?;
        wait_for(opts, "change", settle(fleet.clone(), v), String::new).await?;
    }
    let changes_made = 2 * opts.changes;
    let per_change = |total: u64| total as f64 / (changes_made.max(1) * n) as f64;
    let bytes_per_change = per_change(frame_rx(&fleet) - frames0);
    let udp_per_change = per_change(udp_rx(&fleet).saturating_sub(udp0));
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i.min(latencies.len() - 1)]
    };

    // 3. The sample, field by field.
    let members = api("GET", format!("/api/networks/{NETWORK}/members"), None).await?;
    compare_sample(&fleet, &members)?;
    let (rss, cpu) = usage(&pids);
    progress(opts, || {
        format!(
            "changes p50 {:.1} ms p99 {:.1} ms; coordinator peak RSS {rss:.0} MB, {cpu:.1} CPU s",
            pct(0.5),
            pct(0.99)
        )
    });

    // 4. Coordinator restart with every node connected.
    let mut reconnect = None;
    let mut restarted_rss = None;
    let mut reconnect_full = 0;
    if opts.restart {
        let sessions_before: Vec<u32> = fleet
            .nodes
            .iter()
            .map(|s| s.sessions.load(Ordering::Relaxed))
            .collect();
        let full_before: u64 = fleet
            .nodes
            .iter()
            .map(|s| s.full_maps.load(Ordering::Relaxed))
            .sum();
        let start = Instant::now();
        // One coordinator: stop and start it again. Several: kill the last one for good;
        // its nodes move to the others.
        let victim = k - 1;
        {
            let c = coords[victim].clone();
            let crash = opts.crash || k > 1;
            let again = k == 1;
            blocking(move || {
                let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
                c.stop(crash)?;
                if again {
                    c.spawn()?;
                    c.wait_ready()?;
                }
                Ok(())
            })
            .await?;
        }
        let moving: Vec<bool> = fleet
            .nodes
            .iter()
            .map(|s| k == 1 || s.on.load(Ordering::Relaxed) as usize == victim)
            .collect();
        let c2 = coord.clone();
        let mut version = 0;
        let mut last_check = Instant::now() - Duration::from_secs(1);
        wait_for(
            opts,
            "reconnect",
            || {
                failures(&fleet)?;
                let back = fleet
                    .nodes
                    .iter()
                    .zip(&sessions_before)
                    .zip(&moving)
                    .all(|((s, b), m)| !*m || s.sessions.load(Ordering::Relaxed) > *b);
                if !back {
                    return Ok(false);
                }
                if last_check.elapsed() > Duration::from_millis(200) {
                    last_check = Instant::now();
                    version = c2.lock().unwrap_or_else(|e| e.into_inner()).version()?;
                }
                Ok(version > 0
                    && fleet
                        .nodes
                        .iter()
                        .all(|s| s.version.load(Ordering::Relaxed) >= version))
            },
            || {
                let back = fleet
                    .nodes
                    .iter()
                    .zip(&sessions_before)
                    .zip(&moving)
                    .filter(|((s, b), m)| **m && s.sessions.load(Ordering::Relaxed) > **b)
                    .count();
                let total = moving.iter().filter(|m| **m).count();
                format!("{back}/{total} back")
            },
        )
        .await?;
        let took = start.elapsed();
        reconnect = Some(took.as_secs_f64());
        reconnect_full = fleet
            .nodes
            .iter()
            .map(|s| s.full_maps.load(Ordering::Relaxed))
            .sum::<u64>()
            - full_before;
        let pid = coords[if k == 1 { 0 } else { victim - 1 }]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pid();
        restarted_rss = Some(proc_usage(pid).0);
        // Still exact after the restart.
        for s in &fleet.nodes {
            if s.peers.load(Ordering::Relaxed) != full {
                bail!("after the restart a node holds the wrong number of peers");
            }
        }
        let members = api("GET", format!("/api/networks/{NETWORK}/members"), None).await?;
        compare_sample(&fleet, &members)?;
        progress(opts, || {
            format!(
                "coordinator restarted: every node back and current after {:.2} s ({reconnect_full} full netmaps)",
                took.as_secs_f64()
            )
        });
    }

    fleet.stop.store(true, Ordering::Relaxed);
    for e in &fleet.endpoints {
        e.close(0u32.into(), b"done");
    }
    for t in tasks {
        t.abort();
    }
    Ok(Report {
        nodes: n,
        full_netmap_s: full_netmap.as_secs_f64(),
        change_p50_ms: pct(0.5),
        change_p99_ms: pct(0.99),
        change_max_ms: latencies.last().copied().unwrap_or(0.0),
        changes: changes_made,
        coordinator_rss_mb: rss,
        coordinator_cpu_s: cpu,
        bytes_per_change_per_node: bytes_per_change,
        udp_bytes_per_change_per_node: udp_per_change,
        reconnect_s: reconnect,
        crash: opts.crash,
        reconnect_full_netmaps: reconnect_full,
        restarted_rss_mb: restarted_rss,
        sampled: fleet.sample,
        generator_cpu_s: 0.0,
        coordinators: k,
        store: store_name,
        storm: None,
        groups: 0,
        cold_bytes_per_node,
        peers_per_node,
        cold_netmap_bytes_per_node,
    })
}

/// The join storm: the caller started half the nodes; once a third of all hold a netmap
/// the other half starts and, at once, `kill -9` of coordinator 1 and etcd member 2 (or of
/// the only coordinator, started again on its data); then every node must get in.
async fn join_storm(
    opts: &Options,
    fleet: &Arc<Fleet>,
    coords: &[Arc<Mutex<CoordProc>>],
    etcd: Option<&mut crate::etcd::EtcdCluster>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Storm> {
    let n = fleet.nodes.len();
    let start = Instant::now();
    let joined = |fleet: &Fleet| {
        fleet
            .nodes
            .iter()
            .filter(|s| s.sessions.load(Ordering::Relaxed) > 0)
            .count()
    };
    wait_for(
        opts,
        "storm: a third joined",
        || {
            failures(fleet)?;
            Ok(joined(fleet) * 3 >= n)
        },
        || format!("{}/{n} joined", joined(fleet)),
    )
    .await?;
    // The second half starts now, into the kills.
    for i in tasks.len()..n {
        tasks.push(tokio::spawn(node_task(fleet.clone(), i)));
    }
    // Acknowledged joins: nodes holding a netmap, with the address it gave them.
    let acked: Vec<(usize, IpAddr)> = fleet
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let map = s.netmap.lock().unwrap_or_else(|e| e.into_inner());
            map.as_ref().map(|m| (i, m.address.addr()))
        })
        .collect();
    let mut etcd = etcd;
    if coords.len() == 1 {
        // The only coordinator: kill -9, then up again on its data, while the joins are in
        // flight.
        let c = coords[0].clone();
        blocking(move || {
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            c.stop(true)?;
            c.spawn()?;
            c.wait_ready()
        })
        .await?;
        progress(opts, || {
            format!(
                "storm: killed the coordinator with {}/{n} acknowledged, started it again",
                acked.len()
            )
        });
    } else {
        let c = coords[1].clone();
        blocking(move || c.lock().unwrap_or_else(|e| e.into_inner()).stop(true)).await?;
        etcd.as_mut()
            .context("the join storm needs etcd with several coordinators")?
            .kill(2)?;
        progress(opts, || {
            format!(
                "storm: killed coordinator 1 and etcd member 2 with {}/{n} acknowledged",
                acked.len()
            )
        });
    }
    let full = (n - 1) as u32;
    wait_for(
        opts,
        "storm: every node joined",
        || {
            failures(fleet)?;
            Ok(fleet
                .nodes
                .iter()
                .all(|s| s.peers.load(Ordering::Relaxed) == full))
        },
        || {
            let complete = fleet
                .nodes
                .iter()
                .filter(|s| s.peers.load(Ordering::Relaxed) == full)
                .count();
            format!("{complete}/{n} with the full netmap")
        },
    )
    .await?;
    let all_joined = start.elapsed();
    if let Some(etcd) = etcd {
        tokio::task::block_in_place(|| etcd.restart(2))?;
    }
    let c = coords[0].clone();
    let members = blocking(move || {
        c.lock().unwrap_or_else(|e| e.into_inner()).api(
            "GET",
            &format!("/api/networks/{NETWORK}/members"),
            None,
        )
    })
    .await?;
    let list = members.as_array().context("members: not a list")?;
    let mut by_addr: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_key: HashMap<String, String> = HashMap::new();
    for m in list {
        let addr = m["address"].as_str().unwrap_or_default().to_owned();
        *by_addr.entry(addr.clone()).or_default() += 1;
        by_key.insert(
            m["public-key"].as_str().unwrap_or_default().to_owned(),
            addr,
        );
    }
    let duplicate_addresses = by_addr.values().filter(|c| **c > 1).map(|c| c - 1).sum();
    let lost_joins = acked
        .iter()
        .filter(|(i, addr)| {
            let key = fleet.privates[*i].public_key().to_string();
            by_key.get(&key) != Some(&addr.to_string())
        })
        .count();
    // Every node's own map against the admin API (all are sampled in a storm).
    compare_sample(fleet, &members)?;
    Ok(Storm {
        acknowledged_before_kill: acked.len(),
        all_joined_s: all_joined.as_secs_f64(),
        duplicate_addresses,
        lost_joins,
        members: list.len(),
    })
}

/// Each sampled node's applied netmap equals what the admin API lists: every other
/// authorised member with its name, address, allowed IPs and endpoints.
fn compare_sample(fleet: &Fleet, members: &Value) -> anyhow::Result<()> {
    let list = members.as_array().context("members: not a list")?;
    let mut expected: BTreeMap<Key, PeerInfo> = BTreeMap::new();
    for m in list {
        if m["authorized"] != true {
            continue;
        }
        let key: Key = m["public-key"]
            .as_str()
            .context("member without public-key")?
            .parse()
            .map_err(|e| anyhow::anyhow!("member key: {e:?}"))?;
        let address: IpAddr = m["address"]
            .as_str()
            .context("member without address")?
            .parse()?;
        let endpoints: Vec<SocketAddr> = serde_json::from_value(m["endpoints"].clone())?;
        // Dual stack (the default): the IPv6 address, and its /128 after the address.
        let address6: Option<std::net::Ipv6Addr> = match m["address6"].as_str() {
            Some(a) => Some(a.parse()?),
            None => None,
        };
        let mut allowed_ips = vec![IpNet::from(address)];
        allowed_ips.extend(address6.map(|a| IpNet::from(IpAddr::V6(a))));
        if let Some(routes) = m["approved-routes"].as_array() {
            for r in routes {
                let r: IpNet = serde_json::from_value(r.clone())?;
                let advertised = m["advertised-routes"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(&r.to_string())));
                if advertised {
                    allowed_ips.push(r);
                }
            }
        }
        expected.insert(
            key,
            PeerInfo {
                address6,
                public_key: key,
                name: m["name"].as_str().unwrap_or_default().to_owned(),
                address,
                allowed_ips,
                endpoints,
            },
        );
    }
    if expected.len() != fleet.nodes.len() {
        bail!(
            "the admin API lists {} authorised members, the generator runs {}",
            expected.len(),
            fleet.nodes.len()
        );
    }
    for i in 0..fleet.sample {
        let key = fleet.privates[i].public_key();
        let map = fleet.nodes[i]
            .netmap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .with_context(|| format!("sampled node sim-{i:05} holds no netmap"))?;
        let own = &expected[&key];
        if map.address.addr() != own.address || map.name != own.name {
            bail!(
                "sampled node sim-{i:05}: self {} {:?}, the admin API says {} {:?}",
                map.address,
                map.name,
                own.address,
                own.name
            );
        }
        let mut want = expected.clone();
        want.remove(&key);
        if map.peers != want {
            let wrong = want
                .iter()
                .find(|(k, p)| map.peers.get(k) != Some(p))
                .map(|(k, p)| {
                    format!(
                        "{}: want {p:?}, have {:?}",
                        k.fingerprint(),
                        map.peers.get(k)
                    )
                });
            bail!(
                "sampled node sim-{i:05}: netmap differs from the admin API ({} vs {} peers); first difference: {}",
                map.peers.len(),
                want.len(),
                wrong.unwrap_or_else(|| "an extra peer".into())
            );
        }
    }
    Ok(())
}
