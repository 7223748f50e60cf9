//! Runs the real `coordinator` in a namespace and drives its admin API with
//! `meshctl admin`, run inside the same namespace (the admin API listens on that
//! namespace's loopback only).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::netns::{self, Netns};
use crate::util::{self, TempDir};

/// The QUIC control port (each coordinator has its own namespace, so it can be fixed).
pub const CONTROL_PORT: u16 = 7443;
/// The admin HTTP port, on the coordinator namespace's loopback.
pub const HTTP_PORT: u16 = 7480;
/// The coordinator's two UDP reflectors (NAT traversal, issue 4): listen port + 1 and + 2,
/// on the listen address. Two ports let a node tell endpoint-independent from
/// endpoint-dependent (symmetric) NAT mappings.
pub const REFLECTOR_PORTS: [u16; 2] = [CONTROL_PORT + 1, CONTROL_PORT + 2];
/// The coordinator's relay (listen port + 3), framing in `mesh_proto::relay`.
pub const RELAY_PORT: u16 = CONTROL_PORT + 3;

/// A running (or deliberately stopped) coordinator. Its data directory (certificate, admin
/// token, database) and log live in a private temporary directory that outlives restarts.
/// Dropping it stops the coordinator and removes the directory; when the thread is
/// panicking it first prints the end of the coordinator's log.
#[derive(Debug)]
pub struct Coordinator {
    ns: Arc<Netns>,
    dir: TempDir,
    data_dir: PathBuf,
    log: PathBuf,
    listen: String,
    /// What `--advertise` says (nodes dial these): `listen` unless given.
    advertise: Vec<String>,
    http: String,
    /// Extra `serve` flags (e.g. `--store etcd:…`, `--id`).
    extra: Vec<String>,
    child: Option<Child>,
}

impl Coordinator {
    /// Starts `coordinator serve` in `ns` with QUIC on `listen_ip:7443` (also advertised in
    /// join tokens) and the admin API on `127.0.0.1:7480` inside `ns`; returns once the
    /// admin API answers.
    pub fn start(ns: &Arc<Netns>, listen_ip: &str) -> anyhow::Result<Coordinator> {
        Coordinator::start_with(ns, listen_ip, &[])
    }

