//! wm-demo: the product flow in network namespaces. A coordinator on a simulated internet,
//! three sites on three "providers", each running meshd with no network configured; the
//! admin creates a network and a reusable join token, and every node joins with
//! `meshctl join lab --token …`. Prints each node's `meshctl status`, pings every pair over
//! the overlay, prints a summary, then keeps everything up until Ctrl-C (SIGINT) or SIGTERM
//! and removes it all.
//!
//! ```text
//!              coordinator 192.0.2.10 (QUIC :7443, admin API on its own loopback)
//!                    │
//!   internet ── site a 198.51.100.1 ── site b 203.0.113.2 ── site c 198.51.100.3
//! ```
//!
//! ```text
//! sudo target/ci/wm-demo                      # explore; Ctrl-C to tear down
//! sudo target/ci/wm-demo --exit-after-checks  # CI: exit 0 iff every ping got through
//! ```
//! Needs root and the workspace built (`cargo build --workspace --profile ci`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use wiremesh_tests::control::{self, CIDR, COORDINATOR_IP, NETWORK};
use wiremesh_tests::coordinator::CONTROL_PORT;
use wiremesh_tests::topo::label;
use wiremesh_tests::{ping, ping_once, wait_until, Coordinator, Lab, Meshd};

const NODES: usize = 3;
const PINGS: u32 = 5;
/// How long a node may take to join, and the mesh to converge (generous: 2 cores).
const CONVERGE: Duration = Duration::from_secs(30);

struct PairResult {
    from: String,
    to: String,
    to_ip: String,
    path: String,
    loss: f64,
}

/// A node of the demo: its daemon and where it sits.
struct Site {
    meshd: Meshd,
    provider: usize,
    public_ip: String,
    overlay_ip: String,
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

fn print_status(s: &Site) {
    let n = &s.meshd;
    println!(
        "==== node {} ({}, provider {} at {}, namespace {}) ====",
        n.name(),
        s.overlay_ip,
        s.provider,
        s.public_ip,
        n.ns().name()
    );
    match n.meshctl_status_text() {
        Ok(text) if !text.trim().is_empty() => println!(
            "$ meshctl --socket {} status\n{}",
            n.socket().display(),
            text.trim_end()
        ),
        other => {
            if let Err(e) = other {
                println!("(meshctl status failed: {e:#}; showing the API's JSON instead)");
            }
            match n.status() {
                Ok(s) => println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default()),
                Err(e) => println!("(status unavailable: {e:#})"),
            }
        }
    }
    println!();
}

