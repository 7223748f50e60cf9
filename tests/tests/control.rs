//! The control plane end to end (issue 3's acceptance): a coordinator on the lab's
//! internet, nodes on their own sites that start without any network and join with
//! `meshctl join`; addresses that survive restarts; tunnels that outlive the coordinator.
//! (Membership propagation is measured in `propagation.rs`, alone.)

use std::collections::BTreeSet;
use std::time::Duration;

use wiremesh_tests::control::{
    self as control, addresses, ping_all_pairs, wait_full_mesh, JoinedMesh, CIDR, NETWORK,
};
use wiremesh_tests::{ping, ping_once, wait_until, Lab, Meshd};

/// Generous: tests share two cores with other tests.
const CONVERGE: Duration = Duration::from_secs(30);
/// How long nodes may take to reconnect once the coordinator is back (reconnection uses
/// backoff up to 30 s plus jitter; the QUIC idle timeout is 15 s).
const RECONNECT: Duration = Duration::from_secs(60);

fn wait_all_connected(nodes: &[Meshd], timeout: Duration) -> anyhow::Result<()> {
    for n in nodes {
        n.wait_control_state("connected", timeout)?;
    }
    Ok(())
}

/// Each node's address as the coordinator lists it, in node order.
fn member_addresses(mesh: &JoinedMesh) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for n in &mesh.nodes {
        let key = n.public_key()?;
        let m = mesh
            .coord
            .member(NETWORK, &key)?
            .unwrap_or_else(|| panic!("the coordinator does not list node {} ({key})", n.name()));
        out.push(m["address"].as_str().unwrap_or_default().to_owned());
    }
    Ok(out)
}

#[test]
fn three_sites_join_with_a_token_and_ping_each_other() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let mesh = JoinedMesh::new(&lab, 3, CONVERGE)?;

    let ips = addresses(&mesh.nodes)?;
    eprintln!("overlay addresses: {ips:?}");
    for (n, ip) in mesh.nodes.iter().zip(&ips) {
        assert!(
            control::in_cidr(ip),
            "node {} got {ip}, outside {CIDR}",
            n.name()
        );
        let with_prefix = n.address_with_prefix()?.unwrap_or_default();
        assert_eq!(
            with_prefix,
            format!("{ip}/24"),
            "node {}: address carries the network's prefix",
            n.name()
        );
        let control = n.control()?;
        assert_eq!(control["network"], NETWORK, "node {}: {control}", n.name());
        assert_eq!(
            control["state"],
            "connected",
            "node {}: {control}",
            n.name()
        );
        assert!(
            control["netmap-version"].as_u64().is_some(),
            "node {}: no netmap version in {control}",
            n.name()
        );
    }
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), ips.len(), "addresses not distinct: {ips:?}");

    // The coordinator agrees: three authorised members with exactly these addresses.
    let members = mesh.coord.members(NETWORK)?;
    assert_eq!(members.len(), 3, "members: {members:?}");
    assert!(
        members.iter().all(|m| m["authorized"] == true),
        "not all members authorised: {members:?}"
    );
    assert_eq!(member_addresses(&mesh)?, ips);

    // Each node routes every other node's address to it and has its site as endpoint.
    for n in &mesh.nodes {
        for (other, ip) in mesh.nodes.iter().zip(&ips) {
            if other.name() == n.name() {
                continue;
            }
            let p = n.peer_status(&other.public_key()?)?;
            let allowed: Vec<&str> = p["allowed-ips"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            assert!(
                allowed.contains(&format!("{ip}/32").as_str()),
                "node {} routes {allowed:?} to {}, expected {ip}/32",
                n.name(),
                other.name()
            );
            assert!(
                !p["endpoint"].is_null(),
                "node {} has no endpoint for {}: {p}",
                n.name(),
                other.name()
            );
        }
    }

    ping_all_pairs(&mesh.nodes, CONVERGE)?;
    for (i, n) in mesh.nodes.iter().enumerate() {
        let to = &ips[(i + 1) % ips.len()];
        assert_eq!(
            ping(n.ns(), to, 3),
            0.0,
            "node {} -> {to} lost pings",
            n.name()
        );
    }
    Ok(())
}

