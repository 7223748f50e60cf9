//! Checks the lab itself with wireguard-go on both ends, so that a failing meshd test
//! points at meshd and not at the namespaces, links, NAT or loss rules.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use wiremesh_tests::capture::{dedup, magic_filter, Capture};
use wiremesh_tests::control::COORDINATOR_IP;
use wiremesh_tests::coordinator::REFLECTOR_PORTS;
use wiremesh_tests::sites::{
    self, block_udp_between, build_site, nat_name, unblock_udp_between, Site, SiteSpec,
};
use wiremesh_tests::xfer::{probe, udp_send, Reflector, UdpSend};
use wiremesh_tests::{
    parse_ping_loss, ping, ping_once, set_loss, set_udp_loss, wait_until, Lab, NatKind, Netns,
    NodeKey, Peer, WgGo,
};

fn namespace_exists(name: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("running ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn netns_is_deleted_and_emptied_on_drop_even_on_panic() -> anyhow::Result<()> {
    wiremesh_tests::require_root()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let ns = Netns::new("drop").expect("creating a namespace");
        let child = ns.spawn_piped(&["sleep", "60"]).expect("starting sleep");
        // `ip netns exec` enters the namespace after spawn returns; wait until it has.
        wait_until(
            Duration::from_secs(5),
            "sleep to enter the namespace",
            || ns.pids().contains(&child.id()),
        )
        .expect("sleep never showed up in the namespace");
        tx.send((ns.name().to_owned(), child))
            .expect("handing over the child");
        panic!("deliberate panic: the namespace must still be cleaned up");
    })
    .join()
    .is_err();
    assert!(panicked, "the helper thread was supposed to panic");
    let (name, mut child) = rx.recv()?;
    assert!(
        !namespace_exists(&name),
        "namespace {name} still exists after drop during panic"
    );
    let status = child.try_wait()?;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        status.is_some(),
        "process {} started in {name} still ran after the namespace was dropped",
        child.id()
    );
    Ok(())
}

/// Two wireguard-go instances on a direct veth link handshake and ping.
#[test]
fn wireguard_go_pair_pings_over_a_link() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, &b, "198.51.100.1/24", "198.51.100.2/24")?;
    assert_eq!(
        ping(&a, "198.51.100.2", 3),
        0.0,
        "underlay ping over the veth link failed"
    );

    let (ka, kb) = (NodeKey::generate()?, NodeKey::generate()?);
    let wa = WgGo::start(&a, &ka, 51820, "10.9.8.1/24")?;
    let wb = WgGo::start(&b, &kb, 51820, "10.9.8.2/24")?;
    wa.set_peer(&Peer::new(
        &kb.public,
        Some("198.51.100.2:51820".into()),
        "10.9.8.2/32",
    ))?;
    wb.set_peer(&Peer::new(
        &ka.public,
        Some("198.51.100.1:51820".into()),
        "10.9.8.1/32",
    ))?;

    wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(&a, "10.9.8.2")
    })
    .expect("overlay ping");
    assert_eq!(
        ping(&b, "10.9.8.1", 5),
        0.0,
        "b -> a overlay ping lost packets"
    );
    assert!(
        wa.latest_handshake(&kb.public)? > 0,
        "a reports no handshake with b"
    );
    assert!(
        wb.latest_handshake(&ka.public)? > 0,
        "b reports no handshake with a"
    );
    Ok(())
}

/// Hosts on the internet bridge in different documentation ranges reach each other via
/// the internet namespace's gateways.
#[test]
fn internet_routes_between_documentation_ranges() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (a, _) = lab.internet_host("a", "198.51.100.1/24")?;
    let (b, _) = lab.internet_host("b", "203.0.113.7/24")?;
    let (c, _) = lab.internet_host("c", "192.0.2.9/24")?;
    assert_eq!(ping(&a, "203.0.113.7", 3), 0.0);
    assert_eq!(ping(&b, "192.0.2.9", 3), 0.0);
    assert_eq!(ping(&c, "198.51.100.1", 3), 0.0);
    Ok(())
}

