//! Routes for pod networks (issue 6, item 3), end to end.
//!
//! Two sites, each node behind its own port-restricted cone NAT (a direct path punched
//! through both). Each
//! node namespace has a "pod" namespace behind it on a veth pair (pod a 10.244.1.2/24,
//! gateway 10.244.1.1 on node a; pod b 10.244.2.2/24 behind node b), the nodes forward
//! (`ip_forward=1`) and their meshd advertises the pod prefix (`advertise-routes`).
//!
//! ```text
//!  pod a ── node a ── cone NAT ── internet ── cone NAT ── node b ── pod b
//!  10.244.1.2      mesh (WireGuard, NATs in between)              10.244.2.2
//! ```
//!
//! A route reaches peers (their allowed IPs and a kernel route into their TUN) only once an
//! admin approves it and only while its node advertises it; unapproving it, or the node no
//! longer advertising it, removes it everywhere. A peer's route for a network a node is on
//! itself (two sites numbered alike) never replaces that node's LAN route.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use wiremesh_tests::control::NETWORK;
use wiremesh_tests::sites::{NatMesh, SiteSpec};
use wiremesh_tests::{ping_once, wait_until, Coordinator, Lab, NatKind, Netns};

/// Generous: tests share two cores with other tests.
const CONVERGE: Duration = Duration::from_secs(30);

const POD_A_NET: &str = "10.244.1.0/24";
const POD_B_NET: &str = "10.244.2.0/24";
const POD_A: &str = "10.244.1.2";
const POD_B: &str = "10.244.2.2";

/// A "pod" namespace behind `node`: veth `pod0` (node side, `10.244.N.1/24`) to `eth0`
/// (pod side, `10.244.N.2/24`, default route via the node), and forwarding on the node.
fn pod_behind(node: &Netns, tag: &str, n: u8) -> anyhow::Result<Netns> {
    let pod = Netns::new(tag)?;
    node.ip(&[
        "link",
        "add",
        "pod0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name(),
    ])?;
    node.ip(&["addr", "add", &format!("10.244.{n}.1/24"), "dev", "pod0"])?;
    node.ip(&["link", "set", "pod0", "up"])?;
    pod.ip(&["addr", "add", &format!("10.244.{n}.2/24"), "dev", "eth0"])?;
    pod.ip(&["link", "set", "eth0", "up"])?;
    pod.ip(&["route", "add", "default", "via", &format!("10.244.{n}.1")])?;
    node.sysctl("net.ipv4.ip_forward=1")?;
    Ok(pod)
}

