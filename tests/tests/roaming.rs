//! Roaming: a's underlay address changes while traffic flows; b learns the new endpoint
//! from authenticated packets and traffic resumes within 5 s.

use std::time::{Duration, Instant};

use wiremesh_tests::topo::PORT;
use wiremesh_tests::{ping_once, wait_until, Lab, Meshd, MeshdConfig, NodeKey, Peer};

/// The bound the spec sets from the address change to the first answered ping.
const RESUME_BOUND: Duration = Duration::from_secs(5);

#[test]
fn endpoint_roams_when_the_underlay_address_changes() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (a_ns, a_if) = lab.internet_host("a", "198.51.100.1/24")?;
    let (b_ns, _) = lab.internet_host("b", "198.51.100.2/24")?;
    let (ka, kb) = (NodeKey::generate()?, NodeKey::generate()?);
    let mut to_b = Peer::new(
        &kb.public,
        Some(format!("198.51.100.2:{PORT}")),
        "10.9.8.2/32",
    );
    to_b.persistent_keepalive = Some(1);
    let mut a = Meshd::start(
        &a_ns,
        "a",
        MeshdConfig::new("10.9.8.1/24", PORT, Some(ka.clone())).peer(to_b),
    )?;
    let mut b = Meshd::start(
        &b_ns,
        "b",
        MeshdConfig::new("10.9.8.2/24", PORT, Some(kb.clone())).peer(Peer::new(
            &ka.public,
            Some(format!("198.51.100.1:{PORT}")),
            "10.9.8.1/32",
        )),
    )?;
    wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(&a_ns, "10.9.8.2")
    })
    .expect("a cannot ping b over the overlay");
    assert_eq!(b.peer_status(&ka.public)?["endpoint"], "198.51.100.1:51820");

    // Traffic from a to b keeps flowing across the change (killed with the namespace).
    let mut flood =
        a_ns.spawn_piped(&["ping", "-n", "-q", "-i", "0.05", "-w", "30", "10.9.8.2"])?;

    std::thread::sleep(Duration::from_millis(300));
    a_ns.ip_batch(&[
        format!("addr del 198.51.100.1/24 dev {a_if}"),
        format!("addr add 198.51.100.11/24 dev {a_if}"),
    ])?;
    let changed = Instant::now();
    let mut resumed = None;
    while changed.elapsed() < RESUME_BOUND + Duration::from_secs(5) {
        if ping_once(&a_ns, "10.9.8.2") {
            resumed = Some(changed.elapsed());
            break;
        }
    }
    let _ = flood.kill();
    let _ = flood.wait();
    let resumed = resumed.unwrap_or_else(|| {
        panic!(
            "no ping reply within {:?} after moving a from 198.51.100.1 to 198.51.100.11; b's peer a: {}",
            RESUME_BOUND + Duration::from_secs(5),
            b.peer_status(&ka.public).map(|p| p.to_string()).unwrap_or_else(|e| format!("{e:#}"))
        )
    });
    eprintln!(
        "traffic resumed {:.3} s after the address change",
        resumed.as_secs_f64()
    );
    assert!(
        resumed <= RESUME_BOUND,
        "traffic resumed only after {resumed:?}, bound {RESUME_BOUND:?}"
    );

    let p = b.peer_status(&ka.public)?;
    assert_eq!(
        p["endpoint"], "198.51.100.11:51820",
        "b did not learn a's new endpoint: {p}"
    );
    // b -> a works, which needs b to send to the learned endpoint.
    wait_until(Duration::from_secs(3), "b -> a overlay ping", || {
        ping_once(&b_ns, "10.9.8.1")
    })
    .expect("b cannot reach a at its new address");
    assert!(
        a.is_running() && b.is_running(),
        "a meshd exited during the test"
    );
    Ok(())
}