/// A host behind each kind of router talks WireGuard to a server on the internet; the
/// server sees the mapping the NAT kind promises.
fn nat_case(kind: NatKind) -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (server, _) = lab.internet_host("srv", "198.51.100.2/24")?;
    let router = lab.nat_router(kind, "203.0.113.10/24", "192.168.1.1/24")?;
    let (client, _) = lab.nat_host(&router, "cli", "192.168.1.2/24")?;
    assert_eq!(
        ping(&client, "198.51.100.2", 3),
        0.0,
        "client cannot reach the server through the router"
    );
    // Inbound to the private address works only without NAT (the internet has a route).
    let inbound = ping(&server, "192.168.1.2", 2);
    match kind {
        NatKind::None => assert_eq!(
            inbound, 0.0,
            "plain router: server should reach 192.168.1.2"
        ),
        NatKind::Cone | NatKind::Symmetric => {
            assert_eq!(inbound, 100.0, "NAT: 192.168.1.2 must not be reachable")
        }
    }

    let (kc, ks) = (NodeKey::generate()?, NodeKey::generate()?);
    let wc = WgGo::start(&client, &kc, 40000, "10.9.8.1/24")?;
    let ws = WgGo::start(&server, &ks, 51820, "10.9.8.2/24")?;
    let mut to_server = Peer::new(&ks.public, Some("198.51.100.2:51820".into()), "10.9.8.2/32");
    to_server.persistent_keepalive = Some(1);
    // Server first: the keepalive makes the client initiate at once, and an initiation
    // the server cannot match would only be retried after 5 s (REKEY_TIMEOUT).
    ws.set_peer(&Peer::new(&kc.public, None, "10.9.8.1/32"))?;
    wc.set_peer(&to_server)?;

    wait_until(
        Duration::from_secs(10),
        "client -> server overlay ping",
        || ping_once(&client, "10.9.8.2"),
    )
    .expect("overlay ping through the router");
    assert_eq!(
        ping(&server, "10.9.8.1", 3),
        0.0,
        "server -> client over the learned endpoint"
    );
    let ep = ws
        .endpoint(&kc.public)?
        .expect("server learned no endpoint for the client");
    let (ip, port) = ep.rsplit_once(':').expect("endpoint is IP:PORT");
    match kind {
        NatKind::None => assert_eq!(
            ep, "192.168.1.2:40000",
            "plain routing keeps address and port"
        ),
        NatKind::Cone => assert_eq!(
            ep, "203.0.113.10:40000",
            "masquerade maps to the WAN address and keeps the port"
        ),
        NatKind::Symmetric => {
            assert_eq!(
                ip, "203.0.113.10",
                "masquerade random maps to the WAN address"
            );
            assert_ne!(port, "40000", "masquerade random should pick a random port");
        }
    }
    Ok(())
}

#[test]
fn wireguard_go_behind_plain_router() -> anyhow::Result<()> {
    nat_case(NatKind::None)
}

#[test]
fn wireguard_go_behind_cone_nat() -> anyhow::Result<()> {
    nat_case(NatKind::Cone)
}

#[test]
fn wireguard_go_behind_symmetric_nat() -> anyhow::Result<()> {
    nat_case(NatKind::Symmetric)
}

