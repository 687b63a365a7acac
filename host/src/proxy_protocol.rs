//! The PROXY protocol (HAProxy's `send-proxy` / `send-proxy-v2`): a load balancer in front of the
//! signalling port tells the host each connection's client address, so the connection caps, the
//! loopback-only pages and the P2P plugin's "same network first" see the viewer, not the balancer.
//!
//! Only connections from `<TrustedProxy>` addresses are read for a header, and each of them must
//! start with one (v1 text or v2 binary): anyone else could claim any address.
//!
//! A header is read as it arrives and never past its end, into a fixed buffer: at most 16 +
//! [`V2_MAX_BODY`] bytes (a v2 header announcing a longer body is refused before its body is
//! read). A header that names no client (v2 LOCAL or UNSPEC, v1 UNKNOWN: the proxy's own health
//! check) gives the connection [`NO_CLIENT`] as its address.

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

/// The address of a connection whose header names no client: unspecified, so it is never
/// loopback (the loopback-only pages stay closed), nor a trusted proxy's, nor any client's.
pub const NO_CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// A header refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Reading failed or the connection closed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// Not a PROXY header, or a malformed one.
    #[error("not a PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// A v2 header announcing a body over [`V2_MAX_BODY`].
    #[error("a PROXY v2 header announcing {0} bytes, over {V2_MAX_BODY}")]
    Oversized(usize),
}

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v2 header's fixed part: the signature, version and command, family, body length.
const V2_FIXED: usize = 16;
/// The longest v2 body read: the addresses (36 bytes for IPv6) and the TLVs after them, which
/// are read and skipped. HAProxy's (ALPN, authority, unique ID up to 128 bytes, SSL with the
/// client's CN, CRC32C) come to a few hundred bytes at most.
pub const V2_MAX_BODY: usize = 1024;
/// The longest v1 line, `PROXY ` and CRLF included (the spec's 107 bytes).
const V1_MAX: usize = 107;

/// Reads the PROXY header that starts `stream`: the client's address, or `None` when the proxy
/// speaks for itself (v2 LOCAL or UNSPEC, v1 UNKNOWN: a health check). Reads nothing past the
/// header, and no more than 16 + [`V2_MAX_BODY`] bytes.
pub async fn read_header<S: AsyncReadExt + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, ProxyError> {
    let mut head = [0u8; V2_FIXED];
    stream.read_exact(&mut head[..6]).await?;
    if &head[..6] == b"PROXY " {
        return read_v1(stream).await;
    }
    stream.read_exact(&mut head[6..]).await?;
    if head[..12] != V2_SIGNATURE || head[12] >> 4 != 2 {
        return Err(ProxyError::Malformed("neither v1 nor v2"));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > V2_MAX_BODY {
        return Err(ProxyError::Oversized(len));
    }
    let mut body = [0u8; V2_MAX_BODY];
    stream.read_exact(&mut body[..len]).await?;
    v2_source(head[12] & 0x0f, head[13] >> 4, &body[..len])
}

/// The client a v2 header names, from its command, address family and body.
fn v2_source(command: u8, family: u8, body: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    match (command, family) {
        (0, _) | (1, 0) => Ok(None), // LOCAL, or PROXY with UNSPEC
        (1, 1) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Ok(Some(SocketAddr::new(ip.into(), u16::from_be_bytes([body[8], body[9]]))))
        }
        (1, 2) if body.len() >= 36 => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&body[..16]).expect("16 bytes"));
            Ok(Some(SocketAddr::new(ip.into(), u16::from_be_bytes([body[32], body[33]]))))
        }
        (1, 1 | 2) => Err(ProxyError::Malformed("a body shorter than its addresses")),
        (1, _) => Err(ProxyError::Malformed("an address family other than IPv4 or IPv6")),
        _ => Err(ProxyError::Malformed("a command other than LOCAL or PROXY")),
    }
}

