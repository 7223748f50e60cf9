//! Small things every part of the harness needs: unique names, temporary directories,
//! the root check, finding the binaries, running commands with useful errors, waiting.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Prefix of every namespace and temporary directory the harness creates, followed by
/// `-<pid>-`: lets [`crate::cleanup_stale`] find leftovers of test processes that died
/// without running their destructors (SIGKILL, Ctrl-C).
pub const NAME_PREFIX: &str = "wmt";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A name that is unique across this process and every other process on the machine:
/// `wmt-<pid>-<counter>-<tag>`. For namespaces and directories (no length limit).
pub fn unique_name(tag: &str) -> String {
    format!("{NAME_PREFIX}-{}-{}-{tag}", std::process::id(), next())
}

/// A unique network interface name of at most 15 bytes (`IFNAMSIZ - 1`):
/// `<tag><pid hex>-<counter hex>`. `tag` is cut to 4 bytes.
///
/// Interfaces live inside the test's own namespaces, so uniqueness is not strictly needed
/// there, but wireguard-go's UAPI socket `/var/run/wireguard/<name>.sock` is shared by all
/// namespaces, and unique names make `ip link` output from parallel tests unambiguous.
pub fn unique_ifname(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(4)
        .collect();
    let name = format!("{tag}{:x}-{:x}", std::process::id(), next());
    assert!(
        name.len() <= 15,
        "interface name {name} is longer than 15 bytes"
    );
    name
}

/// A directory under [`std::env::temp_dir`] removed (recursively) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `<tmp>/wmt-<pid>-<n>-<tag>` with mode 0700.
    pub fn new(tag: &str) -> anyhow::Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt as _;
        let path = std::env::temp_dir().join(unique_name(tag));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir {
            path,
            keep: std::env::var_os("WIREMESH_KEEP_TMP").is_some(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "[harness] keeping {} (WIREMESH_KEEP_TMP is set)",
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes `contents` to `path` with `mode` (the file is created with that mode, never
/// readable by others in between).
pub fn write_file_mode(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// True when the process runs with effective uid 0.
pub fn is_root() -> bool {
    // Read from /proc so this needs no unsafe libc call.
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Fails (never skips) when not root: the network tests need namespaces and TUN devices.
pub fn require_root() -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "this test needs root: it creates network namespaces, veth pairs and TUN devices. \
             Run the tests as root, e.g. `sudo -E cargo test -p wiremesh-tests --profile ci` \
             (build first: `cargo build --workspace --profile ci`)"
        );
    }
    Ok(())
}

/// The target profile directory (`target/<profile>`) holding this workspace's binaries:
/// the test executable lives in `target/<profile>/deps`, the demo in `target/<profile>`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the current executable")?;
    let mut dir = exe
        .parent()
        .context("current executable has no parent directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().context("deps directory has no parent")?;
    }
    Ok(dir.to_path_buf())
}

/// The path of a workspace binary (`meshd`, `meshctl`, `wm-xfer`), or an error telling the
/// user to build the workspace first.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = bin_dir()?;
    let path = dir.join(name);
    if !path.is_file() {
        let profile = dir
            .file_name()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let flag = match profile.as_str() {
            "debug" => String::new(),
            "release" => " --release".to_owned(),
            p => format!(" --profile {p}"),
        };
        bail!(
            "{} not found: the end-to-end tests run the real binaries; build them first with \
             `cargo build --workspace{flag}`",
            path.display()
        );
    }
    Ok(path)
}

/// Renders a command line for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let _ = write!(s, " {}", a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion (stdin closed) and returns its output, whatever the exit status.
pub fn output(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{}`", describe(cmd)))
}

/// Runs `cmd`, fails with its stderr unless it exits 0, and returns its stdout.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with `input` on stdin; like [`run`] otherwise.
pub fn run_with_input(cmd: &mut Command, input: &str) -> anyhow::Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running `{}`", describe(cmd)))?;
    child
        .stdin
        .take()
        .context("child has no stdin")?
        .write_all(input.as_bytes())
        .with_context(|| format!("writing stdin of `{}`", describe(cmd)))?;
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}\ninput was:\n{input}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` until it returns true or `timeout` passes, printing progress about once a
/// second. Returns how long it took (measured from the call), or an error naming `what`.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut last_report = start;
    loop {
        if check() {
            let took = start.elapsed();
            eprintln!("[wait] {what}: ok after {:.2}s", took.as_secs_f64());
            return Ok(took);
        }
        let now = Instant::now();
        if now - start >= timeout {
            bail!(
                "timed out after {:.1}s waiting for {what}",
                timeout.as_secs_f64()
            );
        }
        if now - last_report >= Duration::from_secs(1) {
            eprintln!(
                "[wait] {what}: still waiting ({:.1}s)",
                (now - start).as_secs_f64()
            );
            last_report = now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a text file, for failure reports.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            lines[from..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`; 0 when it is gone.
pub fn proc_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may contain spaces) start after the last ')';
    // utime and stime (fields 14 and 15) are then the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A memory line of `/proc/PID/status` (`VmRSS`, `VmHWM`, …) in MB; 0 when absent.
pub fn proc_memory_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames_fit_and_differ() {
        let a = unique_ifname("wmesh");
        let b = unique_ifname("wmesh");
        assert!(a.len() <= 15 && b.len() <= 15);
        assert_ne!(a, b);
        assert!(a.starts_with("wmes"));
    }

    #[test]
    fn names_carry_the_pid() {
        let n = unique_name("x");
        assert!(n.starts_with(&format!("{NAME_PREFIX}-{}-", std::process::id())));
    }
}