#[test]
fn addresses_stay_across_meshd_restarts_coordinator_restart_and_rejoin() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let mut mesh = JoinedMesh::new(&lab, 3, CONVERGE)?;
    let ips = addresses(&mesh.nodes)?;
    let keys = mesh
        .nodes
        .iter()
        .map(Meshd::public_key)
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!("overlay addresses: {ips:?}");
    ping_all_pairs(&mesh.nodes, CONVERGE)?;

    // 1. Every meshd restarted (SIGKILL, same state directory).
    for n in &mut mesh.nodes {
        n.restart()?;
    }
    for (n, ip) in mesh.nodes.iter().zip(&ips) {
        assert_eq!(
            &n.address()?,
            ip,
            "node {}: address changed across its restart",
            n.name()
        );
    }
    assert_eq!(
        mesh.nodes
            .iter()
            .map(Meshd::public_key)
            .collect::<anyhow::Result<Vec<_>>>()?,
        keys,
        "a node key changed across the restart"
    );
    wait_all_connected(&mesh.nodes, CONVERGE)?;
    assert_eq!(addresses(&mesh.nodes)?, ips, "addresses after reconnecting");
    ping_all_pairs(&mesh.nodes, CONVERGE)?;

    // 2. The coordinator restarted (same data directory). Nodes notice it going (it closes
    //    their connections), then reconnect to the new process.
    mesh.coord.stop()?;
    for n in &mesh.nodes {
        n.wait_control_state("connecting", CONVERGE)?;
    }
    mesh.coord.start_again()?;
    assert_eq!(
        member_addresses(&mesh)?,
        ips,
        "the restarted coordinator lists other addresses"
    );
    wait_all_connected(&mesh.nodes, RECONNECT)?;
    assert_eq!(
        addresses(&mesh.nodes)?,
        ips,
        "addresses after the coordinator restart"
    );
    ping_all_pairs(&mesh.nodes, CONVERGE)?;

    // 3. Node c leaves and joins again with the same key and the reusable token.
    let c = &mesh.nodes[2];
    c.leave(NETWORK)?;
    let after_leave = c.status()?;
    assert!(
        after_leave["control"].is_null(),
        "node c still reports a network after leave: {}",
        after_leave["control"]
    );
    assert!(
        after_leave["address"].is_null(),
        "node c kept an address after leave: {}",
        after_leave["address"]
    );
    assert!(
        c.peer_keys()?.is_empty(),
        "node c kept peers after leave: {:?}",
        c.peer_keys()?
    );
    let control = c.join_with_token(NETWORK, &mesh.token)?;
    assert_eq!(control["state"], "connected", "re-join: {control}");
    assert_eq!(
        c.address()?,
        ips[2],
        "node c got another address on re-joining"
    );
    assert_eq!(
        mesh.coord.members(NETWORK)?.len(),
        3,
        "re-joining with the same key made a second member"
    );
    wait_full_mesh(&mesh.nodes, CONVERGE)?;
    assert_eq!(addresses(&mesh.nodes)?, ips);
    ping_all_pairs(&mesh.nodes, CONVERGE)?;
    Ok(())
}

#[test]
fn tunnels_outlive_a_coordinator_outage_and_nodes_reconnect() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let mut mesh = JoinedMesh::new(&lab, 3, CONVERGE)?;
    let ips = addresses(&mesh.nodes)?;
    ping_all_pairs(&mesh.nodes, CONVERGE)?;

    // The coordinator dies without a goodbye; nodes notice by the QUIC idle timeout.
    mesh.coord.kill9()?;
    for (i, n) in mesh.nodes.iter().enumerate() {
        let to = &ips[(i + 1) % ips.len()];
        assert_eq!(
            ping(n.ns(), to, 3),
            0.0,
            "node {} -> {to}: the tunnel stopped with the coordinator",
            n.name()
        );
    }

    // A node restarted while the coordinator is down brings its tunnels back from its cache.
    let b = &mut mesh.nodes[1];
    b.restart()?;
    let status = b.status()?;
    assert_eq!(
        status["address"]
            .as_str()
            .map(|a| a.split('/').next().unwrap_or(a)),
        Some(ips[1].as_str()),
        "node b lost its address across a restart without coordinator: {status}"
    );
    assert_ne!(
        status["control"]["state"], "connected",
        "node b claims a connection to a dead coordinator: {}",
        status["control"]
    );
    let b = &mesh.nodes[1];
    for (j, other) in mesh.nodes.iter().enumerate() {
        if j == 1 {
            continue;
        }
        assert!(
            b.peer_keys()?.contains(&other.public_key()?),
            "node b did not restore peer {} from its cache",
            other.name()
        );
        wait_until(
            CONVERGE,
            &format!("b -> {} overlay ping from the cached netmap", other.name()),
            || ping_once(b.ns(), &ips[j]),
        )?;
        wait_until(
            CONVERGE,
            &format!("{} -> b overlay ping from the cached netmap", other.name()),
            || ping_once(other.ns(), &ips[1]),
        )?;
    }

    // Every node sees the outage.
    for n in &mesh.nodes {
        n.wait_control_state("connecting", CONVERGE)?;
    }
    ping_all_pairs(&mesh.nodes, CONVERGE)?;

    // The coordinator returns; nodes reconnect by themselves.
    mesh.coord.start_again()?;
    let back = std::time::Instant::now();
    wait_all_connected(&mesh.nodes, RECONNECT)?;
    eprintln!(
        "all nodes connected {:.1} s after the coordinator came back",
        back.elapsed().as_secs_f64()
    );
    assert_eq!(addresses(&mesh.nodes)?, ips);
    ping_all_pairs(&mesh.nodes, CONVERGE)?;
    Ok(())
}
