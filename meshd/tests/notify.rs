//! systemd readiness against a real `NOTIFY_SOCKET` listener: the real meshd binary, a
//! static config, a fresh network namespace. `READY=1` must arrive, and when it does the
//! TUN interface must already exist, be up and carry its address (`meshd.service` is
//! `Type=notify`: units ordered after it rely on that).
//!
//! Needs root (`ip netns add`); without it the test fails and says so.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MESHD: &str = env!("CARGO_BIN_EXE_meshd");
/// A key as `wg genkey` writes it.
const KEY: &str = "YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=\n";
const IFNAME: &str = "wmnotify0";
/// How long meshd may take to come up.
const DEADLINE: Duration = Duration::from_secs(20);

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "the notify test needs root: it runs meshd in a network namespace (`ip netns add`); \
         run it as root, e.g. `sudo -E cargo test -p meshd --test notify`"
    );
}

/// A network namespace and the meshd inside it; both go away on drop, also on panic.
struct Node {
    netns: String,
    child: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn ready_only_after_the_interface_is_up() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    std::fs::write(&key, KEY).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("meshd.toml");
    std::fs::write(
        &config,
        format!(
            "interface = \"{IFNAME}\"\nlisten-port = 0\naddress = \"10.77.0.1/24\"\n\
             private-key-file = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();

    let notify_path = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify_path).unwrap();
    listener.set_read_timeout(Some(DEADLINE)).unwrap();

    let netns = format!("wmnotify{}", std::process::id());
    ip(&["netns", "add", &netns]);
    let mut node = Node {
        netns: netns.clone(),
        child: None,
    };
    node.child = Some(
        Command::new("ip")
            .args(["netns", "exec", &netns, MESHD, "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--socket")
            .arg(dir.path().join("meshd.sock"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("MESHD_CONFIG")
            .env_remove("MESHD_STATE_DIR")
            .env_remove("MESHD_SOCKET")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Messages until READY=1; a STATUS-only message may come first.
    let mut buf = [0u8; 4096];
    let message = loop {
        let n = match listener.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let exited = node.child.as_mut().unwrap().try_wait().unwrap();
                panic!("no READY=1 within {DEADLINE:?} ({e}); meshd exit status: {exited:?}");
            }
        };
        let text = String::from_utf8(buf[..n].to_vec()).unwrap();
        if text.lines().any(|l| l == "READY=1") {
            break text;
        }
    };

    // At this moment, before anything else: the interface exists, is up, has its address.
    let link = ip(&["-n", &netns, "link", "show", IFNAME]);
    assert!(
        link.contains(",UP"),
        "{IFNAME} is not up at READY=1: {link}"
    );
    let addr = ip(&["-n", &netns, "addr", "show", IFNAME]);
    assert!(
        addr.contains("10.77.0.1/24"),
        "{IFNAME} has no address at READY=1: {addr}"
    );
    assert!(
        message
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("no network membership")),
        "unexpected notification: {message:?}"
    );
    assert!(
        node.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "meshd exited after READY=1"
    );
}
