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
