//! Coordinator high availability: three coordinators on a three-member etcd cluster, six
//! nodes on NAT'd sites (needs root; fails without it).
//!
//! ```text
//!   coord c0 192.0.2.10 + etcd e0   coord c1 192.0.2.11 + etcd e1   coord c2 192.0.2.12 + etcd e2
//!                 └──────────────── internet ────────────────┘
//!   site a (cone NAT) … site f (cone NAT): one node each
//! ```
//! One test, in phases that build on each other (the lab takes a while to build):
//! 1. every pair pings over the overlay; every node knows all three coordinators;
//! 2. an etcd member killed and brought back: nodes stay connected, writes go through;
//! 3. `kill -9` of the coordinator every node is on: each moves to another within 10 s
//!    while a ping over a direct path loses nothing, and membership changes made through
//!    each surviving coordinator reach every node within 1 s;
//! 4. etcd quorum lost: admin writes refused with 503 and a JSON error, tunnels keep
//!    working; quorum back: writes resume without restarting anything.
//!
//! Prints `BENCH ha …` lines (BENCHMARKS.md, "Coordinator high availability").

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use wiremesh_tests::control::{lacks_peer, lists_peer, measure_propagation, NETWORK};
use wiremesh_tests::coordinator::{Coordinator, CONTROL_PORT, HTTP_PORT};
use wiremesh_tests::etcd::EtcdCluster;
use wiremesh_tests::lab::{parse_ping_loss, ping_once, Lab, NatKind};
use wiremesh_tests::netns::Netns;
use wiremesh_tests::sites::{NatMesh, SiteSpec};
use wiremesh_tests::{http, util};

const NODES: usize = 6;

fn coordinator_ip(i: usize) -> String {
    format!("192.0.2.{}", 10 + i)
}

/// The coordinator address a node's status says it is connected to.
fn connected_to(status: &Value) -> Option<String> {
    let c = &status["control"];
    (c["state"] == "connected")
        .then(|| c["coordinator"].as_str().map(str::to_owned))
        .flatten()
}

