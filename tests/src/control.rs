//! Control-plane scenarios: a coordinator on the lab's internet, nodes on their own sites
//! that join through it, and measuring how fast a membership change reaches every node.
//!
//! ```text
//!   coordinator 192.0.2.10 (QUIC :7443, admin API on its own 127.0.0.1:7480)
//!        │
//!   internet ── site a 198.51.100.1 ── site b 203.0.113.2 ── site c 198.51.100.3 ── …
//! ```
//! Sites are plain hosts on the internet (no NAT): these tests are about membership,
//! addresses and netmap distribution, not NAT traversal.

use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::coordinator::Coordinator;
use crate::lab::{ping_once, Lab};
use crate::meshd::{peer_keys_of, status_at, Meshd};
use crate::util;
use crate::wg::NodeKey;

/// The network the tests create.
pub const NETWORK: &str = "lab";
/// Its overlay prefix.
pub const CIDR: &str = "10.9.8.0/24";

/// Whether `ip` is a host address of [`CIDR`] (neither its network nor broadcast address).
pub fn in_cidr(ip: &str) -> bool {
    ip.strip_prefix("10.9.8.")
        .and_then(|h| h.parse::<u8>().ok())
        .is_some_and(|h| h != 0 && h != 255)
}
/// The coordinator host's address on the internet.
pub const COORDINATOR_IP: &str = "192.0.2.10";

/// How often the propagation threads read each node's status.
pub const POLL: Duration = Duration::from_millis(20);

/// The public address of site `i` (0-based): `198.51.100.<i+1>` for even `i`,
/// `203.0.113.<i+1>` for odd `i`, so sites sit in different ranges and talk through the
/// internet's router.
pub fn site_ip(i: usize) -> String {
    let host = i + 1;
    if i % 2 == 0 {
        format!("198.51.100.{host}")
    } else {
        format!("203.0.113.{host}")
    }
}

/// A host for the coordinator on the internet ([`COORDINATOR_IP`]) with the coordinator
/// running on it.
pub fn start_coordinator(lab: &Lab) -> anyhow::Result<Coordinator> {
    let (ns, _) = lab.internet_host("coord", &format!("{COORDINATOR_IP}/24"))?;
    Coordinator::start(&ns, COORDINATOR_IP)
}

/// Site `i` (a host on the internet at [`site_ip`]) running an unconfigured meshd labelled
/// `label`, with `key` (None: meshd makes its own).
pub fn start_site(lab: &Lab, i: usize, label: &str, key: Option<NodeKey>) -> anyhow::Result<Meshd> {
    let (ns, _) = lab.internet_host(label, &format!("{}/24", site_ip(i)))?;
    Meshd::start_unconfigured(&ns, label, key)
}

/// A coordinator with network [`NETWORK`] ([`CIDR`]), a reusable token, and `n` sites
/// whose nodes joined with that token and see each other as peers.
#[derive(Debug)]
pub struct JoinedMesh {
    /// The nodes, labelled a, b, c, …; dropped before the coordinator.
    pub nodes: Vec<Meshd>,
    /// The coordinator.
    pub coord: Coordinator,
    /// The reusable join token.
    pub token: String,
}

impl JoinedMesh {
    /// Builds it: coordinator, network, token, then each node joins (`meshctl join … --token`
    /// waits until connected) and all nodes list each other as peers (within `timeout`).
    pub fn new(lab: &Lab, n: usize, timeout: Duration) -> anyhow::Result<JoinedMesh> {
        let coord = start_coordinator(lab)?;
        coord.create_network(NETWORK, CIDR)?;
        let token = coord.create_token(NETWORK, true, None)?;
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(start_site(lab, i, &crate::topo::label(i), None)?);
        }
        let mesh = JoinedMesh {
            nodes,
            coord,
            token,
        };
        for node in &mesh.nodes {
            let control = node.join_with_token(NETWORK, &mesh.token)?;
            if control["state"] != "connected" {
                bail!(
                    "node {}: `meshctl join --token` returned with control status {control}",
                    node.name()
                );
            }
        }
        wait_full_mesh(&mesh.nodes, timeout)?;
        Ok(mesh)
    }
}

/// Polls until every node lists every other node's public key as a peer.
pub fn wait_full_mesh(nodes: &[Meshd], timeout: Duration) -> anyhow::Result<Duration> {
    let keys = nodes
        .iter()
        .map(Meshd::public_key)
        .collect::<anyhow::Result<Vec<_>>>()?;
    util::wait_until(
        timeout,
        "every node lists every other node as a peer",
        || {
            nodes.iter().enumerate().all(|(i, n)| {
                let Ok(have) = n.peer_keys() else {
                    return false;
                };
                keys.iter()
                    .enumerate()
                    .all(|(j, k)| i == j || have.contains(k))
            })
        },
    )
    .map_err(|e| {
        let mut report = String::new();
        for n in nodes {
            let peers = n.peer_keys().map(|p| p.join(", ")).unwrap_or_default();
            let control = n.control().map(|c| c.to_string()).unwrap_or_default();
            report.push_str(&format!(
                "\n  node {}: peers [{peers}] control {control}",
                n.name()
            ));
        }
        e.context(format!("peer lists at the time-out:{report}"))
    })
}

/// The overlay address (no prefix) of each node, from its status.
pub fn addresses(nodes: &[Meshd]) -> anyhow::Result<Vec<String>> {
    nodes.iter().map(Meshd::address).collect()
}

