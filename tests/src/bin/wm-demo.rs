//! wm-demo: the product flow in network namespaces (issue 6). A coordinator on a simulated
//! internet and three nodes on three "providers", each behind its own NAT router, one of
//! them symmetric; the admin creates a network and a reusable join token, every node joins
//! with `meshctl join lab --token …`. Prints each node's `meshctl status` (paths direct or
//! relayed), pings every pair over the overlay, prints a summary with the path each pair
//! should use and fails when one differs, then keeps everything up until Ctrl-C (SIGINT) or
//! SIGTERM and removes it all.
//!
//! ```text
//!              coordinator 192.0.2.10 (QUIC :7443, reflectors :7444 :7445, relay :7446)
//!                    │
//!   internet ─┬─ provider 1: cone NAT      198.51.100.11 ── LAN 192.168.1.0/24 ── node a
//!             ├─ provider 2: cone NAT      203.0.113.12  ── LAN 192.168.2.0/24 ── node b
//!             └─ provider 3: symmetric NAT 198.51.100.13 ── LAN 192.168.3.0/24 ── node c
//! ```
//! Two port-restricted cones punch through to each other (a ↔ b direct); a cone against a
//! symmetric NAT cannot, so a ↔ c and b ↔ c go through the coordinator's relay (see
//! [`wiremesh_tests::sites::expected_path`]).
//!
//! ```text
//! sudo target/ci/wm-demo                      # explore; Ctrl-C to tear down
//! sudo target/ci/wm-demo --exit-after-checks  # CI: exit 0 iff every pair got through on
//!                                             # the expected path without loss
//! ```
//! Needs root and the workspace built (`cargo build --workspace --profile ci`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use wiremesh_tests::control::{CIDR, COORDINATOR_IP, NETWORK};
use wiremesh_tests::coordinator::CONTROL_PORT;
use wiremesh_tests::sites::{nat_name, NatMesh, SiteSpec};
use wiremesh_tests::{ping, ping_once, wait_until, Lab, NatKind};

/// The three providers: a name for the output and the NAT in front of the node.
const PROVIDERS: [(&str, NatKind); 3] = [
    ("provider 1", NatKind::Cone),
    ("provider 2", NatKind::Cone),
    ("provider 3", NatKind::Symmetric),
];
const PINGS: u32 = 5;
/// How long a node may take to join, and the mesh to converge (generous: 2 cores).
const CONVERGE: Duration = Duration::from_secs(30);
/// How long a pair may take to settle on its expected path after its first packet
/// (hole punching for cone × cone, relay fallback for cone × symmetric).
const PATH_SETTLE: Duration = Duration::from_secs(30);

struct PairResult {
    from: String,
    to: String,
    to_ip: String,
    expected: &'static str,
    path: String,
    loss: f64,
}

impl PairResult {
    fn ok(&self) -> bool {
        self.loss == 0.0 && self.path == self.expected
    }
}

/// Indents every line of `text` by four spaces (command output under the command line).
fn indented(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `wm1_abcdef…` for display: the full token is long and says nothing to a reader.
fn short(token: &str) -> String {
    let head: String = token.chars().take(12).collect();
    if head.len() < token.len() {
        format!("{head}…")
    } else {
        head
    }
}

/// Installs the SIGINT/SIGTERM handlers before anything starts (so an early Ctrl-C still
/// cleans up) on a thread of its own. `interrupted` is set at the first signal, and its
/// name is sent on the returned channel.
fn watch_signals(interrupted: Arc<AtomicBool>) -> anyhow::Result<mpsc::Receiver<&'static str>> {
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let (sig_tx, sig_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the signal runtime")
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let handlers = signal(SignalKind::terminate())
                .context("installing the SIGTERM handler")
                .and_then(|t| {
                    signal(SignalKind::interrupt())
                        .context("installing the SIGINT handler")
                        .map(|i| (t, i))
                });
            let (mut term, mut int) = match handlers {
                Ok(h) => {
                    let _ = ready_tx.send(Ok(()));
                    h
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let sig = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            interrupted.store(true, Ordering::SeqCst);
            let _ = sig_tx.send(sig);
        });
    });
    ready_rx
        .recv()
        .context("the signal thread ended before installing its handlers")??;
    Ok(sig_rx)
}

