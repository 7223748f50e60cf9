//! `wm-loadgen`: N simulated nodes against a real coordinator on loopback; measures the
//! control plane at scale (see `wiremesh_tests::loadgen`).
//!
//! ```text
//! wm-loadgen --nodes 1000 --json
//! wm-loadgen --nodes 1000 --coordinators 3 --etcd 3 --json     # HA: three on etcd
//! wm-loadgen --nodes 50 --coordinators 3 --etcd 3 --storm       # join storm with kills
//! wm-loadgen --nodes 50 --storm                                  # one coordinator, kill -9
//! ```
//! The coordinator binary is taken from beside this one (build the workspace first).

use std::time::Duration;

use clap::Parser;
use wiremesh_tests::loadgen::{self, Options};

/// Simulated wiremesh nodes against real coordinators on loopback: cold start, admin
/// changes, coordinator restart (or, with --storm, a join storm with kills); prints what it
/// measured.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Simulated nodes (2..=60000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=60_000))]
    nodes: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Admin renames timed to every node (each is undone afterwards, also timed).
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// Nodes that apply every message with the real decoder and are compared field by
    /// field with the admin API [default: min(nodes, 20)].
    #[arg(long)]
    sample: Option<usize>,
    /// QUIC handshakes in flight at once during the cold start.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    connect_concurrency: u32,
    /// Do not restart the coordinator at the end.
    #[arg(long)]
    no_restart: bool,
    /// Restart it with `kill -9` (a crash) instead of SIGTERM.
    #[arg(long, conflicts_with = "no_restart")]
    crash: bool,
    /// Give up on any phase after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Coordinators sharing an etcd cluster (needs --etcd); node i dials coordinator
    /// i mod N first. The restart then kills one of them for good.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    coordinators: u32,
    /// etcd members on loopback for the coordinators' shared store (0: sled).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=7))]
    etcd: u32,
    /// The join storm instead of changes and a restart: half the nodes join, then the
    /// other half joins while coordinator 1 and etcd member 2 are killed with kill -9
    /// (with --coordinators 3 --etcd 3), or while the one coordinator is killed with
    /// kill -9 and started again on its data (with one coordinator).
    #[arg(long)]
    storm: bool,
    /// Issue 13: split the nodes into G groups under a deny-by-default policy (a member
    /// may reach only its own group), check every node holds only its group, and stop
    /// after the cold start (reporting its bytes per node).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000), conflicts_with = "storm")]
    groups: u32,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn main() {
    let cli = Cli::parse();
    let mut opts = Options::new(cli.nodes as usize);
    opts.changes = cli.changes;
    if let Some(s) = cli.sample {
        opts.sample = s.min(cli.nodes as usize);
    }
    opts.connect_concurrency = cli.connect_concurrency as usize;
    opts.restart = !cli.no_restart;
    opts.crash = cli.crash;
    opts.timeout = Duration::from_secs(cli.timeout);
    opts.progress = !cli.quiet;
    opts.coordinators = cli.coordinators as usize;
    opts.etcd = cli.etcd as usize;
    opts.storm = cli.storm;
    opts.groups = cli.groups as usize;
    match loadgen::run(&opts) {
        Ok(report) => {
            if cli.json {
                println!("{}", report.to_json());
            } else {
                let json = report.to_json();
                if let Some(obj) = json.as_object() {
                    for (k, v) in obj {
                        println!("{k:32} {v}");
                    }
                }
            }
        }
        Err(e) => {
            eprintln!("wm-loadgen: {e:#}");
            std::process::exit(1);
        }
    }
}