/// `ip -n NS route show PREFIX`, trimmed ("" when there is no such route).
fn route_show(ns: &Netns, prefix: &str) -> String {
    ns.ip(&["route", "show", prefix])
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `meshctl admin approve-route|unapprove-route lab NODE PREFIX --json`.
fn route_admin(
    coord: &Coordinator,
    approve: bool,
    node: &str,
    prefix: &str,
) -> anyhow::Result<Value> {
    let cmd = if approve {
        "approve-route"
    } else {
        "unapprove-route"
    };
    coord.admin_json(&[cmd, NETWORK, node, prefix])
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pod_routes_need_approval_and_withdraw_everywhere() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let mut mesh = NatMesh::new(
        &lab,
        &[SiteSpec::one(NatKind::Cone), SiteSpec::one(NatKind::Cone)],
    )?;
    // The same nodes (keys in their state directories), now advertising their pod prefix.
    for (i, route) in [(0, POD_A_NET), (1, POD_B_NET)] {
        let config = mesh.nodes[i].meshd.config().clone().advertising(&[route]);
        mesh.nodes[i].meshd.restart_with(config)?;
    }
    let node_a: Arc<Netns> = mesh.nodes[0].ns().clone();
    let node_b: Arc<Netns> = mesh.nodes[1].ns().clone();
    let pod_a = pod_behind(&node_a, "poda", 1)?;
    let pod_b = pod_behind(&node_b, "podb", 2)?;
    let (name_a, name_b) = (
        mesh.nodes[0].name().to_owned(),
        mesh.nodes[1].name().to_owned(),
    );
    let iface_b = mesh.nodes[1].meshd.config().interface.clone();
    let iface_a = mesh.nodes[0].meshd.config().interface.clone();

    mesh.join_all(CONVERGE)?;
    let overlay_b = mesh.overlay_ip(1)?;
    wait_until(CONVERGE, "node a pings node b over the overlay", || {
        ping_once(&node_a, &overlay_b)
    })?;

    // Advertised, not approved: listed, not routed.
    let member_a = mesh
        .coord
        .member(NETWORK, &mesh.nodes[0].key)?
        .context("node a is not a member")?;
    assert_eq!(strings(&member_a["advertised-routes"]), [POD_A_NET]);
    assert!(
        strings(&member_a["approved-routes"]).is_empty(),
        "{member_a}"
    );
    let members_text = mesh.coord.admin(&["members", NETWORK])?;
    assert!(
        members_text.contains("10.244.1.0/24 (unapproved)"),
        "{members_text}"
    );
    assert_eq!(
        route_show(&node_b, POD_A_NET),
        "",
        "route installed before approval"
    );
    assert_eq!(
        route_show(&node_a, POD_B_NET),
        "",
        "route installed before approval"
    );
    assert!(
        !ping_once(&pod_a, POD_B),
        "pod a reached pod b without approved routes"
    );

    // Approved on both sides: kernel routes into the TUNs, pods reach each other.
    let view = route_admin(&mesh.coord, true, &name_a, POD_A_NET)?;
    assert_eq!(strings(&view["approved-routes"]), [POD_A_NET]);
    route_admin(&mesh.coord, true, &name_b, POD_B_NET)?;
    wait_until(CONVERGE, "node b routes 10.244.1.0/24 into its TUN", || {
        route_show(&node_b, POD_A_NET).contains(&iface_b)
    })?;
    wait_until(CONVERGE, "node a routes 10.244.2.0/24 into its TUN", || {
        route_show(&node_a, POD_B_NET).contains(&iface_a)
    })?;
    wait_until(CONVERGE, "pod a pings pod b through the mesh", || {
        ping_once(&pod_a, POD_B)
    })?;
    wait_until(CONVERGE, "pod b pings pod a through the mesh", || {
        ping_once(&pod_b, POD_A)
    })?;
    // An overlapping approval for the other member is refused.
    assert!(route_admin(&mesh.coord, true, &name_b, "10.244.1.128/25").is_err());

    // Unapproved: gone from the peer's routes, pods cut off.
    let view = route_admin(&mesh.coord, false, &name_a, POD_A_NET)?;
    assert!(strings(&view["approved-routes"]).is_empty(), "{view}");
    wait_until(CONVERGE, "node b drops its route to 10.244.1.0/24", || {
        route_show(&node_b, POD_A_NET).is_empty()
    })?;
    assert!(!ping_once(&pod_a, POD_B), "pod a still reaches pod b");
    assert!(!ping_once(&pod_b, POD_A), "pod b still reaches pod a");

    // Node b stops advertising (restarted without advertise-routes): its approved route is
    // withdrawn from node a, though the approval stays.
    let config = mesh.nodes[1].meshd.config().clone().advertising(&[]);
    mesh.nodes[1].meshd.restart_with(config)?;
    wait_until(CONVERGE, "node a drops its route to 10.244.2.0/24", || {
        route_show(&node_a, POD_B_NET).is_empty()
    })?;
    let member_b = mesh
        .coord
        .member(NETWORK, &mesh.nodes[1].key)?
        .context("node b is not a member")?;
    assert!(
        strings(&member_b["advertised-routes"]).is_empty(),
        "{member_b}"
    );
    assert_eq!(strings(&member_b["approved-routes"]), [POD_B_NET]);

    // A route that is node b's own LAN, numbered alike at a's site (two sites on the same
    // private range): b takes it into a's allowed IPs but leaves its LAN's connected route
    // alone (`ip route replace` would have cut b off its gateway and the coordinator),
    // and stays connected.
    let lan_b = {
        let o = mesh.nodes[1].lan_ip.octets();
        format!("{}.{}.{}.0/24", o[0], o[1], o[2])
    };
    let lan_route_before = route_show(&node_b, &lan_b);
    assert!(
        !lan_route_before.is_empty() && !lan_route_before.contains(&iface_b),
        "b's LAN route: {lan_route_before:?}"
    );
    let config = mesh.nodes[0]
        .meshd
        .config()
        .clone()
        .advertising(&[POD_A_NET, &lan_b]);
    mesh.nodes[0].meshd.restart_with(config)?;
    mesh.nodes[0]
        .meshd
        .wait_control_state("connected", CONVERGE)?;
    wait_until(CONVERGE, "a advertises b's LAN prefix", || {
        mesh.coord
            .member(NETWORK, &mesh.nodes[0].key)
            .ok()
            .flatten()
            .is_some_and(|m| strings(&m["advertised-routes"]).contains(&lan_b))
    })?;
    route_admin(&mesh.coord, true, &name_a, &lan_b)?;
    let key_a = mesh.nodes[0].key.clone();
    wait_until(
        CONVERGE,
        "b has b's LAN prefix among a's allowed IPs",
        || {
            mesh.nodes[1]
                .meshd
                .peer_status(&key_a)
                .is_ok_and(|p| strings(&p["allowed-ips"]).contains(&lan_b))
        },
    )?;
    let lan_route = route_show(&node_b, &lan_b);
    assert_eq!(
        lan_route, lan_route_before,
        "b's LAN route changed when a's route for the same prefix arrived"
    );
    assert!(
        mesh.nodes[1]
            .meshd
            .log()
            .contains("overlaps a network this host is on"),
        "b does not say why it left the route out"
    );
    let overlay_a = mesh.overlay_ip(0)?;
    mesh.nodes[1]
        .meshd
        .wait_control_state("connected", CONVERGE)?;
    wait_until(
        CONVERGE,
        "node b still pings node a over the overlay",
        || ping_once(&node_b, &overlay_a),
    )?;
    drop(pod_a);
    drop(pod_b);
    Ok(())
}
