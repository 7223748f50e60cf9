//! One network namespace per simulated host, router or "internet".

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::util::{self, describe};

/// A named network namespace (`ip netns add`). Dropping it kills every process still in
/// it (`ip netns pids`) and deletes it, which also removes its veth ends and TUN devices.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `wmt-<pid>-<n>-<tag>` with loopback up.
    pub fn new(tag: &str) -> anyhow::Result<Netns> {
        util::require_root()?;
        let name = util::unique_name(tag);
        util::run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    /// The environment is inherited.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `argv` inside the namespace; fails unless it exits 0; returns stdout.
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<String> {
        let (program, args) = argv.split_first().context("empty command")?;
        util::run(self.command(program).args(args))
    }

    /// The packets the first `counter` of nftables table `inet TABLE` counted so far.
    pub fn nft_counter(&self, table: &str) -> anyhow::Result<u64> {
        let out = self.exec(&["nft", "list", "table", "inet", table])?;
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no packet counter in table inet {table}"))
    }

    /// Runs `ip -n NAME <args>`; fails unless it exits 0; returns stdout.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        util::run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs several `ip` commands at once (`ip -n NAME -batch -`), one per line, so they take
    /// effect back to back.
    pub fn ip_batch(&self, lines: &[String]) -> anyhow::Result<()> {
        let input = lines.join("\n") + "\n";
        util::run_with_input(
            Command::new("ip").args(["-n", &self.name, "-batch", "-"]),
            &input,
        )?;
        Ok(())
    }

    /// Sets a sysctl inside the namespace, e.g. `net.ipv4.ip_forward=1`.
    pub fn sysctl(&self, setting: &str) -> anyhow::Result<()> {
        self.exec(&["sysctl", "-q", "-w", setting])?;
        Ok(())
    }

    /// Loads an nftables ruleset (newline-separated, as `nft -f` wants it) in the namespace.
    pub fn nft(&self, ruleset: &str) -> anyhow::Result<()> {
        util::run_with_input(self.command("nft").args(["-f", "-"]), ruleset)?;
        Ok(())
    }

    /// Starts `argv` inside the namespace with stdout and stderr appended to `log`.
    /// The caller owns the child; [`Netns`]'s drop kills it too if it is still in here.
    pub fn spawn_logged(
        &self,
        argv: &[&str],
        envs: &[(&str, &str)],
        log: &std::path::Path,
    ) -> anyhow::Result<Child> {
        let (program, args) = argv.split_first().context("empty command")?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = file.try_clone().context("duplicating log file handle")?;
        let mut cmd = self.command(program);
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        cmd.spawn()
            .with_context(|| format!("starting `{}`", describe(&cmd)))
    }

    /// Starts `argv` inside the namespace with stdout piped (stderr inherited, so it shows in
    /// the test output).
    pub fn spawn_piped(&self, argv: &[&str]) -> anyhow::Result<Child> {
        let (program, args) = argv.split_first().context("empty command")?;
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped());
        cmd.spawn()
            .with_context(|| format!("starting `{}`", describe(&cmd)))
    }

    /// The pids of all processes in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        pids_of(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

fn pids_of(name: &str) -> Vec<u32> {
    util::output(Command::new("ip").args(["netns", "pids", name]))
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills what runs in namespace `name` (SIGTERM, then SIGKILL after a grace period) and
/// deletes it. Best effort: called from destructors, reports problems on stderr.
pub(crate) fn destroy(name: &str) {
    let mut pids = pids_of(name);
    if !pids.is_empty() {
        // SIGTERM first so that wireguard-go removes its UAPI socket and meshd its TUN.
        signal(&pids, "TERM");
        let deadline = Instant::now() + Duration::from_secs(2);
        while !pids.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            pids = pids_of(name);
        }
        if !pids.is_empty() {
            signal(&pids, "KILL");
            let deadline = Instant::now() + Duration::from_secs(2);
            while !pids_of(name).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    match util::output(Command::new("ip").args(["netns", "del", name])) {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "[harness] warning: `ip netns del {name}` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("[harness] warning: {e:#}"),
    }
}

/// Sends `SIG<sig>` to `pids` with kill(1) (keeps the harness free of unsafe code).
pub(crate) fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let mut cmd = Command::new("kill");
    cmd.arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string));
    // A process that exited meanwhile makes kill(1) complain: expected, ignored.
    let _ = util::output(cmd.stderr(Stdio::null()));
}

/// Deletes namespaces and temporary directories left behind by test processes that no
/// longer exist (killed before their destructors ran). Entries of live processes, including
/// tests running in parallel, are left alone.
pub fn cleanup_stale() {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(&format!("{}-", util::NAME_PREFIX)) else {
            return false;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            return false;
        };
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    };
    if let Ok(o) = util::output(Command::new("ip").args(["netns", "list"])) {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if dead(name) {
                eprintln!("[harness] removing stale namespace {name}");
                destroy(name);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
