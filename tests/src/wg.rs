//! WireGuard keys (from `wg genkey`) and wireguard-go, the reference peer.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use crate::netns::{self, Netns};
use crate::util::{self, TempDir};

/// A key pair in WireGuard's base64 text form.
#[derive(Debug, Clone)]
pub struct NodeKey {
    /// `wg genkey` output.
    pub private: String,
    /// `wg pubkey` of it.
    pub public: String,
}

impl NodeKey {
    /// Generates a key pair with wireguard-tools, independent of the code under test.
    pub fn generate() -> anyhow::Result<NodeKey> {
        let private = util::run(Command::new("wg").arg("genkey"))?
            .trim()
            .to_owned();
        let public =
            util::run_with_input(Command::new("wg").arg("pubkey"), &format!("{private}\n"))?
                .trim()
                .to_owned();
        if public.len() != 44 {
            bail!("`wg pubkey` printed {public:?}, not a key");
        }
        Ok(NodeKey { private, public })
    }
}

/// A peer as both meshd's config and `wg set` describe it.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Base64 public key.
    pub public_key: String,
    /// `IP:PORT`, or None for a peer that must initiate itself.
    pub endpoint: Option<String>,
    /// Prefixes, e.g. `["10.9.8.2/32"]`.
    pub allowed_ips: Vec<String>,
    /// Seconds between keepalives.
    pub persistent_keepalive: Option<u16>,
}

impl Peer {
    /// A peer with one allowed prefix and an optional endpoint.
    pub fn new(public_key: &str, endpoint: Option<String>, allowed_ip: &str) -> Peer {
        Peer {
            public_key: public_key.to_owned(),
            endpoint,
            allowed_ips: vec![allowed_ip.to_owned()],
            persistent_keepalive: None,
        }
    }
}

/// wireguard-go running in the foreground (`wireguard-go -f IFNAME`) in a namespace,
/// configured with `wg set`. Dropping it stops it (SIGTERM, so it removes its UAPI socket
/// `/var/run/wireguard/IFNAME.sock`; SIGKILL if it does not exit).
#[derive(Debug)]
pub struct WgGo {
    ns: Arc<Netns>,
    ifname: String,
    child: Option<Child>,
    dir: TempDir,
    log: PathBuf,
}

impl WgGo {
    /// Starts wireguard-go on a new interface in `ns` with `key`, `listen_port`, the overlay
    /// address `address` (e.g. `"10.9.8.3/24"`) and MTU 1280, and brings it up.
    pub fn start(
        ns: &Arc<Netns>,
        key: &NodeKey,
        listen_port: u16,
        address: &str,
    ) -> anyhow::Result<WgGo> {
        let ifname = util::unique_ifname("wgo");
        let dir = TempDir::new("wggo")?;
        let log = dir.path().join("wireguard-go.log");
        let key_file = dir.path().join("private.key");
        util::write_file_mode(&key_file, &format!("{}\n", key.private), 0o600)?;
        let level = std::env::var("WG_LOG_LEVEL").unwrap_or_else(|_| "debug".to_owned());
        let child = ns.spawn_logged(
            &["wireguard-go", "-f", &ifname],
            &[("LOG_LEVEL", &level)],
            &log,
        )?;
        let wg = WgGo {
            ns: ns.clone(),
            ifname,
            child: Some(child),
            dir,
            log,
        };
        let sock = PathBuf::from(format!("/var/run/wireguard/{}.sock", wg.ifname));
        let waited = util::wait_until(
            Duration::from_secs(10),
            &format!("wireguard-go {} UAPI socket", wg.ifname),
            || sock.exists(),
        );
        if let Err(e) = waited {
            bail!("{e:#}\nwireguard-go log:\n{}", util::tail(&wg.log, 40));
        }
        let port = listen_port.to_string();
        let key_path = key_file.to_string_lossy().into_owned();
        wg.wg(&[
            "set",
            &wg.ifname,
            "private-key",
            &key_path,
            "listen-port",
            &port,
        ])?;
        ns.ip(&["addr", "add", address, "dev", &wg.ifname])?;
        ns.ip(&["link", "set", &wg.ifname, "mtu", "1280", "up"])?;
        Ok(wg)
    }

    /// The interface name (also the UAPI socket name).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Runs `wg <args>` inside the namespace.
    pub fn wg(&self, args: &[&str]) -> anyhow::Result<String> {
        util::run(self.ns.command("wg").args(args))
    }

    /// Adds (or updates) a peer with `wg set`.
    pub fn set_peer(&self, peer: &Peer) -> anyhow::Result<()> {
        let allowed = peer.allowed_ips.join(",");
        let mut args = vec![
            "set",
            &self.ifname,
            "peer",
            &peer.public_key,
            "allowed-ips",
            &allowed,
        ];
        if let Some(ep) = &peer.endpoint {
            args.extend(["endpoint", ep.as_str()]);
        }
        let ka = peer.persistent_keepalive.map(|k| k.to_string());
        if let Some(ka) = &ka {
            args.extend(["persistent-keepalive", ka.as_str()]);
        }
        self.wg(&args)?;
        Ok(())
    }

    /// Seconds since the epoch of the latest handshake with `peer_key`; 0 = never.
    pub fn latest_handshake(&self, peer_key: &str) -> anyhow::Result<u64> {
        let out = self.wg(&["show", &self.ifname, "latest-handshakes"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(k, _)| *k == peer_key)
            .and_then(|(_, t)| t.trim().parse().ok())
            .unwrap_or(0))
    }

    /// The endpoint wireguard-go currently uses for `peer_key`, if any.
    pub fn endpoint(&self, peer_key: &str) -> anyhow::Result<Option<String>> {
        let out = self.wg(&["show", &self.ifname, "endpoints"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(k, _)| *k == peer_key)
            .map(|(_, e)| e.trim().to_owned())
            .filter(|e| e != "(none)"))
    }

    /// wireguard-go's log so far (the last `lines` lines).
    pub fn log_tail(&self, lines: usize) -> String {
        util::tail(&self.log, lines)
    }

    /// Its private temporary directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for WgGo {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- wireguard-go {} log (last 40 lines) ----\n{}",
                self.ifname,
                self.log_tail(40)
            );
        }
        if let Some(mut child) = self.child.take() {
            netns::signal(&[child.id()], "TERM");
            let stopped = util::wait_until(Duration::from_secs(3), "wireguard-go to exit", || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if stopped.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.ifname));
    }
}