/// 100 % UDP loss on a host stops WireGuard but not ICMP on the underlay; removing it
/// restores the tunnel.
#[test]
fn udp_loss_stops_wireguard_but_not_icmp() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (a, _) = lab.internet_host("a", "198.51.100.1/24")?;
    let (b, _) = lab.internet_host("b", "198.51.100.2/24")?;
    let (ka, kb) = (NodeKey::generate()?, NodeKey::generate()?);
    let wa = WgGo::start(&a, &ka, 51820, "10.9.8.1/24")?;
    let wb = WgGo::start(&b, &kb, 51820, "10.9.8.2/24")?;
    wa.set_peer(&Peer::new(
        &kb.public,
        Some("198.51.100.2:51820".into()),
        "10.9.8.2/32",
    ))?;
    wb.set_peer(&Peer::new(
        &ka.public,
        Some("198.51.100.1:51820".into()),
        "10.9.8.1/32",
    ))?;
    wait_until(Duration::from_secs(10), "overlay ping", || {
        ping_once(&a, "10.9.8.2")
    })
    .expect("overlay ping");

    set_udp_loss(&a, 100)?;
    assert_eq!(
        ping(&a, "10.9.8.2", 3),
        100.0,
        "overlay ping must fail with 100 % UDP loss"
    );
    assert_eq!(
        ping(&a, "198.51.100.2", 3),
        0.0,
        "ICMP on the underlay must not be affected"
    );
    set_udp_loss(&a, 0)?;
    wait_until(
        Duration::from_secs(10),
        "overlay ping after removing the loss",
        || ping_once(&a, "10.9.8.2"),
    )
    .expect("overlay ping after loss removed");
    Ok(())
}

// ---- The NAT-site builder of issue 4 (`wiremesh_tests::sites`), checked without meshd ----

/// `IP:PORT` of the two stand-in reflectors on the coordinator's address.
fn reflectors() -> [String; 2] {
    [
        format!("{COORDINATOR_IP}:{}", REFLECTOR_PORTS[0]),
        format!("{COORDINATOR_IP}:{}", REFLECTOR_PORTS[1]),
    ]
}

/// A routed host at the coordinator's address running two `wm-xfer reflect`s on the
/// reflector ports (what the coordinator will run), for checking the sites without it.
fn reflector_host(lab: &Lab) -> anyhow::Result<(Arc<Netns>, Vec<Reflector>)> {
    let ns = lab.host("refl")?;
    lab.attach_routed(&ns, COORDINATOR_IP.parse()?)?;
    let r = reflectors()
        .iter()
        .map(|a| Reflector::start(&ns, a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((ns, r))
}

/// Each site kind maps a socket as LAB.md says, seen from two reflectors: no NAT keeps
/// address and port, cone (`masquerade`) maps to the WAN address keeping the port for both,
/// symmetric (`masquerade random`) picks a different port per destination.
#[test]
fn sites_map_sockets_as_their_nat_kind_says() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (_refl, _r) = reflector_host(&lab)?;
    let servers = reflectors();
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    for (i, kind) in [NatKind::None, NatKind::Cone, NatKind::Symmetric]
        .into_iter()
        .enumerate()
    {
        let site = build_site(&lab, i, SiteSpec::one(kind), &[format!("h{i}")])?;
        let host = &site.hosts[0];
        let seen = probe(&host.ns, "0.0.0.0:51820", &servers)?;
        eprintln!(
            "{} site at {}: reflectors saw {seen:?}",
            nat_name(kind),
            site.public_ip
        );
        let (Some(s0), Some(s1)) = (seen[0], seen[1]) else {
            panic!(
                "{} site: a reflector did not answer: {seen:?}",
                nat_name(kind)
            );
        };
        assert_eq!(
            s0.ip(),
            IpAddr::V4(site.public_ip),
            "{}: {seen:?}",
            nat_name(kind)
        );
        assert_eq!(
            s1.ip(),
            IpAddr::V4(site.public_ip),
            "{}: {seen:?}",
            nat_name(kind)
        );
        match kind {
            NatKind::None | NatKind::Cone => {
                assert_eq!(
                    s0.port(),
                    51820,
                    "{}: port changed: {seen:?}",
                    nat_name(kind)
                );
                assert_eq!(
                    s1.port(),
                    51820,
                    "{}: port changed: {seen:?}",
                    nat_name(kind)
                );
            }
            NatKind::Symmetric => assert_ne!(
                s0.port(),
                s1.port(),
                "symmetric NAT used one port for two destinations: {seen:?}"
            ),
        }
        // A site host's interface has the documented address.
        match kind {
            NatKind::None => assert_eq!(host.ip, site.public_ip),
            _ => assert_eq!(host.ip, sites::site_lan_ip(i, 0)),
        }
    }
    Ok(())
}

/// Two hosts behind one NAT reach each other on the LAN, but not through the router's
/// public address (Linux does not hairpin), so meshd must use LAN candidates.
#[test]
fn two_hosts_behind_one_nat_meet_on_the_lan_only() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (_refl, _r) = reflector_host(&lab)?;
    let site = build_site(
        &lab,
        0,
        SiteSpec::shared(NatKind::Cone, 2),
        &["h1".to_owned(), "h2".to_owned()],
    )?;
    let (h1, h2) = (&site.hosts[0], &site.hosts[1]);
    // h2 opens a mapping from its port 51820 (as meshd would, talking to the coordinator)…
    let servers = reflectors();
    let seen = probe(&h2.ns, "0.0.0.0:51820", &[servers[0].as_str()])?;
    let mapped = seen[0].expect("the reflector did not answer h2");
    assert_eq!(mapped.ip(), IpAddr::V4(site.public_ip));
    // …then listens on it.
    let _h2_reflector = Reflector::start(&h2.ns, "0.0.0.0:51820")?;
    let lan = format!("{}:51820", h2.ip);
    let via_lan = probe(&h1.ns, "0.0.0.0:51820", &[&lan])?;
    assert_eq!(
        via_lan[0].map(|a| a.ip()),
        Some(IpAddr::V4(h1.ip)),
        "h1 cannot reach h2 on the LAN"
    );
    let hairpin = mapped.to_string();
    let via_wan = probe(&h1.ns, "0.0.0.0:51821", &[&hairpin])?;
    assert_eq!(
        via_wan[0], None,
        "the router hairpinned h1 -> {hairpin} to h2; the same-NAT test would prove nothing"
    );
    Ok(())
}

