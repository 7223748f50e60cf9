//! Restart: meshd killed with SIGKILL and started again with the same config and state
//! directory keeps its generated key and address and is reachable again within 5 s.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use wiremesh_tests::topo::PORT;
use wiremesh_tests::{ping, ping_once, Lab, Meshd, MeshdConfig, NodeKey, Peer};

/// The bound the spec sets from the restart to the first answered ping.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

#[test]
fn restart_after_kill_9_keeps_key_and_recovers() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let (a_ns, _) = lab.internet_host("a", "198.51.100.1/24")?;
    let (b_ns, _) = lab.internet_host("b", "198.51.100.2/24")?;
    let ka = NodeKey::generate()?;

    // b has no key file: meshd generates <state-dir>/node.key on first start.
    let mut b = Meshd::start(
        &b_ns,
        "b",
        MeshdConfig::new("10.9.8.2/24", PORT, None).peer(Peer::new(
            &ka.public,
            Some(format!("198.51.100.1:{PORT}")),
            "10.9.8.1/32",
        )),
    )?;
    let b_key = b.public_key()?;
    let key_file = b.state_dir().join("node.key");
    let mode = std::fs::metadata(&key_file)
        .unwrap_or_else(|e| panic!("{} missing after first start: {e}", key_file.display()))
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "{} is readable by group/others (mode {mode:o})",
        key_file.display()
    );

    let a = Meshd::start(
        &a_ns,
        "a",
        MeshdConfig::new("10.9.8.1/24", PORT, Some(ka.clone())).peer(Peer::new(
            &b_key,
            Some(format!("198.51.100.2:{PORT}")),
            "10.9.8.2/32",
        )),
    )?;
    wiremesh_tests::wait_until(Duration::from_secs(10), "a -> b overlay ping", || {
        ping_once(&a_ns, "10.9.8.2")
    })
    .expect("a cannot ping b over the overlay");
    let before = b.status()?;

    b.kill9()?;
    assert!(
        !ping_once(&a_ns, "10.9.8.2"),
        "b answered although its meshd was killed"
    );

    let restarted = Instant::now();
    b.restart()?;
    // The restarted node has no session: it initiates the handshake with its first packet.
    let mut recovered = None;
    while restarted.elapsed() < RECOVERY_BOUND + Duration::from_secs(5) {
        if ping_once(&b_ns, "10.9.8.1") {
            recovered = Some(restarted.elapsed());
            break;
        }
    }
    let recovered = recovered.unwrap_or_else(|| {
        panic!(
            "b -> a ping did not succeed within {:?} of the restart",
            RECOVERY_BOUND + Duration::from_secs(5)
        )
    });
    eprintln!(
        "b -> a ping answered {:.3} s after the restart began",
        recovered.as_secs_f64()
    );
    assert!(
        recovered <= RECOVERY_BOUND,
        "recovery took {recovered:?}, bound {RECOVERY_BOUND:?}"
    );

    let after = b.status()?;
    assert_eq!(
        after["public-key"], before["public-key"],
        "the public key changed across the restart"
    );
    assert_eq!(after["public-key"], b_key.as_str());
    assert_eq!(
        after["address"], before["address"],
        "the address changed across the restart"
    );
    assert_eq!(after["address"], "10.9.8.2/24");
    assert_eq!(
        ping(&a_ns, "10.9.8.2", 3),
        0.0,
        "a -> b lost packets after b's restart"
    );
    drop(a);
    Ok(())
}
