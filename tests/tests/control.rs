//! The control plane end to end (issue 3's acceptance): a coordinator on the lab's
//! internet, nodes on their own sites that start without any network and join with
//! `meshctl join`; addresses that survive restarts; tunnels that outlive the coordinator;
//! membership changes that reach every node within a second.

use std::collections::BTreeSet;
use std::time::Duration;

use wiremesh_tests::control::{
    self, addresses, lacks_peer, lists_peer, measure_propagation, ping_all_pairs, start_site,
    summary, wait_full_mesh, JoinedMesh, CIDR, NETWORK,
};
use wiremesh_tests::topo::PORT;
use wiremesh_tests::{ping, ping_once, wait_until, Lab, Meshd, NodeKey, Peer, WgGo};

/// Generous: tests share two cores with other tests.
const CONVERGE: Duration = Duration::from_secs(30);
/// The bound for a membership change to reach every other node.
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);
/// How long nodes may take to reconnect once the coordinator is back (reconnection uses
/// backoff up to 30 s plus jitter; the QUIC idle timeout is 15 s).
const RECONNECT: Duration = Duration::from_secs(60);

fn in_cidr(ip: &str) -> bool {
    // 10.9.8.0/24
    ip.strip_prefix("10.9.8.")
        .and_then(|h| h.parse::<u8>().ok())
        .is_some_and(|h| h != 0 && h != 255)
}

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
        assert!(in_cidr(ip), "node {} got {ip}, outside {CIDR}", n.name());
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

/// A node that joins without a token is pending until authorised; authorising,
/// deauthorising and deleting it reaches every other node within a second; a deauthorised
/// key's packets are refused.
#[test]
fn membership_changes_reach_every_node_within_a_second() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let mesh = JoinedMesh::new(&lab, 3, CONVERGE)?;
    let ips = addresses(&mesh.nodes)?;
    let others: Vec<&Meshd> = mesh.nodes.iter().collect();

    // Node d knows its private key, so that wireguard-go can impersonate it later.
    let d_key = NodeKey::generate()?;
    let d = start_site(&lab, 3, "d", Some(d_key.clone()))?;
    let pin = mesh.coord.pin()?;
    let out = d.join_with_pin(NETWORK, mesh.coord.control_addr(), &pin)?;
    eprintln!("meshctl join (no token):\n{out}");
    d.wait_control_state("pending", CONVERGE)?;
    let lower = out.to_lowercase();
    assert!(
        lower.contains("pending") || lower.contains("authoriz") || lower.contains("authoris"),
        "meshctl join does not say the node waits for an admin: {out:?}"
    );
    let text = d.meshctl_status_text()?;
    assert!(
        text.contains("state: pending"),
        "`meshctl status` does not say pending:\n{text}"
    );
    let d_pub = d.public_key()?;
    assert_eq!(d_pub, d_key.public);
    assert!(d.peer_keys()?.is_empty(), "pending node d has peers");
    let member = mesh
        .coord
        .member(NETWORK, &d_pub)?
        .expect("the coordinator does not list pending node d");
    assert_eq!(member["authorized"], false, "{member}");
    for n in &others {
        assert!(
            !n.peer_keys()?.contains(&d_pub),
            "node {} lists pending node d",
            n.name()
        );
    }

    let mut authorize = Vec::new();
    let mut deauthorize = Vec::new();
    let mut delete = Vec::new();
    let check = |p: &control::Propagation, into: &mut Vec<Duration>| {
        into.push(p.after_command());
        assert!(
            p.after_command() < PROPAGATION_BOUND,
            "{}: slowest node after {:?} (bound {PROPAGATION_BOUND:?}): {}",
            p.label,
            p.after_command(),
            p.bench_line()
        );
    };

    for round in 0..3 {
        // Authorise: every other node lists d.
        let (_, p) =
            measure_propagation("authorize", &others, lists_peer(&d_pub), CONVERGE, || {
                mesh.coord.admin(&["authorize", NETWORK, &d_pub])
            })?;
        check(&p, &mut authorize);
        d.wait_control_state("connected", CONVERGE)?;
        let d_ip = d.address()?;
        assert!(in_cidr(&d_ip), "d got {d_ip}");
        wait_until(CONVERGE, "d -> a overlay ping after authorisation", || {
            ping_once(d.ns(), &ips[0])
        })?;
        wait_until(CONVERGE, "b -> d overlay ping after authorisation", || {
            ping_once(mesh.nodes[1].ns(), &d_ip)
        })?;

        if round == 2 {
            break;
        }
        // Deauthorise: every other node drops d.
        let (_, p) =
            measure_propagation("deauthorize", &others, lacks_peer(&d_pub), CONVERGE, || {
                mesh.coord.admin(&["deauthorize", NETWORK, &d_pub])
            })?;
        check(&p, &mut deauthorize);
        d.wait_control_state("pending", CONVERGE)?;
        assert_eq!(
            ping(d.ns(), &ips[0], 3),
            100.0,
            "deauthorised d still reaches a over the overlay"
        );

        if round == 0 {
            // Someone holding d's private key, ignoring its netmap, sends to a from another
            // site: a refuses the handshake as coming from an unknown key.
            let (e_ns, _) = lab.internet_host("e", &format!("{}/24", control::site_ip(4)))?;
            let unknown_before = mesh.nodes[0].dropped("unknown-peer")?;
            let rogue = WgGo::start(&e_ns, &d_key, PORT, &format!("{d_ip}/24"))?;
            let mut to_a = Peer::new(
                &mesh.nodes[0].public_key()?,
                Some(format!("{}:{PORT}", control::site_ip(0))),
                &format!("{}/32", ips[0]),
            );
            to_a.persistent_keepalive = Some(1);
            rogue.set_peer(&to_a)?;
            assert_eq!(
                ping(&e_ns, &ips[0], 5),
                100.0,
                "a accepted packets from deauthorised d's key"
            );
            wait_until(
                CONVERGE,
                "a counts handshakes from deauthorised d's key as unknown-peer",
                || {
                    mesh.nodes[0]
                        .dropped("unknown-peer")
                        .is_ok_and(|n| n > unknown_before)
                },
            )?;
            assert_eq!(
                rogue.latest_handshake(&mesh.nodes[0].public_key()?)?,
                0,
                "the impersonator completed a handshake with a"
            );
            drop(rogue);
        }
    }

    // Delete: every other node drops d, and d is refused.
    let (_, p) = measure_propagation("delete", &others, lacks_peer(&d_pub), CONVERGE, || {
        mesh.coord.admin(&["delete-member", NETWORK, &d_pub])
    })?;
    check(&p, &mut delete);
    d.wait_control_state("denied", CONVERGE)?;
    assert!(
        mesh.coord.member(NETWORK, &d_pub)?.is_none(),
        "the coordinator still lists deleted d"
    );
    assert_eq!(
        ping(d.ns(), &ips[0], 3),
        100.0,
        "deleted d still reaches a over the overlay"
    );

    eprintln!("{}", summary("authorize", &authorize));
    eprintln!("{}", summary("deauthorize", &deauthorize));
    eprintln!("{}", summary("delete", &delete));
    drop(d);
    Ok(())
}