/// Blocking the direct path between two sites drops their UDP both ways, and nothing
/// else: each still reaches the coordinator's address and a third site; unblocking
/// restores it. Hosts in one /24 are routed by the internet too (attached as /32).
#[test]
fn blocking_the_direct_path_drops_only_that_pair() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (_refl, _r) = reflector_host(&lab)?;
    // Sites 0 and 2 share 198.51.100.0/24; site 1 is cone-NATed.
    let a = build_site(&lab, 0, SiteSpec::one(NatKind::None), &["a".to_owned()])?;
    let b = build_site(&lab, 1, SiteSpec::one(NatKind::Cone), &["b".to_owned()])?;
    let c = build_site(&lab, 2, SiteSpec::one(NatKind::None), &["c".to_owned()])?;
    let _ra = Reflector::start(&a.hosts[0].ns, "0.0.0.0:51820")?;
    let _rc = Reflector::start(&c.hosts[0].ns, "0.0.0.0:51820")?;
    let a_addr = format!("{}:51820", a.public_ip);
    let c_addr = format!("{}:51820", c.public_ip);
    let coord = reflectors()[0].clone();
    let reach = |from: &Site, to: &str| -> anyhow::Result<bool> {
        Ok(probe(&from.hosts[0].ns, "0.0.0.0:40000", &[to])?[0].is_some())
    };
    assert!(reach(&b, &a_addr)?, "b cannot reach a before blocking");
    assert!(reach(&c, &a_addr)?, "c cannot reach a before blocking");

    block_udp_between(lab.internet(), a.public_ip, b.public_ip)?;
    block_udp_between(lab.internet(), a.public_ip, c.public_ip)?;
    assert!(!reach(&b, &a_addr)?, "b still reaches a through the block");
    assert!(
        !reach(&c, &a_addr)?,
        "c still reaches a through the block (same /24)"
    );
    assert!(reach(&b, &c_addr)?, "the a-b block cut b from c");
    assert!(reach(&a, &coord)?, "the block cut a from the coordinator");
    assert!(reach(&b, &coord)?, "the block cut b from the coordinator");
    // ICMP is not blocked: only UDP.
    assert_eq!(ping(&b.hosts[0].ns, &a.public_ip.to_string(), 2), 0.0);

    unblock_udp_between(lab.internet(), a.public_ip, b.public_ip)?;
    unblock_udp_between(lab.internet(), a.public_ip, c.public_ip)?;
    assert!(reach(&b, &a_addr)?, "b cannot reach a after unblocking");
    assert!(reach(&c, &a_addr)?, "c cannot reach a after unblocking");
    // Unblocking twice is fine.
    unblock_udp_between(lab.internet(), a.public_ip, b.public_ip)?;
    Ok(())
}