/// The path `from` reports for `to` (`direct`/`relay`), or `-` when its meshd does not say.
fn path_of(from: &Meshd, to: &Meshd) -> String {
    to.public_key()
        .and_then(|k| from.peer_status(&k))
        .ok()
        .and_then(|p| p["path"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned())
}

fn check_pairs(sites: &[Site], interrupted: &AtomicBool) -> Vec<PairResult> {
    let mut results = Vec::new();
    for from in sites {
        for to in sites {
            if from.meshd.name() == to.meshd.name() || interrupted.load(Ordering::SeqCst) {
                continue;
            }
            let what = format!(
                "{} -> {} ({})",
                from.meshd.name(),
                to.meshd.name(),
                to.overlay_ip
            );
            // The first packet may trigger the handshake; give it time, then measure.
            let _ = wait_until(Duration::from_secs(10), &what, || {
                ping_once(from.meshd.ns(), &to.overlay_ip)
            });
            let loss = ping(from.meshd.ns(), &to.overlay_ip, PINGS);
            println!("ping {what}: {loss:.0}% loss");
            results.push(PairResult {
                from: from.meshd.name().to_owned(),
                to: to.meshd.name().to_owned(),
                to_ip: to.overlay_ip.clone(),
                path: path_of(&from.meshd, &to.meshd),
                loss,
            });
        }
    }
    results
}

/// Starts the coordinator, creates the network and token, starts and joins the nodes.
/// Each step prints a progress line. Fills `coord` and `sites` as it goes, so that whatever
/// was started is cleaned up by the caller even when a later step fails.
fn bring_up(
    lab: &Lab,
    coord: &mut Option<Coordinator>,
    sites: &mut Vec<Site>,
    interrupted: &AtomicBool,
) -> anyhow::Result<()> {
    let stop_if_interrupted = || -> anyhow::Result<()> {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    };
    println!("starting coordinator on {COORDINATOR_IP}:{CONTROL_PORT} …");
    let c = coord.insert(control::start_coordinator(lab)?);
    println!(
        "  coordinator up (namespace {}, certificate pin {})",
        c.ns().name(),
        c.pin()?
    );
    stop_if_interrupted()?;

    println!("$ meshctl admin network create {NETWORK} --cidr {CIDR}");
    let out = c.admin(&["network", "create", NETWORK, "--cidr", CIDR])?;
    if !out.trim().is_empty() {
        println!("{}", indented(&out));
    }
    println!("$ meshctl admin token create {NETWORK} --reusable");
    let out = c.admin(&["token", "create", NETWORK, "--reusable"])?;
    println!("{}", indented(&out));
    let token = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .context("`meshctl admin token create` printed nothing")?
        .to_owned();
    stop_if_interrupted()?;

    for i in 0..NODES {
        let name = label(i);
        let public_ip = control::site_ip(i);
        println!(
            "starting meshd on site {name} (provider {}, {public_ip}), no network configured …",
            i + 1
        );
        let meshd = control::start_site(lab, i, &name, None)?;
        sites.push(Site {
            meshd,
            provider: i + 1,
            public_ip,
            overlay_ip: String::new(),
        });
        stop_if_interrupted()?;
    }

    for s in sites.iter_mut() {
        let name = s.meshd.name().to_owned();
        println!(
            "node {name}: $ meshctl join {NETWORK} --token {}",
            short(&token)
        );
        let out = s
            .meshd
            .meshctl(&["join", NETWORK, "--token", &token, "--timeout", "30s"])?;
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
        let state = s.meshd.control_state();
        if state.as_deref() != Some("connected") {
            bail!("node {name}: `meshctl join` returned but the node is {state:?}, not connected");
        }
        s.overlay_ip = s.meshd.address()?;
        println!("node {name} joined as {}", s.overlay_ip);
    }

    println!("waiting for every node to list the others as peers …");
    let nodes: Vec<&Meshd> = sites.iter().map(|s| &s.meshd).collect();
    let keys = nodes
        .iter()
        .map(|n| n.public_key())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let took = wait_until(CONVERGE, "every node lists every other node", || {
        interrupted.load(Ordering::SeqCst)
            || nodes.iter().enumerate().all(|(i, n)| {
                n.peer_keys().is_ok_and(|have| {
                    keys.iter()
                        .enumerate()
                        .all(|(j, k)| i == j || have.contains(k))
                })
            })
    })?;
    stop_if_interrupted()?;
    println!(
        "  full mesh after {:.1} s: {} nodes, {} peers each",
        took.as_secs_f64(),
        NODES,
        NODES - 1
    );
    Ok(())
}

fn print_summary(results: &[PairResult]) -> bool {
    println!("==== summary ====");
    println!(
        "{:<6} {:<6} {:<10} {:<7} {:>6}  result",
        "from", "to", "overlay", "path", "loss"
    );
    for r in results {
        let verdict = if r.loss == 0.0 {
            "ok"
        } else if r.loss < 100.0 {
            "LOSSY"
        } else {
            "FAILED"
        };
        println!(
            "{:<6} {:<6} {:<10} {:<7} {:>5.0}%  {verdict}",
            r.from, r.to, r.to_ip, r.path, r.loss
        );
    }
    let expected = NODES * (NODES - 1);
    let good = results.iter().filter(|r| r.loss == 0.0).count();
    let ok = results.len() == expected && good == expected;
    println!(
        "{}: {good}/{expected} pairs reached each other without loss",
        if ok { "PASS" } else { "FAIL" },
    );
    ok
}

fn print_try_it(sites: &[Site], coord: &Coordinator) {
    println!();
    println!("The mesh stays up. Try, in another terminal:");
    for (i, s) in sites.iter().enumerate() {
        let other = &sites[(i + 1) % sites.len()];
        println!(
            "  node {}: sudo ip netns exec {} ping {}",
            s.meshd.name(),
            s.meshd.ns().name(),
            other.overlay_ip
        );
        println!(
            "          sudo meshctl --socket {} status",
            s.meshd.socket().display()
        );
    }
    println!(
        "  coordinator: sudo ip netns exec {} meshctl admin --coordinator {} --token-file {} members {NETWORK}",
        coord.ns().name(),
        coord.admin_url(),
        coord.token_file().display()
    );
    println!("Press Ctrl-C (or send SIGTERM) to stop and remove everything.");
}

/// Returns whether every check passed.
fn run(exit_after_checks: bool) -> anyhow::Result<bool> {
    wiremesh_tests::require_root()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let signals = watch_signals(interrupted.clone())?;
    println!(
        "wm-demo: a coordinator and {NODES} sites on a simulated internet; the nodes join network \
         {NETWORK:?} ({CIDR}) with a token"
    );
    println!("creating the internet namespace (198.51.100.0/24, 203.0.113.0/24, 192.0.2.0/24) …");
    let lab = Lab::new()?;
    let mut coord = None;
    let mut sites = Vec::new();
    let brought_up = bring_up(&lab, &mut coord, &mut sites, &interrupted);

    let mut waited = false;
    let ok = match (&brought_up, coord.as_ref()) {
        (Ok(()), Some(coord)) => {
            println!();
            for s in &sites {
                print_status(s);
            }
            println!("pinging every pair over the overlay …");
            let results = check_pairs(&sites, &interrupted);
            println!();
            let ok = print_summary(&results);
            if !exit_after_checks && !interrupted.load(Ordering::SeqCst) {
                print_try_it(&sites, coord);
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
    // Daemons first, then the coordinator, then the namespaces (explicit, because main
    // exits with a code and skips destructors).
    drop(sites);
    drop(coord);
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
                     Starts a coordinator and {NODES} meshd nodes on {NODES} sites in network namespaces,\n\
                     creates network {NETWORK:?} ({CIDR}) and a reusable token, joins every node with\n\
                     `meshctl join`, prints their status, pings every pair over the overlay, then waits\n\
                     for Ctrl-C and cleans up. With --exit-after-checks it exits after the checks:\n\
                     0 if every ping got through."
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
