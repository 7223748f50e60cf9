//! Dual stack over the mesh (issue 15, the IPv6 overlay): a network created with the
//! defaults has an IPv6 ULA /64 beside its IPv4 prefix, and every member an IPv6 address
//! with its IPv4 host part, on three NAT'd IPv4 sites (cone, cone, symmetric: one pair
//! direct, two relayed). Needs root.
//!
//! - Every node's status shows its IPv6 address; the admin's member list, text and JSON,
//!   shows every member's.
//! - Ping and a checksummed TCP transfer between every pair over overlay IPv6, on the
//!   direct and on the relayed paths; meshd answers AAAA for member names.
//! - An approved IPv6 route: a reaches an address behind c through the mesh.
//! - The addresses stay across a meshd restart (kill -9) and a coordinator restart.
//! - An admin-set IPv6 address reaches the node and its peers: pinged at the new address.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use anyhow::Context as _;
use ipnet::Ipv6Net;
use wiremesh_tests::control::NETWORK;
use wiremesh_tests::lab::{ping_once, Lab};
use wiremesh_tests::sites::{NatMesh, SiteSpec};
use wiremesh_tests::{util, xfer};

/// Generous: tests share two cores with other tests.
const CONVERGE: Duration = Duration::from_secs(30);

/// Node `i`'s IPv6 overlay address from its status (`address6`, without the prefix).
fn address6(mesh: &NatMesh, i: usize) -> anyhow::Result<Ipv6Addr> {
    let status = mesh.nodes[i].meshd.status()?;
    let text = status["address6"]
        .as_str()
        .with_context(|| format!("{} has no address6: {status}", mesh.nodes[i].describe()))?;
    let net: Ipv6Net = text.parse()?;
    Ok(net.addr())
}

/// Every node pings every other at `addrs` (waiting for paths to settle).
fn ping_all(mesh: &NatMesh, addrs: &[String]) -> anyhow::Result<()> {
    for (i, node) in mesh.nodes.iter().enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                util::wait_until(
                    CONVERGE,
                    &format!("{} ping {addr}", mesh.pair(i, j)),
                    || ping_once(node.ns(), addr),
                )?;
            }
        }
    }
    Ok(())
}

