//! Several networks per node: one meshd process, and one interface, per network.
//!
//! The meshd started by the operator (the *primary*) holds its network exactly as a node
//! of one network does: the interface of the config, the state directory, the socket,
//! listen port, metrics and static peers. Each further network runs in a child meshd that
//! the primary spawns and supervises: the same binary and config file, with the hidden
//! `--extra-network NAME`, its own state directory `<state-dir>/networks/NAME` (its own
//! node key, cache and bound listen port), its own socket `<socket-dir>/networks/NAME.sock`
//! and its own interface (the first free `<prefix><n>` after the primary's, e.g. `mesh0` →
//! `mesh1`, kept in the network's directory so restarts keep it). A child leaves out
//! what belongs to the node as a whole: static peers, the fixed `address`,
//! `advertise-routes`, metrics and fixed `dns-listen` addresses.
//!
//! Processes give the isolation by construction (separate keys, TUNs, sockets, caches;
//! one crashing touches no other). Children die with the primary (`PR_SET_PDEATHSIG`), are
//! stopped and waited for when it stops, and restarted with backoff when they exit on
//! their own; a starting primary respawns every network directory that holds a
//! membership (the `joined` marker), so all networks come back from their caches.
//!
//! [`crate::api`] routes the local API: a join of a network neither the primary nor a
//! child holds starts a child; leave, status and ping reach the child over its socket.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_proto::api::{NetworkStatus, Request, Response};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

/// The marker of a network directory whose child holds a membership (written once its
/// join succeeded): a starting primary respawns exactly these.
const JOINED: &str = "joined";
/// The file in a network directory naming its interface.
const INTERFACE: &str = "interface";
/// The file in a network directory holding the UDP port its child bound last.
pub const LISTEN_PORT: &str = "listen-port";
/// How long a new child has to answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a child has to answer a status (a stuck one shows as an error, never hangs
/// the primary's status).
const STATUS_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a child has to answer other requests (ping probes take up to 3 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a stopping child has after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Restart backoff after a child exited on its own: from this, doubling...
const MIN_RESTART: Duration = Duration::from_secs(1);
/// ...up to this; a child that ran this long starts the backoff over.
const MAX_RESTART: Duration = Duration::from_secs(30);
/// Most networks per node (interfaces `<prefix>1` to `<prefix>N`).
const MAX_NETWORKS: usize = 64;

/// What a child is started with, besides the network.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The meshd binary (`current_exe`).
    pub exe: PathBuf,
    /// The config file the primary read, if one was given.
    pub config: Option<PathBuf>,
    /// `--name`, if given.
    pub name: Option<String>,
    /// The primary's state directory; networks live under `networks/`.
    pub state_dir: PathBuf,
    /// The primary's socket; children's sockets live in `networks/` next to it.
    pub socket: PathBuf,
    /// The primary's interface, from which children's names derive.
    pub interface: String,
}

/// A supervised child meshd.
struct Child {
    interface: String,
    socket: PathBuf,
    dir: PathBuf,
    /// Tells the supervising task to stop the process.
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The primary's further networks.
pub struct Networks {
    launch: Launch,
    children: tokio::sync::Mutex<BTreeMap<String, Child>>,
}

impl std::fmt::Debug for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networks").finish_non_exhaustive()
    }
}

/// Whether `name` can be a network's name here (the coordinator's rule: lowercase
/// letters, digits and `-`, starting with a letter or digit, at most 32 bytes), so it is
/// safe as a path component.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The interface names a network after the first may take, in order: the primary's name
/// without its trailing digits, then 1, 2, ... (`mesh0` → `mesh1`, `mesh2`; `wm` → `wm1`),
/// cut so that each fits in [`crate::config::MAX_INTERFACE_LEN`], never the primary's.
pub fn interface_candidates(primary: &str) -> impl Iterator<Item = String> + '_ {
    let stem = primary.trim_end_matches(|c: char| c.is_ascii_digit());
    (1..=MAX_NETWORKS).filter_map(move |n| {
        let suffix = n.to_string();
        let room = crate::config::MAX_INTERFACE_LEN.checked_sub(suffix.len())?;
        let mut cut = stem.len().min(room);
        while !stem.is_char_boundary(cut) {
            cut -= 1;
        }
        let name = format!("{}{suffix}", &stem[..cut]);
        (name != primary && !name.is_empty()).then_some(name)
    })
}

