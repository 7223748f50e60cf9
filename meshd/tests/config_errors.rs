//! The real meshd binary on bad input: it must refuse with exactly one line on stderr that
//! names the field or file, exit non-zero, and leave nothing behind.
//!
//! A valid config would make meshd create a TUN device, so each run happens inside a fresh
//! network namespace (`ip netns add wmcfg<pid><n>`), which is checked afterwards to hold
//! nothing but `lo`. That needs root; without it these tests fail and say so.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MESHD: &str = env!("CARGO_BIN_EXE_meshd");
/// A key as `wg genkey` writes it.
const GOOD_KEY: &str = "YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=\n";
/// How long meshd may take to give up on bad input before the test calls it hung.
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
        "config_errors needs root: it runs meshd in network namespaces (`ip netns add`); \
         run it as root, e.g. `sudo -E cargo test -p meshd --test config_errors`"
    );
}

/// A network namespace that is deleted when dropped, also when the test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "wmcfg{}{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Netns { name }
    }

    /// Names of the links in the namespace.
    fn links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip -n {} link: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        // `1: lo: <LOOPBACK> mtu 65536 ...`; a name may carry `@peer`.
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A scratch directory with a config file, a state directory path and a socket path.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        Case {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("meshd.toml")
    }

    fn write_config(&self, text: &str) -> &Case {
        std::fs::write(self.config(), text).unwrap();
        self
    }

    fn write_key(&self, name: &str, mode: u32) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, GOOD_KEY).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// Runs meshd in a fresh namespace, checks the namespace is left with only `lo` and
    /// nothing was created on disk, and returns meshd's single stderr line.
    fn run_meshd(&self) -> String {
        require_root();
        let netns = Netns::new();
        let state = self.path("state");
        let socket = self.path("meshd.sock");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &netns.name, MESHD, "--config"])
            .arg(self.config())
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(&socket)
            .env_remove("MESHD_CONFIG")
            .env_remove("MESHD_STATE_DIR")
            .env_remove("MESHD_SOCKET")
            .env_remove("MESHD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "meshd accepted the bad input and kept running; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let Output { status, stderr, .. } = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(stderr).unwrap();

        assert!(
            !status.success(),
            "meshd exited successfully; stderr: {stderr}"
        );
        assert_eq!(
            netns.links(),
            ["lo"],
            "meshd left an interface behind; stderr: {stderr}"
        );
        assert!(
            !state.exists(),
            "meshd created {} before failing",
            state.display()
        );
        assert!(
            !socket.exists(),
            "meshd created {} before failing",
            socket.display()
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "stderr is not one line: {stderr:?}"
        );
        assert!(stderr.ends_with('\n'), "{stderr:?}");
        stderr.trim_end().to_owned()
    }
}

fn peer_key(byte: u8) -> String {
    mesh_proto::Key([byte; 32]).to_base64()
}

#[test]
fn unknown_field() {
    let case = Case::new();
    case.write_config("mtu = 1280\nbogus = 1\n");
    let line = case.run_meshd();
    let want = format!(
        "meshd: error: {}:2: unknown field `bogus`, expected one of",
        case.config().display()
    );
    assert!(line.starts_with(&want), "got:  {line}\nwant: {want} …");
}

#[test]
fn malformed_peer_key() {
    let case = Case::new();
    case.write_config(&format!(
        "[[peer]]\npublic-key = \"{}\"\n\n[[peer]]\npublic-key = \"abcdefghijkl\"\n",
        peer_key(1)
    ));
    assert_eq!(
        case.run_meshd(),
        format!(
            "meshd: error: {}: peer[1].public-key: expected 44 base64 characters, got 12",
            case.config().display()
        )
    );
}

#[test]
fn bad_cidr() {
    let case = Case::new();
    case.write_config("address = \"10.9.8.300/24\"\n");
    assert_eq!(
        case.run_meshd(),
        format!(
            "meshd: error: {}: address: invalid CIDR \"10.9.8.300/24\"",
            case.config().display()
        )
    );
}

#[test]
fn interface_name_too_long() {
    let case = Case::new();
    case.write_config("interface = \"xxxxxxxxxxxxxxxxx\"\n");
    assert_eq!(
        case.run_meshd(),
        format!(
            "meshd: error: {}: interface: name \"xxxxxxxxxxxxxxxxx\" is 17 bytes, the limit is 15",
            case.config().display()
        )
    );
}

#[test]
fn missing_config_file() {
    let case = Case::new();
    assert_eq!(
        case.run_meshd(),
        format!(
            "meshd: error: {}: No such file or directory",
            case.config().display()
        )
    );
}

#[test]
fn missing_key_file() {
    let case = Case::new();
    let key = case.path("missing.key");
    case.write_config(&format!("private-key-file = \"{}\"\n", key.display()));
    assert_eq!(
        case.run_meshd(),
        format!(
            "meshd: error: private-key-file {}: No such file or directory",
            key.display()
        )
    );
}

#[test]
fn world_readable_key_file() {
    let case = Case::new();
    let key = case.write_key("node.key", 0o644);
    case.write_config(&format!("private-key-file = \"{}\"\n", key.display()));
    let shown = key.display();
    assert_eq!(
        case.run_meshd(),
        format!("meshd: error: private key file {shown} is mode 0644; run chmod 600 {shown}")
    );
}

#[test]
fn zero_peer_key() {
    let case = Case::new();
    case.write_config(&format!("[[peer]]\npublic-key = \"{}\"\n", peer_key(0)));
    assert_eq!(
        case.run_meshd(),
        format!(
            "meshd: error: {}: peer[0].public-key: the all-zero key is not a public key",
            case.config().display()
        )
    );
}