/// `"a (provider 1, cone NAT)"`.
fn describe(mesh: &NatMesh, i: usize) -> String {
    let n = &mesh.nodes[i];
    format!(
        "{} ({}, {} NAT)",
        n.name(),
        PROVIDERS[n.site].0,
        nat_name(n.nat)
    )
}

fn print_status(mesh: &NatMesh, i: usize, overlay: &str) {
    let n = &mesh.nodes[i];
    println!(
        "==== node {} ({overlay}; {}, {} NAT at {}, LAN {}; namespace {}) ====",
        n.name(),
        PROVIDERS[n.site].0,
        nat_name(n.nat),
        n.public_ip,
        n.lan_ip,
        n.ns().name()
    );
    match n.meshd.meshctl_status_text() {
        Ok(text) if !text.trim().is_empty() => println!(
            "$ meshctl --socket {} status\n{}",
            n.meshd.socket().display(),
            text.trim_end()
        ),
        other => {
            if let Err(e) = other {
                println!("(meshctl status failed: {e:#}; showing the API's JSON instead)");
            }
            match n.meshd.status() {
                Ok(s) => println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default()),
                Err(e) => println!("(status unavailable: {e:#})"),
            }
        }
    }
    println!();
}

/// Sends each pair its first packets (which start the handshake and the path probing),
/// then waits until both sides report the path the pair should use. A pair that does not
/// get there is reported here and fails in the summary.
fn settle_paths(mesh: &NatMesh, ips: &[String], interrupted: &AtomicBool) {
    for i in 0..mesh.nodes.len() {
        for (j, ip) in ips.iter().enumerate().skip(i + 1) {
            if interrupted.load(Ordering::SeqCst) {
                return;
            }
            let want = mesh.expected_path(i, j);
            let what = format!("first reply {} -> {ip}", mesh.nodes[i].name());
            let _ = wait_until(Duration::from_secs(10), &what, || {
                interrupted.load(Ordering::SeqCst) || ping_once(mesh.nodes[i].ns(), ip)
            });
            match mesh.wait_path(i, j, want, PATH_SETTLE) {
                Ok(took) => println!(
                    "  {} <-> {}: {want} after {:.1} s",
                    describe(mesh, i),
                    describe(mesh, j),
                    took.as_secs_f64()
                ),
                Err(e) => println!("  {e:#}"),
            }
        }
    }
}

fn check_pairs(mesh: &NatMesh, ips: &[String], interrupted: &AtomicBool) -> Vec<PairResult> {
    let mut results = Vec::new();
    for (i, from) in mesh.nodes.iter().enumerate() {
        for (j, (to, ip)) in mesh.nodes.iter().zip(ips).enumerate() {
            if i == j || interrupted.load(Ordering::SeqCst) {
                continue;
            }
            let what = format!("{} -> {} ({ip})", from.name(), to.name());
            // Usually answered at once (settle_paths sent the first packets).
            let _ = wait_until(Duration::from_secs(10), &what, || {
                interrupted.load(Ordering::SeqCst) || ping_once(from.ns(), ip)
            });
            let loss = ping(from.ns(), ip, PINGS);
            let path = mesh.path(i, j).unwrap_or_else(|| "-".to_owned());
            println!("ping {what}: {loss:.0}% loss, path {path}");
            results.push(PairResult {
                from: from.name().to_owned(),
                to: to.name().to_owned(),
                to_ip: ip.clone(),
                expected: mesh.expected_path(i, j),
                path,
                loss,
            });
        }
    }
    results
}