/// Loss on the internet's forward hook hits traffic between routed sites (both ways, so a
/// round trip survives with (1-p)²), for ICMP only when asked; 0 removes it.
#[test]
fn loss_on_the_internet_hits_routed_sites() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let a = build_site(&lab, 0, SiteSpec::one(NatKind::None), &["a".to_owned()])?;
    let b = build_site(&lab, 2, SiteSpec::one(NatKind::Cone), &["b".to_owned()])?;
    let burst = |to: Ipv4Addr| -> f64 {
        let mut cmd = b.hosts[0].ns.command("ping");
        cmd.args([
            "-n",
            "-q",
            "-c",
            "200",
            "-i",
            "0.01",
            "-W",
            "1",
            &to.to_string(),
        ]);
        let out = cmd.output().expect("running ping");
        parse_ping_loss(&String::from_utf8_lossy(&out.stdout)).unwrap_or(100.0)
    };
    set_loss(lab.internet(), 30, &["udp", "icmp"])?;
    let lossy = burst(a.public_ip);
    eprintln!("30 % per crossing, ICMP included: round-trip loss {lossy:.1} % (expect ~51 %)");
    assert!(
        (30.0..=72.0).contains(&lossy),
        "round-trip loss {lossy} % is far from 51 %"
    );
    set_udp_loss(lab.internet(), 30)?;
    assert_eq!(burst(a.public_ip), 0.0, "UDP-only loss dropped ICMP");
    set_udp_loss(lab.internet(), 0)?;
    Ok(())
}

/// tcpdump on the internet's bridge captures a datagram with a given magic; the reader
/// returns it byte for byte, and a third host can replay it.
#[test]
fn captured_datagrams_can_be_replayed_from_another_host() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let a = build_site(&lab, 0, SiteSpec::one(NatKind::None), &["a".to_owned()])?;
    let b = build_site(&lab, 1, SiteSpec::one(NatKind::Cone), &["b".to_owned()])?;
    let x = build_site(&lab, 2, SiteSpec::one(NatKind::None), &["x".to_owned()])?;
    let _ra = Reflector::start(&a.hosts[0].ns, "0.0.0.0:51820")?;
    let cap = Capture::start(lab.internet(), lab.bridge(), &magic_filter(b"wmT1"))?;
    let payload = b"wmT1 a captured probe \x00\x01\xff".to_vec();
    let a_addr = format!("{}:51820", a.public_ip);
    let sent = udp_send(
        &b.hosts[0].ns,
        &a_addr,
        &[payload.clone(), b"not captured".to_vec()],
        &UdpSend {
            bind: Some("0.0.0.0:51820".into()),
            repeat: 1,
            listen: Duration::from_millis(300),
            ttl: None,
        },
    )?;
    assert_eq!(sent.sent, 2);
    std::thread::sleep(Duration::from_millis(200));
    let got = dedup(cap.stop()?);
    eprintln!("captured: {got:?}");
    assert_eq!(got.len(), 1, "expected exactly the wmT1 datagram: {got:?}");
    assert_eq!(got[0].payload, payload);
    assert_eq!(got[0].src.ip(), &b.public_ip, "source after NAT");
    assert_eq!(got[0].src.port(), 51820, "cone NAT keeps the port");
    assert_eq!(got[0].dst.to_string(), a_addr);
    let replay = udp_send(
        &x.hosts[0].ns,
        &a_addr,
        &[got[0].payload.clone()],
        &UdpSend {
            bind: None,
            repeat: 1,
            listen: Duration::from_millis(1000),
            ttl: None,
        },
    )?;
    assert_eq!(
        replay.replies.len(),
        1,
        "the replayed datagram did not reach a's socket: {replay:?}"
    );
    assert!(replay.replies[0]
        .1
        .starts_with(format!("observed {}", x.public_ip).as_bytes()));
    Ok(())
}

