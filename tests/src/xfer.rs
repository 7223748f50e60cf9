//! Drives the `wm-xfer` tool: checksummed TCP transfers (also paced, running in the
//! background while a test changes the network), UDP junk, hand-made UDP datagrams, and a
//! reflector/probe pair that shows what a NAT does to a socket.

use std::io::Read as _;
use std::net::SocketAddr;
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
    RunningTransfer::start(from, to, to_ip, port, bytes, None)?.finish(timeout)
}

/// A transfer running in the background (both wm-xfer processes started); see
/// [`RunningTransfer::start`]. Dropping it kills both processes.
#[derive(Debug)]
pub struct RunningTransfer {
    sender: Child,
    receiver: Child,
    bind: String,
    bytes: u64,
    start: Instant,
}

impl RunningTransfer {
    /// Starts a receiver on `to_ip:port` in `to` and a sender of `bytes` in `from`, paced to
    /// `mbit` Mbit/s when set (so that the transfer lasts while a test changes the path).
    /// Returns at once.
    pub fn start(
        from: &Netns,
        to: &Netns,
        to_ip: &str,
        port: u16,
        bytes: u64,
        mbit: Option<f64>,
    ) -> anyhow::Result<RunningTransfer> {
        let xfer = util::binary("wm-xfer")?;
        let xfer = xfer.to_string_lossy();
        let bind = format!("{to_ip}:{port}");
        let receiver = to.spawn_piped(&[&xfer, "recv", &bind])?;
        let bytes_s = bytes.to_string();
        let rate = mbit.map(|m| m.to_string());
        let mut argv = vec![&*xfer, "send", &bind, &bytes_s];
        if let Some(r) = &rate {
            argv.push(r);
        }
        let sender = match from.spawn_piped(&argv) {
            Ok(s) => s,
            Err(e) => {
                let mut receiver = receiver;
                let _ = stop(&mut receiver);
                return Err(e);
            }
        };
        Ok(RunningTransfer {
            sender,
            receiver,
            bind,
            bytes,
            start: Instant::now(),
        })
    }

    /// True while the sender still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.sender.try_wait(), Ok(None))
    }

    /// How long since it started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Waits until both sides are done (at most `timeout` from now; then both are killed)
    /// and returns their reports.
    pub fn finish(mut self, timeout: Duration) -> anyhow::Result<Transfer> {
        let deadline = Instant::now() + timeout;
        let result = (|| {
            let sent = finish("sender", &mut self.sender, deadline)?;
            let received = finish("receiver", &mut self.receiver, deadline)?;
            Ok::<_, anyhow::Error>((sent, received))
        })();
        let took = self.start.elapsed();
        let (sent, received) =
            result.with_context(|| format!("transfer of {} bytes to {}", self.bytes, self.bind))?;
        Ok(Transfer {
            sent,
            received,
            took,
        })
    }
}

impl Drop for RunningTransfer {
    fn drop(&mut self) {
        // Never leave either process behind, whatever happened.
        let _ = stop(&mut self.sender);
        let _ = stop(&mut self.receiver);
    }
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

/// Opens `count` TCP connections from namespace `from` to `to` (`IP:PORT`), each sending
/// junk (`wm-xfer tcp-garbage`); returns how many were accepted.
pub fn tcp_garbage(from: &Netns, to: &str, count: u32, seed: u64) -> anyhow::Result<u64> {
    junk(from, "tcp-garbage", to, count, seed)
}

/// Sends `count` junk UDP datagrams from namespace `from` to `to` (`IP:PORT`); returns how
/// many the kernel accepted.
pub fn garbage(from: &Netns, to: &str, count: u32, seed: u64) -> anyhow::Result<u64> {
    junk(from, "garbage", to, count, seed)
}

/// Runs `wm-xfer MODE TO COUNT SEED` in `from` and reads its `sent=N`.
fn junk(from: &Netns, mode: &str, to: &str, count: u32, seed: u64) -> anyhow::Result<u64> {
    let xfer = util::binary("wm-xfer")?;
    let out = from.exec(&[
        &xfer.to_string_lossy(),
        mode,
        to,
        &count.to_string(),
        &seed.to_string(),
    ])?;
    out.trim()
        .strip_prefix("sent=")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("wm-xfer {mode} printed {out:?}"))
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = stop(&mut self.0);
    }
}

/// TCP throughput from `client` to `server_ip` (in `server`) with iperf3 for `secs`
/// seconds, in Mbit/s as the receiver counted it (`end.sum_received.bits_per_second`).
pub fn iperf3_mbit(
    client: &Netns,
    server: &Netns,
    server_ip: &str,
    secs: u32,
) -> anyhow::Result<f64> {
    iperf3_run(client, server, server_ip, secs).map(|(mbit, _)| mbit)
}

