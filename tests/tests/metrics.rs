//! Both Prometheus endpoints, read with a text-format parser while real traffic flows
//! (issue 5): the coordinator's `/metrics` (members online, joins, netmap pushes, reflector
//! requests, relay bytes) and meshd's (per-peer bytes, handshake, path, drops by reason).
//!
//! Two sites, one behind a port-restricted cone NAT and one behind a symmetric NAT: their
//! traffic goes through the relay, so every counter above has a reason to move.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use wiremesh_tests::sites::{NatMesh, SiteSpec};
use wiremesh_tests::{ping, wait_until, Lab, NatKind};

/// Generous: tests share two cores.
const WAIT: Duration = Duration::from_secs(30);
const NETWORK: &str = wiremesh_tests::control::NETWORK;
/// Where each node serves its metrics (inside its own namespace).
const METRICS: &str = "127.0.0.1:9586";

/// One scrape: `(metric, labels) → value`. Fails on anything the parser rejects and on a
/// sample without `# HELP` and `# TYPE`.
#[derive(Debug)]
struct Metrics(Vec<(String, BTreeMap<String, String>, f64)>);

impl Metrics {
    fn parse(text: &str) -> anyhow::Result<Metrics> {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
        let mut out = Vec::new();
        for s in scrape.samples {
            anyhow::ensure!(
                scrape.docs.contains_key(&s.metric),
                "{} has no HELP",
                s.metric
            );
            let v = match s.value {
                Value::Counter(v) | Value::Gauge(v) => v,
                other => anyhow::bail!("{}: untyped or unexpected {other:?}", s.metric),
            };
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            out.push((s.metric, labels, v));
        }
        Ok(Metrics(out))
    }

    /// The sum over samples of `metric` whose labels include `labels` (0 when none).
    fn get(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(m, l, _)| {
                m == metric
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Whether any sample of `metric` exists.
    fn has(&self, metric: &str) -> bool {
        self.0.iter().any(|(m, _, _)| m == metric)
    }
}

#[test]
fn metrics_parse_and_count_real_traffic() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let mut mesh = NatMesh::new(
        &lab,
        &[
            SiteSpec::one(NatKind::Cone),
            SiteSpec::one(NatKind::Symmetric),
        ],
    )?;
    for n in &mut mesh.nodes {
        let config = n.meshd.config().clone().with_metrics(METRICS);
        n.meshd.restart_with(config)?;
    }
    let coord_before = Metrics::parse(&mesh.coord.metrics()?)?;
    for counter in [
        "wiremesh_joins_total",
        "wiremesh_netmap_pushes_total",
        "wiremesh_reflector_requests_total",
        "wiremesh_relay_forwarded_bytes_total",
    ] {
        assert!(
            coord_before.has(counter),
            "{counter} missing before traffic"
        );
    }
    assert_eq!(
        coord_before.get("wiremesh_members_online", &[("network", NETWORK)]),
        0.0
    );

    mesh.join_all(WAIT)?;
    mesh.wait_path(0, 1, "relay", WAIT)?;
    let b_ip = mesh.overlay_ip(1)?;
    let loss = ping(mesh.nodes[0].ns(), &b_ip, 20);
    assert!(loss < 0.5, "{loss} loss pinging b over the relay");

    // The coordinator counted the joins, pushes, reflections and relayed bytes.
    let mut coord_after = Metrics::parse(&mesh.coord.metrics()?)?;
    wait_until(WAIT, "the coordinator sees both members online", || {
        Metrics::parse(&mesh.coord.metrics().unwrap_or_default())
            .map(|m| {
                let online = m.get("wiremesh_members_online", &[("network", NETWORK)]) == 2.0;
                coord_after = m;
                online
            })
            .unwrap_or(false)
    })?;
    let grew = |name: &str| coord_after.get(name, &[]) > coord_before.get(name, &[]);
    for counter in [
        "wiremesh_joins_total",
        "wiremesh_netmap_pushes_total",
        "wiremesh_reflector_requests_total",
        "wiremesh_relay_registrations_total",
        "wiremesh_relay_forwarded_packets_total",
        "wiremesh_relay_forwarded_bytes_total",
    ] {
        assert!(
            grew(counter),
            "{counter}: {} before, {} after",
            coord_before.get(counter, &[]),
            coord_after.get(counter, &[])
        );
    }
    assert!(
        coord_after.get("wiremesh_joins_total", &[])
            - coord_before.get("wiremesh_joins_total", &[])
            >= 2.0
    );
    // 20 pings each way at least 84 bytes each, relayed inside WireGuard.
    assert!(coord_after.get("wiremesh_relay_forwarded_bytes_total", &[]) >= 40.0 * 84.0);

    // meshd: a's counters for peer b move with the next burst, the path says relay.
    let a = &mesh.nodes[0].meshd;
    let b_fp = &mesh.nodes[1].key[..8];
    let peer = [("peer", b_fp)];
    let before = Metrics::parse(&a.metrics()?)?;
    assert!(
        before.get("wiremesh_peer_tx_bytes", &peer) > 0.0,
        "{before:?}"
    );
    assert!(
        before.get("wiremesh_peer_rx_bytes", &peer) > 0.0,
        "{before:?}"
    );
    assert_eq!(
        before.get("wiremesh_peer_path", &[("peer", b_fp), ("path", "relay")]),
        1.0,
        "{before:?}"
    );
    assert!(before.has("wiremesh_peer_latest_handshake_age_seconds"));
    assert!(
        before.get("wiremesh_peer_handshakes_total", &peer) >= 1.0,
        "{before:?}"
    );
    assert!(before.has("wiremesh_dropped_packets_total"));
    assert_eq!(before.get("wiremesh_peers", &[]), 1.0);
    let loss = ping(mesh.nodes[0].ns(), &b_ip, 10);
    assert!(loss < 0.5, "{loss} loss pinging b over the relay");
    let after = Metrics::parse(&a.metrics()?)?;
    for counter in ["wiremesh_peer_tx_bytes", "wiremesh_peer_rx_bytes"] {
        let (x, y) = (before.get(counter, &peer), after.get(counter, &peer));
        // 10 echo requests out, 10 replies in, 84 bytes each at least.
        assert!(y - x >= 10.0 * 84.0, "{counter}: {x} then {y}");
    }
    Ok(())
}
