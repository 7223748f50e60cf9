//! Cryptokey routing and hostile input: meshd accepts a decrypted packet only from the peer
//! whose allowed IPs cover its source, ignores keys it does not know, and survives junk.

use std::time::Duration;

use wiremesh_tests::topo::{full_mesh, linked_pair, PORT};
use wiremesh_tests::xfer::garbage;
use wiremesh_tests::{ping, ping_once, ping_with, wait_until, Lab, NodeKey, Peer, WgGo};

/// a sends b a packet with inner source 10.9.8.99, outside a's allowed IPs at b
/// (10.9.8.1/32): b must drop it and count it as `bad-source`.
#[test]
fn spoofed_inner_source_from_a_real_peer_is_dropped() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (a, b) = linked_pair(&lab)?;
    wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(a.ns(), &b.overlay_ip)
    })
    .expect("a cannot ping b over the overlay");
    let bad_before = b.meshd.dropped("bad-source")?;

    // a's TUN gets a second address; a routes 10.9.8.2 to b as usual (by destination).
    a.ns().ip(&[
        "addr",
        "add",
        "10.9.8.99/32",
        "dev",
        &a.meshd.config().interface,
    ])?;
    let loss = ping_with(a.ns(), &b.overlay_ip, 3, &["-I", "10.9.8.99"]);
    assert_eq!(
        loss, 100.0,
        "b answered a packet whose inner source 10.9.8.99 is not in a's allowed IPs"
    );

    let counted = wait_until(
        Duration::from_secs(3),
        "b's dropped.bad-source to count 3 packets",
        || {
            b.meshd
                .dropped("bad-source")
                .map(|n| n >= bad_before + 3)
                .unwrap_or(false)
        },
    );
    let bad_after = b.meshd.dropped("bad-source")?;
    assert!(
        counted.is_ok(),
        "b's dropped.bad-source went from {bad_before} to {bad_after}, expected +3"
    );
    // The legitimate source still works.
    assert_eq!(
        ping(a.ns(), &b.overlay_ip, 3),
        0.0,
        "a -> b from the real address stopped working"
    );
    Ok(())
}

/// A wireguard-go instance whose key b does not know tries to reach b: no handshake, no
/// ping, and b counts the attempts.
#[test]
fn datagrams_from_an_unknown_key_are_rejected() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let nodes = full_mesh(&lab, 2, None)?;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (stranger_ns, _) = lab.internet_host("x", "198.51.100.3/24")?;
    let kx = NodeKey::generate()?;
    let wx = WgGo::start(&stranger_ns, &kx, PORT, "10.9.8.3/24")?;
    wx.set_peer(&Peer::new(&b.key.public, Some(b.endpoint()), "10.9.8.2/32"))?;

    let unknown_before = b.meshd.dropped("unknown-peer")?;
    let invalid_before = b.meshd.dropped("invalid")?;
    assert_eq!(
        ping(&stranger_ns, &b.overlay_ip, 3),
        100.0,
        "b answered a peer it does not know"
    );
    assert_eq!(
        wx.latest_handshake(&b.key.public)?,
        0,
        "the stranger completed a handshake with b"
    );
    let grew = wait_until(
        Duration::from_secs(3),
        "b to count the stranger's handshake initiation",
        || {
            let u = b.meshd.dropped("unknown-peer").unwrap_or(0);
            let i = b.meshd.dropped("invalid").unwrap_or(0);
            u > unknown_before || i > invalid_before
        },
    );
    let (u, i) = (
        b.meshd.dropped("unknown-peer")?,
        b.meshd.dropped("invalid")?,
    );
    eprintln!(
        "b: dropped.unknown-peer {unknown_before} -> {u}, dropped.invalid {invalid_before} -> {i}"
    );
    assert!(
        grew.is_ok(),
        "neither dropped.unknown-peer nor dropped.invalid grew at b"
    );
    let s = b.meshd.status()?;
    let knows = s["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["public-key"] == kx.public.as_str());
    assert!(!knows, "b added the stranger as a peer: {s}");
    wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(a.ns(), &b.overlay_ip)
    })
    .expect("a -> b stopped working");
    assert_eq!(ping(b.ns(), &a.overlay_ip, 3), 0.0, "b -> a lost packets");
    Ok(())
}

/// 10,000 random and truncated datagrams (some with valid WireGuard type bytes) at b's port
/// from another host: meshd keeps running and a <-> b keeps working.
#[test]
fn random_and_truncated_datagrams_do_not_break_meshd() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let mut nodes = full_mesh(&lab, 2, None)?;
    let (junk_ns, _) = lab.internet_host("junk", "198.51.100.9/24")?;
    wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(nodes[0].ns(), &nodes[1].overlay_ip)
    })
    .expect("a cannot ping b over the overlay");
    let invalid_before = nodes[1].meshd.dropped("invalid")?;

    let sent = garbage(&junk_ns, &nodes[1].endpoint(), 10_000, 0x5eed)?;
    eprintln!("sent {sent} junk datagrams to b");
    assert!(
        sent >= 9_000,
        "only {sent} of 10000 junk datagrams left the sender"
    );

    assert!(
        nodes[1].meshd.is_running(),
        "meshd b died from junk input:\n{}",
        nodes[1].meshd.log_tail(40)
    );
    let invalid_after = nodes[1].meshd.dropped("invalid")?;
    eprintln!("b: dropped.invalid {invalid_before} -> {invalid_after}");
    assert!(
        invalid_after > invalid_before,
        "b's dropped.invalid did not grow after junk input"
    );
    let (a, b) = (&nodes[0], &nodes[1]);
    assert_eq!(
        ping(a.ns(), &b.overlay_ip, 5),
        0.0,
        "a -> b lost packets after the junk"
    );
    assert_eq!(
        ping(b.ns(), &a.overlay_ip, 5),
        0.0,
        "b -> a lost packets after the junk"
    );
    assert!(nodes[1].meshd.is_running(), "meshd b exited");
    Ok(())
}
