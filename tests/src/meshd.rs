//! Runs the real `meshd` in a namespace and reads its status.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::netns::{self, Netns};
use crate::util::{self, TempDir};
use crate::wg::{NodeKey, Peer};

/// Everything that goes into a meshd config file.
#[derive(Debug, Clone)]
pub struct MeshdConfig {
    /// TUN name; [`MeshdConfig::new`] picks a unique one.
    pub interface: String,
    /// UDP port.
    pub listen_port: u16,
    /// Overlay address with prefix, e.g. `"10.9.8.1/24"`; None for a node that gets its
    /// address from a coordinator (`meshctl join`).
    pub address: Option<String>,
    /// Interface MTU (the tests use 1280).
    pub mtu: u16,
    /// The private key; None lets meshd generate `<state-dir>/node.key` on first start.
    pub key: Option<NodeKey>,
    /// Static peers.
    pub peers: Vec<Peer>,
    /// The name meshd registers with a coordinator (`--name`); None = the hostname, which
    /// all namespaces share.
    pub node_name: Option<String>,
    /// `advertise-routes`: prefixes behind the node offered to its network.
    pub advertise_routes: Vec<String>,
    /// `metrics-listen`: where meshd serves Prometheus metrics (None: off, the default).
    pub metrics_listen: Option<String>,
    /// `peer-idle-after` in seconds (None: meshd's default).
    pub peer_idle_after: Option<u64>,
    /// `max-filter-entries` (None: meshd's default).
    pub max_filter_entries: Option<usize>,
    /// The `dns*` lines of meshd.toml. By default the resolver integrations are off, so
    /// that no test's meshd writes the machine's /etc/hosts or calls resolvectl; the names
    /// test sets its own ([`MeshdConfig::with_dns`]).
    pub dns: Vec<String>,
}

/// The `dns*` lines every test's meshd gets unless it says otherwise.
fn dns_defaults() -> Vec<String> {
    vec![
        "dns-hosts = \"off\"".to_owned(),
        "dns-resolved = \"off\"".to_owned(),
    ]
}

impl MeshdConfig {
    /// A config with a unique interface name, MTU 1280 and no peers.
    pub fn new(address: &str, listen_port: u16, key: Option<NodeKey>) -> MeshdConfig {
        MeshdConfig {
            interface: util::unique_ifname("wm"),
            listen_port,
            address: Some(address.to_owned()),
            mtu: 1280,
            key,
            peers: Vec::new(),
            node_name: None,
            advertise_routes: Vec::new(),
            metrics_listen: None,
            peer_idle_after: None,
            max_filter_entries: None,
            dns: dns_defaults(),
        }
    }

    /// A config for a node that joins a network through a coordinator: only a unique
    /// interface name, the port and MTU 1280 (and the key file when `key` is set); no
    /// address, no peers. meshd starts, and waits for `meshctl join`.
    pub fn unconfigured(listen_port: u16, key: Option<NodeKey>) -> MeshdConfig {
        MeshdConfig {
            interface: util::unique_ifname("wm"),
            listen_port,
            address: None,
            mtu: 1280,
            key,
            peers: Vec::new(),
            node_name: None,
            advertise_routes: Vec::new(),
            metrics_listen: None,
            peer_idle_after: None,
            max_filter_entries: None,
            dns: dns_defaults(),
        }
    }

    /// Sets the name meshd registers with the coordinator (builder style).
    pub fn named(mut self, name: &str) -> MeshdConfig {
        self.node_name = Some(name.to_owned());
        self
    }

    /// Sets the prefixes the node advertises (builder style).
    pub fn advertising(mut self, routes: &[&str]) -> MeshdConfig {
        self.advertise_routes = routes.iter().map(|r| (*r).to_owned()).collect();
        self
    }

    /// Serves metrics on `addr` (`metrics-listen`; builder style).
    pub fn with_metrics(mut self, addr: &str) -> MeshdConfig {
        self.metrics_listen = Some(addr.to_owned());
        self
    }

    /// Replaces the `dns*` lines of meshd.toml (builder style).
    pub fn with_dns(mut self, lines: &[String]) -> MeshdConfig {
        self.dns = lines.to_vec();
        self
    }

    /// Adds a peer (builder style).
    pub fn peer(mut self, peer: Peer) -> MeshdConfig {
        self.peers.push(peer);
        self
    }

