//! `wm-idle`: what one real meshd costs when idle in a network of thousands of members
//! (issue 10, "meshd with thousands of peers"). Needs root.
//!
//! In a private network namespace (only its loopback exists), `wm-loadgen`'s scenario joins
//! N simulated members to a real coordinator; then a real meshd (with its TUN) joins the
//! same network and gets their N peers. Nobody sends it anything. After `--settle` seconds
//! it measures, over `--window` seconds: meshd's CPU (% of one core), its RSS, and the UDP
//! datagrams its WireGuard socket sends (an nftables counter on the source port). The
//! simulated members have no WireGuard socket: whatever meshd sends them is traffic a real
//! idle peer would also get (handshakes, probes, keepalives) and goes nowhere but loopback.
//!
//! ```text
//! wm-idle --peers 5000 --json
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::json;
use wiremesh_tests::loadgen::{self, Options, NETWORK};
use wiremesh_tests::{util, Meshd, Netns};

/// One real meshd among N simulated members, idle: CPU, RSS, underlay packets.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Simulated members (meshd's peers).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(2..=60_000))]
    peers: u32,
    /// Seconds after meshd holds every peer before measuring.
    #[arg(long, default_value_t = 60)]
    settle: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(report) => {
            if cli.json {
                println!("{report}");
            } else if let Some(obj) = report.as_object() {
                for (k, v) in obj {
                    println!("{k:24} {v}");
                }
            }
        }
        Err(e) => {
            eprintln!("wm-idle: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<serde_json::Value> {
    let ns = Arc::new(Netns::new("idle")?);
    let name = ns.name().to_owned();
    // Everything this process starts from now on (coordinator, meshd) and every socket it
    // opens lives in the namespace: nothing leaves it.
    let entered = std::fs::File::open(format!("/run/netns/{name}"))
        .map_err(anyhow::Error::from)
        .and_then(|handle| {
            nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the namespace")
        });
    entered?;
    let result = measure(cli, &ns);
    // This process is in the namespace too: dropping `Netns` would kill it along with
    // what runs there. meshd and the coordinator are gone (their owners dropped them), so
    // deleting the namespace is all that is left.
    std::mem::forget(ns);
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &name])
        .status();
    result
}

fn measure(cli: &Cli, ns: &Arc<Netns>) -> anyhow::Result<serde_json::Value> {
    ns.nft(&format!(
        "table inet wmidle {{\n  chain out {{\n    type filter hook output priority 0;\n    udp sport {} counter\n  }}\n}}\n",
        wiremesh_tests::topo::PORT
    ))?;

    let (tx, rx) = std::sync::mpsc::channel();
    let release = Arc::new(AtomicBool::new(false));
    let mut opts = Options::new(cli.peers as usize);
    opts.progress = true;
    opts.hold = Some((tx, release.clone()));
    let generator = std::thread::spawn(move || loadgen::run(&opts));
    let token = rx
        .recv_timeout(Duration::from_secs(900))
        .context("the simulated members did not all join")?;

    let meshd = Meshd::start_unconfigured(ns, "idle", None)?;
    let joined = Instant::now();
    meshd.join_with_token(NETWORK, &token)?;
    let want = cli.peers as usize;
    loop {
        let have = meshd.peer_keys()?.len();
        if have == want {
            break;
        }
        if joined.elapsed() > Duration::from_secs(300) {
            bail!("meshd holds {have} of {want} peers after 300 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let to_peers = joined.elapsed();
    eprintln!(
        "wm-idle: meshd holds {want} peers {:.1} s after joining; settling {} s",
        to_peers.as_secs_f64(),
        cli.settle
    );
    let pid = {
        let config = meshd.dir().join("meshd.toml");
        let out = std::process::Command::new("pgrep")
            .args(["-f", &config.to_string_lossy()])
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .context("meshd's pid")?
    };
    std::thread::sleep(Duration::from_secs(cli.settle));
    let sample = || -> anyhow::Result<(f64, u64, Instant)> {
        Ok((
            util::proc_cpu_s(pid),
            ns.nft_counter("wmidle")?,
            Instant::now(),
        ))
    };
    let (cpu0, pkts0, t0) = sample()?;
    std::thread::sleep(Duration::from_secs(cli.window));
    let (cpu1, pkts1, t1) = sample()?;
    let secs = (t1 - t0).as_secs_f64();
    let rss = util::proc_memory_mb(pid, "VmRSS");
    release.store(true, Ordering::Relaxed);
    let _ = generator.join();
    Ok(json!({
        "peers": want,
        "join_to_all_peers_s": (to_peers.as_secs_f64() * 10.0).round() / 10.0,
        "settle_s": cli.settle,
        "window_s": cli.window,
        "meshd_cpu_pct": ((cpu1 - cpu0) / secs * 1000.0).round() / 10.0,
        "meshd_rss_mb": (rss * 10.0).round() / 10.0,
        "underlay_pps": (((pkts1 - pkts0) as f64 / secs) * 10.0).round() / 10.0,
    }))
}