/// Starts the coordinator (with the network and a reusable token), the three sites and
/// their nodes, and joins the nodes. Each step prints a progress line. Fills `mesh` as soon
/// as it exists, so whatever was started is cleaned up by the caller even when a later
/// step fails. Returns the nodes' overlay addresses.
fn bring_up(
    lab: &Lab,
    mesh: &mut Option<NatMesh>,
    interrupted: &AtomicBool,
) -> anyhow::Result<Vec<String>> {
    let stop_if_interrupted = || -> anyhow::Result<()> {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    };
    println!("starting coordinator on {COORDINATOR_IP}:{CONTROL_PORT} …");
    let m = mesh.insert(NatMesh::new(lab, &[])?);
    println!(
        "  coordinator up (namespace {}, certificate pin {})",
        m.coord.ns().name(),
        m.coord.pin()?
    );
    println!("$ meshctl admin network create {NETWORK} --cidr {CIDR}");
    println!("$ meshctl admin token create {NETWORK} --reusable");
    println!("    {}", short(&m.token));
    let networks = m.coord.admin(&["network", "list"])?;
    println!("$ meshctl admin network list\n{}", indented(&networks));
    stop_if_interrupted()?;

    for (name, nat) in PROVIDERS {
        let added = m.add_site(lab, SiteSpec::one(nat))?;
        for i in added {
            let n = &m.nodes[i];
            println!(
                "{name}: {} NAT at {}, node {} at {} behind it, meshd running with no network",
                nat_name(nat),
                n.public_ip,
                n.name(),
                n.lan_ip
            );
        }
        stop_if_interrupted()?;
    }

    let mut ips = Vec::new();
    for n in &m.nodes {
        let name = n.name();
        println!(
            "node {name}: $ meshctl join {NETWORK} --token {}",
            short(&m.token)
        );
        let out = n
            .meshd
            .meshctl(&["join", NETWORK, "--token", &m.token, "--timeout", "30s"])?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !text.trim().is_empty() {
            println!("{}", indented(&text));
        }
        stop_if_interrupted()?;
        if !out.status.success() {
            bail!("node {name}: `meshctl join` failed ({})", out.status);
        }
        let state = n.meshd.control_state();
        if state.as_deref() != Some("connected") {
            bail!("node {name}: `meshctl join` returned but the node is {state:?}, not connected");
        }
        let ip = n.meshd.address()?;
        println!("node {name} joined as {ip}");
        ips.push(ip);
    }

    println!("waiting for every node to list the others as peers …");
    m.wait_peers(CONVERGE)?;
    stop_if_interrupted()?;
    println!(
        "  full mesh: {} nodes, {} peers each",
        m.nodes.len(),
        m.nodes.len() - 1
    );
    Ok(ips)
}

fn print_summary(results: &[PairResult], nodes: usize) -> bool {
    println!("==== summary ====");
    println!(
        "{:<6} {:<6} {:<10} {:<9} {:<7} {:>6}  result",
        "from", "to", "overlay", "expected", "path", "loss"
    );
    for r in results {
        let verdict = if r.loss >= 100.0 {
            "FAILED"
        } else if r.path != r.expected {
            "WRONG PATH"
        } else if r.loss > 0.0 {
            "LOSSY"
        } else {
            "ok"
        };
        println!(
            "{:<6} {:<6} {:<10} {:<9} {:<7} {:>5.0}%  {verdict}",
            r.from, r.to, r.to_ip, r.expected, r.path, r.loss
        );
    }
    let expected = nodes * (nodes - 1);
    let good = results.iter().filter(|r| r.ok()).count();
    let ok = results.len() == expected && good == expected;
    println!(
        "{}: {good}/{expected} pairs reached each other without loss on the expected path",
        if ok { "PASS" } else { "FAIL" },
    );
    ok
}

