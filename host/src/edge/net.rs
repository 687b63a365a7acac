//! The edge's UDP sockets: one per configured port, bound once at start and shared by every
//! viewer, each with the addresses it is announced at (its interface addresses, or a configured
//! public address for a host behind 1:1 NAT or in a container).

use crate::config::IceCandidate;
use std::collections::HashSet;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    /// Announced addresses are the socket's own interface addresses (not a NAT's): send from them.
    pub pin_source: bool,
}

/// A received datagram's metadata.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Who sent it.
    pub from: SocketAddr,
    /// The announced address it arrived at: what the connection knows itself as.
    pub local: SocketAddr,
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

/// Binds every port of every configured candidate. `public` replaces the announced addresses.
pub fn bind_all(candidates: &[IceCandidate], public: &[IpAddr]) -> anyhow::Result<Vec<Vec<EdgeSocket>>> {
    let mut per_candidate = Vec::new();
    let mut seen = HashSet::new();
    for (index, c) in candidates.iter().enumerate() {
        let ip = c.address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let local_ips = if !public.is_empty() {
            public.to_vec()
        } else if ip.is_unspecified() {
            let found = interface_addresses(ip.is_ipv6())?;
            if found.is_empty() {
                tracing::warn!(candidate = %c, "no non-loopback interface: this candidate announces nothing (name an address, e.g. 127.0.0.1:10000/udp)");
            }
            found
        } else {
            vec![ip]
        };
        let mut sockets = Vec::new();
        for port in c.ports.clone() {
            let bind = SocketAddr::new(ip, port);
            if port != 0 && !seen.insert(bind) {
                continue;
            }
            let socket = EdgeSocket::bind(index, bind, &local_ips, public.is_empty())
                .map_err(|e| anyhow::anyhow!("cannot bind ICE candidate port {bind}: {e}"))?;
            sockets.push(socket);
        }
        per_candidate.push(sockets);
    }
    Ok(per_candidate)
}

impl EdgeSocket {
    fn bind(candidate: usize, addr: SocketAddr, local_ips: &[IpAddr], pin_source: bool) -> io::Result<Self> {
        let std = std::net::UdpSocket::bind(addr)?;
        std.set_nonblocking(true)?;
        let state = quinn_udp::UdpSocketState::new((&std).into())?;
        crate::udp::grow_send_buffer(&std, crate::udp::MEDIA_SOCKET_BUFFER);
        crate::udp::grow_receive_buffer(&std, crate::udp::MEDIA_SOCKET_BUFFER);
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
        Ok(Self { candidate, io: tokio::net::UdpSocket::from_std(std)?, state, bound, announced, pin_source })
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
            let local = self.local_for(m.dst_ip, m.addr);
            // GRO may coalesce several datagrams of one sender into one buffer, `stride` bytes each.
            let stride = if m.stride == 0 { m.len } else { m.stride };
            let mut offset = 0;
            while offset < m.len {
                let len = stride.min(m.len - offset);
                out.push(Received { from: normalise(m.addr), local, buffer, offset, len });
                offset += len.max(1);
            }
            if m.len == 0 {
                out.push(Received { from: normalise(m.addr), local, buffer, offset: 0, len: 0 });
            }
        }
        Ok(n)
    }

    /// The announced address a datagram to `dst_ip` from `from` arrived at.
    fn local_for(&self, dst_ip: Option<IpAddr>, from: SocketAddr) -> SocketAddr {
        let dst = dst_ip.map(normalise_ip);
        self.announced
            .iter()
            .find(|a| Some(a.ip()) == dst)
            .or_else(|| self.announced.iter().find(|a| a.is_ipv4() == normalise(from).is_ipv4()))
            .copied()
            .unwrap_or(self.bound)
    }

    /// The source address to send from to be seen at announced address `local`: needed when a
    /// wildcard-bound socket answers on one of several interfaces.
    pub fn source_for(&self, local: SocketAddr) -> Option<IpAddr> {
        (self.pin_source && self.bound.ip().is_unspecified() && self.announced.len() > 1).then_some(local.ip())
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

fn normalise(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(normalise_ip(addr.ip()), addr.port())
}

fn normalise_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}
