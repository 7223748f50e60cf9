//! etcd over the mesh (issue 14, part 2): a three-member etcd cluster (Debian's
//! etcd-server) on three NAT'd sites, its peer and client URLs exactly what each node's
//! `meshctl k8s --json` tells a kubeadm user (needs root; fails without it).
//!
//! ```text
//!   coordinator 192.0.2.10 (QUIC, reflectors, relay)
//!        │ internet
//!   site a: cone NAT ── node a (meshd, etcd a on 10.9.8.x)     a ↔ b direct, then blocked: relay
//!   site b: cone NAT ── node b (meshd, etcd b on 10.9.8.y)     a ↔ c, b ↔ c relay (symmetric NAT)
//!   site c: symmetric NAT ── node c (meshd, etcd c on 10.9.8.z)
//! ```
//! The members listen on loopback and their overlay address only, so raft and client
//! traffic between them can only cross the mesh. A write on one member is read on the
//! others; then site a loses its direct paths (UDP between its public address and the
//! other sites is dropped on the internet) and, once meshd reports the relay for all of
//! a's peers, the cluster is still healthy and replicates a new write everywhere.
//!
//! TLS as kubeadm sets it up: an etcd CA of the test's own, a certificate per member for
//! the hosts of its URLs, client and peer certificate authentication on both ports; the
//! members run with the https URLs exactly as printed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use wiremesh_tests::k8s::{self, MeshEtcd};
use wiremesh_tests::lab::{ping_once, Lab};
use wiremesh_tests::netns::Netns;
use wiremesh_tests::sites::{NatMesh, SiteSpec};
use wiremesh_tests::util;

/// Generous: tests share two cores with other tests.
const CONVERGE: Duration = Duration::from_secs(30);

#[test]
fn etcd_members_on_meshctl_k8s_urls_replicate_directly_and_over_the_relay() -> anyhow::Result<()> {
    util::require_root()?;
    let lab = Lab::new()?;
    let mesh = NatMesh::new(&lab, &SiteSpec::cone_cone_symmetric())?;
    mesh.join_all(CONVERGE)?;
    let n = mesh.nodes.len();
    let ips: Vec<String> = (0..n)
        .map(|i| mesh.overlay_ip(i))
        .collect::<Result<_, _>>()?;
    for i in 0..n {
        for (j, ip) in ips.iter().enumerate() {
            if i != j {
                util::wait_until(CONVERGE, &format!("{} ping", mesh.pair(i, j)), || {
                    ping_once(mesh.nodes[i].ns(), ip)
                })?;
            }
        }
    }
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        mesh.wait_path(i, j, mesh.expected_path(i, j), CONVERGE)?;
    }

    // What each node's `meshctl k8s --json` says etcd needs; the members start with it.
    let mut places: Vec<(String, Arc<Netns>, Value)> = Vec::new();
    for (i, node) in mesh.nodes.iter().enumerate() {
        let report = k8s::report(&node.meshd)?;
        eprintln!("[etcd_mesh] {} meshctl k8s --json: {report}", node.name());
        // The printed URLs are on this node's overlay address.
        let peer = k8s::field(&report, "etcd", "initial-advertise-peer-urls")?;
        assert_eq!(peer, format!("https://{}:2380", ips[i]), "{report}");
        places.push((node.name().to_owned(), node.ns().clone(), report));
    }
    let etcd = MeshEtcd::start(&places)?;

    // The cluster's members are exactly the ones meshctl described: peer and client URLs.
    let listed: Value = serde_json::from_str(&etcd.ctl(0, &["member", "list", "-w", "json"])?)
        .context("etcdctl member list -w json")?;
    let members = listed["members"].as_array().context("no members")?;
    assert_eq!(members.len(), n, "{listed}");
    for (name, _, report) in &places {
        let m = members
            .iter()
            .find(|m| m["name"] == name.as_str())
            .with_context(|| format!("member {name} not listed: {listed}"))?;
        let want_peer = k8s::field(report, "etcd", "initial-advertise-peer-urls")?;
        let want_client = k8s::field(report, "etcd", "advertise-client-urls")?;
        assert_eq!(m["peerURLs"], serde_json::json!([want_peer]), "{m}");
        assert_eq!(m["clientURLs"], serde_json::json!([want_client]), "{m}");
    }

    // Written on a (its own client URL), read on b and c (theirs: reads go through each
    // member, which serves them only with a leader it reaches over the mesh).
    etcd.ctl(0, &["put", "/wm/issue14", "written-on-a"])?;
    for i in 1..n {
        assert_eq!(
            etcd.get(i, "/wm/issue14")?.as_deref(),
            Some("written-on-a"),
            "member {} does not serve a's write",
            mesh.nodes[i].name()
        );
    }
    // Every member's advertised client URL is healthy from every node.
    let all = (0..n)
        .map(|i| etcd.client_url(i).to_owned())
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..n {
        assert_eq!(
            etcd.healthy_count(i, &all),
            n,
            "healthy members as {} sees them",
            mesh.nodes[i].name()
        );
    }

    // Site a loses its direct paths: UDP between its public address and the other sites
    // dropped on the internet (a ↔ c was relayed already: c is behind a symmetric NAT).
    mesh.block_direct(0, 1)?;
    mesh.block_direct(0, 2)?;
    for j in 1..n {
        mesh.wait_path(0, j, "relay", CONVERGE)?;
    }
    eprintln!("[etcd_mesh] a reaches b and c over the relay only");
    // Healthy over the relay: every member, from every node.
    etcd.wait_healthy(CONVERGE)?;
    for i in 0..n {
        util::wait_until(
            CONVERGE,
            &format!(
                "all members healthy from {} with a on the relay",
                mesh.nodes[i].name()
            ),
            || etcd.healthy_count(i, &all) == n,
        )?;
    }
    // Writes replicate both ways across the relayed member.
    etcd.ctl(0, &["put", "/wm/relay", "from-a-over-the-relay"])?;
    etcd.ctl(2, &["put", "/wm/relay-c", "from-c"])?;
    for i in 0..n {
        assert_eq!(
            etcd.get(i, "/wm/relay")?.as_deref(),
            Some("from-a-over-the-relay"),
            "member {}",
            mesh.nodes[i].name()
        );
        assert_eq!(
            etcd.get(i, "/wm/relay-c")?.as_deref(),
            Some("from-c"),
            "member {}",
            mesh.nodes[i].name()
        );
    }
    // Still on the relay at the end (the block held): the writes above crossed it.
    for j in 1..n {
        assert_eq!(mesh.path_now(0, j).as_deref(), Some("relay"));
        assert_eq!(mesh.path_now(j, 0).as_deref(), Some("relay"));
    }
    Ok(())
}
