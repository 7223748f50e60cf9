//! wm-demo: three meshd nodes in network namespaces on a shared "internet", statically
//! configured as a full mesh. Prints each node's `meshctl status`, pings every pair over the
//! overlay, prints a summary, then keeps the mesh up until Ctrl-C (SIGINT) or SIGTERM and
//! removes everything.
//!
//! ```text
//! sudo target/ci/wm-demo                      # explore; Ctrl-C to tear down
//! sudo target/ci/wm-demo --exit-after-checks  # CI: exit 0 iff every ping got through
//! ```
//! Needs root and the workspace built (`cargo build --workspace --profile ci`).

use std::time::Duration;

use anyhow::Context as _;
use wiremesh_tests::topo::{full_mesh, Node};
use wiremesh_tests::{ping, ping_once, wait_until, Lab};

const NODES: usize = 3;
const PINGS: u32 = 5;

struct PairResult {
    from: String,
    to: String,
    to_ip: String,
    loss: f64,
}

fn print_status(n: &Node) {
    println!(
        "==== node {} ({}, namespace {}) ====",
        n.name,
        n.overlay_ip,
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

fn check_pairs(nodes: &[Node]) -> Vec<PairResult> {
    let mut results = Vec::new();
    for from in nodes {
        for to in nodes {
            if from.name == to.name {
                continue;
            }
            let what = format!("{} -> {} ({})", from.name, to.name, to.overlay_ip);
            // The first packet triggers the handshake; give it time, then measure.
            let _ = wait_until(Duration::from_secs(10), &what, || {
                ping_once(from.ns(), &to.overlay_ip)
            });
            let loss = ping(from.ns(), &to.overlay_ip, PINGS);
            println!("ping {what}: {loss:.0}% loss");
            results.push(PairResult {
                from: from.name.clone(),
                to: to.name.clone(),
                to_ip: to.overlay_ip.clone(),
                loss,
            });
        }
    }
    results
}

fn wait_for_signal() -> anyhow::Result<&'static str> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("installing the SIGINT handler")?;
        Ok(tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        })
    })
}

fn run(exit_after_checks: bool) -> anyhow::Result<bool> {
    wiremesh_tests::require_root()?;
    println!("starting {NODES} meshd nodes on 198.51.100.0/24, overlay 10.9.8.0/24 ...");
    let lab = Lab::new()?;
    let nodes = full_mesh(&lab, NODES, Some(25))?;
    println!();
    // Handshakes first, so the status printed below shows live peers.
    let results = check_pairs(&nodes);
    println!();
    for n in &nodes {
        print_status(n);
    }

    println!("==== summary ====");
    println!(
        "{:<6} {:<6} {:<10} {:>6}  result",
        "from", "to", "overlay", "loss"
    );
    for r in &results {
        let verdict = if r.loss == 0.0 {
            "ok"
        } else if r.loss < 100.0 {
            "LOSSY"
        } else {
            "FAILED"
        };
        println!(
            "{:<6} {:<6} {:<10} {:>5.0}%  {verdict}",
            r.from, r.to, r.to_ip, r.loss
        );
    }
    let ok = results.iter().all(|r| r.loss == 0.0);
    println!(
        "{}: {}/{} pairs reached each other without loss",
        if ok { "PASS" } else { "FAIL" },
        results.iter().filter(|r| r.loss == 0.0).count(),
        results.len()
    );

    if !exit_after_checks {
        println!();
        println!("The mesh stays up. Try, in another terminal:");
        for n in &nodes {
            println!(
                "  node {}: sudo ip netns exec {} ping {}    sudo meshctl --socket {} status",
                n.name,
                n.ns().name(),
                nodes
                    .iter()
                    .find(|o| o.name != n.name)
                    .map(|o| o.overlay_ip.as_str())
                    .unwrap_or(""),
                n.meshd.socket().display()
            );
        }
        println!("Press Ctrl-C (or send SIGTERM) to stop and remove everything.");
        let sig = wait_for_signal()?;
        println!("\n{sig}: stopping meshd and removing the namespaces ...");
    }
    // Daemons first, then the namespaces (explicit, because main exits with a code).
    drop(nodes);
    drop(lab);
    println!("cleaned up");
    Ok(ok)
}

fn main() {
    let mut exit_after_checks = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--exit-after-checks" => exit_after_checks = true,
            "-h" | "--help" => {
                println!("usage: wm-demo [--exit-after-checks]\n\nBrings up {NODES} meshd nodes in network namespaces, prints their status,\npings every pair over the overlay, then waits for Ctrl-C and cleans up.\nWith --exit-after-checks it exits after the checks: 0 if every ping got through.");
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
