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

/// Binds a non-blocking UDP socket for tokio with large buffers (best effort). Needs a
/// runtime.
pub fn bind(what: &'static str, addr: SocketAddr) -> Result<UdpSocket, BindError> {
    let err = |source| BindError { what, addr, source };
    let std = std::net::UdpSocket::bind(addr).map_err(err)?;
    std.set_nonblocking(true).map_err(err)?;
    let sock = socket2::SockRef::from(&std);
    let _ = sock.set_recv_buffer_size(BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(BUFFER_BYTES);
    UdpSocket::from_std(std).map_err(err)
}