fn print_try_it(mesh: &NatMesh, ips: &[String]) {
    println!();
    println!("The mesh stays up. Try, in another terminal:");
    let n = mesh.nodes.len();
    for (i, node) in mesh.nodes.iter().enumerate() {
        let other = (i + 1) % n;
        println!(
            "  node {}: sudo ip netns exec {} ping {}",
            node.name(),
            node.ns().name(),
            ips[other]
        );
        println!(
            "          sudo meshctl --socket {} status",
            node.meshd.socket().display()
        );
        println!(
            "          sudo meshctl --socket {} ping {}",
            node.meshd.socket().display(),
            mesh.nodes[other].name()
        );
    }
    println!(
        "  coordinator: sudo ip netns exec {} meshctl admin --coordinator {} --token-file {} members {NETWORK}",
        mesh.coord.ns().name(),
        mesh.coord.admin_url(),
        mesh.coord.token_file().display()
    );
    println!("Press Ctrl-C (or send SIGTERM) to stop and remove everything.");
}

/// Returns whether every check passed.
fn run(exit_after_checks: bool) -> anyhow::Result<bool> {
    wiremesh_tests::require_root()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let signals = watch_signals(interrupted.clone())?;
    println!(
        "wm-demo: a coordinator and {} nodes on {} providers, each behind its own NAT ({}); \
         the nodes join network {NETWORK:?} ({CIDR}) with a token",
        PROVIDERS.len(),
        PROVIDERS.len(),
        PROVIDERS
            .iter()
            .map(|(_, nat)| nat_name(*nat))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("creating the internet namespace (198.51.100.0/24, 203.0.113.0/24, 192.0.2.0/24) …");
    let lab = Lab::new()?;
    let mut mesh = None;
    let brought_up = bring_up(&lab, &mut mesh, &interrupted);

    let mut waited = false;
    let ok = match (&brought_up, mesh.as_ref()) {
        (Ok(ips), Some(mesh)) => {
            println!("first packets between every pair; waiting for each pair's path …");
            settle_paths(mesh, ips, &interrupted);
            println!();
            for (i, ip) in ips.iter().enumerate() {
                print_status(mesh, i, ip);
            }
            println!("pinging every pair over the overlay …");
            let results = check_pairs(mesh, ips, &interrupted);
            println!();
            let ok = print_summary(&results, mesh.nodes.len());
            if !ok {
                mesh.dump_status();
            }
            if !exit_after_checks && !interrupted.load(Ordering::SeqCst) {
                print_try_it(mesh, ips);
                let sig = signals.recv().unwrap_or("the signal thread ended");
                println!("\n{sig}: stopping meshd and the coordinator, removing the namespaces …");
                waited = true;
            }
            ok
        }
        _ => false,
    };
    if interrupted.load(Ordering::SeqCst) && !waited {
        println!("interrupted: cleaning up …");
    }
    // Daemons first (the mesh drops its nodes, then the NAT routers and the coordinator),
    // then the namespaces (explicit, because main exits with a code and skips destructors).
    drop(mesh);
    drop(lab);
    println!("cleaned up");
    if interrupted.load(Ordering::SeqCst) && brought_up.is_err() {
        bail!("interrupted before the checks finished");
    }
    brought_up?;
    Ok(ok)
}

fn main() {
    let mut exit_after_checks = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--exit-after-checks" => exit_after_checks = true,
            "-h" | "--help" => {
                println!(
                    "usage: wm-demo [--exit-after-checks]\n\n\
                     Starts a coordinator and three meshd nodes on three providers in network\n\
                     namespaces, each node behind its own NAT (cone, cone, symmetric), creates\n\
                     network {NETWORK:?} ({CIDR}) and a reusable token, joins every node with\n\
                     `meshctl join`, prints their status, pings every pair over the overlay and\n\
                     checks each pair's path (cone-cone direct, cone-symmetric relayed), then waits\n\
                     for Ctrl-C and cleans up. With --exit-after-checks it exits after the checks:\n\
                     0 if every pair got through without loss on its expected path."
                );
                return;
            }
            other => {
                eprintln!("wm-demo: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let code = match run(exit_after_checks) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("wm-demo: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