/// A lab fact that NAT traversal must live with (real Linux NATs behave the same): when a
/// peer's packet reaches a cone router's WAN port *before* the host behind it has sent to
/// that peer, conntrack records that unsolicited flow, and the host's own later packet to
/// the peer clashes with it, so `masquerade` gives it another source port; the peer's NAT,
/// which admits only the port it sent to, drops it. The lab's latency is microseconds, so
/// two probes practically never cross in flight: whichever is sent first arrives first and
/// spoils the other side. (The clashing entry lives 30 s without replies, and every further
/// early probe refreshes it.) What works: a first probe with a low TTL, which opens the
/// sender's own mapping but expires before the peer's NAT; then the peer's probe gets in.
#[test]
fn cone_nat_loses_its_port_when_the_peer_probes_first() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let send = |from: &Site, to: &str, ttl: Option<u32>| -> anyhow::Result<()> {
        udp_send(
            &from.hosts[0].ns,
            to,
            &[b"early".to_vec()],
            &UdpSend {
                bind: Some("0.0.0.0:51820".into()),
                repeat: 1,
                listen: Duration::ZERO,
                ttl,
            },
        )?;
        Ok(())
    };
    let pair = |i: usize| -> anyhow::Result<(Site, Site, String, String)> {
        let a = build_site(&lab, i, SiteSpec::one(NatKind::Cone), &[format!("a{i}")])?;
        let b = build_site(
            &lab,
            i + 1,
            SiteSpec::one(NatKind::Cone),
            &[format!("b{i}")],
        )?;
        let a_wan = format!("{}:51820", a.public_ip);
        let b_wan = format!("{}:51820", b.public_ip);
        Ok((a, b, a_wan, b_wan))
    };

    // a sends first, normally: its packet reaches b's router unsolicited. b's answer from
    // its port 51820 leaves with another port, and a's NAT drops it.
    let (a, b, a_wan, b_wan) = pair(0)?;
    send(&a, &b_wan, None)?;
    let _ra = Reflector::start(&a.hosts[0].ns, "0.0.0.0:51820")?;
    let seen = probe(&b.hosts[0].ns, "0.0.0.0:51820", &[&a_wan])?;
    assert_eq!(
        seen[0], None,
        "b reached a although a's packet reached b's router first: the lab's cone NAT no \
         longer behaves as documented here"
    );

    // The same, but a's first packet has TTL 2: a's router forwards it (opening a's
    // mapping), the internet drops it. b's packet then gets through a's NAT on port 51820.
    let (a, b, a_wan, b_wan) = pair(2)?;
    send(&a, &b_wan, Some(2))?;
    let _ra = Reflector::start(&a.hosts[0].ns, "0.0.0.0:51820")?;
    let seen = probe(&b.hosts[0].ns, "0.0.0.0:51820", &[&a_wan])?;
    assert_eq!(
        seen[0].map(|s| s.to_string()),
        Some(b_wan.clone()),
        "after a low-TTL opener from a, b could not reach a with its port kept"
    );
    Ok(())
}
