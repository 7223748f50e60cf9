//! IPv6 underlays (issue 15): the coordinator serves both families on dual-stack sockets
//! and advertises every service on an IPv4 and an IPv6 address; nodes connect, reflect,
//! probe and relay over whichever family they have.
//!
//! ```text
//!   coordinator  192.0.2.10 + 2001:db8::10, listening on [::] (QUIC, reflectors, relay)
//!   internet: 2001:db8::/64 on its bridge, IPv4 routed as in the other NAT tests
//!     ├── a  2001:db8::a1                 IPv6 only: no IPv4 address, no IPv4 route
//!     ├── b  2001:db8::b1                 IPv6 only
//!     ├── c  symmetric IPv4 NAT 192.168.1.2, and 2001:db8:c::2 routed (no NAT66)
//!     └── d  symmetric IPv4 NAT 192.168.2.2, and 2001:db8:d::2 routed
//! ```
//!
//! - a and b (IPv6 only) join through the coordinator's IPv6 address and reach each other
//!   directly over IPv6; a (IPv6 only) and c (both) directly too.
//! - c and d, both behind symmetric IPv4 NATs, would need the relay over IPv4; they take
//!   the direct IPv6 path. With IPv6 between them blocked they fall back to the relay,
//!   and come back to the direct IPv6 path once it is unblocked.
//! - With UDP between a and b dropped, they talk through the relay over IPv6.
//! - `meshctl netcheck` on a sees only IPv6 reflections (no NAT); on c it still says the
//!   IPv4 NAT is endpoint-dependent, and reflects c's IPv6 address as it is.
//!
//! Needs root (fails without).

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use wiremesh_tests::control::{CIDR, COORDINATOR_IP, NETWORK};
use wiremesh_tests::coordinator::Coordinator;
use wiremesh_tests::lab::{Lab, NatKind};
use wiremesh_tests::meshd::{Meshd, MeshdConfig};
use wiremesh_tests::netns::Netns;
use wiremesh_tests::sites::{peer_in, site_lan_ip, site_public_ip, site_router_ip};
use wiremesh_tests::{ping, topo, util};

const JOINED: Duration = Duration::from_secs(30);
const PATH: Duration = Duration::from_secs(30);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("an IPv6 literal")
}

struct Node {
    meshd: Meshd,
    key: String,
    /// Its underlay IPv6 address.
    ip6: Ipv6Addr,
}

/// What `from` says of its peer `to`: (path, endpoint).
fn path(from: &Node, to: &Node) -> (Option<String>, Option<SocketAddr>) {
    let Ok(status) = from.meshd.status_via_socket() else {
        return (None, None);
    };
    let Some(peer) = peer_in(&status, &to.key) else {
        return (None, None);
    };
    (
        peer["path"].as_str().map(str::to_owned),
        peer["endpoint"].as_str().and_then(|e| e.parse().ok()),
    )
}

/// Waits until `a` and `b` both use a direct path to the other's IPv6 address.
fn wait_direct_ipv6(a: &Node, b: &Node) -> anyhow::Result<Duration> {
    let direct_to = |from: &Node, to: &Node| {
        let (p, e) = path(from, to);
        p.as_deref() == Some("direct") && e.is_some_and(|e| e.ip() == to.ip6)
    };
    util::wait_until(
        PATH,
        &format!(
            "{} and {} use a direct IPv6 path",
            a.meshd.name(),
            b.meshd.name()
        ),
        || direct_to(a, b) && direct_to(b, a),
    )
    .map_err(|e| {
        e.context(format!(
            "{} sees {:?}, {} sees {:?}",
            a.meshd.name(),
            path(a, b),
            b.meshd.name(),
            path(b, a)
        ))
    })
}

/// Waits until `a` and `b` both report the relay as their path.
fn wait_relay(a: &Node, b: &Node) -> anyhow::Result<Duration> {
    util::wait_until(
        PATH,
        &format!("{} and {} use the relay", a.meshd.name(), b.meshd.name()),
        || path(a, b).0.as_deref() == Some("relay") && path(b, a).0.as_deref() == Some("relay"),
    )
    .map_err(|e| e.context(format!("{:?} / {:?}", path(a, b), path(b, a))))
}