#[test]
fn three_coordinators_survive_the_loss_of_one_and_of_etcd_quorum() -> anyhow::Result<()> {
    util::require_root()?;
    let lab = Lab::new()?;
    let mut hosts: Vec<(Arc<Netns>, String)> = Vec::new();
    for i in 0..3 {
        let ns = lab.host(&format!("coord{i}"))?;
        let ip: Ipv4Addr = coordinator_ip(i).parse()?;
        lab.attach_routed(&ns, ip)?;
        hosts.push((ns, coordinator_ip(i)));
    }
    let mut etcd = EtcdCluster::start(&hosts)?;
    let store = etcd.store_arg();
    let mut coords = Vec::new();
    for (i, (ns, ip)) in hosts.iter().enumerate() {
        let id = format!("c{i}");
        coords.push(Coordinator::start_with(
            ns,
            ip,
            &["--store", &store, "--id", &id],
        )?);
    }
    util::wait_until(
        Duration::from_secs(20),
        "all three coordinators registered",
        || {
            coords.iter().all(|c| {
                c.metrics()
                    .is_ok_and(|m| m.contains("wiremesh_coordinators_live 3"))
            })
        },
    )?;
    // One identity for the set: one pin.
    let pins: Vec<String> = coords
        .iter()
        .map(Coordinator::pin)
        .collect::<Result<_, _>>()?;
    assert!(
        pins.windows(2).all(|w| w[0] == w[1]),
        "pins differ: {pins:?}"
    );

    // c0 makes the network and token; the token lists every coordinator.
    let c0 = coords.remove(0);
    let mesh = NatMesh::with_coordinator(&lab, c0, &[SiteSpec::one(NatKind::Cone); NODES])?;
    mesh.join_all(Duration::from_secs(60))?;
    let all: Vec<String> = (0..3)
        .map(|i| format!("{}:{CONTROL_PORT}", coordinator_ip(i)))
        .collect();
    for n in &mesh.nodes {
        let s = n.meshd.status_via_socket()?;
        let known: Vec<String> = serde_json::from_value(s["control"]["coordinators"].clone())?;
        for a in &all {
            assert!(
                known.contains(a),
                "{} does not know {a}: {known:?}",
                n.name()
            );
        }
    }
    // 1. Every pair pings.
    let ips: Vec<String> = (0..NODES)
        .map(|i| mesh.overlay_ip(i))
        .collect::<Result<_, _>>()?;
    for i in 0..NODES {
        for (j, ip) in ips.iter().enumerate() {
            if i != j {
                util::wait_until(
                    Duration::from_secs(20),
                    &format!("{} pings {ip}", mesh.pair(i, j)),
                    || ping_once(mesh.nodes[i].ns(), ip),
                )?;
            }
        }
    }

    // 2. One etcd member down and back: invisible to nodes, writes go through.
    etcd.kill(2)?;
    // The etcd client may still send a request to the dead member in its first seconds
    // (a 503, "try again"); within the window every write goes through, on both.
    util::wait_until(
        Duration::from_secs(15),
        "writes through two coordinators with one etcd member down",
        || {
            mesh.coord.create_token(NETWORK, false, None).is_ok()
                && coords[0].create_token(NETWORK, false, None).is_ok()
        },
    )?;
    etcd.restart(2)?;
    for n in &mesh.nodes {
        let s = n.meshd.status_via_socket()?;
        assert_eq!(s["control"]["state"], "connected", "{}: {s}", n.name());
    }

    // 3. kill -9 of the coordinator the nodes are on (the token's first address).
    let victim = format!("{}:{CONTROL_PORT}", coordinator_ip(0));
    let on_victim = mesh
        .nodes
        .iter()
        .filter(|n| {
            n.meshd
                .status_via_socket()
                .ok()
                .and_then(|s| connected_to(&s))
                .as_deref()
                == Some(victim.as_str())
        })
        .count();
    assert!(on_victim > 0, "no node is on {victim}");
    mesh.wait_path(0, 1, "direct", Duration::from_secs(20))?;
    let pinger = mesh.nodes[0]
        .ns()
        .command("ping")
        .args(["-n", "-q", "-c", "75", "-i", "0.2", "-W", "1", &ips[1]])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting ping")?;
    std::thread::sleep(Duration::from_secs(1));
    let mut mesh = mesh;
    mesh.coord.kill9()?;
    let killed = Instant::now();
    let mut moved = [None; NODES];
    util::wait_until(
        Duration::from_secs(30),
        "every node on a surviving coordinator",
        || {
            for (i, n) in mesh.nodes.iter().enumerate() {
                if moved[i].is_none() {
                    let s = n.meshd.status_via_socket().ok();
                    if s.and_then(|s| connected_to(&s))
                        .is_some_and(|c| c != victim)
                    {
                        moved[i] = Some(killed.elapsed());
                    }
                }
            }
            moved.iter().all(Option::is_some)
        },
    )?;
    let slowest = moved.iter().flatten().max().copied().unwrap_or_default();
    eprintln!(
        "BENCH ha failover_ms={} nodes_moved={on_victim} per_node_ms={}",
        slowest.as_millis(),
        moved
            .iter()
            .flatten()
            .map(|d| d.as_millis().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(
        slowest <= Duration::from_secs(10),
        "nodes took {slowest:?} to move to another coordinator (bound: 10 s)"
    );
    // Presence comes from leases: each survivor lists every member online, its own
    // sessions and the other's alike, and nobody on the dead one.
    for c in &coords {
        util::wait_until(
            Duration::from_secs(15),
            "every member online, as each surviving coordinator sees it",
            || {
                c.members(NETWORK)
                    .is_ok_and(|m| m.len() == NODES && m.iter().all(|v| v["online"] == true))
            },
        )?;
    }
    // Changes through each surviving coordinator reach every node within 1 s.
    let f = mesh.nodes[NODES - 1].key.clone();
    let watched: Vec<&wiremesh_tests::meshd::Meshd> =
        mesh.nodes[..NODES - 1].iter().map(|n| &n.meshd).collect();
    let (_, gone) = measure_propagation(
        "ha_deauthorize_via_c1",
        &watched,
        lacks_peer(&f),
        Duration::from_secs(10),
        || coords[0].admin(&["deauthorize", NETWORK, &f]),
    )?;
    let (_, back) = measure_propagation(
        "ha_authorize_via_c2",
        &watched,
        lists_peer(&f),
        Duration::from_secs(10),
        || coords[1].admin(&["authorize", NETWORK, &f]),
    )?;
    for p in [&gone, &back] {
        assert!(
            p.after_command() < Duration::from_secs(1),
            "{}: {:?} after the command (bound: 1 s)",
            p.label,
            p.after_command()
        );
    }
    let out = pinger.wait_with_output().context("waiting for ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let loss = parse_ping_loss(&text).unwrap_or(100.0);
    eprintln!("BENCH ha direct_ping_loss_during_failover_pct={loss}");
    assert_eq!(
        loss, 0.0,
        "a direct path lost pings while its coordinator died: {text}"
    );

    // Two nodes on different coordinators with no direct path meet at the network's
    // meeting relay (the dead coordinator's relay is no longer offered once its lease
    // expired).
    let connected = || -> Vec<Option<String>> {
        mesh.nodes
            .iter()
            .map(|n| {
                n.meshd
                    .status_via_socket()
                    .ok()
                    .and_then(|s| connected_to(&s))
            })
            .collect()
    };
    let mut on = connected();
    if on.iter().all(|c| c.is_some() && *c == on[0]) {
        // Each node picked one of the two survivors at random and all picked the same
        // (1 run in 32): move a onto the other by cutting its control traffic to this one
        // (QUIC only; its tunnels and the relay are untouched), then let it through again.
        let to = on[0].clone().unwrap_or_default();
        let ip = to.rsplit_once(':').map_or(to.as_str(), |(h, _)| h);
        let a = mesh.nodes[0].ns();
        a.nft(&format!(
            "table inet wmha_move {{\n  chain out {{\n    type filter hook output priority 0;\n    \
             ip daddr {ip} udp dport {CONTROL_PORT} drop\n  }}\n}}\n"
        ))?;
        util::wait_until(
            Duration::from_secs(20),
            "a moves to the other coordinator",
            || {
                connected()
                    .first()
                    .cloned()
                    .flatten()
                    .is_some_and(|c| c != to)
            },
        )?;
        a.nft("table inet wmha_move\ndelete table inet wmha_move\n")?;
        on = connected();
    }
    let (i, j) = (0..NODES)
        .flat_map(|i| (0..NODES).map(move |j| (i, j)))
        .find(|&(i, j)| i < j && on[i].is_some() && on[j].is_some() && on[i] != on[j])
        .context("no two nodes on different coordinators")?;
    mesh.block_direct(i, j)?;
    let relayed = mesh.wait_path(i, j, "relay", Duration::from_secs(60))?;
    util::wait_until(
        Duration::from_secs(10),
        &format!("{} pings over the relay", mesh.pair(i, j)),
        || ping_once(mesh.nodes[i].ns(), &ips[j]),
    )?;
    eprintln!(
        "BENCH ha relay_across_coordinators pair={} on={:?}/{:?} relayed_after_block_ms={}",
        mesh.pair(i, j),
        on[i],
        on[j],
        relayed.as_millis()
    );
    mesh.unblock_direct(i, j)?;

    // 4. Quorum lost: writes refused (503, JSON), tunnels keep working; back: writes resume.
    etcd.kill(1)?;
    etcd.kill(2)?;
    let token = std::fs::read_to_string(coords[0].token_file())?;
    let auth = format!("Bearer {}", token.trim());
    let mut refused = None;
    util::wait_until(
        Duration::from_secs(20),
        "a write refused without quorum",
        || {
            let answer = http::request_in(
                coords[0].ns(),
                HTTP_PORT,
                "POST",
                &format!("/api/networks/{NETWORK}/tokens"),
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                b"{}",
                Duration::from_secs(15),
            );
            if let Ok((503, body)) = answer {
                refused = Some(body);
            }
            refused.is_some()
        },
    )?;
    let body = refused.unwrap_or_default();
    let v: Value = serde_json::from_slice(&body)
        .with_context(|| format!("503 body: {}", String::from_utf8_lossy(&body)))?;
    let metrics = coords[0].metrics()?;
    assert!(
        metrics.contains("wiremesh_store_healthy 0"),
        "/metrics does not say the store is unhealthy:\n{metrics}"
    );
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("unavailable")),
        "503 without a clear error: {v}"
    );
    for (i, j) in [(0, 1), (2, 3), (4, 0)] {
        util::wait_until(
            Duration::from_secs(10),
            "tunnels work without quorum",
            || ping_once(mesh.nodes[i].ns(), &ips[j]),
        )?;
    }
    etcd.restart(1)?;
    etcd.restart(2)?;
    util::wait_until(
        Duration::from_secs(30),
        "writes resume with quorum back",
        || {
            coords[0].create_token(NETWORK, false, None).is_ok()
                && coords[1].create_token(NETWORK, false, None).is_ok()
        },
    )?;
    let metrics = coords[0].metrics()?;
    assert!(
        metrics.contains("wiremesh_store_healthy 1")
            && metrics.contains("wiremesh_coordinator_info{id=\"c1\""),
        "/metrics after recovery:\n{metrics}"
    );
    Ok(())
}
