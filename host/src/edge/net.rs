//! The edge's UDP sockets: one per configured port, bound once at start and shared by every
//! viewer, each with the addresses it is announced at (its interface addresses, or a configured
//! public address for a host behind 1:1 NAT or in a container).

use crate::config::IceCandidate;
use std::collections::HashSet;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};
use tokio::io::Interest;

/// Datagrams read per `recvmmsg` call.
pub const RECV_BATCH: usize = 32;
/// The largest datagram we accept (a browser's are under 1500 bytes).
pub const MAX_DATAGRAM: usize = 2048;

/// One shared UDP socket.
pub struct EdgeSocket {
    /// Which configured `<IceCandidate>` it belongs to.
    pub candidate: usize,
    io: tokio::net::UdpSocket,
    state: quinn_udp::UdpSocketState,
    /// Where it is bound (the wildcard for `*`).
    pub bound: SocketAddr,
    /// The addresses offered to viewers for it (same port), first the preferred.
    pub announced: Vec<SocketAddr>,
}

/// A received datagram's metadata.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Who sent it.
    pub from: SocketAddr,
    /// The address it was sent to, as this machine's interface has it (`IP_PKTINFO`): where its
    /// sender talks to, so what every reply to it must leave from ([`EdgeSocket::source_for`]).
    pub local: SocketAddr,
    /// The announced address (the candidate) it reached: `local`, or the public address in
    /// front of it. `rtc`'s ICE agent, which publishers run on, knows itself only by these.
    pub announced: SocketAddr,
    /// Which receive buffer holds it.
    pub buffer: usize,
    /// Where in that buffer it starts (GRO may put several datagrams of one sender in one buffer).
    pub offset: usize,
    /// Its length.
    pub len: usize,
}

/// The non-loopback addresses of this machine's interfaces of `ip`'s family (IPv4 for `*`).
pub fn interface_addresses(ipv6: bool) -> io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(addr) = ifa.address else { continue };
        let ip = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => continue,
        };
        let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if ip.is_loopback() || link_local || ip.is_ipv6() != ipv6 || out.contains(&ip) {
            continue;
        }
        out.push(ip);
    }
    Ok(out)
}

/// What a candidate's sockets are announced at: the `<PublicAddress>`es of its family (behind
/// 1:1 NAT or in a container), else, bound to a wildcard, this machine's addresses of its family,
/// else its own address. A socket is reached only over its own family (an IPv6 one is bound
/// v6-only, [`crate::sockets::bind`]), so an address of the other family would be a candidate nobody reaches:
/// an IPv4 `<PublicAddress>` does not replace a `[::]` candidate's IPv6 addresses, which need no
/// NAT.
pub fn announced_ips(candidate: &IceCandidate, public: &[IpAddr]) -> io::Result<Vec<IpAddr>> {
    let ip = candidate.bind_ip();
    let public: Vec<IpAddr> = public.iter().copied().filter(|p| p.is_ipv6() == ip.is_ipv6()).collect();
    if !public.is_empty() {
        return Ok(public);
    }
    if !ip.is_unspecified() {
        return Ok(vec![ip]);
    }
    let found = interface_addresses(ip.is_ipv6())?;
    if found.is_empty() {
        tracing::warn!(candidate = %candidate, "no non-loopback interface of its family: this candidate announces nothing (name an address, e.g. 127.0.0.1:10000/udp)");
    }
    Ok(found)
}

/// Binds every port of every configured candidate. `public` replaces the announced addresses of
/// its family ([`announced_ips`]).
pub fn bind_all(candidates: &[IceCandidate], public: &[IpAddr]) -> anyhow::Result<Vec<Vec<EdgeSocket>>> {
    let mut per_candidate = Vec::new();
    let mut seen = HashSet::new();
    for (index, c) in candidates.iter().enumerate().filter(|(_, c)| c.transport == crate::config::IceTransport::Udp) {
        let local_ips = announced_ips(c, public)?;
        let mut sockets = Vec::new();
        for port in c.ports.clone() {
            let bind = SocketAddr::new(c.bind_ip(), port);
            if port != 0 && !seen.insert(bind) {
                continue;
            }
            let socket = EdgeSocket::bind(index, bind, &local_ips)
                .map_err(|e| anyhow::anyhow!("cannot bind ICE candidate port {bind}: {e}"))?;
            sockets.push(socket);
        }
        per_candidate.push(sockets);
    }
    Ok(per_candidate)
}