/// Drops UDP between `a` and `b` (either direction) in `ns`'s forward or in/output hooks.
fn block_udp6(
    ns: &Netns,
    table: &str,
    hooks: &[&str],
    a: Ipv6Addr,
    b: Ipv6Addr,
) -> anyhow::Result<()> {
    let mut rules =
        format!("table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n");
    for hook in hooks {
        rules.push_str(&format!(
            "  chain {hook} {{\n    type filter hook {hook} priority -10;\n    \
             ip6 saddr {a} ip6 daddr {b} meta l4proto udp drop\n    \
             ip6 saddr {b} ip6 daddr {a} meta l4proto udp drop\n  }}\n"
        ));
    }
    rules.push_str("}\n");
    ns.nft(&rules)
}

fn unblock(ns: &Netns, table: &str) -> anyhow::Result<()> {
    ns.nft(&format!("table inet {table}\ndelete table inet {table}\n"))
}

fn start_node(ns: &Arc<Netns>, label: &str, ip6: Ipv6Addr) -> anyhow::Result<Node> {
    let meshd = Meshd::start(
        ns,
        label,
        MeshdConfig::unconfigured(topo::PORT, None).named(label),
    )?;
    let key = meshd.public_key()?;
    Ok(Node { meshd, key, ip6 })
}

