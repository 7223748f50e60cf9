//! Drives the `wm-xfer` tool: checksummed TCP transfers and UDP junk.

use std::io::Read as _;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::netns::Netns;
use crate::util;

/// What one side of a transfer reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XferReport {
    /// Bytes sent or received.
    pub bytes: u64,
    /// SHA-256 of them, hex.
    pub sha256: String,
}

impl XferReport {
    fn parse(line: &str) -> anyhow::Result<XferReport> {
        let mut bytes = None;
        let mut sha256 = None;
        for field in line.split_whitespace() {
            if let Some(v) = field.strip_prefix("bytes=") {
                bytes = v.parse().ok();
            } else if let Some(v) = field.strip_prefix("sha256=") {
                sha256 = Some(v.to_owned());
            }
        }
        match (bytes, sha256) {
            (Some(bytes), Some(sha256)) => Ok(XferReport { bytes, sha256 }),
            _ => bail!("unexpected wm-xfer output {line:?}"),
        }
    }
}

/// Both sides of a finished transfer.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The sender's report.
    pub sent: XferReport,
    /// The receiver's report.
    pub received: XferReport,
    /// Wall time from starting the sender until both finished (informational).
    pub took: Duration,
}

impl Transfer {
    /// Throughput in Mbit/s (informational only; never asserted).
    pub fn mbit_per_s(&self) -> f64 {
        self.received.bytes as f64 * 8.0 / self.took.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Sends `bytes` over TCP from namespace `from` to `to_ip:port`, where a receiver runs in
/// namespace `to`. Both processes are killed if they are not done within `timeout` (a
/// safety net against hangs, not an assertion on speed).
pub fn transfer(
    from: &Netns,
    to: &Netns,
    to_ip: &str,
    port: u16,
    bytes: u64,
    timeout: Duration,
) -> anyhow::Result<Transfer> {
    let xfer = util::binary("wm-xfer")?;
    let xfer = xfer.to_string_lossy();
    let bind = format!("{to_ip}:{port}");
    let mut receiver = to.spawn_piped(&[&xfer, "recv", &bind])?;
    let mut sender = from.spawn_piped(&[&xfer, "send", &bind, &bytes.to_string()])?;
    let start = Instant::now();
    let deadline = start + timeout;
    let result = (|| {
        let sent = finish("sender", &mut sender, deadline)?;
        let received = finish("receiver", &mut receiver, deadline)?;
        Ok::<_, anyhow::Error>((sent, received))
    })();
    let took = start.elapsed();
    // Never leave either process behind, whatever happened above.
    let _ = stop(&mut sender);
    let _ = stop(&mut receiver);
    let (sent, received) =
        result.with_context(|| format!("transfer of {bytes} bytes to {bind}"))?;
    Ok(Transfer {
        sent,
        received,
        took,
    })
}

/// Waits for one wm-xfer process until `deadline` and parses its report.
fn finish(what: &str, child: &mut Child, deadline: Instant) -> anyhow::Result<XferReport> {
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            bail!("wm-xfer {what} not done in time (killed)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out)
            .context("reading wm-xfer output")?;
    }
    if !status.success() {
        bail!("wm-xfer {what} failed ({status}); output: {out}");
    }
    XferReport::parse(out.trim())
}

fn stop(child: &mut Child) -> std::io::Result<()> {
    if child.try_wait()?.is_none() {
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}

/// Sends `count` junk UDP datagrams from namespace `from` to `to` (`IP:PORT`); returns how
/// many the kernel accepted.
pub fn garbage(from: &Netns, to: &str, count: u32, seed: u64) -> anyhow::Result<u64> {
    let xfer = util::binary("wm-xfer")?;
    let out = from.exec(&[
        &xfer.to_string_lossy(),
        "garbage",
        to,
        &count.to_string(),
        &seed.to_string(),
    ])?;
    out.trim()
        .strip_prefix("sent=")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected wm-xfer garbage output {out:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parses() {
        let r = XferReport::parse("bytes=10 sha256=abcd").ok();
        assert_eq!(
            r,
            Some(XferReport {
                bytes: 10,
                sha256: "abcd".into()
            })
        );
        assert!(XferReport::parse("nope").is_err());
    }
}
