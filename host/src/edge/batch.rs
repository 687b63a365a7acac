//! Batched sends: what a worker's connections queued during one turn of its loop goes out in as
//! few `sendmmsg(2)` calls as possible (up to [`BATCH`] datagrams each), instead of a system call
//! per datagram per viewer. Fan-out sends the same packet to many viewers at many addresses, so
//! GSO (one destination per call) does not apply; `sendmmsg` does.
//!
//! The outbox keeps its capacity between turns: queuing allocates nothing.

use bytes::BytesMut;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// Datagrams per `sendmmsg` call (the kernel's UIO_MAXIOV is 1024; 64 amortises well).
pub const BATCH: usize = 64;

/// One datagram waiting to be sent.
struct Outgoing {
    to: socket2::SockAddr,
    /// The source address to send from (a wildcard-bound socket with several interfaces).
    from: Option<IpAddr>,
    data: BytesMut,
}

/// Datagrams queued for one socket.
#[derive(Default)]
pub struct Outbox {
    queue: Vec<Outgoing>,
}

/// What one [`Outbox::send`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub datagrams: u64,
    /// System calls made.
    pub calls: u64,
    /// Datagrams dropped (socket buffer full, unreachable destination).
    pub dropped: u64,
}

/// Room for one `IP_PKTINFO` or `IPV6_PKTINFO` control message.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct ControlBuffer([u8; 64]);

impl Outbox {
    /// Queues `data` for `to`, sent from `from` if given.
    pub fn push(&mut self, to: SocketAddr, from: Option<IpAddr>, data: BytesMut, ipv6_socket: bool) {
        let to = match (to, ipv6_socket) {
            (SocketAddr::V4(v4), true) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
            _ => to,
        };
        self.queue.push(Outgoing { to: to.into(), from, data });
    }

    /// Whether anything is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends everything queued on `socket` and empties the outbox. A datagram the kernel refuses
    /// now (buffer full) is dropped, as the network would: DTLS and ICE retransmit, media moves on.
    pub fn send(&mut self, socket: &impl AsRawFd) -> Sent {
        let mut sent = Sent::default();
        let mut at = 0;
        while at < self.queue.len() {
            let end = (at + BATCH).min(self.queue.len());
            match send_batch(socket.as_raw_fd(), &self.queue[at..end]) {
                Ok(n) => {
                    sent.calls += 1;
                    sent.datagrams += n as u64;
                    at += n.max(1);
                    sent.dropped += u64::from(n == 0);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    sent.calls += 1;
                    sent.dropped += (self.queue.len() - at) as u64;
                    break;
                }
                Err(_) => {
                    // The first datagram of the batch failed (e.g. unreachable): skip it.
                    sent.calls += 1;
                    sent.dropped += 1;
                    at += 1;
                }
            }
        }
        self.queue.clear();
        sent
    }
}

/// One `sendmmsg` of `batch`; the number of datagrams the kernel took.
fn send_batch(fd: std::os::fd::RawFd, batch: &[Outgoing]) -> std::io::Result<usize> {
    debug_assert!(batch.len() <= BATCH);
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut controls = [ControlBuffer([0; 64]); BATCH];
    for (i, out) in batch.iter().enumerate() {
        iovecs[i] = libc::iovec { iov_base: out.data.as_ptr() as *mut _, iov_len: out.data.len() };
        let h = &mut headers[i].msg_hdr;
        h.msg_name = out.to.as_ptr() as *mut _;
        h.msg_namelen = out.to.len();
        h.msg_iov = &mut iovecs[i];
        h.msg_iovlen = 1;
        if let Some(from) = out.from {
            let len = encode_source(&mut controls[i], from);
            h.msg_control = controls[i].0.as_mut_ptr() as *mut _;
            h.msg_controllen = len as _;
        }
    }
    // SAFETY: `headers[..batch.len()]` point into `iovecs`, `controls` and `batch`, all alive
    // for the call; the kernel only reads them (and writes `msg_len`).
    let n = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), batch.len() as _, 0) };
    if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Writes the control message that sets the source address; returns its length.
fn encode_source(buffer: &mut ControlBuffer, from: IpAddr) -> usize {
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_control = buffer.0.as_mut_ptr() as *mut _;
    h.msg_controllen = buffer.0.len() as _;
    // SAFETY: the buffer is aligned and large enough for one pktinfo control message; the
    // CMSG_* macros stay within `msg_controllen`.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&h);
        match from {
            IpAddr::V4(v4) => {
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from_ne_bytes(v4.octets()) },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo, info);
                libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize
            }
            IpAddr::V6(v6) => {
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as _;
                let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: v6.octets() }, ipi6_ifindex: 0 };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in6_pktinfo, info);
                libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_batch_reaches_every_destination_in_one_call_per_64() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receivers: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let mut outbox = Outbox::default();
        for i in 0..100u8 {
            let to = receivers[i as usize % 3].local_addr().unwrap();
            // Half of them with an explicit source address, as a wildcard socket sends.
            let from = (i % 2 == 0).then(|| "127.0.0.1".parse().unwrap());
            outbox.push(to, from, BytesMut::from(&[i; 20][..]), false);
        }
        let sent = outbox.send(&sender);
        assert_eq!(sent, Sent { datagrams: 100, calls: 2, dropped: 0 });
        assert!(outbox.is_empty());
        let mut got = vec![];
        for r in &receivers {
            r.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = r.recv_from(&mut buf) {
                assert_eq!((n, from), (20, sender.local_addr().unwrap()));
                got.push(buf[0]);
            }
        }
        got.sort();
        assert_eq!(got, (0..100u8).collect::<Vec<_>>());
    }

    #[test]
    fn an_unsendable_datagram_is_dropped_and_the_rest_go() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut outbox = Outbox::default();
        // An IPv6 destination on an IPv4 socket fails at once.
        outbox.push("[2001:db8::1]:9".parse().unwrap(), None, BytesMut::from(&b"x"[..]), false);
        outbox.push(receiver.local_addr().unwrap(), None, BytesMut::from(&b"y"[..]), false);
        let sent = outbox.send(&sender);
        assert_eq!((sent.datagrams, sent.dropped), (1, 1));
        let mut buf = [0u8; 8];
        receiver.set_read_timeout(Some(std::time::Duration::from_secs(1))).unwrap();
        assert_eq!(receiver.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'y');
    }
}
