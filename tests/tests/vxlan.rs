//! A flannel-style pod network over the mesh (issue 14, part 3), both backends side by
//! side on three NAT'd sites (needs root; fails without it).
//!
//! ```text
//!   pod a ── node a (cone NAT) ── internet ── (cone NAT) node b ── pod b     a ↔ b direct
//!                         └──── (symmetric NAT) node c ── pod c               a, b ↔ c relay
//! ```
//! - vxlan backend: on each node a kernel VXLAN device configured as flannel's vxlan
//!   backend does (`flannel.1`, VNI 1, UDP 8472, `local` = the node's overlay address,
//!   `dev` = the mesh interface, `nolearning`; per remote node an FDB entry for its VTEP MAC
//!   at its overlay address, a permanent neighbour entry for its subnet's `.0` and an onlink
//!   route to its subnet), MTU = `vxlan-mtu` from `meshctl k8s --json`; pods on
//!   10.244.<i+1>.0/24 with that MTU on their interface, as flannel's CNI config sets it.
//! - host-gw backend: each node advertises its pod subnet (10.245.<i+1>.0/24), an admin
//!   approves it, and meshd routes it into the mesh interface on the other nodes; pods'
//!   interfaces have `host-gw-mtu`.
//!
//! Checks: every pod pings every other pod on both networks; the MTU `meshctl k8s`
//! promises is exact: a don't-fragment ping from a pod at the VXLAN MTU crosses to the
//! other sites' pods (over the direct path and over the relay) and one byte more fails,
//! and the VXLAN packets of those pings arrived on the other nodes whole (no IP
//! fragmentation anywhere: the encapsulated packet is exactly the mesh MTU, which a node's
//! own DF ping shows to be the mesh's limit); the same for host-gw at its MTU. Then iperf3
//! between pod a and pod b over each backend, interleaved (A B A B): both carry data.
//!
//! Prints `BENCH pod_network …` lines; `WM_PODNET_ROUNDS` / `WM_PODNET_SECS` (default 2 and
//! 2) set the throughput rounds (bench/k8s-pod-network.sh).

use std::time::Duration;

use wiremesh_tests::control::NETWORK;
use wiremesh_tests::k8s::{self, df_ping, says_too_big, Pod, Vtep};
use wiremesh_tests::lab::{ping_once, Lab};
use wiremesh_tests::sites::{NatMesh, SiteSpec};
use wiremesh_tests::{util, xfer};

/// Generous: tests share two cores with other tests.
const CONVERGE: Duration = Duration::from_secs(30);
/// Echoes per MTU probe.
const PROBES: u32 = 3;

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Pings that must all be answered, with DF set.
fn assert_df_fits(from: &wiremesh_tests::Netns, to: &str, size: u16, what: &str) {
    let (ok, out) = df_ping(from, to, size, PROBES).unwrap_or((false, String::new()));
    assert!(
        ok,
        "{what}: DF ping of {size} bytes of payload ({} on the wire) to {to} not answered:\n{out}",
        size + 28
    );
}

/// A DF ping that must fail because the packet is too big.
fn assert_df_too_big(from: &wiremesh_tests::Netns, to: &str, size: u16, what: &str) {
    let (ok, out) = df_ping(from, to, size, 1).unwrap_or((true, String::new()));
    assert!(
        !ok && says_too_big(&out),
        "{what}: DF ping of {size} bytes of payload ({} on the wire) to {to} should fail as too \
         big:\n{out}",
        size + 28
    );
}

