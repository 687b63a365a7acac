//! Sockets as the host opens them: bound (IPv6 ones v6-only where an IPv4 socket shares the
//! port), listening, and tuned for media; shared by the signalling and API listeners, the edge's
//! UDP and TCP ports, and RTP ingest.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// A socket of `kind` bound to `addr`; with `v6_only` an IPv6 one takes IPv6 only, as
/// OvenMediaEngine binds `[::]`: `*:10000/udp` (IPv4) and `[::]:10000/udp` (IPv6) then share the
/// port, each family on its own socket, and an IPv4 client never reaches an IPv6 socket as a
/// v4-mapped address (which would announce, answer and count it twice).
pub fn bind(addr: SocketAddr, kind: socket2::Type, v6_only: bool) -> io::Result<socket2::Socket> {
    let protocol = if kind == socket2::Type::STREAM { socket2::Protocol::TCP } else { socket2::Protocol::UDP };
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() && v6_only {
        socket.set_only_v6(true)?;
    }
    if kind == socket2::Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A non-blocking TCP listener on `addr` ([`bind`] says what `v6_only` is for) that the kernel
/// queues `backlog` connections for before they are accepted.
pub fn tcp_listener(addr: SocketAddr, v6_only: bool, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = bind(addr, socket2::Type::STREAM, v6_only)?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

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
