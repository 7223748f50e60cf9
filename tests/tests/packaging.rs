//! Packaging assets against the binaries they describe, without root and without building
//! a package (`packaging/check.sh` builds, installs and verifies the real `.deb`s):
//! the units promise what the issue asks and match the daemons' default paths, the deb
//! metadata names assets that exist, and the shipped example configs are accepted by the
//! real binaries.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wiremesh_tests::util::binary;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The unit's `Key=value` lines (comments and sections left out).
fn directives(unit: &str) -> Vec<String> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(str::to_owned)
        .collect()
}

fn assert_has(unit_name: &str, unit: &[String], line: &str) {
    assert!(unit.iter().any(|l| l == line), "{unit_name} lacks `{line}`");
}

/// Runs a binary that is expected to fail fast, returning its stderr.
fn run_failing(cmd: &mut Command) -> String {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning");
    let start = Instant::now();
    while child.try_wait().expect("waiting").is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{cmd:?} kept running; it should have refused its input");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collecting output");
    assert!(!out.status.success(), "{cmd:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn meshd_unit_matches_meshd() {
    let unit = directives(&read("packaging/meshd.service"));
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/meshd",
        "Restart=always",
        "RestartSec=1",
        "User=root",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
        "NoNewPrivileges=yes",
        "StateDirectory=meshd",
        "StateDirectoryMode=0700",
        "RuntimeDirectory=meshd",
        "ConfigurationDirectory=meshd",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "DeviceAllow=/dev/net/tun rw",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    ] {
        assert_has("meshd.service", &unit, line);
    }
    // The directories systemd creates are the ones meshd uses by default.
    let help = Command::new(binary("meshd").expect("meshd built"))
        .arg("--help")
        .output()
        .expect("meshd --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for default in [
        "[default: /var/lib/meshd]",
        "[default: /run/meshd/meshd.sock]",
    ] {
        assert!(
            help.contains(default),
            "meshd's defaults no longer match the unit's directories: {default} not in\n{help}"
        );
    }
}

#[test]
fn coordinator_unit_and_config_agree() {
    let unit = directives(&read("packaging/coordinator.service"));
    for line in [
        "ExecStart=/usr/bin/coordinator serve --config /etc/wiremesh/coordinator.toml",
        "User=wiremesh-coordinator",
        "DynamicUser=no",
        "StateDirectory=wiremesh-coordinator",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert_has("coordinator.service", &unit, line);
    }
    let config = read("packaging/coordinator.toml");
    assert!(
        config
            .lines()
            .any(|l| l == "data-dir = \"/var/lib/wiremesh-coordinator\""),
        "coordinator.toml's data-dir is not the unit's StateDirectory"
    );
    let postinst = read("packaging/coordinator/postinst");
    assert!(postinst.contains("USER=wiremesh-coordinator"));
}

#[test]
fn deb_metadata_names_existing_assets_and_no_service_start() {
    for manifest in ["meshd/Cargo.toml", "coordinator/Cargo.toml"] {
        let text = read(manifest);
        let meta = text
            .split("[package.metadata.deb]")
            .nth(1)
            .unwrap_or_else(|| panic!("{manifest} has no [package.metadata.deb]"));
        let crate_dir = root().join(manifest.trim_end_matches("/Cargo.toml"));
        let mut checked = 0;
        for line in meta.lines() {
            if let Some(rest) = line.trim().strip_prefix("[\"../packaging/") {
                let rel = rest.split('"').next().expect("a quoted path");
                let path = crate_dir.join("../packaging").join(rel);
                assert!(
                    path.exists(),
                    "{manifest}: asset {} missing",
                    path.display()
                );
                checked += 1;
            }
        }
        assert!(checked >= 2, "{manifest}: no packaging/ assets found");
        let scripts = meta
            .lines()
            .find_map(|l| l.trim().strip_prefix("maintainer-scripts = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{manifest}: no maintainer-scripts"));
        let scripts = crate_dir.join(scripts);
        for entry in std::fs::read_dir(&scripts).expect("maintainer scripts dir") {
            let path = entry.expect("dir entry").path();
            let text = std::fs::read_to_string(&path).expect("script");
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o111, 0o111, "{} is not executable", path.display());
            for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                for bad in [
                    "systemctl start",
                    "systemctl restart",
                    "systemctl enable",
                    "invoke-rc.d",
                ] {
                    assert!(
                        !line.contains(bad),
                        "{}: `{line}` starts a service behind the admin's back",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn shipped_coordinator_config_only_lacks_advertise() {
    let coordinator = binary("coordinator").expect("coordinator built");
    let dir = tempdir();
    // As shipped: parses, and refuses to start until the admin sets `advertise`.
    let err = run_failing(
        Command::new(&coordinator)
            .args(["serve", "--config"])
            .arg(root().join("packaging/coordinator.toml"))
            .arg("--data-dir")
            .arg(dir.join("data")),
    );
    assert!(err.contains("--advertise HOST:PORT"), "{err}");
    // Every commented key uncommented: still accepted (it then stops at the next check,
    // which a flag triggers on purpose so that nothing binds a port).
    let all: String = read("packaging/coordinator.toml")
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let file = dir.join("coordinator.toml");
    std::fs::write(&file, all).expect("writing config");
    let err = run_failing(
        Command::new(&coordinator)
            .args(["serve", "--http", "0.0.0.0:7480", "--config"])
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.join("data")),
    );
    assert!(err.contains("is not a loopback address"), "{err}");
    assert!(
        !dir.join("data").exists(),
        "the coordinator created its data dir"
    );
}

#[test]
fn example_meshd_config_is_valid() {
    let meshd = binary("meshd").expect("meshd built");
    let dir = tempdir();
    // A key file others may read: meshd validates the whole config first, then refuses
    // the key, before it creates anything (no TUN, no socket).
    let key = dir.join("node.key");
    std::fs::write(&key, "YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=\n").expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let all: String = read("packaging/meshd.toml")
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .map(|l| {
            let l = l.replace(
                "\"…base64…\"",
                "\"YAnz3XDmxkRPCT3P+LLYHC2ZhPL9LDJOQXUfTpM9Im0=\"",
            );
            let l = l.replace("\"mesh0\"", "\"wmpkgtest0\"");
            let l = l.replace("\"/var/lib/meshd/node.key\"", &format!("{:?}", key));
            format!("{l}\n")
        })
        .collect();
    assert!(
        all.contains("[[peer]]") && all.contains("preshared-key ="),
        "{all}"
    );
    let file = dir.join("meshd.toml");
    std::fs::write(&file, &all).expect("writing config");
    let err = run_failing(
        Command::new(&meshd)
            .arg("--config")
            .arg(&file)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("meshd.sock"))
            .env_remove("MESHD_CONFIG"),
    );
    assert!(
        err.contains("is mode 0644; run chmod 600"),
        "the example config was not accepted: {err}\n{all}"
    );
}

/// A fresh directory under the system temp dir, removed on drop (the tests crate has no
/// tempfile).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wm-packaging-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    TempDir(dir)
}
