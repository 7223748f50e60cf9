//! The node's one UDP socket, with batched IO through quinn-udp: `sendmsg` with
//! `UDP_SEGMENT` (GSO) for runs of equal-sized datagrams to one peer, and `recvmmsg` with
//! `UDP_GRO` on receive.
//!
//! The socket is non-blocking (quinn-udp requires it); the data-plane threads block in
//! [`sys::wait`] instead, so they need no async runtime.
//!
//! It is dual-stack (`[::]:port` with `IPV6_V6ONLY` off) wherever the kernel has IPv6, so
//! one port serves peers of both families: IPv4 peers are sent to as IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`) and every received source address is handed up in canonical form
//! (IPv4 as IPv4), so the rest of meshd never sees a mapped address. Without IPv6 in the
//! kernel it falls back to `0.0.0.0:port` and IPv6 destinations are refused.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

use super::sys;

/// Socket buffers sized for bursts of a few thousand full-size datagrams.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// A bound UDP socket plus quinn-udp's per-socket state (GSO/GRO capabilities).
#[derive(Debug)]
pub struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    /// Bound to `[::]` with IPv4 mapped in (false: an IPv4 socket).
    dual: bool,
}

/// A UDP socket on `[::]:port` accepting IPv4 too, or on `0.0.0.0:port` where the kernel
/// has no IPv6; the flag says which (true: dual-stack).
pub(crate) fn bind_dual_stack(port: u16) -> io::Result<(UdpSocket, bool)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let dual = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).and_then(|socket| {
        socket.set_only_v6(false)?;
        socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
        Ok(socket)
    });
    match dual {
        Ok(socket) => Ok((socket.into(), true)),
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            Ok((UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?, false))
        }
        Err(e) => Err(e),
    }
}

impl Udp {
    /// Binds `[::]:port` dual-stack, or `0.0.0.0:port` where the kernel has no IPv6
    /// (0 = any free port).
    pub fn bind(port: u16) -> io::Result<Udp> {
        let (socket, dual) = bind_dual_stack(port)?;
        if !dual {
            tracing::info!("no IPv6 in this kernel: the WireGuard socket is IPv4 only");
        }
        let state = UdpSocketState::new((&socket).into())?;
        // Best effort: the kernel clamps to net.core.{r,w}mem_max.
        let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
        let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
        Ok(Udp {
            socket,
            state,
            dual,
        })
    }

    /// Whether IPv6 peers can be reached from this socket.
    pub fn has_ipv6(&self) -> bool {
        self.dual
    }

    /// `to` in the socket's family: IPv4 mapped into IPv6 on the dual-stack socket.
    fn destination(&self, to: SocketAddr) -> io::Result<SocketAddr> {
        match (self.dual, to) {
            (true, SocketAddr::V4(v4)) => {
                Ok(SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()))
            }
            (false, SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => Ok(SocketAddr::new(v4.into(), v6.port())),
                None => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "no IPv6 in this kernel: IPv6 peers are unreachable",
                )),
            },
            (_, to) => Ok(to),
        }
    }

    /// The bound port.
    pub fn local_port(&self) -> u16 {
        self.socket.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// How many segments one GSO send may carry (1 when GSO is unavailable).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Sends one datagram, or a GSO run when `segment_size` is set, waiting while the
    /// socket buffer is full. Errors other than a full buffer are returned, not retried.
    pub fn send(
        &self,
        to: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let transmit = Transmit {
            destination: self.destination(to)?,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        loop {
            match self.state.try_send((&self.socket).into(), &transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sys::wait(self.socket.as_raw_fd(), sys::OUT, 100)?;
                }
                other => return other,
            }
        }
    }

    /// Sends without waiting: for timer-driven packets, which are retried by their timers.
    pub fn send_now(&self, to: SocketAddr, contents: &[u8]) -> io::Result<()> {
        let transmit = Transmit {
            destination: self.destination(to)?,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        };
        self.state.try_send((&self.socket).into(), &transmit)
    }

    /// Sends a datagram with a one-off IP TTL / IPv6 hop limit (NAT traversal openers).
    pub fn send_with_ttl(&self, to: SocketAddr, contents: &[u8], ttl: u32) -> io::Result<()> {
        // The kernel sends to an IPv4-mapped destination on its IPv4 path, which reads
        // IP_TTL; a native IPv6 destination takes IPV6_HOPLIMIT.
        let ipv4 = to.is_ipv4();
        sys::send_with_ttl(
            self.socket.as_raw_fd(),
            self.destination(to)?,
            ipv4,
            contents,
            ttl,
        )
    }

    /// Receives a batch, blocking until at least one datagram is there. With GRO a
    /// buffer may hold several datagrams of `meta.stride` bytes each.
    /// Source addresses are canonical: IPv4 peers' as IPv4.
    pub fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        loop {
            match self.state.recv((&self.socket).into(), bufs, meta) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sys::wait(self.socket.as_raw_fd(), sys::IN, 1000)?;
                }
                Ok(n) => {
                    if self.dual {
                        for m in &mut meta[..n] {
                            m.addr = canonical(m.addr);
                        }
                    }
                    return Ok(n);
                }
                other => return other,
            }
        }
    }
}

/// `addr` with an IPv4-mapped IPv6 address as IPv4 (and no flow label or scope for
/// global addresses, which carry neither meaning here).
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One socket sends to and receives from peers of both families (over loopback); an
    /// IPv4 peer's address comes up as IPv4, not IPv4-mapped.
    #[test]
    fn one_socket_serves_both_families_with_canonical_sources() {
        let udp = Udp::bind(0).unwrap();
        assert!(
            udp.has_ipv6(),
            "this kernel has IPv6: the socket must be dual-stack"
        );
        let port = udp.local_port();
        for (bind, to) in [
            ("127.0.0.1:0", SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            ("[::1]:0", SocketAddr::from((Ipv6Addr::LOCALHOST, port))),
        ] {
            let peer = UdpSocket::bind(bind).unwrap();
            peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            peer.send_to(b"ping", to).unwrap();
            let mut buf = [0u8; 64];
            let mut meta = [RecvMeta::default()];
            let n = udp
                .recv(&mut [IoSliceMut::new(&mut buf)], &mut meta)
                .unwrap();
            assert_eq!(n, 1);
            assert_eq!(&buf[..meta[0].len], b"ping");
            assert_eq!(meta[0].addr, peer.local_addr().unwrap(), "{bind}");
            udp.send(meta[0].addr, b"pong", None).unwrap();
            udp.send_with_ttl(meta[0].addr, b"ttl", 3).unwrap();
            let mut got = [0u8; 8];
            for want in [&b"pong"[..], b"ttl"] {
                let (len, from) = peer.recv_from(&mut got).unwrap();
                assert_eq!(&got[..len], want);
                assert_eq!(from.port(), port);
            }
        }
    }
}
