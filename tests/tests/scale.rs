//! The control plane at scale, small enough for CI (issue 10): `wm-loadgen`'s scenario with
//! a few hundred simulated nodes against the real coordinator on loopback. The large runs
//! (1,000 to 10,000 nodes) are benchmarks: `bench/scale.sh`, figures in BENCHMARKS.md.
//!
//! Nothing here needs root (loopback only) and nothing asserts a wall-clock time: the
//! checks are that every node converges to the exact netmap (by key; a sample field by
//! field against the admin API, inside the generator), that resuming after a coordinator
//! restart sends no full netmaps, and that what one change costs a node does not grow
//! with the network.
//!
//! In its own test binary on purpose: cargo runs test binaries one after the other, so the
//! generator does not share the two cores with the namespace tests.

use wiremesh_tests::loadgen::{self, Options};

fn run(nodes: usize, restart: bool) -> loadgen::Report {
    let mut opts = Options::new(nodes);
    opts.changes = 5;
    opts.restart = restart;
    opts.sample = 10;
    let report =
        loadgen::run(&opts).unwrap_or_else(|e| panic!("wm-loadgen --nodes {nodes}: {e:#}"));
    eprintln!("BENCH scale {}", report.to_json());
    report
}

#[test]
fn two_hundred_nodes_converge_resume_and_changes_cost_the_same_at_any_size() {
    let big = run(200, true);
    assert_eq!(big.nodes, 200);
    assert_eq!(big.changes, 10, "5 renames, each undone");
    // A restart with every node connected: all back and current, every one resumed from
    // its version (changes), none needed a full netmap.
    assert!(big.reconnect_s.is_some());
    assert_eq!(
        big.reconnect_full_netmaps, 0,
        "nodes got full netmaps after the restart instead of resuming"
    );
    // One rename reaches a node as one change frame of one entry (about 90 bytes), shared
    // by every session: nothing proportional to the network.
    assert!(
        big.bytes_per_change_per_node > 40.0 && big.bytes_per_change_per_node < 200.0,
        "{} bytes per change per node",
        big.bytes_per_change_per_node
    );
    let small = run(50, false);
    let ratio = big.bytes_per_change_per_node / small.bytes_per_change_per_node;
    assert!(
        (0.5..=2.0).contains(&ratio),
        "bytes per change per node grew from {} (50 nodes) to {} (200 nodes)",
        small.bytes_per_change_per_node,
        big.bytes_per_change_per_node
    );
}
