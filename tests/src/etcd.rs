//! etcd members for the coordinator's shared store: one member per host namespace (as an
//! operator would run one beside each coordinator), client port 2379 and peer port 2380 on
//! the host's address, or all on loopback ports of their own ([`EtcdCluster::start_loopback`],
//! for `wm-loadgen`). Members can be killed and started again with their data; dropping the
//! cluster kills them and removes their data.

use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::netns::Netns;
use crate::util::TempDir;

/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const PEER_PORT: u16 = 2380;

/// One member.
#[derive(Debug)]
struct Member {
    /// `None`: this process's namespace (loopback).
    ns: Option<Arc<Netns>>,
    ip: String,
    client_port: u16,
    argv: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster (some members may be stopped on purpose).
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    _dir: TempDir,
}

/// Whether the etcd server binary is installed (Debian's `etcd-server`).
pub fn have_etcd() -> bool {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl EtcdCluster {
    /// Starts one member on each `(namespace, address)` and waits until every member
    /// answers `endpoint health`.
    pub fn start(hosts: &[(Arc<Netns>, String)]) -> anyhow::Result<EtcdCluster> {
        let places: Vec<(Option<Arc<Netns>>, String, u16, u16)> = hosts
            .iter()
            .map(|(ns, ip)| (Some(ns.clone()), ip.clone(), CLIENT_PORT, PEER_PORT))
            .collect();
        EtcdCluster::start_at(&places)
    }

    /// `n` members on loopback, each on two free ports.
    pub fn start_loopback(n: usize) -> anyhow::Result<EtcdCluster> {
        let free = || -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let mut places = Vec::new();
        for _ in 0..n {
            places.push((None, "127.0.0.1".to_owned(), free()?, free()?));
        }
        EtcdCluster::start_at(&places)
    }

    fn start_at(hosts: &[(Option<Arc<Netns>>, String, u16, u16)]) -> anyhow::Result<EtcdCluster> {
        if !have_etcd() {
            bail!("etcd is not installed (apt-get install etcd-server etcd-client)");
        }
        let dir = TempDir::new("etcd")?;
        let token = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "wm-etcd".into());
        let initial = hosts
            .iter()
            .enumerate()
            .map(|(i, (_, ip, _, peer))| format!("e{i}=http://{ip}:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (ns, ip, client, peer)) in hosts.iter().enumerate() {
            let data = dir.path().join(format!("e{i}"));
            let argv = vec![
                "etcd".to_owned(),
                "--name".into(),
                format!("e{i}"),
                "--data-dir".into(),
                data.to_string_lossy().into_owned(),
                "--listen-client-urls".into(),
                format!("http://{ip}:{client}"),
                "--advertise-client-urls".into(),
                format!("http://{ip}:{client}"),
                "--listen-peer-urls".into(),
                format!("http://{ip}:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://{ip}:{peer}"),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-token".into(),
                token.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                // Leader loss is noticed in about a second (defaults: 100 ms / 1 s).
                "--heartbeat-interval".into(),
                "100".into(),
                "--election-timeout".into(),
                "1000".into(),
                "--max-txn-ops".into(),
                "1024".into(),
                "--log-level".into(),
                "warn".into(),
            ];
            members.push(Member {
                ns: ns.clone(),
                ip: ip.clone(),
                client_port: *client,
                argv,
                log: dir.path().join(format!("e{i}.log")),
                child: None,
            });
        }
        let mut cluster = EtcdCluster { members, _dir: dir };
        for i in 0..cluster.members.len() {
            cluster.start_member(i)?;
        }
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn start_member(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        if m.child.is_some() {
            return Ok(());
        }
        let argv: Vec<&str> = m.argv.iter().map(String::as_str).collect();
        m.child = Some(match &m.ns {
            Some(ns) => ns.spawn_logged(&argv, &[], &m.log)?,
            None => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&m.log)?;
                std::process::Command::new(argv[0])
                    .args(&argv[1..])
                    .stdin(std::process::Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .context("starting etcd")?
            }
        });
        Ok(())
    }

    /// `--store` for the coordinator: every member's client URL.
    pub fn store_arg(&self) -> String {
        format!("etcd:{}", self.endpoints())
    }

    /// Every member's client URL, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://{}:{}", m.ip, m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills member `i` with SIGKILL (its data stays).
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill().context("killing an etcd member")?;
            let _ = child.wait();
        }
        Ok(())
    }

    /// Starts member `i` again with its data and waits until it answers.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_member(i)?;
        let start = Instant::now();
        while !self.member_healthy(i) {
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "etcd member e{i} not healthy 30 s after restart:\n{}",
                    self.log_tail(i)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Whether member `i` answers a health check (it has a leader and commits).
    pub fn member_healthy(&self, i: usize) -> bool {
        let m = &self.members[i];
        let mut cmd = match &m.ns {
            Some(ns) => ns.command("etcdctl"),
            None => std::process::Command::new("etcdctl"),
        };
        cmd.env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &format!("http://{}:{}", m.ip, m.client_port),
                "--command-timeout=2s",
                "endpoint",
                "health",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Waits until every running member is healthy.
    pub fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let sick: Vec<usize> = (0..self.members.len())
                .filter(|&i| self.members[i].child.is_some() && !self.member_healthy(i))
                .collect();
            if sick.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "etcd members {sick:?} not healthy within {timeout:?}:\n{}",
                    self.log_tail(sick[0])
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The end of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
