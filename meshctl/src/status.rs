//! `status`: ask meshd over its unix socket and print the answer like `wg show`.
//!
//! One exchange per run (see [`mesh_proto::api`]): connect, write `{"cmd":"status"}\n`,
//! read one line of JSON. Connecting, sending and reading share one [`TIMEOUT`].

use std::fmt::Write as _;
use std::io::{self, Read as _, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use mesh_proto::api::{Request, Response, Status};
use socket2::{Domain, SockAddr, Socket, Type};

/// How long meshd has to accept, take the request and answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer accepted; a status with thousands of peers is well below this.
const MAX_ANSWER: usize = 16 << 20;

/// Queries meshd at `socket` and prints its status, as text or pretty JSON.
pub fn run(socket: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let status = query(socket).map_err(anyhow::Error::msg)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &status)?;
        writeln!(out)?;
    } else {
        out.write_all(render(&status).as_bytes())?;
    }
    Ok(())
}

/// One status exchange; the error is a complete one-line message.
pub fn query(socket: &Path) -> Result<Status, String> {
    let deadline = Instant::now() + TIMEOUT;
    let shown = socket.display();
    let timed_out = || {
        format!(
            "meshd at {shown} did not answer within {} seconds",
            TIMEOUT.as_secs()
        )
    };

    let mut stream = connect(socket).map_err(|e| {
        if is_timeout(&e) {
            timed_out()
        } else {
            describe_connect_error(socket, &e)
        }
    })?;

    let mut request = serde_json::to_string(&Request::Status).map_err(|e| e.to_string())?;
    request.push('\n');
    stream
        .set_write_timeout(Some(left(deadline).ok_or_else(timed_out)?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| {
            if is_timeout(&e) {
                timed_out()
            } else {
                format!("sending to meshd at {shown}: {}", io_reason(&e))
            }
        })?;

    let line = read_line(&mut stream, deadline).map_err(|e| {
        if is_timeout(&e) {
            timed_out()
        } else {
            format!("reading from meshd at {shown}: {}", io_reason(&e))
        }
    })?;
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(format!(
            "meshd at {shown} closed the connection without answering"
        ));
    }
    parse_answer(&line).map_err(|e| format!("meshd at {shown}: {e}"))
}

fn connect(socket: &Path) -> io::Result<UnixStream> {
    let addr = SockAddr::unix(socket)?;
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    sock.connect_timeout(&addr, TIMEOUT)?;
    Ok(UnixStream::from(std::os::fd::OwnedFd::from(sock)))
}

/// `cannot reach meshd at PATH: REASON (HINT)`.
fn describe_connect_error(socket: &Path, e: &io::Error) -> String {
    let hint = match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => " (is meshd running?)",
        io::ErrorKind::PermissionDenied => " (the socket is root-only; try sudo)",
        _ => "",
    };
    format!(
        "cannot reach meshd at {}: {}{hint}",
        socket.display(),
        io_reason(e)
    )
}

fn left(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Reads up to the first newline (or EOF), giving up at `deadline`.
fn read_line(stream: &mut UnixStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(timeout) = left(deadline) else {
            return Err(io::ErrorKind::TimedOut.into());
        };
        stream.set_read_timeout(Some(timeout))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(line),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(end) = chunk[..n].iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&chunk[..end]);
            return Ok(line);
        }
        line.extend_from_slice(&chunk[..n]);
        if line.len() > MAX_ANSWER {
            return Err(io::Error::other(format!(
                "answer longer than {MAX_ANSWER} bytes"
            )));
        }
    }
}

/// Decodes meshd's answer; an error answer becomes `Err` with meshd's reason.
fn parse_answer(line: &[u8]) -> Result<Status, String> {
    match serde_json::from_slice::<Response>(line) {
        Ok(Response::Status { status, .. }) => Ok(status),
        Ok(Response::Error { error, .. }) => Err(one_line(&error)),
        Ok(Response::Done { .. }) => Err("meshd answered without a status".to_owned()),
        // `untagged` reports only "did not match any variant"; find out what is wrong.
        Err(_) => {
            let value: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| format!("answer is not JSON: {e}"))?;
            match value.get("status") {
                Some(status) => match serde_json::from_value::<Status>(status.clone()) {
                    Ok(status) => Ok(status),
                    Err(e) => Err(format!("unexpected status: {e}")),
                },
                None => Err("answer has neither `status` nor `error`".to_owned()),
            }
        }
    }
}

