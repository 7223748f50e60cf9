//! The UDP services of NAT traversal, each on its own socket: the endpoint [`reflector`]s
//! and the [`relay`]; here, binding their sockets ([`bind`]).
//!
//! **Architecture Invariant:** built on the control plane (the relay reads
//! [`crate::control::membership::Membership`] through the [`crate::Coordinator`]; both
//! count into [`crate::control::stats::NatStats`]), never on the admin side.

pub mod reflector;
pub mod relay;

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Socket buffer size asked for (the kernel caps it at `net.core.{r,w}mem_max`): room for
/// bursts of relayed WireGuard traffic while the relay task is busy.
pub const BUFFER_BYTES: usize = 4 << 20;

/// Why a UDP socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("binding UDP {what} to {addr}: {source}")]
pub struct BindError {
    /// What the socket is for ("reflector", "relay").
    pub what: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// Binds a UDP socket to `addr`. The IPv6 wildcard `[::]` is dual-stack (IPv4 clients
/// arrive as IPv4-mapped addresses, whatever `net.ipv6.bindv6only` says), and falls back to
/// `0.0.0.0` on a kernel without IPv6, so the default serves both families where it can.
pub fn bind_std(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            let dual = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).and_then(|s| {
                s.set_only_v6(false)?;
                s.bind(&addr.into())?;
                Ok(s)
            });
            match dual {
                Ok(s) => Ok(s.into()),
                Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                    std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, addr.port()))
                }
                Err(e) => Err(e),
            }
        }
        _ => std::net::UdpSocket::bind(addr),
    }
}

/// Binds a non-blocking UDP socket for tokio with large buffers (best effort), as
/// [`bind_std`] does. Needs a runtime.
pub fn bind(what: &'static str, addr: SocketAddr) -> Result<UdpSocket, BindError> {
    let err = |source| BindError { what, addr, source };
    let std = bind_std(addr).map_err(err)?;
    std.set_nonblocking(true).map_err(err)?;
    let sock = socket2::SockRef::from(&std);
    let _ = sock.set_recv_buffer_size(BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(BUFFER_BYTES);
    UdpSocket::from_std(std).map_err(err)
}