    /// The TOML text, with `private-key-file` pointing at `key_file` when a key is set.
    pub fn to_toml(&self, key_file: Option<&Path>) -> String {
        // JSON strings are valid TOML basic strings for everything written here.
        let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let mut t = String::new();
        t.push_str(&format!("interface = {}\n", q(&self.interface)));
        t.push_str(&format!("listen-port = {}\n", self.listen_port));
        if let Some(address) = &self.address {
            t.push_str(&format!("address = {}\n", q(address)));
        }
        t.push_str(&format!("mtu = {}\n", self.mtu));
        if let Some(f) = key_file {
            t.push_str(&format!("private-key-file = {}\n", q(&f.to_string_lossy())));
        }
        if let Some(addr) = &self.metrics_listen {
            t.push_str(&format!("metrics-listen = {}\n", q(addr)));
        }
        if let Some(secs) = self.peer_idle_after {
            t.push_str(&format!("peer-idle-after = {secs}\n"));
        }
        if let Some(n) = self.max_filter_entries {
            t.push_str(&format!("max-filter-entries = {n}\n"));
        }
        for line in &self.dns {
            t.push_str(line);
            t.push('\n');
        }
        if !self.advertise_routes.is_empty() {
            let routes: Vec<String> = self.advertise_routes.iter().map(|r| q(r)).collect();
            t.push_str(&format!("advertise-routes = [{}]\n", routes.join(", ")));
        }
        for p in &self.peers {
            t.push_str("\n[[peer]]\n");
            t.push_str(&format!("public-key = {}\n", q(&p.public_key)));
            if let Some(ep) = &p.endpoint {
                t.push_str(&format!("endpoint = {}\n", q(ep)));
            }
            let ips: Vec<String> = p.allowed_ips.iter().map(|i| q(i)).collect();
            t.push_str(&format!("allowed-ips = [{}]\n", ips.join(", ")));
            if let Some(k) = p.persistent_keepalive {
                t.push_str(&format!("persistent-keepalive = {k}\n"));
            }
        }
        t
    }
}

/// A running (or deliberately killed) meshd. Its config, state directory, socket and log
/// live in a private temporary directory. Dropping it stops meshd and removes the
/// directory; when the thread is panicking it first prints the end of meshd's log.
#[derive(Debug)]
pub struct Meshd {
    ns: Arc<Netns>,
    config: MeshdConfig,
    dir: TempDir,
    config_path: PathBuf,
    state_dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    name: String,
}