    /// [`Coordinator::start`] with extra `serve` flags.
    pub fn start_with(
        ns: &Arc<Netns>,
        listen_ip: &str,
        extra: &[&str],
    ) -> anyhow::Result<Coordinator> {
        let dir = TempDir::new("coord")?;
        let data_dir = dir.path().join("data");
        let log = dir.path().join("coordinator.log");
        let mut c = Coordinator {
            ns: ns.clone(),
            data_dir,
            log,
            dir,
            listen: format!("{listen_ip}:{CONTROL_PORT}"),
            advertise: vec![format!("{listen_ip}:{CONTROL_PORT}")],
            http: format!("127.0.0.1:{HTTP_PORT}"),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        c.spawn()?;
        Ok(c)
    }

    /// [`Coordinator::start`] on both families: QUIC, reflectors and relay on `[::]`
    /// (dual-stack sockets), advertised at `ip4` and `ip6`, so members of either family
    /// are told every service in theirs.
    pub fn start_dual_stack(
        ns: &Arc<Netns>,
        ip4: &str,
        ip6: std::net::Ipv6Addr,
    ) -> anyhow::Result<Coordinator> {
        let dir = TempDir::new("coord")?;
        let mut c = Coordinator {
            ns: ns.clone(),
            data_dir: dir.path().join("data"),
            log: dir.path().join("coordinator.log"),
            dir,
            listen: format!("[::]:{CONTROL_PORT}"),
            advertise: vec![
                format!("{ip4}:{CONTROL_PORT}"),
                format!("[{ip6}]:{CONTROL_PORT}"),
            ],
            http: format!("127.0.0.1:{HTTP_PORT}"),
            extra: Vec::new(),
            child: None,
        };
        c.spawn()?;
        Ok(c)
    }

    /// Starts the process (again) with the same data directory and waits for the admin API.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = util::binary("coordinator")?;
        let level = std::env::var("COORDINATOR_LOG").unwrap_or_else(|_| "info".to_owned());
        let mut argv = vec![
            bin.to_string_lossy().into_owned(),
            "serve".into(),
            "--data-dir".into(),
            self.data_dir.to_string_lossy().into_owned(),
            "--listen".into(),
            self.listen.clone(),
            "--http".into(),
            self.http.clone(),
        ];
        for a in &self.advertise {
            argv.extend(["--advertise".to_owned(), a.clone()]);
        }
        argv.extend(self.extra.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .with_context(|| format!("opening {}", self.log.display()))?;
            writeln!(
                f,
                "==== harness: starting coordinator (COORDINATOR_LOG={level}) ===="
            )?;
        }
        self.child = Some(self.ns.spawn_logged(
            &argv,
            &[("COORDINATOR_LOG", &level)],
            &self.log,
        )?);
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "the coordinator exited during start-up ({status}); log:\n{}",
                        self.log_tail(40)
                    );
                }
            }
            // The token file appears before the listeners are bound; the API answering
            // proves both (QUIC is bound before HTTP).
            let answered = self.token_file().is_file()
                && self
                    .admin_output(&["network", "list", "--json"])
                    .is_ok_and(|o| o.status.success());
            if answered {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(15) {
                bail!(
                    "the coordinator's admin API did not answer on {} within 15 s; log:\n{}",
                    self.http,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &Arc<Netns> {
        &self.ns
    }

    /// `IP:PORT` of the QUIC control endpoint (what `meshctl join --coordinator` takes):
    /// the first advertised address.
    pub fn control_addr(&self) -> &str {
        &self.advertise[0]
    }

    /// The admin API's URL (valid inside the coordinator's namespace).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The data directory (kept across restarts).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `DATA_DIR/admin.token`.
    pub fn token_file(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    /// The process id while it runs (for its CPU time in /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The certificate pin, from `coordinator pin --data-dir DIR` (`sha256:…`).
    pub fn pin(&self) -> anyhow::Result<String> {
        let bin = util::binary("coordinator")?;
        let out = util::run(
            std::process::Command::new(bin)
                .arg("pin")
                .arg("--data-dir")
                .arg(&self.data_dir),
        )?;
        let pin = out.trim().to_owned();
        if !pin.starts_with("sha256:") {
            bail!("`coordinator pin` printed {pin:?}, not a sha256: pin");
        }
        Ok(pin)
    }

    /// Runs `meshctl admin --coordinator URL --token-file FILE <args>` inside the
    /// coordinator's namespace; returns the output whatever the exit status.
    pub fn admin_output(&self, args: &[&str]) -> anyhow::Result<Output> {
        let meshctl = util::binary("meshctl")?;
        let mut cmd = self.ns.command(meshctl);
        cmd.arg("admin")
            .arg("--coordinator")
            .arg(self.admin_url())
            .arg("--token-file")
            .arg(self.token_file())
            .args(args);
        util::output(&mut cmd)
    }

    /// Like [`Coordinator::admin_output`], but fails with the command and its output unless
    /// it exits 0; returns stdout.
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.admin_output(args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "`meshctl admin {}` failed ({}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(stdout)
    }

    /// Like [`Coordinator::admin`] with `--json` appended; parses stdout.
    pub fn admin_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut argv = args.to_vec();
        argv.push("--json");
        let out = self.admin(&argv)?;
        serde_json::from_str(out.trim()).with_context(|| {
            format!(
                "`meshctl admin {}` printed no JSON: {out:?}",
                argv.join(" ")
            )
        })
    }

    /// The admin token (the contents of [`Coordinator::token_file`], trimmed).
    pub fn admin_token(&self) -> anyhow::Result<String> {
        let token = std::fs::read_to_string(self.token_file())
            .with_context(|| format!("reading {}", self.token_file().display()))?;
        Ok(token.trim().to_owned())
    }

    /// `GET /metrics` from the admin endpoint with the admin token, as text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let token = self.admin_token()?;
        crate::http::get_in(&self.ns, HTTP_PORT, "/metrics", Some(&token))
    }

    /// `network create NAME --cidr CIDR`.
    pub fn create_network(&self, name: &str, cidr: &str) -> anyhow::Result<()> {
        self.admin(&["network", "create", name, "--cidr", cidr])?;
        Ok(())
    }

    /// `token create NETWORK [--reusable] [--expires DURATION]`; returns the token (the
    /// last line of stdout).
    pub fn create_token(
        &self,
        network: &str,
        reusable: bool,
        expires: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut args = vec!["token", "create", network];
        if reusable {
            args.push("--reusable");
        }
        if let Some(e) = expires {
            args.extend(["--expires", e]);
        }
        let out = self.admin(&args)?;
        let token = out
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .with_context(|| format!("`meshctl admin {}` printed nothing", args.join(" ")))?
            .to_owned();
        if token.contains(char::is_whitespace) {
            bail!("the last line of `meshctl admin token create` is not a token: {token:?}");
        }
        Ok(token)
    }

    /// `members NETWORK --json`: the member objects.
    pub fn members(&self, network: &str) -> anyhow::Result<Vec<Value>> {
        let v = self.admin_json(&["members", network])?;
        v.as_array()
            .cloned()
            .with_context(|| format!("`members {network} --json` is not an array: {v}"))
    }

    /// The member with `public_key` in `network`, if listed.
    pub fn member(&self, network: &str, public_key: &str) -> anyhow::Result<Option<Value>> {
        Ok(self
            .members(network)?
            .into_iter()
            .find(|m| m["public-key"] == public_key))
    }

    /// Stops the coordinator with SIGTERM (it closes its connections and flushes its
    /// database) and waits up to 10 s; then SIGKILL.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            netns::signal(&[child.id()], "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() >= deadline {
                    eprintln!("[harness] coordinator ignored SIGTERM for 10 s; killing it");
                    child.kill().context("killing the coordinator")?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.wait().context("waiting for the coordinator")?;
        }
        Ok(())
    }

    /// Kills the coordinator with SIGKILL (no chance to flush or say goodbye).
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().context("killing the coordinator")?;
            c.wait().context("waiting for the coordinator")?;
        }
        Ok(())
    }

    /// Starts it again with the same data directory (after [`Coordinator::stop`] or
    /// [`Coordinator::kill9`]); returns once the admin API answers.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("the coordinator still runs");
        }
        self.spawn()
    }

    /// [`Coordinator::stop`] then [`Coordinator::start_again`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// The last `lines` lines of its log (across restarts).
    pub fn log_tail(&self, lines: usize) -> String {
        util::tail(&self.log, lines)
    }

    /// The private temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- coordinator log (last 80 lines) ----\n{}",
                self.log_tail(80)
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