/// A UDP socket bound to `addr`, an IPv6 one v6-only ([`crate::sockets::bind`] says why).
fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    Ok(crate::sockets::bind(addr, socket2::Type::DGRAM, addr.is_ipv6())?.into())
}

impl EdgeSocket {
    fn bind(candidate: usize, addr: SocketAddr, local_ips: &[IpAddr]) -> io::Result<Self> {
        let std = bind_udp(addr)?;
        std.set_nonblocking(true)?;
        let state = quinn_udp::UdpSocketState::new((&std).into())?;
        crate::sockets::grow_send_buffer(&std, crate::sockets::MEDIA_SOCKET_BUFFER);
        crate::sockets::grow_receive_buffer(&std, crate::sockets::MEDIA_SOCKET_BUFFER);
        // quinn-udp turns GRO on; our buffers are datagram-sized, so keep datagrams apart.
        let off: libc::c_int = 0;
        // SAFETY: a valid descriptor and an int option value of the right size.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&std),
                libc::SOL_UDP,
                libc::UDP_GRO,
                &off as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let bound = std.local_addr()?;
        let announced = local_ips.iter().map(|ip| SocketAddr::new(*ip, bound.port())).collect();
        Ok(Self { candidate, io: tokio::net::UdpSocket::from_std(std)?, state, bound, announced })
    }

    /// Polls until the socket may have datagrams to read.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_recv_ready(cx)
    }

    /// Reads what is waiting, up to [`RECV_BATCH`] datagrams, into `bufs`; `Ok(0)` when none.
    pub fn try_recv(&self, bufs: &mut [[u8; MAX_DATAGRAM]], out: &mut Vec<Received>) -> io::Result<usize> {
        let mut meta = [quinn_udp::RecvMeta::default(); RECV_BATCH];
        let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(&mut b[..])).collect();
        let n = match self.io.try_io(Interest::READABLE, || self.state.recv((&self.io).into(), &mut slices, &mut meta)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        out.clear();
        for (buffer, m) in meta[..n].iter().enumerate() {
            let local = self.local_for(m.dst_ip);
            let announced = self.announced_for(local, m.addr);
            // GRO may coalesce several datagrams of one sender into one buffer, `stride` bytes each.
            let stride = if m.stride == 0 { m.len } else { m.stride };
            let mut offset = 0;
            while offset < m.len {
                let len = stride.min(m.len - offset);
                out.push(Received { from: normalise(m.addr), local, announced, buffer, offset, len });
                offset += len.max(1);
            }
            if m.len == 0 {
                out.push(Received { from: normalise(m.addr), local, announced, buffer, offset: 0, len: 0 });
            }
        }
        Ok(n)
    }

    /// The local address a datagram to `dst_ip` (its `IP_PKTINFO`) arrived at: the socket's own
    /// when it is bound to one address.
    fn local_for(&self, dst_ip: Option<IpAddr>) -> SocketAddr {
        match dst_ip {
            Some(ip) if self.bound.ip().is_unspecified() => SocketAddr::new(normalise_ip(ip), self.bound.port()),
            _ => self.bound,
        }
    }

    /// The announced address a datagram from `from` to `local` reached: `local` itself when it
    /// is announced, else (behind NAT) the first announced address of the sender's family.
    fn announced_for(&self, local: SocketAddr, from: SocketAddr) -> SocketAddr {
        self.announced
            .iter()
            .find(|a| **a == local)
            .or_else(|| self.announced.iter().find(|a| a.is_ipv4() == normalise(from).is_ipv4()))
            .copied()
            .unwrap_or(local)
    }

    /// The source address to send from so that the datagram leaves from `local`, the address
    /// its receiver talks to: a socket bound to every interface would otherwise send from the
    /// address of the route to the receiver, which on a host with several addresses may be
    /// another one, and ICE drops answers from anywhere but where its check went (RFC 8445
    /// 7.2.5.2.1). Behind NAT `local` is the private address the NAT forwards to, and sending
    /// from it is what the NAT expects too. `None` for a socket bound to one address.
    pub fn source_for(&self, local: SocketAddr) -> Option<IpAddr> {
        (self.bound.ip().is_unspecified() && !local.ip().is_unspecified()).then_some(local.ip())
    }

    /// Whether the socket is IPv6 (IPv4 destinations are then written v4-mapped).
    pub fn is_ipv6(&self) -> bool {
        self.bound.is_ipv6()
    }
}

