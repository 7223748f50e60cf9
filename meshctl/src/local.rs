//! The local API client: one JSON line to meshd's unix socket, one JSON line back (see
//! [`mesh_proto::api`]). Connecting, sending and reading share one [`TIMEOUT`].
//!
//! Every error is a complete one-line message naming the socket.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use mesh_proto::api::Request;
use socket2::{Domain, SockAddr, Socket, Type};

/// How long meshd has to accept, take the request and answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer accepted; a status with thousands of peers is well below this.
const MAX_ANSWER: usize = 16 << 20;

/// Sends `request` and returns meshd's answer line (without the newline, never blank).
pub fn exchange(socket: &Path, request: &Request) -> Result<Vec<u8>, String> {
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

    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    stream
        .set_write_timeout(Some(left(deadline).ok_or_else(timed_out)?))
        .and_then(|()| stream.write_all(line.as_bytes()))
        .map_err(|e| {
            if is_timeout(&e) {
                timed_out()
            } else {
                format!("sending to meshd at {shown}: {}", io_reason(&e))
            }
        })?;

    let answer = read_line(&mut stream, deadline).map_err(|e| {
        if is_timeout(&e) {
            timed_out()
        } else {
            format!("reading from meshd at {shown}: {}", io_reason(&e))
        }
    })?;
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Err(format!(
            "meshd at {shown} closed the connection without answering"
        ));
    }
    Ok(answer)
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

/// An `io::Error` without the ` (os error N)` suffix.
pub fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if e.raw_os_error().is_some() => text[..i].to_owned(),
        _ => text,
    }
}

/// Folds a multi-line text into one line: `a; b`.
pub fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn one_line_folds() {
        assert_eq!(one_line("busy\r\n  now \n\n"), "busy; now");
        assert_eq!(one_line("plain"), "plain");
    }
}
