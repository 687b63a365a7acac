//! UDP socket tuning shared by the edge's sockets and the RTP ingest.

use std::os::fd::AsRawFd;

/// The kernel buffers asked for a media socket (edge or ingest): a 1 Mbit/s keyframe, or a
/// burst to many viewers sharing the socket, fits several times over.
pub const MEDIA_SOCKET_BUFFER: usize = 4 << 20;

/// Asks for a receive buffer of `bytes` (past `net.core.rmem_max` where the process may, with
/// `SO_RCVBUFFORCE`), and returns what the kernel granted.
pub fn grow_receive_buffer(socket: &impl AsRawFd, bytes: usize) -> usize {
    set_buffer(socket, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, bytes)
}

/// Asks for a send buffer of `bytes` (as [`grow_receive_buffer`]); returns what was granted.
pub fn grow_send_buffer(socket: &impl AsRawFd, bytes: usize) -> usize {
    set_buffer(socket, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes)
}

fn set_buffer(socket: &impl AsRawFd, force: libc::c_int, plain: libc::c_int, bytes: usize) -> usize {
    let fd = socket.as_raw_fd();
    let value = bytes.min(i32::MAX as usize) as libc::c_int;
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt/getsockopt on a valid descriptor with an int-sized value.
    unsafe {
        if libc::setsockopt(fd, libc::SOL_SOCKET, force, &value as *const _ as *const libc::c_void, size) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, plain, &value as *const _ as *const libc::c_void, size);
        }
        let mut granted: libc::c_int = 0;
        let mut len = size;
        libc::getsockopt(fd, libc::SOL_SOCKET, plain, &mut granted as *mut _ as *mut libc::c_void, &mut len);
        // Linux reports twice the size asked for (the doubled bookkeeping allowance).
        granted.max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_larger_receive_buffer_is_granted() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = super::grow_receive_buffer(&socket, 1);
        let after = super::grow_receive_buffer(&socket, super::MEDIA_SOCKET_BUFFER);
        assert!(after > before, "{before} -> {after}");
    }
}
