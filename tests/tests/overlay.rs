//! meshd nodes talk over the overlay: a linked pair, a full mesh of three, and a 100 MB
//! TCP transfer that must arrive bit for bit.

use std::time::Duration;

use wiremesh_tests::topo::{full_mesh, linked_pair};
use wiremesh_tests::xfer::transfer;
use wiremesh_tests::{ping, ping_once, wait_until, Lab};

#[test]
fn two_nodes_on_one_link_ping_each_other() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (a, b) = linked_pair(&lab)?;
    wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(a.ns(), &b.overlay_ip)
    })
    .expect("a cannot ping b over the overlay");
    assert_eq!(ping(a.ns(), &b.overlay_ip, 5), 0.0, "a -> b lost packets");
    assert_eq!(ping(b.ns(), &a.overlay_ip, 5), 0.0, "b -> a lost packets");

    for (me, other) in [(&a, &b), (&b, &a)] {
        let p = me.meshd.peer_status(&other.key.public)?;
        assert_eq!(
            p["endpoint"],
            other.endpoint().as_str(),
            "{}: wrong endpoint for {}: {p}",
            me.name,
            other.name
        );
        assert!(
            p["latest-handshake-secs"].is_u64(),
            "{}: no handshake with {}: {p}",
            me.name,
            other.name
        );
        assert!(
            p["rx-bytes"].as_u64().unwrap_or(0) > 0,
            "{}: rx-bytes not counted: {p}",
            me.name
        );
        assert!(
            p["tx-bytes"].as_u64().unwrap_or(0) > 0,
            "{}: tx-bytes not counted: {p}",
            me.name
        );
        let s = me.meshd.status()?;
        assert_eq!(
            s["public-key"],
            me.key.public.as_str(),
            "{}: status shows another key",
            me.name
        );
        assert_eq!(
            s["address"],
            format!("{}/24", me.overlay_ip).as_str(),
            "{}: status address",
            me.name
        );
        assert_eq!(s["mtu"], 1280, "{}: status mtu", me.name);
    }
    Ok(())
}

#[test]
fn three_nodes_full_mesh_all_pairs_ping() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let nodes = full_mesh(&lab, 3, None)?;
    for from in &nodes {
        for to in &nodes {
            if from.name == to.name {
                continue;
            }
            let what = format!("{} -> {} overlay ping", from.name, to.name);
            wait_until(Duration::from_secs(10), &what, || {
                ping_once(from.ns(), &to.overlay_ip)
            })
            .unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(
                ping(from.ns(), &to.overlay_ip, 3),
                0.0,
                "{what} lost packets"
            );
        }
    }
    for n in &nodes {
        let s = n.meshd.status()?;
        let peers = s["peers"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(peers, 2, "{}: expected 2 peers in status: {s}", n.name);
        for p in s["peers"].as_array().into_iter().flatten() {
            assert!(
                p["latest-handshake-secs"].is_u64(),
                "{}: peer without handshake: {p}",
                n.name
            );
        }
    }
    Ok(())
}

#[test]
fn transfer_of_100_mb_over_the_overlay_arrives_intact() -> anyhow::Result<()> {
    const BYTES: u64 = 100_000_000;
    let lab = Lab::new()?;
    let (a, b) = linked_pair(&lab)?;
    wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(a.ns(), &b.overlay_ip)
    })
    .expect("a cannot ping b over the overlay");
    let rx_before = b.meshd.peer_status(&a.key.public)?["rx-bytes"]
        .as_u64()
        .unwrap_or(0);
    let t = transfer(
        a.ns(),
        b.ns(),
        &b.overlay_ip,
        5001,
        BYTES,
        Duration::from_secs(180),
    )
    .expect("transfer over the overlay");
    eprintln!(
        "100 MB transfer: {:.1} s, {:.0} Mbit/s (informational)",
        t.took.as_secs_f64(),
        t.mbit_per_s()
    );
    assert_eq!(t.sent.bytes, BYTES);
    assert_eq!(
        t.received.bytes, BYTES,
        "receiver got a different number of bytes"
    );
    assert_eq!(
        t.received.sha256, t.sent.sha256,
        "checksum mismatch: the stream was corrupted"
    );
    let rx_after = b.meshd.peer_status(&a.key.public)?["rx-bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        rx_after - rx_before >= BYTES,
        "b counted {} payload bytes from a during a {BYTES}-byte transfer",
        rx_after - rx_before
    );
    Ok(())
}

/// The harness reads status through `meshctl status --json`; it must say what the API
/// socket says.
#[test]
fn meshctl_status_json_agrees_with_the_api_socket() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (a, b) = linked_pair(&lab)?;
    wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(a.ns(), &b.overlay_ip)
    })
    .expect("a cannot ping b over the overlay");
    let via_ctl = a
        .meshd
        .status_via_meshctl()?
        .expect("meshctl status --json printed no JSON");
    let via_socket = a.meshd.status_via_socket()?;
    for field in ["interface", "address", "mtu", "public-key", "listen-port"] {
        assert_eq!(
            via_ctl[field], via_socket[field],
            "meshctl and the socket disagree on {field}"
        );
    }
    let peer = |s: &serde_json::Value| {
        let p = &s["peers"][0];
        (
            p["public-key"].clone(),
            p["endpoint"].clone(),
            p["allowed-ips"].clone(),
        )
    };
    assert_eq!(
        peer(&via_ctl),
        peer(&via_socket),
        "meshctl and the socket disagree on the peer"
    );
    let text = a.meshd.meshctl_status_text()?;
    assert!(
        text.contains(&b.key.public[..8]),
        "meshctl status does not mention b's key:\n{text}"
    );
    Ok(())
}