/// The rest of a v1 line after `PROXY `: `TCP4 SRC DST SPORT DPORT\r\n` or `UNKNOWN...\r\n`.
async fn read_v1<S: AsyncReadExt + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, ProxyError> {
    let mut line = [0u8; V1_MAX - 6];
    let mut len = 0;
    while !line[..len].ends_with(b"\r\n") {
        if len == line.len() {
            return Err(ProxyError::Malformed("a v1 line over 107 bytes"));
        }
        // A byte at a time: whatever follows the CRLF is the request, not ours to read.
        line[len] = stream.read_u8().await?;
        len += 1;
    }
    let line = std::str::from_utf8(&line[..len - 2]).map_err(|_| ProxyError::Malformed("not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let source = match fields[..] {
        ["UNKNOWN", ..] => return Ok(None),
        ["TCP4", source, _, port, _] => source.parse::<Ipv4Addr>().map(IpAddr::from).ok().zip(Some(port)),
        ["TCP6", source, _, port, _] => source.parse::<Ipv6Addr>().map(IpAddr::from).ok().zip(Some(port)),
        _ => return Err(ProxyError::Malformed("a v1 line of unknown form")),
    };
    let (ip, port) = source.ok_or(ProxyError::Malformed("a bad source address"))?;
    let port: u16 = port.parse().map_err(|_| ProxyError::Malformed("a bad source port"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most read of any header.
    const MAX_HEADER: usize = V2_FIXED + V2_MAX_BODY;

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

    /// Valid headers of every form, to mutate: v1 TCP4, TCP6 and UNKNOWN; v2 PROXY over IPv4
    /// and IPv6, with TLVs, LOCAL, UNSPEC; each followed by the start of a request.
    fn seeds() -> Vec<Vec<u8>> {
        let v2 = |command: u8, family: u8, body: &[u8]| {
            let mut h = V2_SIGNATURE.to_vec();
            h.extend([command, family]);
            h.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
            h.extend(body);
            h.extend(b"GET / HTTP/1.1\r\n");
            h
        };
        let v4 = [203, 0, 113, 9, 192, 0, 2, 1, 0xc3, 0x50, 0x0d, 0x05];
        let mut v6 = [0u8; 36];
        v6[0] = 0x20;
        v6[15] = 1;
        let tlvs = [&v4[..], &[0x02, 0, 4, b'h', b'o', b's', b't', 0x05, 0, 2, 7, 7]].concat();
        vec![
            b"PROXY TCP4 198.51.100.7 192.0.2.1 50000 3333\r\nGET / HTTP/1.1\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 50000 3333\r\nGET /".to_vec(),
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nGET /".to_vec(),
            v2(0x21, 0x11, &v4),
            v2(0x21, 0x21, &v6),
            v2(0x21, 0x11, &tlvs),
            v2(0x20, 0x00, &[]),
            v2(0x21, 0x00, &[]),
        ]
    }

    /// A seeded mutation of a seed header: bytes flipped, cut, inserted, spliced from another
    /// seed, duplicated, padded; a v2 length field set to what follows, so long bodies parse.
    fn mutate(rng: &mut rand::rngs::StdRng, seeds: &[Vec<u8>], seed: &[u8]) -> Vec<u8> {
        use rand::Rng;
        let mut bytes = seed.to_vec();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..=bytes.len());
            match rng.random_range(0..7) {
                0 if at < bytes.len() => bytes[at] = rng.random(),
                1 => bytes.truncate(at),
                2 => {
                    const ALPHABET: &[u8] = b" \r\n:.0123456789abcdefTCPUNKOWXY\x00\x01\x02\x11\x20\x21\x22\x31\xff";
                    bytes.insert(at, ALPHABET[rng.random_range(0..ALPHABET.len())]);
                }
                3 => {
                    let other = &seeds[rng.random_range(0..seeds.len())];
                    let from = rng.random_range(0..other.len());
                    bytes.splice(at..at, other[from..].iter().copied());
                }
                4 => bytes.extend_from_within(..at),
                5 => bytes.extend((0..rng.random_range(0..2000)).map(|_| rng.random::<u8>())),
                _ if bytes.len() >= 16 => {
                    let len = u16::try_from(bytes.len() - 16).unwrap_or(u16::MAX);
                    bytes[14..16].copy_from_slice(&len.to_be_bytes());
                }
                _ => {}
            }
        }
        bytes
    }

    /// Where a header that parsed must end: after the v1 line's CRLF, or the v2 length.
    fn header_end(input: &[u8]) -> usize {
        if input.starts_with(b"PROXY ") {
            input.windows(2).position(|w| w == b"\r\n").expect("a parsed v1 line has its CRLF") + 2
        } else {
            16 + usize::from(u16::from_be_bytes([input[14], input[15]]))
        }
    }

    /// Random and mutated headers: every one is parsed or refused, never a panic; a parsed one
    /// was read exactly to its end, and nothing is read past the bound of a header.
    /// `PROXY_FUZZ_CASES=1000000 cargo test -p host --release proxy_fuzz` for a long run.
    #[test]
    fn proxy_fuzz_any_header_is_parsed_or_refused_never_read_past() {
        use futures_util::FutureExt;
        use rand::SeedableRng;
        let cases: usize = std::env::var("PROXY_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let seeds = seeds();
        let (mut parsed, mut refused, mut findings) = (0, 0, Vec::new());
        let started = std::time::Instant::now();
        for i in 0..cases {
            let input = mutate(&mut rng, &seeds, &seeds[i % seeds.len()]);
            let mut rest = &input[..];
            let result = read_header(&mut rest).now_or_never().expect("a slice is always ready");
            let read = input.len() - rest.len();
            match result {
                Ok(_) if read != header_end(&input) => findings.push(format!("read {read} bytes of {input:?}")),
                Ok(_) if read > MAX_HEADER => findings.push(format!("a {read}-byte header accepted")),
                Ok(_) => parsed += 1,
                Err(_) if read > MAX_HEADER => findings.push(format!("{read} bytes read before refusing")),
                Err(_) => refused += 1,
            }
        }
        eprintln!("proxy_fuzz: {cases} cases in {:?}: {parsed} parsed, {refused} refused, {} findings", started.elapsed(), findings.len());
        assert!(findings.is_empty(), "{} findings, the first: {:?}", findings.len(), &findings[..findings.len().min(3)]);
        assert!(parsed > 0 && refused > 0, "both outcomes are exercised: {parsed} parsed, {refused} refused");
    }

    #[tokio::test]
    async fn a_v2_header_over_the_bound_is_refused_before_its_body_is_read() {
        let mut oversized = V2_SIGNATURE.to_vec();
        oversized.extend([0x21, 0x11, 0xff, 0xff]);
        oversized.extend(vec![0u8; 65535]);
        let (got, rest) = read(&oversized).await;
        assert!(matches!(got, Err(ProxyError::Oversized(65535))), "{got:?}");
        assert_eq!(rest.len(), 65535, "nothing of the body read");
        let mut tlvs = V2_SIGNATURE.to_vec();
        tlvs.extend([0x21, 0x11]);
        tlvs.extend(u16::try_from(V2_MAX_BODY).unwrap().to_be_bytes());
        tlvs.extend([203, 0, 113, 9, 192, 0, 2, 1, 0xc3, 0x50, 0x0d, 0x05]);
        tlvs.extend([0x04; V2_MAX_BODY - 12]);
        tlvs.extend(b"GET");
        let (got, rest) = read(&tlvs).await;
        assert_eq!(got.unwrap(), Some("203.0.113.9:50000".parse().unwrap()), "TLVs up to the bound are skipped");
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn a_header_naming_no_client_gives_an_address_that_opens_nothing() {
        assert!(!NO_CLIENT.ip().is_loopback() && NO_CLIENT.ip().is_unspecified());
        let refused = crate::api::access::check(None, &Default::default(), NO_CLIENT.ip());
        assert_eq!(refused, Err(crate::api::access::Refusal::LoopbackOnly));
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend([0x21, 0x00, 0, 0]);
        assert_eq!(read(&unspec).await.0.unwrap(), None);
        let mismatched = read(b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n").await.0;
        assert!(mismatched.is_err(), "TCP4 with an IPv6 source");
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