#[test]
fn members_reach_each_other_over_overlay_ipv6_and_keep_their_addresses() -> anyhow::Result<()> {
    util::require_root()?;
    let lab = Lab::new()?;
    let mut mesh = NatMesh::new(&lab, &SiteSpec::cone_cone_symmetric())?;
    mesh.join_all(CONVERGE)?;
    let n = mesh.nodes.len();

    // The network's prefix, chosen by the coordinator: a ULA /64.
    let network = mesh.coord.admin_json(&["network", "show", NETWORK])?;
    let cidr6: Ipv6Net = network["cidr6"]
        .as_str()
        .with_context(|| format!("the default network is not dual-stack: {network}"))?
        .parse()?;
    assert_eq!(cidr6.prefix_len(), 64, "{network}");
    assert_eq!(cidr6.network().octets()[0], 0xfd, "a ULA: {network}");

    // Each member's IPv6 address: the prefix with its IPv4 host part.
    let mut v6 = Vec::new();
    for i in 0..n {
        let v4: std::net::Ipv4Addr = mesh.overlay_ip(i)?.parse()?;
        let want = Ipv6Addr::from(u128::from(cidr6.network()) | u128::from(v4.octets()[3]));
        let got = util::wait_until(
            CONVERGE,
            &format!("{} has its IPv6 address", mesh.nodes[i].describe()),
            || address6(&mesh, i).is_ok(),
        )
        .and_then(|_| address6(&mesh, i))?;
        assert_eq!(got, want, "{}", mesh.nodes[i].describe());
        v6.push(got);
    }
    // The admin sees them, in JSON and in the members table's IPV6 column.
    let members = mesh.coord.admin_json(&["members", NETWORK])?;
    for (i, node) in mesh.nodes.iter().enumerate() {
        let m = members
            .as_array()
            .and_then(|a| a.iter().find(|m| m["public-key"] == node.key.as_str()))
            .with_context(|| format!("{} not listed: {members}", node.describe()))?;
        assert_eq!(m["address6"], v6[i].to_string(), "{m}");
    }
    let table = mesh.coord.admin(&["members", NETWORK])?;
    assert!(
        table.lines().next().is_some_and(|h| h.contains("IPV6")),
        "{table}"
    );
    for a in &v6 {
        assert!(table.contains(&a.to_string()), "{table}");
    }
    // meshctl status prints it.
    let text = mesh.nodes[0].meshd.meshctl_status_text()?;
    assert!(
        text.contains(&format!("ipv6 address: {}/64", v6[0])),
        "{text}"
    );

    // Ping and TCP over IPv6, direct (a-b) and relayed (a-c, b-c).
    let addrs: Vec<String> = v6.iter().map(ToString::to_string).collect();
    ping_all(&mesh, &addrs)?;
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        mesh.wait_path(i, j, mesh.expected_path(i, j), CONVERGE)?;
    }
    for (from, to, port) in [(0, 1, 7101), (0, 2, 7102), (2, 1, 7103)] {
        let t = xfer::transfer(
            mesh.nodes[from].ns(),
            mesh.nodes[to].ns(),
            &format!("[{}]", v6[to]),
            port,
            4 << 20,
            CONVERGE,
        )?;
        eprintln!(
            "[dual_stack] TCP over IPv6 {}: {:.0} Mbit/s",
            mesh.pair(from, to),
            t.mbit_per_s()
        );
    }

    // Names: AAAA from meshd's DNS server (on the node's IPv4 overlay address).
    let ips4: Vec<String> = (0..n)
        .map(|i| mesh.overlay_ip(i))
        .collect::<Result<_, _>>()?;
    for (j, node) in mesh.nodes.iter().enumerate() {
        let name = format!("{}.{NETWORK}.mesh.internal", node.name());
        let out = mesh.nodes[0].ns().exec(&[
            "dig",
            &format!("@{}", ips4[0]),
            "+short",
            "+time=1",
            "+tries=3",
            &name,
            "AAAA",
        ])?;
        let got: Vec<IpAddr> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        assert_eq!(got, vec![IpAddr::V6(v6[j])], "AAAA {name}: {out}");
    }

    // An IPv6 route: c advertises a prefix behind it (an address of it on c's loopback),
    // the admin approves it, and a reaches that address through the mesh.
    let pod6 = "fd99:244:3::/64";
    let c_ns = mesh.nodes[2].ns().clone();
    c_ns.ip(&["-6", "addr", "add", "fd99:244:3::1/128", "dev", "lo"])?;
    let config = mesh.nodes[2].meshd.config().clone().advertising(&[pod6]);
    mesh.nodes[2].meshd.restart_with(config)?;
    mesh.nodes[2]
        .meshd
        .wait_control_state("connected", CONVERGE)?;
    let name_c = mesh.nodes[2].name().to_owned();
    util::wait_until(CONVERGE, "the coordinator sees c's IPv6 route", || {
        mesh.coord
            .admin(&["members", NETWORK])
            .is_ok_and(|t| t.contains(pod6))
    })?;
    mesh.coord
        .admin(&["approve-route", NETWORK, &name_c, pod6])?;
    let c_key = mesh.nodes[2].key.clone();
    util::wait_until(CONVERGE, "a routes the IPv6 prefix to c", || {
        mesh.nodes[0].meshd.peer_status(&c_key).is_ok_and(|p| {
            p["allowed-ips"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == pod6))
        })
    })?;
    let route = mesh.nodes[0].ns().ip(&["-6", "route", "show", pod6])?;
    assert!(
        route.contains(&mesh.nodes[0].meshd.config().interface),
        "a's kernel route for {pod6}: {route:?}"
    );
    util::wait_until(CONVERGE, "a pings fd99:244:3::1 behind c", || {
        ping_once(mesh.nodes[0].ns(), "fd99:244:3::1")
    })?;
    // An address the mesh carries is never a path. c does not offer the one behind its
    // route as a candidate, and when a and b probe every path to c now (`meshctl ping`),
    // nothing answers at an overlay address (the probe would have crossed the tunnel,
    // and a path over it carries the tunnel inside itself: CI once saw exactly that).
    let pod6_net: Ipv6Net = pod6.parse()?;
    let tunnelled = |a: &str| -> bool {
        a.trim_start_matches('[')
            .split(']')
            .next()
            .and_then(|h| h.parse::<Ipv6Addr>().ok())
            .is_some_and(|ip| pod6_net.contains(&ip) || cidr6.contains(&ip))
    };
    let members = mesh.coord.admin_json(&["members", NETWORK])?;
    let c_entry = members
        .as_array()
        .and_then(|a| a.iter().find(|m| m["public-key"] == c_key.as_str()))
        .with_context(|| format!("c not listed: {members}"))?;
    assert!(
        !c_entry["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str())
            .any(tunnelled),
        "c offers an overlay address as a candidate: {c_entry}"
    );
    for i in [0, 1] {
        let report = mesh.nodes[i].meshd.disco_ping(&c_key)?;
        for answer in report["answers"].as_array().into_iter().flatten() {
            let addr = answer["addr"].as_str().unwrap_or_default();
            assert!(
                !tunnelled(addr),
                "{} found a path to c through the mesh: {report}",
                mesh.nodes[i].describe()
            );
        }
        mesh.wait_path(i, 2, mesh.expected_path(i, 2), CONVERGE)?;
    }

    // Restarts keep the addresses: meshd (kill -9), then the coordinator.
    mesh.nodes[1].meshd.restart()?;
    mesh.nodes[1]
        .meshd
        .wait_control_state("connected", CONVERGE)?;
    mesh.coord.restart()?;
    for (i, want) in v6.iter().enumerate() {
        mesh.nodes[i]
            .meshd
            .wait_control_state("connected", CONVERGE)?;
        util::wait_until(
            CONVERGE,
            &format!("{} has its IPv6 address again", mesh.nodes[i].describe()),
            || address6(&mesh, i).is_ok_and(|a| a == *want),
        )?;
    }
    ping_all(&mesh, &addrs)?;

    // An admin-set address (above the ones derived from IPv4): b moves there, and every
    // node reaches it.
    let moved = Ipv6Addr::from(u128::from(cidr6.network()) + 0x1_0002);
    let name_b = mesh.nodes[1].name().to_owned();
    mesh.coord
        .admin(&["set-address", NETWORK, &name_b, &moved.to_string()])?;
    util::wait_until(CONVERGE, "b has its admin-set IPv6 address", || {
        address6(&mesh, 1).is_ok_and(|a| a == moved)
    })?;
    for i in [0, 2] {
        util::wait_until(
            CONVERGE,
            &format!("{} pings b at {moved}", mesh.nodes[i].describe()),
            || ping_once(mesh.nodes[i].ns(), &moved.to_string()),
        )?;
    }
    // One in the derived range is refused, with the reason.
    let refused =
        mesh.coord
            .admin_output(&["set-address", NETWORK, &name_b, &v6[2].to_string()])?;
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("pick one above"), "{why}");
    Ok(())
}
