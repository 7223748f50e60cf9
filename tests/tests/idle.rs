//! Idle peers cost nothing, and are reached again on demand (issue 10, "meshd with
//! thousands of peers"). Two sites behind cone NATs, meshd with `peer-idle-after = 4`:
//! after the first ping the pair falls silent (not one datagram between them while idle),
//! then a ping wakes it and gets through, as fast as after the join.
//!
//! Needs root (namespaces). The idle threshold is shortened so the test takes seconds; the
//! default is 60 s. The CPU and packets of one meshd with 5,000 idle peers are measured by
//! `wm-idle` (BENCHMARKS.md).

use std::time::{Duration, Instant};

use wiremesh_tests::lab::NatKind;
use wiremesh_tests::sites::{first_reply, NatMesh, SiteSpec};
use wiremesh_tests::topo::PORT;
use wiremesh_tests::{Lab, Netns};

const CONVERGE: Duration = Duration::from_secs(30);
const IDLE_AFTER_SECS: u64 = 4;

/// Datagrams from this host's meshd to `to` so far (an nftables counter made on first use).
fn sent_to(ns: &Netns, to: std::net::Ipv4Addr) -> anyhow::Result<u64> {
    if ns
        .exec(&["nft", "list", "table", "inet", "wmidle"])
        .is_err()
    {
        ns.nft(&format!(
            "table inet wmidle {{\n  chain out {{\n    type filter hook output priority 0;\n    ip daddr {to} udp sport {PORT} counter\n  }}\n}}\n"
        ))?;
    }
    ns.nft_counter("wmidle")
}

#[test]
fn idle_peers_send_nothing_and_wake_on_the_first_packet() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let mut mesh = NatMesh::new(&lab, &[])?;
    mesh.peer_idle_after = Some(IDLE_AFTER_SECS);
    mesh.add_site(&lab, SiteSpec::one(NatKind::Cone))?;
    mesh.add_site(&lab, SiteSpec::one(NatKind::Cone))?;
    mesh.join_all(CONVERGE)?;
    let (a, b) = (&mesh.nodes[0], &mesh.nodes[1]);
    let ip_b = mesh.overlay_ip(1)?;
    let ip_a = mesh.overlay_ip(0)?;
    let start = Instant::now();
    let join_to_ping = first_reply(a.ns(), &ip_b, start, CONVERGE);
    assert!(join_to_ping.is_some(), "a never reached b after the join");
    mesh.wait_path(0, 1, "direct", CONVERGE)?;
    assert!(first_reply(b.ns(), &ip_a, Instant::now(), CONVERGE).is_some());

    // Silence: past the idle threshold, count what each sends the other for a while.
    let (a_to_b0, b_to_a0) = (sent_to(a.ns(), b.public_ip)?, sent_to(b.ns(), a.public_ip)?);
    std::thread::sleep(Duration::from_secs(IDLE_AFTER_SECS + 2));
    let (a_to_b1, b_to_a1) = (sent_to(a.ns(), b.public_ip)?, sent_to(b.ns(), a.public_ip)?);
    std::thread::sleep(Duration::from_secs(2 * IDLE_AFTER_SECS));
    let (a_to_b2, b_to_a2) = (sent_to(a.ns(), b.public_ip)?, sent_to(b.ns(), a.public_ip)?);
    eprintln!(
        "a->b datagrams: {a_to_b0} -> {a_to_b1} -> {a_to_b2}; b->a: {b_to_a0} -> {b_to_a1} -> {b_to_a2}"
    );
    if a_to_b2 != a_to_b1 || b_to_a2 != b_to_a1 {
        mesh.dump_status();
        panic!(
            "idle peers kept sending: a->b {} and b->a {} datagrams in {} s after going idle",
            a_to_b2 - a_to_b1,
            b_to_a2 - b_to_a1,
            2 * IDLE_AFTER_SECS
        );
    }

    // On demand: the first ping wakes both ends (a has data for b; b sees it arrive).
    let wake = Instant::now();
    let wake_to_ping = first_reply(a.ns(), &ip_b, wake, CONVERGE);
    let back = first_reply(b.ns(), &ip_a, Instant::now(), CONVERGE);
    eprintln!(
        "BENCH idle join_to_first_ping_ms={:.0} wake_to_first_ping_ms={:.0}",
        join_to_ping.unwrap_or_default().as_secs_f64() * 1000.0,
        wake_to_ping.unwrap_or_default().as_secs_f64() * 1000.0
    );
    if wake_to_ping.is_none() || back.is_none() {
        mesh.dump_status();
        panic!(
            "idle peers were not reached again on demand (a->b {wake_to_ping:?}, b->a {back:?})"
        );
    }
    mesh.wait_path(0, 1, "direct", CONVERGE)?;
    Ok(())
}
