//! The PROXY protocol (HAProxy's `send-proxy` / `send-proxy-v2`): a load balancer in front of the
//! signalling port tells the host each connection's client address, so the connection caps, the
//! loopback-only pages and the P2P plugin's "same network first" see the viewer, not the balancer.
//!
//! Only connections from `<TrustedProxy>` addresses are read for a header, and each of them must
//! start with one (v1 text or v2 binary): anyone else could claim any address.

use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::AsyncReadExt;

/// An address block, `ADDRESS/PREFIX` (or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let (addr, prefix) = text.trim().split_once('/').map_or((text.trim(), None), |(a, p)| (a, Some(p)));
        let net: IpAddr = addr.parse().map_err(|_| format!("{text:?} is not an address or ADDRESS/PREFIX"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse().ok().filter(|p| *p <= max).ok_or_else(|| format!("{text:?}: the prefix must be 0-{max}"))?,
        };
        Ok(Self { net, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| match a {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        };
        let ((net, len), (addr, addr_len)) = (bits(self.net), bits(ip.to_canonical()));
        if len != addr_len {
            return false;
        }
        let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
        net & mask == addr & mask
    }
}

/// A header that is not the PROXY protocol's.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Reading failed or the connection closed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// Not a PROXY header, or a malformed one.
    #[error("not a PROXY protocol header: {0}")]
    Malformed(&'static str),
}

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line (RFC-like spec: 107 bytes with its CRLF).
const V1_MAX: usize = 107;

/// Reads the PROXY header that starts `stream`: the client's address, or `None` when the proxy
/// speaks for itself (v2 LOCAL, v1 UNKNOWN: a health check). Reads nothing past the header.
pub async fn read_header<S: AsyncReadExt + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, ProxyError> {
    let mut head = [0u8; 16];
    stream.read_exact(&mut head[..6]).await?;
    if &head[..6] == b"PROXY " {
        return read_v1(stream).await;
    }
    stream.read_exact(&mut head[6..]).await?;
    if head[..12] != V2_SIGNATURE || head[12] >> 4 != 2 {
        return Err(ProxyError::Malformed("neither v1 nor v2"));
    }
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[14], head[15]]))];
    stream.read_exact(&mut body).await?;
    match (head[12] & 0x0f, head[13] >> 4) {
        (0, _) => Ok(None), // LOCAL
        (1, 1) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Ok(Some(SocketAddr::new(ip.into(), u16::from_be_bytes([body[8], body[9]]))))
        }
        (1, 2) if body.len() >= 36 => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&body[..16]).expect("16 bytes"));
            Ok(Some(SocketAddr::new(ip.into(), u16::from_be_bytes([body[32], body[33]]))))
        }
        (1, 0) => Ok(None), // UNSPEC
        _ => Err(ProxyError::Malformed("an address family other than TCP over IPv4 or IPv6")),
    }
}

/// The rest of a v1 line after `PROXY `: `TCP4 SRC DST SPORT DPORT\r\n` or `UNKNOWN...\r\n`.
async fn read_v1<S: AsyncReadExt + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, ProxyError> {
    let mut line = Vec::with_capacity(V1_MAX);
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyError::Malformed("a v1 line over 107 bytes"));
        }
        line.push(stream.read_u8().await?);
    }
    let line = std::str::from_utf8(&line[..line.len() - 2]).map_err(|_| ProxyError::Malformed("not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    match fields[..] {
        ["UNKNOWN", ..] => Ok(None),
        ["TCP4" | "TCP6", source, _, port, _] => {
            let ip: IpAddr = source.parse().map_err(|_| ProxyError::Malformed("a bad source address"))?;
            let port: u16 = port.parse().map_err(|_| ProxyError::Malformed("a bad source port"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(ProxyError::Malformed("a v1 line of unknown form")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let mut input = bytes;
        let result = read_header(&mut input).await;
        (result, input.to_vec())
    }

    #[tokio::test]
    async fn v1_and_v2_headers_give_the_client_and_leave_the_request() {
        let (got, rest) = read(b"PROXY TCP4 198.51.100.7 192.0.2.1 50000 3333\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(got.unwrap(), Some("198.51.100.7:50000".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([0x21, 0x11, 0, 12, 203, 0, 113, 9, 192, 0, 2, 1, 0xc3, 0x50, 0x0d, 0x05]);
        v2.extend(b"GET");
        let (got, rest) = read(&v2).await;
        assert_eq!(got.unwrap(), Some("203.0.113.9:50000".parse().unwrap()));
        assert_eq!(rest, b"GET");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(read(&local).await.0.unwrap(), None, "a health check of the proxy's own");
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.0.unwrap(), None);
        assert!(read(b"GET / HTTP/1.1\r\n\r\n").await.0.is_err(), "a client that is not a proxy");
        assert!(read(&[b'P', b'R', b'O', b'X', b'Y', b' '].iter().copied().chain(std::iter::repeat_n(b'x', 200)).collect::<Vec<_>>()).await.0.is_err());
    }

    #[test]
    fn blocks_hold_their_addresses() {
        let lan = Cidr::try_from("10.1.0.0/16".to_string()).unwrap();
        assert!(lan.contains("10.1.200.3".parse().unwrap()) && !lan.contains("10.2.0.1".parse().unwrap()));
        assert!(lan.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped");
        let one = Cidr::try_from("127.0.0.1".to_string()).unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::try_from("2001:db8::/32".to_string()).unwrap().contains("2001:db8:1::1".parse().unwrap()));
        assert!(Cidr::try_from("10.0.0.0/33".to_string()).is_err() && Cidr::try_from("nope".to_string()).is_err());
    }
}