#[test]
fn flannel_vxlan_and_host_gw_pod_networks_over_the_mesh() -> anyhow::Result<()> {
    util::require_root()?;
    let lab = Lab::new()?;
    let mut mesh = NatMesh::new(&lab, &SiteSpec::cone_cone_symmetric())?;
    let n = mesh.nodes.len();
    // host-gw: every node advertises its pod subnet (the same node keys, restarted with
    // advertise-routes before joining).
    for i in 0..n {
        let subnet = k8s::host_gw_subnet(i);
        let config = mesh.nodes[i].meshd.config().clone().advertising(&[&subnet]);
        mesh.nodes[i].meshd.restart_with(config)?;
    }
    mesh.join_all(CONVERGE)?;
    let ips: Vec<String> = (0..n)
        .map(|i| mesh.overlay_ip(i))
        .collect::<Result<_, _>>()?;

    // What meshctl k8s says: the mesh interface and the MTUs.
    let reports: Vec<_> = mesh
        .nodes
        .iter()
        .map(|node| k8s::report(&node.meshd))
        .collect::<Result<_, _>>()?;
    let mesh_mtu = k8s::number(&reports[0], None, "mesh-mtu")?;
    let vxlan_mtu = k8s::number(&reports[0], Some("flannel"), "vxlan-mtu")?;
    let host_gw_mtu = k8s::number(&reports[0], Some("flannel"), "host-gw-mtu")?;
    eprintln!(
        "[vxlan] meshctl k8s: mesh mtu {mesh_mtu}, vxlan mtu {vxlan_mtu}, host-gw mtu {host_gw_mtu}"
    );
    let mut ifaces = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(k8s::number(r, None, "mesh-mtu")?, mesh_mtu, "{r}");
        assert_eq!(
            k8s::number(r, Some("flannel"), "vxlan-mtu")?,
            vxlan_mtu,
            "{r}"
        );
        let iface = k8s::field(r, "flannel", "iface")?.to_owned();
        assert_eq!(iface, mesh.nodes[i].meshd.config().interface, "{r}");
        ifaces.push(iface);
    }

    // Pods, flannel.1 on every node, every node's lease on every other node.
    let pods: Vec<Pod> = (0..n)
        .map(|i| Pod::behind(mesh.nodes[i].ns(), i, vxlan_mtu, host_gw_mtu))
        .collect::<Result<_, _>>()?;
    let vteps: Vec<Vtep> = (0..n)
        .map(|i| k8s::flannel_up(mesh.nodes[i].ns(), i, &ips[i], &ifaces[i], vxlan_mtu))
        .collect::<Result<_, _>>()?;
    for i in 0..n {
        for (j, vtep) in vteps.iter().enumerate() {
            if i != j {
                k8s::flannel_add_peer(mesh.nodes[i].ns(), vtep)?;
            }
        }
    }
    // host-gw: the admin approves each node's pod subnet; meshd routes it into the mesh.
    for i in 0..n {
        mesh.coord.admin_json(&[
            "approve-route",
            NETWORK,
            mesh.nodes[i].name(),
            &k8s::host_gw_subnet(i),
        ])?;
    }
    for (i, iface) in ifaces.iter().enumerate() {
        for j in (0..n).filter(|&j| j != i) {
            let subnet = k8s::host_gw_subnet(j);
            util::wait_until(
                CONVERGE,
                &format!(
                    "node {} routes {subnet} into the mesh",
                    mesh.nodes[i].name()
                ),
                || {
                    mesh.nodes[i]
                        .ns()
                        .ip(&["route", "show", &subnet])
                        .is_ok_and(|r| r.contains(iface.as_str()))
                },
            )?;
        }
    }

    // Every pod reaches every other pod on both networks.
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            for (net, to) in [
                ("vxlan", &pods[j].vxlan_ip),
                ("host-gw", &pods[j].host_gw_ip),
            ] {
                util::wait_until(
                    CONVERGE,
                    &format!("pod {i} pings pod {j} ({to}, {net})"),
                    || ping_once(&pods[i].ns, to),
                )?;
            }
        }
    }
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        mesh.wait_path(i, j, mesh.expected_path(i, j), CONVERGE)?;
    }

    // The mesh's own limit: a node's DF ping at the mesh MTU crosses, one byte more does not.
    let node_a = mesh.nodes[0].ns().clone();
    assert_df_fits(&node_a, &ips[1], mesh_mtu - 28, "node a -> node b");
    assert_df_too_big(&node_a, &ips[1], mesh_mtu - 27, "node a -> node b");
    // VXLAN's arithmetic is exact: a packet of the VXLAN MTU becomes one of the mesh MTU.
    assert_eq!(
        vxlan_mtu + 50,
        mesh_mtu,
        "vxlan mtu + 50 bytes of VXLAN over IPv4"
    );

    // The VXLAN MTU proof. Each node counts VXLAN datagrams arriving from the mesh whole
    // (not fragments) and exactly mesh-MTU long, before any reassembly.
    for (i, node) in mesh.nodes.iter().enumerate() {
        k8s::count_whole_arrivals(
            node.ns(),
            "wmvxlan",
            &ifaces[i],
            k8s::FLANNEL_PORT,
            mesh_mtu,
        )?;
    }
    let frags_before: Vec<_> = mesh
        .nodes
        .iter()
        .map(|node| k8s::ip_counters(node.ns()))
        .collect::<Result<_, _>>()?;
    let largest = vxlan_mtu - 28;
    for j in 1..n {
        let what = format!("pod a -> pod {j} over vxlan ({})", mesh.expected_path(0, j));
        assert_df_fits(&pods[0].ns, &pods[j].vxlan_ip, largest, &what);
        assert_df_too_big(&pods[0].ns, &pods[j].vxlan_ip, largest + 1, &what);
    }
    let whole: Vec<u64> = mesh
        .nodes
        .iter()
        .map(|node| node.ns().nft_counter("wmvxlan"))
        .collect::<Result<_, _>>()?;
    eprintln!("[vxlan] whole {mesh_mtu}-byte VXLAN datagrams received per node: {whole:?}");
    // a got the replies from b and c; b and c the requests.
    let sent = u64::from(PROBES);
    assert!(whole[0] >= 2 * sent, "node a: {whole:?}");
    assert!(whole[1] >= sent && whole[2] >= sent, "{whole:?}");
    for (i, node) in mesh.nodes.iter().enumerate() {
        let after = k8s::ip_counters(node.ns())?;
        for counter in ["FragCreates", "FragOKs", "ReasmReqds"] {
            let (b, a) = (
                frags_before[i].get(counter).copied().unwrap_or(0),
                after.get(counter).copied().unwrap_or(0),
            );
            assert_eq!(
                a,
                b,
                "node {}: IP {counter} went from {b} to {a} during the VXLAN MTU pings",
                node.name()
            );
        }
    }

    // host-gw at its MTU: no encapsulation, the whole mesh MTU.
    for j in 1..n {
        let what = format!(
            "pod a -> pod {j} over host-gw ({})",
            mesh.expected_path(0, j)
        );
        assert_df_fits(&pods[0].ns, &pods[j].host_gw_ip, host_gw_mtu - 28, &what);
        assert_df_too_big(&pods[0].ns, &pods[j].host_gw_ip, host_gw_mtu - 27, &what);
    }

    // Throughput pod a -> pod b (direct path), A B A B.
    let rounds = env_u32("WM_PODNET_ROUNDS", 2).max(1);
    let secs = env_u32("WM_PODNET_SECS", 2).max(1);
    let (mut vx, mut hg) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for (mode, to, samples) in [
            ("vxlan", &pods[1].vxlan_ip, &mut vx),
            ("host-gw", &pods[1].host_gw_ip, &mut hg),
        ] {
            let mbit = xfer::iperf3_mbit(&pods[0].ns, &pods[1].ns, to, secs)?;
            eprintln!("BENCH pod_network round={round} mode={mode} mbit={mbit:.0}");
            samples.push(mbit);
        }
    }
    let (mv, mh) = (median(&vx), median(&hg));
    eprintln!(
        "BENCH pod_network_summary path={} rounds={rounds} secs={secs} vxlan_median={mv:.0} \
         host_gw_median={mh:.0} ratio_vxlan_host_gw={:.2} mesh_mtu={mesh_mtu} \
         vxlan_mtu={vxlan_mtu} host_gw_mtu={host_gw_mtu}",
        mesh.expected_path(0, 1),
        if mh > 0.0 { mv / mh } else { 0.0 },
    );
    assert!(
        vx.iter().chain(&hg).all(|&m| m > 0.0),
        "a backend carried no data: vxlan {vx:?}, host-gw {hg:?}"
    );
    drop(pods);
    Ok(())
}