/// Whether an interface of this name exists in this network namespace.
#[allow(unsafe_code)]
fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string; if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

impl Networks {
    /// The supervisor; nothing runs until [`Self::restore`] or a join.
    pub fn new(launch: Launch) -> Arc<Networks> {
        Arc::new(Networks {
            launch,
            children: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    fn root(&self) -> PathBuf {
        self.launch.state_dir.join("networks")
    }

    fn dir(&self, network: &str) -> PathBuf {
        self.root().join(network)
    }

    fn socket(&self, network: &str) -> PathBuf {
        let parent = self.launch.socket.parent().unwrap_or(Path::new("."));
        parent.join("networks").join(format!("{network}.sock"))
    }

    /// Respawns a child for every network directory with a membership, and removes the
    /// directories of joins that never succeeded. Called once at start.
    pub async fn restore(self: &Arc<Self>) {
        let Ok(entries) = std::fs::read_dir(self.root()) else {
            return;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        for network in names {
            let dir = self.dir(&network);
            if !dir.join(JOINED).exists() {
                tracing::info!(%network, "removing a network directory without a membership");
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            match self.spawn(&network).await {
                Ok(iface) => {
                    tracing::info!(%network, interface = %iface, "network restored in its own meshd")
                }
                Err(e) => tracing::warn!(%network, "restoring network: {e:#}"),
            }
        }
    }

    /// The networks the children hold.
    pub async fn names(&self) -> Vec<String> {
        self.children.lock().await.keys().cloned().collect()
    }

    /// Whether a child holds `network`.
    pub async fn holds(&self, network: &str) -> bool {
        self.children.lock().await.contains_key(network)
    }

    /// Picks the interface for `network`: the one it had (kept in its directory), else the
    /// first candidate no interface and no other network uses.
    fn interface_for(&self, network: &str, taken: &[String]) -> anyhow::Result<String> {
        let file = self.dir(network).join(INTERFACE);
        if let Ok(text) = std::fs::read_to_string(&file) {
            let name = text.trim().to_owned();
            if !name.is_empty() {
                return Ok(name);
            }
        }
        // Other networks' interfaces, also of those not running now.
        let mut used: Vec<String> = taken.to_vec();
        if let Ok(entries) = std::fs::read_dir(self.root()) {
            for e in entries.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path().join(INTERFACE)) {
                    used.push(t.trim().to_owned());
                }
            }
        }
        let name = interface_candidates(&self.launch.interface)
            .find(|c| !used.contains(c) && !interface_exists(c))
            .context("no free interface name for another network")?;
        std::fs::write(&file, format!("{name}\n"))
            .with_context(|| format!("writing {}", file.display()))?;
        Ok(name)
    }

    /// Starts (and supervises) the child of `network`; returns its interface once its
    /// socket answers.
    async fn spawn(self: &Arc<Self>, network: &str) -> anyhow::Result<String> {
        let mut children = self.children.lock().await;
        if let Some(c) = children.get(network) {
            return Ok(c.interface.clone());
        }
        let dir = self.dir(network);
        create_private_dir(&dir)?;
        let taken: Vec<String> = children.values().map(|c| c.interface.clone()).collect();
        let interface = self.interface_for(network, &taken)?;
        let socket = self.socket(network);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let command = self.command(network, &interface, &dir, &socket);
        let task = tokio::spawn(supervise(network.to_owned(), command, stopped));
        children.insert(
            network.to_owned(),
            Child {
                interface: interface.clone(),
                socket: socket.clone(),
                dir,
                stop,
                task,
            },
        );
        drop(children);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if exchange(&socket, &Request::Status, STATUS_TIMEOUT)
                .await
                .is_ok()
            {
                return Ok(interface);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the meshd of network {network:?} did not answer on {} within {}s (see the log)",
                    socket.display(),
                    START_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn command(
        &self,
        network: &str,
        interface: &str,
        dir: &Path,
        socket: &Path,
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.launch.exe);
        if let Some(config) = &self.launch.config {
            cmd.arg("--config").arg(config);
        }
        if let Some(name) = &self.launch.name {
            cmd.arg("--name").arg(name);
        }
        cmd.arg("--state-dir")
            .arg(dir)
            .arg("--socket")
            .arg(socket)
            .arg("--extra-network")
            .arg(network)
            .arg("--interface")
            .arg(interface)
            // systemd hears from the primary only; metrics are the primary's.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("MESHD_METRICS")
            .stdin(std::process::Stdio::null());
        die_with_parent(&mut cmd);
        cmd
    }

    /// `meshctl join` of a network the primary does not hold: forwarded to its child,
    /// which is started first if there is none.
    pub async fn join(self: &Arc<Self>, request: Request, network: &str) -> Response {
        if !valid_name(network) {
            return Response::error(format!(
                "invalid network name {network:?} (lowercase letters, digits and '-', at most 32)"
            ));
        }
        let fresh = !self.holds(network).await;
        let interface = match self.spawn(network).await {
            Ok(i) => i,
            Err(e) => {
                if fresh {
                    self.remove(network).await;
                }
                return Response::error(format!("{e:#}"));
            }
        };
        let socket = self.socket(network);
        match exchange(&socket, &request, REQUEST_TIMEOUT).await {
            Ok(Response::Done { ok, message }) => {
                let marker = self.dir(network).join(JOINED);
                if let Err(e) = std::fs::write(&marker, b"") {
                    tracing::warn!(%network, "writing {}: {e}", marker.display());
                }
                tracing::info!(%network, %interface, "joined a further network in its own meshd");
                Response::Done {
                    ok,
                    message: format!("{message} on {interface}"),
                }
            }
            Ok(other) => {
                if fresh {
                    self.remove(network).await;
                }
                other
            }
            Err(e) => {
                if fresh {
                    self.remove(network).await;
                }
                Response::error(format!("network {network:?}: {e:#}"))
            }
        }
    }

    /// `meshctl leave` of a child's network: the child leaves (forgets membership and
    /// cache, drops its peers), then stops (its interface goes with it) and its directory
    /// is removed.
    pub async fn leave(&self, request: Request, network: &str) -> Response {
        let socket = self.socket(network);
        let answer = match exchange(&socket, &request, REQUEST_TIMEOUT).await {
            Ok(Response::Done { ok, message }) => Response::Done { ok, message },
            // Not answering (crashed, restarting): the directory goes anyway.
            Ok(Response::Error { error, .. }) => {
                tracing::warn!(%network, "its meshd refused to leave: {error}; removing it anyway");
                Response::Done {
                    ok: true,
                    message: format!("left network {network:?}"),
                }
            }
            Ok(other) => other,
            Err(e) => {
                tracing::warn!(%network, "its meshd did not answer the leave: {e:#}; removing it anyway");
                Response::Done {
                    ok: true,
                    message: format!("left network {network:?}"),
                }
            }
        };
        self.remove(network).await;
        answer
    }

    /// Stops the child of `network` (if any) and removes its directory.
    async fn remove(&self, network: &str) {
        let _ = std::fs::remove_file(self.dir(network).join(JOINED));
        let child = self.children.lock().await.remove(network);
        if let Some(c) = child {
            let _ = c.stop.send(true);
            let _ = c.task.await;
            let _ = std::fs::remove_file(&c.socket);
            if let Err(e) = std::fs::remove_dir_all(&c.dir) {
                tracing::warn!(%network, "removing {}: {e}", c.dir.display());
            }
        } else {
            let _ = std::fs::remove_dir_all(self.dir(network));
        }
    }

    /// Every child's status, in name order; one that does not answer in time is an error
    /// entry.
    pub async fn statuses(&self) -> Vec<NetworkStatus> {
        let targets: Vec<(String, PathBuf)> = self
            .children
            .lock()
            .await
            .iter()
            .map(|(n, c)| (n.clone(), c.socket.clone()))
            .collect();
        // Asked all at once, so each child's timeout runs concurrently.
        let asks: Vec<_> = targets
            .into_iter()
            .map(|(network, socket)| {
                tokio::spawn(async move {
                    match exchange(&socket, &Request::Status, STATUS_TIMEOUT).await {
                        Ok(Response::Status { status, .. }) => NetworkStatus {
                            network,
                            status: Some(Box::new(status)),
                            error: None,
                        },
                        Ok(Response::Error { error, .. }) => NetworkStatus {
                            network,
                            status: None,
                            error: Some(error),
                        },
                        Ok(_) => NetworkStatus {
                            network,
                            status: None,
                            error: Some("unexpected answer to status".into()),
                        },
                        Err(e) => NetworkStatus {
                            network,
                            status: None,
                            error: Some(format!("{e:#}")),
                        },
                    }
                })
            })
            .collect();
        let mut out = Vec::with_capacity(asks.len());
        for ask in asks {
            if let Ok(s) = ask.await {
                out.push(s);
            }
        }
        out
    }

    /// Sends `request` to each child in name order; the first success answers.
    pub async fn first_ok(&self, request: &Request) -> Option<Response> {
        let sockets: Vec<PathBuf> = self
            .children
            .lock()
            .await
            .values()
            .map(|c| c.socket.clone())
            .collect();
        for socket in sockets {
            if let Ok(r) = exchange(&socket, request, REQUEST_TIMEOUT).await {
                if !matches!(r, Response::Error { .. }) {
                    return Some(r);
                }
            }
        }
        None
    }

    /// Stops every child and waits for them (the primary is stopping).
    pub async fn shutdown(&self) {
        let children: Vec<(String, Child)> = std::mem::take(&mut *self.children.lock().await)
            .into_iter()
            .collect();
        for (_, c) in &children {
            let _ = c.stop.send(true);
        }
        for (network, c) in children {
            let _ = c.task.await;
            tracing::debug!(%network, "its meshd stopped");
        }
    }
}

/// Keeps the child of `network` running until told to stop: restarts it with backoff when
/// it exits on its own; on stop, SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
async fn supervise(
    network: String,
    command: std::process::Command,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let mut backoff = MIN_RESTART;
    loop {
        let started = tokio::time::Instant::now();
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%network, "starting its meshd: {e}; retrying in {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(MAX_RESTART);
                continue;
            }
        };
        tracing::info!(%network, pid = child.id(), "started its meshd");
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(status) = exited else {
            if let Some(pid) = child.id() {
                terminate(pid);
            }
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(%network, "its meshd did not stop in {STOP_TIMEOUT:?}; killing it");
                let _ = child.kill().await;
            }
            return;
        };
        if started.elapsed() >= MAX_RESTART {
            backoff = MIN_RESTART;
        }
        match status {
            Ok(s) => tracing::warn!(%network, "its meshd exited ({s}); restarting in {backoff:?}"),
            Err(e) => {
                tracing::warn!(%network, "waiting for its meshd: {e}; restarting in {backoff:?}")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(MAX_RESTART);
    }
}

/// Makes the process `cmd` starts get SIGTERM when the primary dies (`PR_SET_PDEATHSIG`),
/// even by SIGKILL, so no network outlives the meshd that answers for it. (The signal
/// follows the thread that forked; the primary forks from its runtime's worker thread,
/// which lives as long as the process.)
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut std::process::Command) {
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The primary died before prctl took effect: nobody would stop us.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Asks the child `pid` (not reaped yet) to stop cleanly.
#[allow(unsafe_code)]
fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: a plain syscall on our own unreaped child's pid.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// `mkdir -p` with mode 0700 for the last component (it holds a node key).
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// One request to the meshd listening on `socket`, one response back, within `timeout`.
pub async fn exchange(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let work = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        write.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(read.take(64 << 20))
            .read_line(&mut answer)
            .await?;
        anyhow::ensure!(!answer.trim().is_empty(), "closed without answering");
        Ok(serde_json::from_str(answer.trim_end())?)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_primary() {
        let c: Vec<String> = interface_candidates("mesh0").take(3).collect();
        assert_eq!(c, ["mesh1", "mesh2", "mesh3"]);
        let c: Vec<String> = interface_candidates("wm").take(2).collect();
        assert_eq!(c, ["wm1", "wm2"]);
        // Never the primary's own name.
        let c: Vec<String> = interface_candidates("mesh1").take(2).collect();
        assert_eq!(c, ["mesh2", "mesh3"]);
        // Cut to fit 15 bytes.
        let c: Vec<String> = interface_candidates("fifteen-bytes-x").take(1).collect();
        assert_eq!(c, ["fifteen-bytes-1"]);
        let tenth = interface_candidates("fifteen-bytes-x").nth(9).unwrap();
        assert_eq!(tenth, "fifteen-bytes10");
        assert!(interface_candidates("x").all(|n| n.len() <= 15));
        assert_eq!(interface_candidates("x").count(), MAX_NETWORKS);
    }

    #[test]
    fn network_names_are_path_safe() {
        for ok in ["lab", "a", "b-2", "0net", &"x".repeat(32)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "-a",
            "A",
            "a b",
            "a.b",
            &"x".repeat(33),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