/// Waits until every node answers a ping over the overlay from every other node (each
/// directed pair within `timeout`, counted from its first attempt).
pub fn ping_all_pairs(nodes: &[Meshd], timeout: Duration) -> anyhow::Result<()> {
    let ips = addresses(nodes)?;
    for (i, from) in nodes.iter().enumerate() {
        for (j, to) in nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            let what = format!("overlay ping {} -> {} ({})", from.name(), to.name(), ips[j]);
            util::wait_until(timeout, &what, || ping_once(from.ns(), &ips[j]))?;
        }
    }
    Ok(())
}

/// How long one admin command took to reach each watched node.
#[derive(Debug, Clone)]
pub struct Propagation {
    /// What changed, e.g. `authorize`.
    pub label: String,
    /// How long the command itself ran (process start to exit).
    pub command: Duration,
    /// Per node: its label and when its status first showed the change, counted from the
    /// command's start.
    pub seen: Vec<(String, Duration)>,
}

impl Propagation {
    /// The slowest node, counted from the command's completion (the figure the issue
    /// bounds): 0 when every node saw the change before the command returned.
    pub fn after_command(&self) -> Duration {
        self.seen
            .iter()
            .map(|(_, d)| d.saturating_sub(self.command))
            .max()
            .unwrap_or_default()
    }

    /// The slowest node, counted from the command's start (includes meshctl's own run).
    pub fn from_start(&self) -> Duration {
        self.seen.iter().map(|(_, d)| *d).max().unwrap_or_default()
    }

    /// One line for BENCHMARKS.md, with the stable prefix `BENCH propagation`.
    pub fn bench_line(&self) -> String {
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        let nodes: Vec<String> = self
            .seen
            .iter()
            .map(|(n, d)| format!("{n}:{}", ms(d.saturating_sub(self.command))))
            .collect();
        format!(
            "BENCH propagation {}_ms={} from_command_start_ms={} command_ms={} poll_ms={} nodes={}",
            self.label,
            ms(self.after_command()),
            ms(self.from_start()),
            ms(self.command),
            POLL.as_millis(),
            nodes.join(",")
        )
    }
}

/// Measures how long `command` takes to reach `watched`: one thread per node reads its
/// status over the unix socket every [`POLL`]; each first checks that `seen` does not
/// hold yet (else the measurement would be meaningless), then all start together, the
/// command runs, and each thread records the first moment `seen(status)` holds. Fails
/// when a node has not seen the change within `timeout` of the command's start.
pub fn measure_propagation<T>(
    label: &str,
    watched: &[&Meshd],
    seen: impl Fn(&Value) -> bool + Sync,
    timeout: Duration,
    command: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Propagation)> {
    let barrier = Barrier::new(watched.len() + 1);
    let sockets: Vec<(String, PathBuf)> = watched
        .iter()
        .map(|m| (m.name().to_owned(), m.socket().to_path_buf()))
        .collect();
    let seen = &seen;
    let barrier = &barrier;
    std::thread::scope(|scope| {
        let threads: Vec<_> = sockets
            .iter()
            .map(|(name, socket)| {
                scope.spawn(move || -> anyhow::Result<Instant> {
                    let before = status_at(socket);
                    // Reach the barrier whatever happened, or the others would wait forever.
                    barrier.wait();
                    let before =
                        before.with_context(|| format!("node {name}: reading its status"))?;
                    if seen(&before) {
                        bail!("node {name} shows the change before the command ran: {before}");
                    }
                    let deadline = Instant::now() + timeout;
                    let mut last = before;
                    loop {
                        match status_at(socket) {
                            Ok(s) if seen(&s) => return Ok(Instant::now()),
                            Ok(s) => last = s,
                            Err(e) => eprintln!("[propagation] node {name}: {e:#}"),
                        }
                        if Instant::now() >= deadline {
                            bail!(
                                "node {name} did not show the change within {timeout:?}; last status: {last}"
                            );
                        }
                        std::thread::sleep(POLL);
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let result = command();
        let command_took = start.elapsed();
        let mut seen_at = Vec::new();
        let mut errors = Vec::new();
        for ((name, _), t) in sockets.iter().zip(threads) {
            match t.join() {
                Ok(Ok(at)) => seen_at.push((name.clone(), at.saturating_duration_since(start))),
                Ok(Err(e)) => errors.push(format!("{e:#}")),
                Err(_) => errors.push(format!("node {name}: the polling thread panicked")),
            }
        }
        let value = result.with_context(|| format!("{label}: the command failed"))?;
        if !errors.is_empty() {
            bail!("{label}: {}", errors.join("\n"));
        }
        let p = Propagation {
            label: label.to_owned(),
            command: command_took,
            seen: seen_at,
        };
        eprintln!("{}", p.bench_line());
        Ok((value, p))
    })
}

/// A predicate for [`measure_propagation`]: the status lists `key` as a peer.
pub fn lists_peer(key: &str) -> impl Fn(&Value) -> bool + Sync + '_ {
    move |s| peer_keys_of(s).iter().any(|k| k == key)
}

/// A predicate for [`measure_propagation`]: the status does not list `key` as a peer.
pub fn lacks_peer(key: &str) -> impl Fn(&Value) -> bool + Sync + '_ {
    move |s| !peer_keys_of(s).iter().any(|k| k == key)
}

/// Summary of several measurements of the same kind: `n`, min, median, max (ms).
pub fn summary(label: &str, samples: &[Duration]) -> String {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return format!("BENCH propagation {label}: no samples");
    }
    format!(
        "BENCH propagation {label} n={} min_ms={:.1} median_ms={:.1} max_ms={:.1}",
        ms.len(),
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    )
}