#[test]
fn ipv6_underlay_direct_paths_and_relay() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    lab.enable_ipv6()?;

    // The coordinator on both families.
    let coord_ns = lab.host("coord")?;
    let coord_if = lab.attach_routed(&coord_ns, COORDINATOR_IP.parse()?)?;
    let coord_ip6 = v6("2001:db8::10");
    lab.add_ipv6(&coord_ns, &coord_if, coord_ip6)?;
    let coord = Coordinator::start_dual_stack(&coord_ns, COORDINATOR_IP, coord_ip6)?;
    coord.create_network(NETWORK, CIDR)?;
    let token = coord.create_token(NETWORK, true, None)?;

    // a and b: IPv6 only.
    let mut nodes = Vec::new();
    for (label, ip) in [("a", "2001:db8::a1"), ("b", "2001:db8::b1")] {
        let (ns, _) = lab.ipv6_only_host(label, v6(ip))?;
        let v4 = ns.ip(&["-4", "addr", "show", "scope", "global"])?;
        assert!(v4.trim().is_empty(), "{label} has an IPv4 address: {v4}");
        nodes.push(start_node(&ns, label, v6(ip))?);
    }
    // c and d: symmetric IPv4 NAT, routed IPv6.
    for (i, (label, lan6)) in [("c", "2001:db8:c::"), ("d", "2001:db8:d::")]
        .into_iter()
        .enumerate()
    {
        let router = lab.routed_nat_router(
            NatKind::Symmetric,
            site_public_ip(i),
            &format!("{}/24", site_router_ip(i)),
        )?;
        let gateway =
            lab.route_ipv6_lan(&router, v6(&format!("2001:db8::{}", 0xe0 + i)), v6(lan6))?;
        let (ns, ifname) = lab.nat_host(&router, label, &format!("{}/24", site_lan_ip(i, 0)))?;
        let ip6 = v6(&format!("{lan6}2"));
        lab.add_ipv6_behind(&ns, &ifname, ip6, gateway)?;
        nodes.push(start_node(&ns, label, ip6)?);
    }
    let [a, b, c, d] = &nodes[..] else {
        bail!("four nodes");
    };

    // Joining: the token lists both coordinator addresses; IPv6-only nodes skip the IPv4 one.
    for n in &nodes {
        let control = n.meshd.join_with_token(NETWORK, &token)?;
        if control["state"] != "connected" {
            bail!("{}: join ended with {control}", n.meshd.name());
        }
    }
    for n in [a, b] {
        let control = n.meshd.control()?;
        let to = control["coordinator"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            to,
            format!("[{coord_ip6}]:7443"),
            "{} is connected to {control}",
            n.meshd.name()
        );
    }
    util::wait_until(JOINED, "every node lists every other as a peer", || {
        nodes.iter().all(|n| {
            n.meshd
                .peer_keys()
                .is_ok_and(|k| nodes.iter().all(|m| m.key == n.key || k.contains(&m.key)))
        })
    })?;

    // Direct IPv6 paths: two IPv6-only nodes, an IPv6-only and a dual-stack node, and two
    // dual-stack nodes whose IPv4 would need the relay.
    for (x, y) in [(a, b), (a, c), (b, d), (c, d)] {
        let took = wait_direct_ipv6(x, y)?;
        eprintln!(
            "[ipv6] {} ↔ {}: direct over IPv6 after {took:?}",
            x.meshd.name(),
            y.meshd.name()
        );
    }
    // What prints underlay addresses shows IPv6 ones as such: `meshctl status`'s endpoint
    // line, and the admin API's member endpoints (what the dashboard and the admin tables
    // read).
    let text = a.meshd.meshctl_status_text()?;
    let line = format!("endpoint: [{}]:{}", b.ip6, topo::PORT);
    assert!(text.contains(&line), "no {line:?} in a's status:\n{text}");
    let members = coord.members(NETWORK)?;
    for n in &nodes {
        let m = members
            .iter()
            .find(|m| m["public-key"] == n.key.as_str())
            .with_context(|| format!("{} is not a member", n.meshd.name()))?;
        let want = format!("[{}]:{}", n.ip6, topo::PORT);
        let endpoints = &m["endpoints"];
        assert!(
            endpoints
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e == want.as_str())),
            "{}'s endpoints {endpoints} lack {want}",
            n.meshd.name()
        );
    }

    // Overlay traffic over them (both overlay families).
    for (x, y) in [(a, b), (a, c), (c, d), (d, b)] {
        let to = y.meshd.address()?;
        let loss = ping(x.meshd.ns(), &to, 5);
        assert!(
            loss < 50.0,
            "{} → {} ({to}): {loss}% loss",
            x.meshd.name(),
            y.meshd.name()
        );
        let to6 = y.meshd.status_via_socket()?["address6"]
            .as_str()
            .context("no overlay IPv6 address")?
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let loss = ping(x.meshd.ns(), &to6, 5);
        assert!(
            loss < 50.0,
            "{} → {} ({to6}): {loss}% loss",
            x.meshd.name(),
            y.meshd.name()
        );
    }

    // c and d without IPv6 between them: the relay (their IPv4 NATs are both symmetric);
    // with it again: back to direct IPv6, preferred over the relay.
    block_udp6(lab.internet(), "wm_cd6", &["forward"], c.ip6, d.ip6)?;
    wait_relay(c, d)?;
    let loss = ping(c.meshd.ns(), &d.meshd.address()?, 5);
    assert!(loss < 50.0, "c → d over the relay: {loss}% loss");
    unblock(lab.internet(), "wm_cd6")?;
    let took = wait_direct_ipv6(c, d)?;
    eprintln!("[ipv6] c ↔ d: back from the relay to direct IPv6 after {took:?}");

    // a and b without UDP between them: the relay, reached over IPv6.
    block_udp6(a.meshd.ns(), "wm_ab6", &["input", "output"], a.ip6, b.ip6)?;
    wait_relay(a, b)?;
    let loss = ping(a.meshd.ns(), &b.meshd.address()?, 5);
    assert!(loss < 50.0, "a → b over the relay over IPv6: {loss}% loss");
    let relay = coord.metrics()?;
    let relayed = relay
        .lines()
        .find(|l| l.starts_with("wiremesh_relay_forwarded_packets_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(relayed > 0.0, "the relay forwarded nothing:\n{relay}");
    unblock(a.meshd.ns(), "wm_ab6")?;

    // netcheck: IPv6 only on a (no NAT, its own address reflected), IPv4 NAT still
    // classified on c, with its IPv6 address reflected as it is.
    let report = a.meshd.netcheck()?;
    let reflections = report["reflections"].as_array().context("reflections")?;
    assert!(!reflections.is_empty(), "{report}");
    for r in reflections {
        let reflector: SocketAddr = r["reflector"].as_str().context("reflector")?.parse()?;
        assert!(reflector.is_ipv6(), "a asked an IPv4 reflector: {report}");
        let observed: SocketAddr = r["observed"].as_str().context("observed")?.parse()?;
        assert_eq!(observed.ip(), a.ip6, "{report}");
    }
    assert_eq!(report["mapping"], "endpoint-independent", "{report}");
    let report = c.meshd.netcheck()?;
    assert_eq!(report["mapping"], "endpoint-dependent", "{report}");
    let observed: Vec<SocketAddr> = report["reflections"]
        .as_array()
        .context("reflections")?
        .iter()
        .filter_map(|r| r["observed"].as_str()?.parse().ok())
        .collect();
    assert!(
        observed.iter().any(|o| o.ip() == c.ip6),
        "c's IPv6 address is not among its reflections: {report}"
    );
    assert!(
        observed
            .iter()
            .any(|o| o.ip() == std::net::IpAddr::V4(site_public_ip(0))),
        "c's NAT address is not among its reflections: {report}"
    );
    Ok(())
}