impl std::os::fd::AsRawFd for EdgeSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.io.as_raw_fd()
    }
}

pub(super) fn normalise(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(normalise_ip(addr.ip()), addr.port())
}

fn normalise_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::batch::Outbox;
    use std::time::Duration;

    /// Loopback has every 127.0.0.0/8 address: a socket bound to every interface, reached at
    /// 127.0.0.2 by a sender at 127.0.0.1, answers from 127.0.0.2, the address it was sent to,
    /// not from 127.0.0.1 (the route's choice for a reply to 127.0.0.1).
    #[tokio::test]
    async fn a_reply_leaves_from_the_address_the_datagram_came_to() {
        let announced: IpAddr = "127.0.0.2".parse().unwrap();
        let socket = EdgeSocket::bind(0, "0.0.0.0:0".parse().unwrap(), &[announced]).unwrap();
        let at = SocketAddr::new(announced, socket.bound.port());
        let sender = send_hello("127.0.0.1:0", at);
        let r = receive_one(&socket).await;
        assert_eq!((r.from, r.local, r.announced), (sender.local_addr().unwrap(), at, at));

        assert_eq!(socket.source_for(r.local), Some(announced));
        assert_reply_comes_from(&socket, &r, &sender, at);
    }

    /// OME's IPv6 form: `*:P/udp` and `[::]:P/udp` side by side, each family on its own socket
    /// of one port (a dual-stack `[::]` socket would take the IPv4 port too: EADDRINUSE).
    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_share_a_port() {
        let v4: IceCandidate = "*:0/udp".parse().unwrap();
        let ipv4 = EdgeSocket::bind(0, SocketAddr::new(v4.bind_ip(), 0), &[]).unwrap();
        let port = ipv4.bound.port();
        let v6: IceCandidate = format!("[::]:{port}/udp").parse().unwrap();
        let ipv6 = EdgeSocket::bind(1, SocketAddr::new(v6.bind_ip(), port), &[]).unwrap();
        assert_eq!((ipv4.is_ipv6(), ipv6.is_ipv6(), ipv6.bound.port()), (false, true, port));
        let tcp4 = crate::sockets::bind(SocketAddr::new(v4.bind_ip(), 0), socket2::Type::STREAM, true).unwrap();
        let tcp_port = tcp4.local_addr().unwrap().as_socket().unwrap().port();
        crate::sockets::bind(SocketAddr::new(v6.bind_ip(), tcp_port), socket2::Type::STREAM, true).expect("[::] beside * on TCP too");
    }

    /// An IPv6 viewer on an IPv6 socket: its datagram's local address is the IPv6 one it came to
    /// (IPV6_PKTINFO), answered from there.
    #[tokio::test]
    async fn an_ipv6_datagram_is_answered_from_the_ipv6_address_it_came_to() {
        let loopback: IpAddr = "::1".parse().unwrap();
        let socket = EdgeSocket::bind(0, "[::]:0".parse().unwrap(), &[loopback]).unwrap();
        let at = SocketAddr::new(loopback, socket.bound.port());
        let sender = send_hello("[::1]:0", at);
        let r = receive_one(&socket).await;
        assert_eq!((r.from, r.local, r.announced), (sender.local_addr().unwrap(), at, at));
        assert_eq!(socket.source_for(r.local), Some(loopback));
        assert_reply_comes_from(&socket, &r, &sender, at);
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        v4.send_to(b"\x00\x01", SocketAddr::new("127.0.0.1".parse().unwrap(), socket.bound.port())).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buffers = vec![[0u8; MAX_DATAGRAM]; RECV_BATCH];
        let mut received = Vec::new();
        assert_eq!(socket.try_recv(&mut buffers, &mut received).unwrap(), 0, "an IPv4 datagram never reaches the v6-only socket");
    }

    /// `<PublicAddress>` replaces the announced addresses of its own family only.
    #[test]
    fn a_public_address_replaces_its_familys_addresses_only() {
        let public: Vec<IpAddr> = vec!["203.0.113.7".parse().unwrap()];
        let v4: IceCandidate = "127.0.0.1:10000/udp".parse().unwrap();
        let v6: IceCandidate = "[::1]:10000/udp".parse().unwrap();
        assert_eq!(announced_ips(&v4, &public).unwrap(), public);
        assert_eq!(announced_ips(&v6, &public).unwrap(), ["::1".parse::<IpAddr>().unwrap()]);
        let both: Vec<IpAddr> = vec![public[0], "2001:db8::7".parse().unwrap()];
        assert_eq!(announced_ips(&v6, &both).unwrap(), [both[1]]);
        assert_eq!(announced_ips(&v4, &both).unwrap(), [both[0]]);
        assert!(announced_ips(&"[::]:1/udp".parse().unwrap(), &[]).unwrap().iter().all(IpAddr::is_ipv6));
        assert!(announced_ips(&"*:1/udp".parse().unwrap(), &[]).unwrap().iter().all(IpAddr::is_ipv4));
    }

    /// A socket bound at `from` (reads time out after 2 s) that has sent `at` a datagram.
    fn send_hello(from: &str, at: SocketAddr) -> std::net::UdpSocket {
        let sender = std::net::UdpSocket::bind(from).unwrap();
        sender.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        sender.send_to(b"\x00\x01hello", at).unwrap();
        sender
    }

    /// Answers `r` through an outbox from the source `socket` picks for it: one datagram, which
    /// `sender` receives from `at`.
    fn assert_reply_comes_from(socket: &EdgeSocket, r: &Received, sender: &std::net::UdpSocket, at: SocketAddr) {
        let mut outbox = Outbox::default();
        outbox.push(r.from, socket.source_for(r.local), bytes::BytesMut::from(&b"reply"[..]), socket.is_ipv6());
        assert_eq!(outbox.send(socket).datagrams, 1);
        let mut buf = [0u8; 16];
        let (n, from) = sender.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"reply"[..], at));
    }

    /// Waits for the first datagram on `socket`.
    async fn receive_one(socket: &EdgeSocket) -> Received {
        let mut buffers = vec![[0u8; MAX_DATAGRAM]; RECV_BATCH];
        let mut received = Vec::new();
        let started = std::time::Instant::now();
        while received.is_empty() {
            assert!(started.elapsed() < Duration::from_secs(2), "nothing received");
            std::future::poll_fn(|cx| socket.poll_readable(cx)).await.unwrap();
            socket.try_recv(&mut buffers, &mut received).unwrap();
        }
        received[0]
    }

    /// Behind NAT the announced (public) address is no local one: the datagram's local address is
    /// where it came to, the announced one what the connection was offered.
    #[tokio::test]
    async fn behind_nat_a_datagram_is_announced_at_the_public_address_and_answered_from_the_local_one() {
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        let socket = EdgeSocket::bind(0, "0.0.0.0:0".parse().unwrap(), &[public]).unwrap();
        let port = socket.bound.port();
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let local = socket.local_for(Some("127.0.0.3".parse().unwrap()));
        assert_eq!(local, SocketAddr::new("127.0.0.3".parse().unwrap(), port));
        assert_eq!(socket.announced_for(local, from), SocketAddr::new(public, port));
        assert_eq!(socket.source_for(local), Some(local.ip()));
        let bound = EdgeSocket::bind(0, "127.0.0.1:0".parse().unwrap(), &["127.0.0.1".parse().unwrap()]).unwrap();
        assert_eq!(bound.local_for(Some("127.0.0.1".parse().unwrap())), bound.bound);
        assert_eq!(bound.source_for(bound.bound), None, "a socket bound to one address sends from it anyway");
    }
}