impl Meshd {
    /// Writes the config and starts meshd in `ns`; returns once its API socket answers.
    /// `name` labels log output ("a", "b", ...).
    pub fn start(ns: &Arc<Netns>, name: &str, config: MeshdConfig) -> anyhow::Result<Meshd> {
        let dir = TempDir::new(&format!("meshd-{name}"))?;
        let config_path = dir.path().join("meshd.toml");
        let state_dir = dir.path().join("state");
        let socket = dir.path().join("meshd.sock");
        let log = dir.path().join("meshd.log");
        {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&state_dir)
                .with_context(|| format!("creating {}", state_dir.display()))?;
        }
        let key_file = match &config.key {
            Some(k) => {
                let f = dir.path().join("private.key");
                util::write_file_mode(&f, &format!("{}\n", k.private), 0o600)?;
                Some(f)
            }
            None => None,
        };
        util::write_file_mode(&config_path, &config.to_toml(key_file.as_deref()), 0o644)?;
        let mut m = Meshd {
            ns: ns.clone(),
            config,
            dir,
            config_path,
            state_dir,
            socket,
            log,
            child: None,
            name: name.to_owned(),
        };
        m.spawn()?;
        Ok(m)
    }

    /// Starts meshd in `ns` without address or peers ([`MeshdConfig::unconfigured`], port
    /// [`crate::topo::PORT`], registered under `name`), ready for `meshctl join`. With
    /// `key` None meshd generates its key in the state directory.
    pub fn start_unconfigured(
        ns: &Arc<Netns>,
        name: &str,
        key: Option<NodeKey>,
    ) -> anyhow::Result<Meshd> {
        Meshd::start(
            ns,
            name,
            MeshdConfig::unconfigured(crate::topo::PORT, key).named(name),
        )
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let meshd = util::binary("meshd")?;
        let _ = std::fs::remove_file(&self.socket);
        let level = std::env::var("MESHD_LOG").unwrap_or_else(|_| "info".to_owned());
        let mut argv = vec![
            meshd.to_string_lossy().into_owned(),
            "--config".into(),
            self.config_path.to_string_lossy().into_owned(),
            "--state-dir".into(),
            self.state_dir.to_string_lossy().into_owned(),
            "--socket".into(),
            self.socket.to_string_lossy().into_owned(),
        ];
        if let Some(n) = &self.config.node_name {
            argv.extend(["--name".to_owned(), n.clone()]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)?;
            writeln!(
                f,
                "==== harness: starting meshd {} (MESHD_LOG={level}) ====",
                self.name
            )?;
        }
        self.child = Some(
            self.ns
                .spawn_logged(&argv, &[("MESHD_LOG", &level)], &self.log)?,
        );
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "meshd {} exited during start-up ({status}); config:\n{}\nlog:\n{}",
                        self.name,
                        std::fs::read_to_string(&self.config_path).unwrap_or_default(),
                        self.log_tail(40)
                    );
                }
            }
            match self.status_via_socket() {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > Duration::from_secs(10) => {
                    bail!(
                        "meshd {} did not answer on {} within 10 s: {e:#}\nlog:\n{}",
                        self.name,
                        self.socket.display(),
                        self.log_tail(40)
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The node's label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace meshd runs in.
    pub fn ns(&self) -> &Arc<Netns> {
        &self.ns
    }

    /// The config it was started with.
    pub fn config(&self) -> &MeshdConfig {
        &self.config
    }

    /// The configured overlay address without prefix length; None when the node gets its
    /// address from a coordinator (see [`Meshd::address`]).
    pub fn overlay_ip(&self) -> Option<&str> {
        let a = self.config.address.as_deref()?;
        a.split('/').next()
    }

    /// The API socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The private temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id while it runs (for its CPU time in /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the meshd process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The node's status object (the `status` of `{"ok":true,"status":{...}}`).
    ///
    /// Asks `meshctl --socket PATH status --json` first; while meshctl is not usable
    /// (missing, or prints no JSON) talks to the socket directly.
    pub fn status(&self) -> anyhow::Result<Value> {
        match self.status_via_meshctl() {
            Ok(Some(v)) => Ok(v),
            Ok(None) => self.status_via_socket(),
            Err(e) => self
                .status_via_socket()
                .map_err(|e2| e2.context(format!("meshctl failed too: {e:#}"))),
        }
    }

    /// `meshctl --socket PATH status --json`, unwrapped to the status object; `Ok(None)` when
    /// meshctl is missing or prints no JSON.
    pub fn status_via_meshctl(&self) -> anyhow::Result<Option<Value>> {
        let Ok(meshctl) = util::binary("meshctl") else {
            return Ok(None);
        };
        let out = util::output(
            Command::new(meshctl)
                .arg("--socket")
                .arg(&self.socket)
                .args(["status", "--json"]),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Ok(v) = serde_json::from_str::<Value>(text.trim()) else {
            if out.status.success() {
                return Ok(None);
            }
            bail!(
                "meshctl status --json failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        };
        Ok(Some(unwrap_status(v)?))
    }

    /// The status straight from the unix socket (`{"cmd":"status"}`).
    pub fn status_via_socket(&self) -> anyhow::Result<Value> {
        status_at(&self.socket)
    }

    /// `meshctl --socket PATH status` (the human form), or an error when meshctl fails.
    pub fn meshctl_status_text(&self) -> anyhow::Result<String> {
        let meshctl = util::binary("meshctl")?;
        util::run(
            Command::new(meshctl)
                .arg("--socket")
                .arg(&self.socket)
                .arg("status"),
        )
    }

    /// The node's public key as status reports it.
    pub fn public_key(&self) -> anyhow::Result<String> {
        let s = self.status()?;
        s["public-key"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("status has no public-key: {s}"))
    }

    /// The status entry of the peer with `public_key`.
    pub fn peer_status(&self, public_key: &str) -> anyhow::Result<Value> {
        let s = self.status()?;
        s["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["public-key"] == public_key))
            .cloned()
            .with_context(|| format!("no peer {public_key} in status: {s}"))
    }

    /// A drop counter (`"bad-source"`, `"unknown-peer"`, `"invalid"`, `"no-route"`).
    pub fn dropped(&self, counter: &str) -> anyhow::Result<u64> {
        let s = self.status()?;
        s["dropped"][counter]
            .as_u64()
            .with_context(|| format!("status has no dropped.{counter}: {s}"))
    }

    /// Runs `meshctl --socket PATH <args>` (from the root namespace: the unix socket is a
    /// file, no network needed) and returns its output whatever the exit status.
    pub fn meshctl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let meshctl = util::binary("meshctl")?;
        util::output(
            Command::new(meshctl)
                .arg("--socket")
                .arg(&self.socket)
                .args(args),
        )
    }

    /// Like [`Meshd::meshctl`], but fails with meshctl's output unless it exits 0; returns
    /// stdout.
    pub fn meshctl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.meshctl(args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "node {}: `meshctl {}` failed ({}):\nstdout: {}\nstderr: {}",
                self.name,
                args.join(" "),
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(stdout)
    }

    /// `meshctl join NETWORK --token TOKEN --json --timeout 30s`: returns once the node is
    /// connected (meshctl waits), with the control status meshctl printed.
    pub fn join_with_token(&self, network: &str, token: &str) -> anyhow::Result<Value> {
        let out = self.meshctl_ok(&[
            "join",
            network,
            "--token",
            token,
            "--json",
            "--timeout",
            "30s",
        ])?;
        serde_json::from_str(out.trim())
            .with_context(|| format!("meshctl join --json printed no JSON: {out:?}"))
    }

    /// `meshctl join NETWORK --coordinator HOST:PORT --pin PIN`, without a token: returns
    /// meshctl's stdout once meshd reports the node pending (or connected).
    pub fn join_with_pin(
        &self,
        network: &str,
        coordinator: &str,
        pin: &str,
    ) -> anyhow::Result<String> {
        self.meshctl_ok(&[
            "join",
            network,
            "--coordinator",
            coordinator,
            "--pin",
            pin,
            "--timeout",
            "30s",
        ])
    }

    /// `meshctl leave NETWORK`; returns its stdout.
    pub fn leave(&self, network: &str) -> anyhow::Result<String> {
        self.meshctl_ok(&["leave", network])
    }

    /// The `control` object of the status (Null when the node is in no network).
    pub fn control(&self) -> anyhow::Result<Value> {
        Ok(self.status()?["control"].clone())
    }

    /// `control.state` (`connecting`, `pending`, `connected`, `denied`), or None when the
    /// node is in no network or its status cannot be read.
    pub fn control_state(&self) -> Option<String> {
        let s = self.status_via_socket().ok()?;
        s["control"]["state"].as_str().map(str::to_owned)
    }

    /// Polls until `control.state` is `state`; on time-out the error carries the last
    /// control status and the end of meshd's log.
    pub fn wait_control_state(&self, state: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let what = format!("node {}: control.state = {state}", self.name);
        util::wait_until(timeout, &what, || {
            self.control_state().as_deref() == Some(state)
        })
        .map_err(|e| {
            let control = self
                .status_via_socket()
                .map(|s| s["control"].to_string())
                .unwrap_or_else(|e| format!("(no status: {e:#})"));
            e.context(format!(
                "last control status: {control}\nmeshd {} log:\n{}",
                self.name,
                self.log_tail(30)
            ))
        })
    }

    /// The overlay address the status reports, with its prefix (`"10.9.8.1/24"`): the
    /// configured one, or the one the coordinator assigned. None when there is none.
    pub fn address_with_prefix(&self) -> anyhow::Result<Option<String>> {
        Ok(self.status()?["address"].as_str().map(str::to_owned))
    }

    /// The overlay address the status reports, without prefix; an error when there is none.
    pub fn address(&self) -> anyhow::Result<String> {
        let a = self
            .address_with_prefix()?
            .with_context(|| format!("node {} has no overlay address yet", self.name))?;
        Ok(a.split('/').next().unwrap_or(&a).to_owned())
    }

    /// One raw request over the API socket ([`request_at`]).
    pub fn request(&self, request: &Value, timeout: Duration) -> anyhow::Result<Value> {
        request_at(&self.socket, request, timeout)
    }

    /// The local API's netcheck (what `meshctl netcheck --json` prints): `{udp,
    /// reflections: [{reflector, observed}], mapping, relay}`.
    pub fn netcheck(&self) -> anyhow::Result<Value> {
        let reply = self
            .request(
                &serde_json::json!({"cmd": "netcheck"}),
                Duration::from_secs(15),
            )
            .with_context(|| format!("node {}: netcheck", self.name))?;
        reply_field(reply, "netcheck").with_context(|| format!("node {}: netcheck", self.name))
    }

    /// The local API's ping of `peer` (name, overlay address or key; what `meshctl ping`
    /// prints): `{public-key, answers: [{path, addr, rtt-ms}], path}`.
    pub fn disco_ping(&self, peer: &str) -> anyhow::Result<Value> {
        let reply = self
            .request(
                &serde_json::json!({"cmd": "ping", "peer": peer}),
                Duration::from_secs(15),
            )
            .with_context(|| format!("node {}: ping {peer}", self.name))?;
        reply_field(reply, "ping").with_context(|| format!("node {}: ping {peer}", self.name))
    }

    /// The public keys of the peers the node has now.
    pub fn peer_keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(peer_keys_of(&self.status()?))
    }

    /// Kills meshd with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().context("killing meshd")?;
            c.wait().context("waiting for meshd")?;
        }
        Ok(())
    }

    /// Starts meshd again with the same config, state directory and socket (kills it first
    /// if it still runs); returns once the API answers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9()?;
        self.spawn()
    }

    /// Starts meshd again with `config` instead (kills it first if it still runs), keeping
    /// the state directory (so a generated key and a membership survive) and socket.
    pub fn restart_with(&mut self, config: MeshdConfig) -> anyhow::Result<()> {
        self.kill9()?;
        let key_file = match &config.key {
            Some(k) => {
                let f = self.dir.path().join("private.key");
                util::write_file_mode(&f, &format!("{}\n", k.private), 0o600)?;
                Some(f)
            }
            None => None,
        };
        util::write_file_mode(
            &self.config_path,
            &config.to_toml(key_file.as_deref()),
            0o644,
        )?;
        self.config = config;
        self.spawn()
    }

    /// `GET /metrics` from its metrics listener (it must have one: `with_metrics`, on
    /// loopback), as text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let addr = self
            .config
            .metrics_listen
            .as_deref()
            .context("this meshd serves no metrics (MeshdConfig::with_metrics)")?;
        let addr: std::net::SocketAddr = addr.parse().context("metrics-listen address")?;
        crate::http::get_in(&self.ns, addr.port(), "/metrics", None)
    }

    /// The last `lines` lines of meshd's log (stdout and stderr, across restarts).
    pub fn log_tail(&self, lines: usize) -> String {
        util::tail(&self.log, lines)
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The status of the meshd listening on `socket`, straight from the unix socket
/// (`{"cmd":"status"}`), without starting a process: cheap enough to poll every few
/// milliseconds from several threads.
pub fn status_at(socket: &Path) -> anyhow::Result<Value> {
    unwrap_status(request_at(
        socket,
        &serde_json::json!({"cmd": "status"}),
        Duration::from_secs(5),
    )?)
}

/// Sends one request line (`mesh_proto::api::Request` as JSON) to the meshd listening on
/// `socket` and returns its one-line reply as JSON, whatever `ok` says.
pub fn request_at(socket: &Path, request: &Value, timeout: Duration) -> anyhow::Result<Value> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .with_context(|| format!("reading the reply to {request}"))?;
    serde_json::from_str(line.trim())
        .with_context(|| format!("reply to {request} is not JSON: {line:?}"))
}

/// The `field` of a successful reply (`{"ok":true,"<field>":{...}}`), or an error with
/// meshd's message.
fn reply_field(reply: Value, field: &str) -> anyhow::Result<Value> {
    if reply["ok"] != true {
        bail!("meshd answered an error: {reply}");
    }
    reply
        .get(field)
        .cloned()
        .with_context(|| format!("reply without {field}: {reply}"))
}

/// The public keys of the peers a status lists.
pub fn peer_keys_of(status: &Value) -> Vec<String> {
    status["peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["public-key"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn unwrap_status(v: Value) -> anyhow::Result<Value> {
    if v.get("ok").is_some() {
        if v["ok"] != true {
            bail!("meshd answered an error: {v}");
        }
        return v
            .get("status")
            .cloned()
            .with_context(|| format!("reply without status: {v}"));
    }
    Ok(v)
}

impl Drop for Meshd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- meshd {} log (last 60 lines) ----\n{}",
                self.name,
                self.log_tail(60)
            );
        }
        if let Some(mut child) = self.child.take() {
            netns::signal(&[child.id()], "TERM");
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
