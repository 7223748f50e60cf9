//! The node's one UDP socket, with batched IO through quinn-udp: `sendmsg` with
//! `UDP_SEGMENT` (GSO) for runs of equal-sized datagrams to one peer, and `recvmmsg` with
//! `UDP_GRO` on receive.
//!
//! The socket is non-blocking (quinn-udp requires it); the data-plane threads block in
//! [`sys::wait`] instead, so they need no async runtime.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
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
}

impl Udp {
    /// Binds `0.0.0.0:port` (0 = any free port).
    pub fn bind(port: u16) -> io::Result<Udp> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
        let state = UdpSocketState::new((&socket).into())?;
        // Best effort: the kernel clamps to net.core.{r,w}mem_max.
        let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
        let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
        Ok(Udp { socket, state })
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
            destination: to,
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
            destination: to,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        };
        self.state.try_send((&self.socket).into(), &transmit)
    }

    /// Sends an IPv4 datagram with a one-off IP TTL (NAT traversal openers).
    pub fn send_with_ttl(&self, to: SocketAddr, contents: &[u8], ttl: u32) -> io::Result<()> {
        match to {
            SocketAddr::V4(v4) => sys::send_with_ttl(self.socket.as_raw_fd(), v4, contents, ttl),
            SocketAddr::V6(_) => Err(io::Error::other("the WireGuard socket is IPv4")),
        }
    }

    /// Receives a batch, blocking until at least one datagram is there. With GRO a
    /// buffer may hold several datagrams of `meta.stride` bytes each.
    pub fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        loop {
            match self.state.recv((&self.socket).into(), bufs, meta) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sys::wait(self.socket.as_raw_fd(), sys::IN, 1000)?;
                }
                other => return other,
            }
        }
    }
}