/// [`iperf3_mbit`] and the bytes the receiver counted (`end.sum_received.bytes`).
pub fn iperf3_run(
    client: &Netns,
    server: &Netns,
    server_ip: &str,
    secs: u32,
) -> anyhow::Result<(f64, u64)> {
    let _server = KillOnDrop(server.spawn_piped(&["iperf3", "-s", "-1", "-B", server_ip])?);
    let secs_s = secs.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut cmd = client.command("iperf3");
        cmd.args(["-c", server_ip, "-t", &secs_s, "-J"]);
        let out = util::output(&mut cmd)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let received = &v["end"]["sum_received"];
        if let Some(bps) = received["bits_per_second"].as_f64() {
            return Ok((bps / 1e6, received["bytes"].as_u64().unwrap_or(0)));
        }
        // The server may not listen yet: retry briefly.
        if Instant::now() >= deadline {
            bail!(
                "iperf3 -c {server_ip} failed ({}): {}",
                out.status,
                v["error"].as_str().unwrap_or(text.trim())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Lowercase hex of `bytes` (what `wm-xfer udp-send` takes).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lowercase or uppercase hex.
pub fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    if text.len() % 2 != 0 {
        bail!("odd-length hex {text:?}");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .with_context(|| format!("bad hex {text:?}"))
        })
        .collect()
}

/// How [`udp_send`] sends.
#[derive(Debug, Clone, Default)]
pub struct UdpSend {
    /// Local address to bind (`IP:PORT`); None = any address, a random port.
    pub bind: Option<String>,
    /// How many times each payload is sent.
    pub repeat: u32,
    /// How long to listen for answers afterwards.
    pub listen: Duration,
    /// IP TTL of the datagrams (None: the system default).
    pub ttl: Option<u32>,
}

/// What [`udp_send`] saw.
#[derive(Debug, Clone, Default)]
pub struct UdpSent {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Datagrams received while listening: source and payload.
    pub replies: Vec<(SocketAddr, Vec<u8>)>,
}

/// Sends each of `payloads` from one UDP socket in namespace `from` to `to` (`IP:PORT`),
/// as `how` says, and collects what comes back to that socket.
pub fn udp_send(
    from: &Netns,
    to: &str,
    payloads: &[Vec<u8>],
    how: &UdpSend,
) -> anyhow::Result<UdpSent> {
    let xfer = util::binary("wm-xfer")?;
    let xfer = xfer.to_string_lossy().into_owned();
    let repeat = how.repeat.max(1).to_string();
    let listen = how.listen.as_millis().to_string();
    let mut argv = vec![xfer, "udp-send".to_owned()];
    if let Some(b) = &how.bind {
        argv.extend(["--bind".to_owned(), b.clone()]);
    }
    if let Some(t) = how.ttl {
        argv.extend(["--ttl".to_owned(), t.to_string()]);
    }
    argv.extend([
        "--repeat".to_owned(),
        repeat,
        "--listen-ms".to_owned(),
        listen,
        to.to_owned(),
    ]);
    argv.extend(payloads.iter().map(|p| hex(p)));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = from.exec(&argv)?;
    let mut result = UdpSent::default();
    for line in out.lines() {
        if let Some(n) = line.strip_prefix("sent=") {
            result.sent = n.trim().parse().context("wm-xfer udp-send: sent=")?;
        } else if let Some(rest) = line.strip_prefix("reply ") {
            let (addr, payload) = rest
                .split_once(' ')
                .with_context(|| format!("wm-xfer udp-send: bad line {line:?}"))?;
            result.replies.push((
                addr.parse()
                    .with_context(|| format!("wm-xfer udp-send: bad address in {line:?}"))?,
                unhex(payload.trim())?,
            ));
        }
    }
    Ok(result)
}

/// A `wm-xfer reflect` process; killed on drop.
#[derive(Debug)]
pub struct Reflector {
    child: Child,
    /// Where it listens.
    pub addr: String,
}

impl Reflector {
    /// Starts a reflector on `bind` (`IP:PORT`) in `ns`.
    pub fn start(ns: &Netns, bind: &str) -> anyhow::Result<Reflector> {
        let xfer = util::binary("wm-xfer")?;
        let child = ns.spawn_piped(&[&xfer.to_string_lossy(), "reflect", bind])?;
        // Give it a moment to bind; probes retry anyway.
        std::thread::sleep(Duration::from_millis(100));
        Ok(Reflector {
            child,
            addr: bind.to_owned(),
        })
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        let _ = stop(&mut self.child);
    }
}

/// From one UDP socket bound to `bind` in `ns`, asks each reflector in `servers` what
/// source address it sees. None for a reflector that did not answer (about 1.5 s).
pub fn probe(ns: &Netns, bind: &str, servers: &[&str]) -> anyhow::Result<Vec<Option<SocketAddr>>> {
    let xfer = util::binary("wm-xfer")?;
    let xfer = xfer.to_string_lossy().into_owned();
    let mut argv = vec![xfer.as_str(), "probe", bind];
    argv.extend(servers);
    let out = ns.exec(&argv)?;
    let mut seen = Vec::new();
    for server in servers {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(server))
            .with_context(|| format!("wm-xfer probe printed nothing for {server}: {out:?}"))?;
        let observed = line.split_whitespace().nth(1).unwrap_or("-");
        seen.push(if observed == "-" {
            None
        } else {
            Some(
                observed
                    .parse()
                    .with_context(|| format!("wm-xfer probe: bad address in {line:?}"))?,
            )
        });
    }
    Ok(seen)
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
