//! Hostile traffic (issue 12): a bounded flood of junk at every UDP port of the coordinator
//! (QUIC control, both reflectors, relay) and of two members' meshd, junk connections at the
//! admin HTTP port, and junk on both members' local sockets, while the two members ping each
//! other over the overlay. Nothing may crash, the pings go on, memory stays flat (the second
//! of two equal rounds grows no process by more than a few MB), and every target counted
//! the junk it dropped (so the flood did arrive).
//!
//! Kept off the kernel's shared tables (`../shared/LAB.md`): the junk comes from one
//! address, one socket per target (one conntrack entry each), on the lab's routed internet.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use wiremesh_tests::control::{site_ip, JoinedMesh, COORDINATOR_IP};
use wiremesh_tests::coordinator::{CONTROL_PORT, HTTP_PORT, REFLECTOR_PORTS, RELAY_PORT};
use wiremesh_tests::topo::PORT;
use wiremesh_tests::xfer::{garbage, tcp_garbage};
use wiremesh_tests::{ping, util, wait_until, Lab, Netns};

const CONVERGE: Duration = Duration::from_secs(60);
/// Junk datagrams per UDP port per round.
const DATAGRAMS: u32 = 10_000;
/// Junk connections at the admin port per round.
const CONNECTIONS: u32 = 100;
/// Growth allowed between the first and the second round, per process.
const FLAT_MB: f64 = 12.0;

/// The pid of the process called `comm` in `ns`.
fn pid_in(ns: &Netns, comm: &str) -> u32 {
    ns.pids()
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .unwrap_or_else(|| panic!("no {comm} in namespace {}", ns.name()))
}

/// Junk on a meshd's local API socket: noise, bad JSON, an unknown request, a line far
/// longer than any request, and connections opened and dropped.
fn local_socket_junk(socket: &Path, seed: u8) {
    let lines: Vec<Vec<u8>> = vec![
        (0..4096u32).map(|i| (i as u8) ^ seed).collect(),
        b"{\"not\": \"a request\"}\n".to_vec(),
        b"{\"request\": \"no-such-thing\"}\n".to_vec(),
        b"\xff\xfe\xfd\n".to_vec(),
        vec![b'x'; 4 << 20],
        b"{\"request\": \"status\"".to_vec(),
    ];
    for line in &lines {
        let Ok(mut s) = UnixStream::connect(socket) else {
            panic!("cannot connect to {}", socket.display());
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(line);
        let mut sink = [0u8; 1024];
        let _ = s.read(&mut sink);
    }
    for _ in 0..200 {
        drop(UnixStream::connect(socket));
    }
}

/// The value of the metric line starting with `prefix` (a sample with its labels).
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
}

#[test]
fn a_flood_of_junk_at_every_port_leaves_pings_going_and_memory_flat() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let mesh = JoinedMesh::new(&lab, 2, CONVERGE)?;
    let (x, _) = lab.internet_host("x", "198.51.100.200/24")?;
    let (a, b) = (&mesh.nodes[0], &mesh.nodes[1]);
    let b_ip = b.address()?;
    wait_until(CONVERGE, "a pings b over the overlay", || {
        wiremesh_tests::ping_once(a.ns(), &b_ip)
    })?;

    let mut udp_targets: Vec<String> = [CONTROL_PORT, REFLECTOR_PORTS[0], REFLECTOR_PORTS[1]]
        .iter()
        .chain(&[RELAY_PORT])
        .map(|p| format!("{COORDINATOR_IP}:{p}"))
        .collect();
    udp_targets.push(format!("{}:{PORT}", site_ip(0)));
    udp_targets.push(format!("{}:{PORT}", site_ip(1)));
    let procs = [
        ("coordinator", pid_in(mesh.coord.ns(), "coordinator")),
        ("meshd a", pid_in(a.ns(), "meshd")),
        ("meshd b", pid_in(b.ns(), "meshd")),
    ];
    let invalid_before = (a.dropped("invalid")?, b.dropped("invalid")?);
    let metrics_before = mesh.coord.metrics()?;

    let mut rss = Vec::new();
    for round in 0..2u64 {
        let (loss, sent) = std::thread::scope(|s| {
            // 25 pings, 5 s, while the junk goes out.
            let pinger = s.spawn(|| ping(a.ns(), &b_ip, 25));
            let floods: Vec<_> = udp_targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let x = &x;
                    s.spawn(move || garbage(x, t, DATAGRAMS, 1 + round * 100 + i as u64))
                })
                .collect();
            let http = s.spawn(|| {
                tcp_garbage(
                    mesh.coord.ns(),
                    &format!("127.0.0.1:{HTTP_PORT}"),
                    CONNECTIONS,
                    7 + round,
                )
            });
            local_socket_junk(a.socket(), 1);
            local_socket_junk(b.socket(), 2);
            let mut sent = 0;
            for f in floods {
                sent += f.join().expect("flood thread").expect("wm-xfer garbage");
            }
            http.join()
                .expect("http thread")
                .expect("wm-xfer tcp-garbage");
            (pinger.join().expect("ping thread"), sent)
        });
        eprintln!("round {round}: {sent} junk datagrams sent; ping loss meanwhile {loss}%");
        assert!(
            loss <= 40.0,
            "round {round}: the members' pings lost {loss}% during the flood"
        );
        // Settled: a moment for queues to drain, then memory.
        std::thread::sleep(Duration::from_secs(1));
        rss.push(
            procs
                .iter()
                .map(|(name, pid)| {
                    assert!(
                        Path::new(&format!("/proc/{pid}")).exists(),
                        "{name} died in round {round}"
                    );
                    util::proc_memory_mb(*pid, "VmRSS")
                })
                .collect::<Vec<f64>>(),
        );
    }
    for (i, (name, _)) in procs.iter().enumerate() {
        eprintln!(
            "{name}: RSS {:.1} MB after round 1, {:.1} MB after round 2",
            rss[0][i], rss[1][i]
        );
        assert!(
            rss[1][i] - rss[0][i] <= FLAT_MB,
            "{name} grew from {:.1} to {:.1} MB in the second round",
            rss[0][i],
            rss[1][i]
        );
    }

    // Everything still answers: the pings, the admin API, the local sockets, the sessions.
    assert_eq!(ping(a.ns(), &b_ip, 5), 0.0, "pings lost after the flood");
    assert_eq!(mesh.coord.members("lab")?.len(), 2);
    for n in [a, b] {
        n.wait_control_state("connected", CONVERGE)?;
    }
    // And each target dropped junk it was sent.
    let invalid_after = (a.dropped("invalid")?, b.dropped("invalid")?);
    assert!(
        invalid_after.0 > invalid_before.0,
        "meshd a counted no junk"
    );
    assert!(
        invalid_after.1 > invalid_before.1,
        "meshd b counted no junk"
    );
    let metrics = mesh.coord.metrics()?;
    for prefix in [
        "wiremesh_reflector_dropped_total{reason=\"invalid\"}",
        "wiremesh_relay_dropped_total{reason=\"malformed\"}",
    ] {
        assert!(
            metric(&metrics, prefix) > metric(&metrics_before, prefix),
            "{prefix} did not move"
        );
    }
    Ok(())
}
