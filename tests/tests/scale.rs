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

/// The HA join storm: 50 nodes joining through three coordinators on a three-member etcd
/// cluster, `kill -9` of one coordinator and one etcd member midway. No address twice, no
/// acknowledged join lost, every node in at the end (its own map field by field against
/// the admin API).
#[test]
fn a_join_storm_across_three_coordinators_survives_killing_one_and_an_etcd_member() {
    let mut opts = Options::new(50);
    opts.coordinators = 3;
    opts.etcd = 3;
    opts.storm = true;
    let report = loadgen::run(&opts).unwrap_or_else(|e| panic!("wm-loadgen --storm: {e:#}"));
    eprintln!("BENCH storm {}", report.to_json());
    let storm = report.storm.expect("the storm ran");
    assert!(
        storm.acknowledged_before_kill > 0,
        "the kills came before any join"
    );
    assert!(
        storm.acknowledged_before_kill < 50,
        "the kills came after every join"
    );
    assert_eq!(storm.members, 50, "every node joined");
    assert_eq!(storm.duplicate_addresses, 0);
    assert_eq!(storm.lost_joins, 0);
}

/// The join storm against one coordinator on sled: 50 nodes, the coordinator killed with
/// `kill -9` while the second half joins and started again on its data. No address twice,
/// no acknowledged join lost (acknowledged means flushed), every node in at the end.
#[test]
fn a_join_storm_survives_kill_9_of_the_only_coordinator() {
    let mut opts = Options::new(50);
    opts.storm = true;
    let report = loadgen::run(&opts).unwrap_or_else(|e| panic!("wm-loadgen --storm: {e:#}"));
    eprintln!("BENCH storm-single {}", report.to_json());
    let storm = report.storm.expect("the storm ran");
    assert!(
        storm.acknowledged_before_kill > 0,
        "the kill came before any join"
    );
    assert!(
        storm.acknowledged_before_kill < 50,
        "the kill came after every join"
    );
    assert_eq!(storm.members, 50, "every node joined");
    assert_eq!(storm.duplicate_addresses, 0);
    assert_eq!(storm.lost_joins, 0);
}

/// Three coordinators on etcd at 200 nodes: converge, changes, and one coordinator killed
/// for good: its nodes move to the others and resume without full netmaps.
#[test]
fn three_coordinators_on_etcd_converge_and_absorb_the_loss_of_one() {
    let mut opts = Options::new(200);
    opts.changes = 5;
    opts.sample = 10;
    opts.coordinators = 3;
    opts.etcd = 3;
    opts.crash = true;
    let report =
        loadgen::run(&opts).unwrap_or_else(|e| panic!("wm-loadgen --coordinators 3: {e:#}"));
    eprintln!("BENCH scale-ha {}", report.to_json());
    assert_eq!(report.coordinators, 3);
    assert!(report.reconnect_s.is_some());
    assert_eq!(
        report.reconnect_full_netmaps, 0,
        "nodes moving to another coordinator got full netmaps instead of resuming"
    );
}
