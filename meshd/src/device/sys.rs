//! The one syscall the data plane needs that no dependency wraps for blocking threads:
//! waiting for a non-blocking descriptor to become readable or writable.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// Readable.
pub const IN: i16 = libc::POLLIN;
/// Writable.
pub const OUT: i16 = libc::POLLOUT;

/// Blocks until `fd` is ready for `events` or `timeout_ms` passes (-1: no timeout).
/// Returns whether it became ready. EINTR counts as "not ready".
pub fn wait(fd: RawFd, events: i16, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid, initialised pollfd living on this stack frame for the
    // whole call, and we pass a count of exactly 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(err)
        };
    }
    Ok(rc > 0)
}

/// Sends one UDP datagram from `fd` to `to` with IP TTL `ttl` for this datagram only (an
/// `IP_TTL` control message, or `IPV6_HOPLIMIT` when `ipv4` is false: the family the
/// packet leaves in, which for an IPv4-mapped `to` is IPv4), leaving the socket's TTL alone
/// for concurrent senders. Never blocks (`MSG_DONTWAIT`).
pub fn send_with_ttl(
    fd: RawFd,
    to: std::net::SocketAddr,
    ipv4: bool,
    payload: &[u8],
    ttl: u32,
) -> io::Result<()> {
    let addr = socket2::SockAddr::from(to);
    let (level, kind) = if ipv4 {
        (libc::IPPROTO_IP, libc::IP_TTL)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT)
    };
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // Room for one cmsghdr carrying a c_int, 8-byte aligned as cmsghdr requires.
    let mut control = [0u64; 4];
    let ttl = libc::c_int::try_from(ttl).unwrap_or(64);
    // SAFETY: every pointer handed to the kernel points at a live local (`addr`'s storage, `iov`,
    // `payload` via `iov`, `control`) that outlives the sendmsg call; the control buffer is
    // zeroed, aligned for cmsghdr and large enough for CMSG_SPACE(sizeof(c_int)) (checked
    // below), so CMSG_FIRSTHDR is non-null and CMSG_DATA points inside it.
    let rc = unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
        if space > std::mem::size_of_val(&control) {
            return Err(io::Error::other("control buffer too small"));
        }
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = addr.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = addr.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::c_int, ttl);
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
