//! Sockets inside a namespace, opened by the test process itself: a short-lived thread
//! enters the namespace (`setns`, which moves only that thread), opens the socket and
//! hands it back. A socket keeps the namespace it was made in, so the test then uses it
//! from any thread. For connection-level checks (a TCP connect that must time out, a UDP
//! datagram that must not arrive, an established stream that must stop) without a helper
//! process per probe.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::netns::Netns;

/// Runs `f` on a thread inside `ns` and returns what it returns.
pub fn in_ns<T: Send>(
    ns: &Netns,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let file = format!("/run/netns/{}", ns.name());
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<T> {
            let handle = std::fs::File::open(&file).with_context(|| format!("opening {file}"))?;
            nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering the namespace {}", ns.name()))?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace-entering thread panicked"))?
    })
}

/// What a TCP connection attempt came to.
#[derive(Debug)]
pub enum Connect {
    /// Connected.
    Open(TcpStream),
    /// Refused (a RST came back: the packet reached the other side).
    Refused,
    /// Nothing came back within the time-out (dropped on the way).
    TimedOut,
}

impl Connect {
    /// Whether it connected.
    pub fn is_open(&self) -> bool {
        matches!(self, Connect::Open(_))
    }
}

/// A TCP connection from `ns` to `to`, within `timeout`.
pub fn connect(ns: &Netns, to: SocketAddr, timeout: Duration) -> anyhow::Result<Connect> {
    in_ns(ns, || {
        Ok(match TcpStream::connect_timeout(&to, timeout) {
            Ok(s) => Connect::Open(s),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Connect::Refused,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                Connect::TimedOut
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {to}")),
        })
    })
}

/// A TCP server in a namespace: accepts every connection and echoes what it reads, noting
/// when each byte arrived. Stops (and its threads end) when dropped.
#[derive(Debug)]
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections accepted.
    pub accepted: Arc<AtomicU64>,
    /// When the last byte arrived on any connection.
    last: Arc<Mutex<Option<Instant>>>,
    /// Bytes received on all connections.
    pub received: Arc<AtomicU64>,
}

impl EchoServer {
    /// Listens on `addr` in `ns`.
    pub fn start(ns: &Netns, addr: SocketAddr) -> anyhow::Result<EchoServer> {
        let listener = in_ns(ns, || {
            TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))
        })?;
        listener.set_nonblocking(true)?;
        let server = EchoServer {
            addr,
            stop: Arc::new(AtomicBool::new(false)),
            accepted: Arc::new(AtomicU64::new(0)),
            last: Arc::new(Mutex::new(None)),
            received: Arc::new(AtomicU64::new(0)),
        };
        let (stop, accepted, last, received) = (
            server.stop.clone(),
            server.accepted.clone(),
            server.last.clone(),
            server.received.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        let (stop, last, received) = (stop.clone(), last.clone(), received.clone());
                        std::thread::spawn(move || {
                            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
                            let mut buf = [0u8; 4096];
                            while !stop.load(Ordering::Relaxed) {
                                match s.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        *last.lock().unwrap_or_else(|e| e.into_inner()) =
                                            Some(Instant::now());
                                        received.fetch_add(n as u64, Ordering::Relaxed);
                                        if s.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock
                                                | std::io::ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => break,
                                }
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(server)
    }

    /// When the last byte arrived, if any did.
    pub fn last_byte(&self) -> Option<Instant> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A UDP socket bound to `addr` in `ns`.
pub fn udp_bind(ns: &Netns, addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    in_ns(ns, || {
        UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))
    })
}

/// Datagrams `socket` receives within `wait`, counted (their content is not checked).
pub fn udp_count(socket: &UdpSocket, wait: Duration) -> anyhow::Result<usize> {
    let end = Instant::now() + wait;
    let mut n = 0;
    let mut buf = [0u8; 2048];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(n);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            Ok(_) => n += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(n)
            }
            Err(e) => return Err(e.into()),
        }
    }
}