/// The status as `wg show` would lay it out, plus address, MTU and drop counters.
///
/// Like `wg show`, a peer's `endpoint` and `persistent keepalive` lines are left out when
/// there is nothing to show.
pub fn render(status: &Status) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "interface: {}", status.interface);
    let _ = writeln!(s, "  public key: {}", status.public_key);
    let _ = writeln!(s, "  listening port: {}", status.listen_port);
    if let Some(address) = status.address {
        let _ = writeln!(s, "  address: {address}");
    }
    let _ = writeln!(s, "  mtu: {}", status.mtu);
    for peer in &status.peers {
        let _ = writeln!(s, "\npeer: {}", peer.public_key);
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(s, "  endpoint: {endpoint}");
        }
        let allowed = if peer.allowed_ips.is_empty() {
            "(none)".to_owned()
        } else {
            peer.allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "  allowed ips: {allowed}");
        let handshake = match peer.latest_handshake_secs {
            None => "never".to_owned(),
            Some(0) => "now".to_owned(),
            Some(secs) => format!("{} ago", duration(secs)),
        };
        let _ = writeln!(s, "  latest handshake: {handshake}");
        let _ = writeln!(
            s,
            "  transfer: {} received, {} sent",
            bytes(peer.rx_bytes),
            bytes(peer.tx_bytes)
        );
        if let Some(secs) = peer.persistent_keepalive {
            let _ = writeln!(s, "  persistent keepalive: every {}", duration(secs.into()));
        }
    }
    // Every counter meshd sends, named as serialized (`no-route` -> `no route`), sorted so
    // the output does not depend on serde_json's map order; new counters show up unasked.
    let _ = writeln!(s, "\ndropped packets:");
    if let Ok(serde_json::Value::Object(counters)) = serde_json::to_value(&status.dropped) {
        let mut counters: Vec<_> = counters.into_iter().collect();
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, count) in counters {
            let _ = writeln!(s, "  {}: {count}", name.replace('-', " "));
        }
    }
    s
}

/// `wg show`'s durations: `1 day, 2 hours, 1 minute, 5 seconds`, zero parts left out.
fn duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (365 * 86400, "year"),
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut left = secs;
    let mut parts = Vec::new();
    for (size, name) in UNITS {
        let n = left / size;
        left %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
    }
    if parts.is_empty() {
        "0 seconds".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `wg show`'s byte counts: `512 B`, then KiB to TiB with two decimals.
fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    // Precision loss above 2^53 bytes is far below the two decimals shown.
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    if n < 1024 {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.2} KiB", f / KIB)
    } else if f < KIB * KIB * KIB {
        format!("{:.2} MiB", f / (KIB * KIB))
    } else if f < KIB * KIB * KIB * KIB {
        format!("{:.2} GiB", f / (KIB * KIB * KIB))
    } else {
        format!("{:.2} TiB", f / (KIB * KIB * KIB * KIB))
    }
}

fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if e.raw_os_error().is_some() => text[..i].to_owned(),
        _ => text,
    }
}

fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn durations() {
        for (secs, want) in [
            (1, "1 second"),
            (12, "12 seconds"),
            (60, "1 minute"),
            (62, "1 minute, 2 seconds"),
            (3600 + 120, "1 hour, 2 minutes"),
            (2 * 86400 + 1, "2 days, 1 second"),
            (366 * 86400, "1 year, 1 day"),
        ] {
            assert_eq!(duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn byte_counts() {
        for (n, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.00 KiB"),
            (1536, "1.50 KiB"),
            (1_289_748, "1.23 MiB"),
            (4_781_506, "4.56 MiB"),
            (5 << 30, "5.00 GiB"),
            (3 << 40, "3.00 TiB"),
        ] {
            assert_eq!(bytes(n), want, "{n}");
        }
    }

    #[test]
    fn connect_errors() {
        let path = Path::new("/run/meshd/meshd.sock");
        for (errno, want) in [
            (2, "cannot reach meshd at /run/meshd/meshd.sock: No such file or directory (is meshd running?)"),
            (13, "cannot reach meshd at /run/meshd/meshd.sock: Permission denied (the socket is root-only; try sudo)"),
            (111, "cannot reach meshd at /run/meshd/meshd.sock: Connection refused (is meshd running?)"),
            (20, "cannot reach meshd at /run/meshd/meshd.sock: Not a directory"),
        ] {
            assert_eq!(describe_connect_error(path, &io::Error::from_raw_os_error(errno)), want);
        }
    }

    #[test]
    fn answers() {
        assert_eq!(
            parse_answer(br#"{"ok":false,"error":"busy\nnow"}"#),
            Err("busy; now".to_owned())
        );
        assert_eq!(
            parse_answer(b"hello"),
            Err("answer is not JSON: expected value at line 1 column 1".to_owned())
        );
        assert_eq!(
            parse_answer(br#"{"ok":true}"#),
            Err("answer has neither `status` nor `error`".to_owned())
        );
        let err = parse_answer(br#"{"ok":true,"status":{"interface":"mesh0"}}"#).unwrap_err();
        assert!(err.starts_with("unexpected status: missing field"), "{err}");
    }
}
