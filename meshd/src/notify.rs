//! systemd readiness notification (`sd_notify(3)`), without libsystemd or a crate.
//!
//! When systemd starts a `Type=notify` service it sets `NOTIFY_SOCKET` to a unix datagram
//! socket: a path, or an abstract socket written with a leading `@`. The service sends
//! newline-separated `KEY=VALUE` assignments to it, one datagram per message; `READY=1`
//! ends the start-up job, `STATUS=…` is shown by `systemctl status`.
//!
//! Without `NOTIFY_SOCKET` (run by hand, in tests) every call does nothing. Errors are
//! returned, never fatal: the caller logs them.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `"READY=1\nSTATUS=up"`) to `$NOTIFY_SOCKET`.
/// Returns `Ok(false)` when the variable is unset (not run by systemd).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let addr = socket_addr(&target.to_string_lossy())?;
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write to NOTIFY_SOCKET",
        ));
    }
    Ok(true)
}

/// `READY=1` with a status line.
pub fn ready(status: &str) -> io::Result<bool> {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)))
}

/// A status line only.
pub fn status(status: &str) -> io::Result<bool> {
    notify(&format!("STATUS={}", one_line(status)))
}

/// `NOTIFY_SOCKET`'s value as an address: `@name` is abstract, anything else a path.
fn socket_addr(value: &str) -> io::Result<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={value:?}: neither an absolute path nor @abstract"),
        ))
    }
}

/// A newline would start a new assignment: keep a status on one line.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        use std::os::linux::net::SocketAddrExt as _;
        let a = socket_addr("@meshd/notify").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"meshd/notify"[..]));
        let p = socket_addr("/run/systemd/notify").unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert!(socket_addr("relative").is_err());
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("meshd-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let addr = socket_addr(&format!("@{name}")).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1", &addr)
            .unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert_eq!(one_line("a\nb"), "a b");
    }
}
