//! meshd against wireguard-go, the reference implementation: the handshake initiated from
//! either side, ping, and checksummed TCP transfers in both directions.

use std::sync::Arc;
use std::time::Duration;

use wiremesh_tests::topo::PORT;
use wiremesh_tests::xfer::transfer;
use wiremesh_tests::{
    ping, ping_once, wait_until, Lab, Meshd, MeshdConfig, Netns, NodeKey, Peer, WgGo,
};

const XFER_BYTES: u64 = 20_000_000;

struct Setup {
    // Field order is drop order: daemons before the lab's namespaces.
    meshd: Meshd,
    wggo: WgGo,
    m_key: NodeKey,
    w_key: NodeKey,
    m_ns: Arc<Netns>,
    w_ns: Arc<Netns>,
    _lab: Lab,
}

/// meshd on "m" (198.51.100.1, 10.9.8.1) and wireguard-go on "w" (198.51.100.2, 10.9.8.2)
/// on a direct link. Only the side named by `initiator` knows the other's endpoint, so
/// only it can start the handshake.
fn setup(meshd_initiates: bool) -> anyhow::Result<Setup> {
    let lab = Lab::new()?;
    let m_ns = lab.host("m")?;
    let w_ns = lab.host("w")?;
    lab.link(&m_ns, &w_ns, "198.51.100.1/24", "198.51.100.2/24")?;
    let (m_key, w_key) = (NodeKey::generate()?, NodeKey::generate()?);

    let w_endpoint = meshd_initiates.then(|| format!("198.51.100.2:{PORT}"));
    let config = MeshdConfig::new("10.9.8.1/24", PORT, Some(m_key.clone())).peer(Peer::new(
        &w_key.public,
        w_endpoint,
        "10.9.8.2/32",
    ));
    let meshd = Meshd::start(&m_ns, "m", config)?;

    let wggo = WgGo::start(&w_ns, &w_key, PORT, "10.9.8.2/24")?;
    let m_endpoint = (!meshd_initiates).then(|| format!("198.51.100.1:{PORT}"));
    wggo.set_peer(&Peer::new(&m_key.public, m_endpoint, "10.9.8.1/32"))?;
    Ok(Setup {
        meshd,
        wggo,
        m_key,
        w_key,
        m_ns,
        w_ns,
        _lab: lab,
    })
}

fn transfers_both_ways(s: &Setup) {
    for (from, to, to_ip, dir) in [
        (&s.m_ns, &s.w_ns, "10.9.8.2", "meshd -> wireguard-go"),
        (&s.w_ns, &s.m_ns, "10.9.8.1", "wireguard-go -> meshd"),
    ] {
        let t = transfer(from, to, to_ip, 5001, XFER_BYTES, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{dir} transfer: {e:#}"));
        eprintln!(
            "{dir}: {XFER_BYTES} bytes in {:.2} s ({:.0} Mbit/s, informational)",
            t.took.as_secs_f64(),
            t.mbit_per_s()
        );
        assert_eq!(t.received.bytes, XFER_BYTES, "{dir}: byte count");
        assert_eq!(t.received.sha256, t.sent.sha256, "{dir}: checksum mismatch");
    }
}

#[test]
fn meshd_initiates_handshake_with_wireguard_go() -> anyhow::Result<()> {
    let s = setup(true)?;
    assert_eq!(
        s.wggo.latest_handshake(&s.m_key.public)?,
        0,
        "handshake before any traffic"
    );
    // The first packet comes from the meshd side.
    wait_until(
        Duration::from_secs(10),
        "meshd -> wireguard-go ping",
        || ping_once(&s.m_ns, "10.9.8.2"),
    )
    .expect("meshd could not reach wireguard-go");
    assert!(
        s.wggo.latest_handshake(&s.m_key.public)? > 0,
        "wireguard-go saw no handshake"
    );
    assert_eq!(
        s.wggo.endpoint(&s.m_key.public)?.as_deref(),
        Some("198.51.100.1:51820"),
        "wireguard-go should have learned meshd's endpoint from the handshake"
    );
    assert_eq!(
        ping(&s.w_ns, "10.9.8.1", 5),
        0.0,
        "wireguard-go -> meshd ping lost packets"
    );
    let p = s.meshd.peer_status(&s.w_key.public)?;
    assert!(
        p["latest-handshake-secs"].is_u64(),
        "meshd reports no handshake: {p}"
    );
    transfers_both_ways(&s);
    Ok(())
}

#[test]
fn wireguard_go_initiates_handshake_with_meshd() -> anyhow::Result<()> {
    let s = setup(false)?;
    let p = s.meshd.peer_status(&s.w_key.public)?;
    assert!(
        p["endpoint"].is_null(),
        "meshd has an endpoint although none was configured: {p}"
    );
    // The first packet comes from the wireguard-go side.
    wait_until(
        Duration::from_secs(10),
        "wireguard-go -> meshd ping",
        || ping_once(&s.w_ns, "10.9.8.1"),
    )
    .expect("wireguard-go could not reach meshd");
    let p = s.meshd.peer_status(&s.w_key.public)?;
    assert_eq!(
        p["endpoint"], "198.51.100.2:51820",
        "meshd did not learn wireguard-go's endpoint: {p}"
    );
    assert!(
        p["latest-handshake-secs"].is_u64(),
        "meshd reports no handshake: {p}"
    );
    assert_eq!(
        ping(&s.m_ns, "10.9.8.2", 5),
        0.0,
        "meshd -> wireguard-go ping lost packets"
    );
    transfers_both_ways(&s);
    Ok(())
}
