//! The host's own STUN server: plain Binding requests (RFC 8489, no credentials) on the edge's ICE
//! ports are answered with the address they came from, so that players relaying the stream to
//! each other can learn their public address (a server-reflexive candidate) from the host they
//! already reach. The demultiplexer sends here every Binding request without USERNAME
//! ([`crate::demux`]); a player's connectivity checks carry one and go to its connection.
//!
//! The answer is a Binding success response with the request's transaction id,
//! XOR-MAPPED-ADDRESS, and FINGERPRINT if the request had one. Nothing else, so it is never
//! larger than the request plus XOR-MAPPED-ADDRESS: the request is at least a header, and at
//! least a header and FINGERPRINT when it had one. A request spoofed from a victim's address sends
//! the victim no more than it cost to send. Answers are also limited per source ([`RateLimiter`]).
//!
//! Dropped, not answered:
//! - anything malformed: a length that is not the datagram's, an attribute running past the end,
//!   a FINGERPRINT that is not last or does not match, no magic cookie (RFC 3489's classic STUN
//!   wants MAPPED-ADDRESS, which no browser needs);
//! - a request with a comprehension-required attribute (below 0x8000): this server understands
//!   none. USERNAME or MESSAGE-INTEGRITY mean credentials it has none of, CHANGE-REQUEST or
//!   PADDING (RFC 5780) a service it does not give. RFC 8489 would answer 420 with
//!   UNKNOWN-ATTRIBUTES, which could be larger than the request; dropped, it looks to the client
//!   like a server that does not answer, and the client gathers without it.
//!
//! Sans-IO: bytes, a source address and the time in; bytes out.

use bytes::{BufMut, BytesMut};
use rtc::stun::fingerprint::fingerprint_value;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// Answers a source gets per second once its burst is spent. A client retransmits an unanswered
/// request at most 6 times (RFC 8489 6.2.1); ten players behind one NAT gathering at once fit.
pub const RATE_PER_SECOND: f64 = 10.0;

/// Answers a source may get at once.
pub const BURST: f64 = 20.0;

/// Sources remembered; past it the oldest is forgotten, so spoofed sources cannot grow memory.
/// A forgotten source that comes back starts with a full burst: it could have had it anyway.
pub const MAX_SOURCES: usize = 4096;

/// IPv6 sources are limited per /64: one host may own a whole /64 and send from any of it.
const IPV6_SOURCE_PREFIX: u128 = !0 << 64;

const HEADER: usize = 20;
const ATTRIBUTE_HEADER: usize = 4;
const MAGIC_COOKIE: [u8; 4] = 0x2112_a442_u32.to_be_bytes();
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_FINGERPRINT: u16 = 0x8028;
/// Attribute types below it are comprehension-required (RFC 8489 14).
const COMPREHENSION_OPTIONAL: u16 = 0x8000;
const FINGERPRINT_LEN: usize = ATTRIBUTE_HEADER + 4;
const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a well-formed STUN message")]
    Malformed,
    #[error("not a Binding request")]
    NotBindingRequest,
    #[error("the FINGERPRINT does not match")]
    BadFingerprint,
    #[error("comprehension-required attribute {0:#06x}, which this server does not understand")]
    UnknownAttribute(u16),
    #[error("the source has had its share of answers")]
    RateLimited,
}

/// The STUN server of one worker's sockets: its only state is the rate limiter. Each worker has
/// its own, so a source asking at ports of several workers gets each one's rate (and the table's
/// bound is per worker: one per core).
#[derive(Debug, Default)]
pub struct StunServer {
    limiter: RateLimiter,
}

impl StunServer {
    /// The answer to `request`, which came from `from` at `now`, or why there is none.
    pub fn answer(&mut self, now: Instant, from: SocketAddr, request: &[u8]) -> Result<BytesMut, Refused> {
        let request = Request::parse(request)?;
        if !self.limiter.allow(now, from.ip()) {
            return Err(Refused::RateLimited);
        }
        Ok(request.response(from))
    }
}

/// What the answer needs of a valid request.
struct Request {
    transaction: [u8; 12],
    fingerprint: bool,
}

impl Request {
    fn parse(message: &[u8]) -> Result<Self, Refused> {
        let header = message.get(..HEADER).ok_or(Refused::Malformed)?;
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if header[4..8] != MAGIC_COOKIE || length % 4 != 0 || HEADER + length != message.len() {
            return Err(Refused::Malformed);
        }
        if u16::from_be_bytes([header[0], header[1]]) != BINDING_REQUEST {
            return Err(Refused::NotBindingRequest);
        }
        let fingerprint = check_attributes(message)?;
        Ok(Self { transaction: header[8..HEADER].try_into().expect("12 bytes"), fingerprint })
    }

    /// The success response telling `from` where it was seen.
    fn response(&self, from: SocketAddr) -> BytesMut {
        let length = xor_mapped_address_len(from) + if self.fingerprint { FINGERPRINT_LEN } else { 0 };
        let mut m = BytesMut::with_capacity(HEADER + length);
        m.put_u16(BINDING_SUCCESS);
        m.put_u16(length as u16);
        m.put_slice(&MAGIC_COOKIE);
        m.put_slice(&self.transaction);
        put_xor_mapped_address(&mut m, &self.transaction, from);
        if self.fingerprint {
            let crc = fingerprint_value(&m);
            m.put_u16(ATTR_FINGERPRINT);
            m.put_u16(4);
            m.put_u32(crc);
        }
        m
    }
}

/// Walks a message's attributes (its length already checked): whether it ends with a valid
/// FINGERPRINT, or why it is refused.
fn check_attributes(message: &[u8]) -> Result<bool, Refused> {
    let mut at = HEADER;
    while at < message.len() {
        let typ = u16::from_be_bytes([message[at], message[at + 1]]);
        let len = usize::from(u16::from_be_bytes([message[at + 2], message[at + 3]]));
        let end = at + ATTRIBUTE_HEADER + len.div_ceil(4) * 4;
        if end > message.len() {
            return Err(Refused::Malformed);
        }
        if typ == ATTR_FINGERPRINT {
            if len != 4 || end != message.len() {
                return Err(Refused::Malformed);
            }
            let value = u32::from_be_bytes(message[at + 4..end].try_into().expect("4 bytes"));
            return if value == fingerprint_value(&message[..at]) { Ok(true) } else { Err(Refused::BadFingerprint) };
        }
        if typ < COMPREHENSION_OPTIONAL {
            return Err(Refused::UnknownAttribute(typ));
        }
        at = end;
    }
    Ok(false)
}

/// The size of the XOR-MAPPED-ADDRESS attribute naming `from`, header included.
fn xor_mapped_address_len(from: SocketAddr) -> usize {
    ATTRIBUTE_HEADER + 4 + if from.is_ipv4() { 4 } else { 16 }
}

/// Writes the XOR-MAPPED-ADDRESS attribute naming `from` (RFC 8489 14.2): the port XORed with the
/// cookie's high half, the address with the cookie (and, for IPv6, the transaction id).
fn put_xor_mapped_address(m: &mut BytesMut, transaction: &[u8; 12], from: SocketAddr) {
    let (v4, v6);
    let (family, address): (u8, &[u8]) = match from.ip() {
        IpAddr::V4(ip) => (FAMILY_IPV4, { v4 = ip.octets(); &v4 }),
        IpAddr::V6(ip) => (FAMILY_IPV6, { v6 = ip.octets(); &v6 }),
    };
    m.put_u16(ATTR_XOR_MAPPED_ADDRESS);
    m.put_u16((xor_mapped_address_len(from) - ATTRIBUTE_HEADER) as u16);
    m.put_slice(&[0, family]);
    m.put_u16(from.port() ^ u16::from_be_bytes([MAGIC_COOKIE[0], MAGIC_COOKIE[1]]));
    let key = MAGIC_COOKIE.iter().chain(transaction);
    for (byte, k) in address.iter().zip(key) {
        m.put_u8(byte ^ k);
    }
}

/// A token bucket per source ([`RATE_PER_SECOND`], [`BURST`]) over at most [`MAX_SOURCES`]
/// sources, the oldest forgotten first. The map's hasher is keyed at random: spoofed addresses
/// cannot be chosen to collide.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<IpAddr, Bucket>,
    /// Sources in the order they were first seen (the same set as `buckets`' keys).
    order: VecDeque<IpAddr>,
}

/// A source's tokens as of an instant.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes a token from `ip`'s bucket; false if it has none.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let source = source_of(ip);
        let bucket = match self.buckets.get_mut(&source) {
            Some(bucket) => bucket,
            None => self.insert(source, now),
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * RATE_PER_SECOND).min(BURST);
        bucket.at = bucket.at.max(now);
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    /// A full bucket for a new source, forgetting the oldest if the table is full.
    fn insert(&mut self, source: IpAddr, now: Instant) -> &mut Bucket {
        if self.order.len() >= MAX_SOURCES {
            if let Some(oldest) = self.order.pop_front() {
                self.buckets.remove(&oldest);
            }
        }
        self.order.push_back(source);
        self.buckets.entry(source).or_insert(Bucket { tokens: BURST, at: now })
    }

    /// Sources remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The key a source is limited under: its IPv4 address, or its IPv6 /64.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & IPV6_SOURCE_PREFIX)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::attributes::{AttrType, RawAttribute, ATTR_SOFTWARE, ATTR_USERNAME};
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::message::{Getter, Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
    use rtc::stun::textattrs::TextAttribute;
    use rtc::stun::xoraddr::XorMappedAddress;
    use std::time::Duration;

    /// XOR-MAPPED-ADDRESS's size for an address of `from`'s family (written out: 12 or 24).
    fn attribute_size(from: SocketAddr) -> usize {
        if from.is_ipv4() { 12 } else { 24 }
    }

    /// A Binding request built by `rtc`'s STUN (another implementation than the server's).
    fn request(extra: Vec<Box<dyn Setter>>) -> Message {
        let mut setters: Vec<Box<dyn Setter>> = vec![Box::new(BINDING_REQUEST), Box::new(TransactionId::new())];
        setters.extend(extra);
        let mut m = Message::new();
        m.build(&setters).unwrap();
        m
    }

    fn decoded(raw: &[u8]) -> Message {
        let mut m = Message::new();
        m.raw = raw.to_vec();
        m.decode().expect("a valid STUN message");
        m
    }

    const V4: &str = "198.51.100.7:40000";
    const V6: &str = "[2001:db8::1:2]:50000";

    #[test]
    fn the_answer_is_a_binding_success_naming_the_source_with_the_requests_transaction() {
        for from in [V4, V6] {
            let from: SocketAddr = from.parse().unwrap();
            let request = request(vec![]);
            let answer = StunServer::default().answer(Instant::now(), from, &request.raw).unwrap();
            let answer = decoded(&answer);
            assert_eq!(answer.typ, BINDING_SUCCESS);
            assert_eq!(answer.transaction_id, request.transaction_id);
            let mut mapped = XorMappedAddress::default();
            mapped.get_from(&answer).unwrap();
            assert_eq!(SocketAddr::new(mapped.ip, mapped.port), from);
            assert!(FINGERPRINT.check(&answer).is_err(), "no FINGERPRINT: the request had none");
        }
    }

    #[test]
    fn the_answer_is_never_larger_than_the_request_plus_xor_mapped_address() {
        for from in [V4, V6] {
            let from: SocketAddr = from.parse().unwrap();
            let software: Box<dyn Setter> = Box::new(TextAttribute::new(ATTR_SOFTWARE, "x".repeat(40)));
            let requests = [request(vec![]), request(vec![Box::new(FINGERPRINT)]), request(vec![software, Box::new(FINGERPRINT)])];
            for r in requests {
                let answer = StunServer::default().answer(Instant::now(), from, &r.raw).unwrap();
                assert!(answer.len() <= r.raw.len() + attribute_size(from), "{} > {} + {}", answer.len(), r.raw.len(), attribute_size(from));
            }
        }
        // The smallest request: a bare header gets exactly a header and the address.
        let bare = request(vec![]);
        assert_eq!(bare.raw.len(), HEADER);
        let answer = StunServer::default().answer(Instant::now(), V4.parse().unwrap(), &bare.raw).unwrap();
        assert_eq!(answer.len(), HEADER + attribute_size(V4.parse().unwrap()));
    }

    #[test]
    fn a_request_with_a_fingerprint_gets_one() {
        let request = request(vec![Box::new(FINGERPRINT)]);
        let answer = StunServer::default().answer(Instant::now(), V6.parse().unwrap(), &request.raw).unwrap();
        FINGERPRINT.check(&decoded(&answer)).expect("a valid FINGERPRINT");
    }

    #[test]
    fn requests_with_credentials_or_attributes_it_does_not_understand_are_dropped() {
        let username: Box<dyn Setter> = Box::new(TextAttribute::new(ATTR_USERNAME, "edge:player".into()));
        let change_request: Box<dyn Setter> = Box::new(RawAttribute { typ: AttrType(0x0003), length: 4, value: vec![0, 0, 0, 6] });
        let server = &mut StunServer::default();
        assert_eq!(server.answer(Instant::now(), V4.parse().unwrap(), &request(vec![username]).raw), Err(Refused::UnknownAttribute(0x0006)));
        assert_eq!(server.answer(Instant::now(), V4.parse().unwrap(), &request(vec![change_request]).raw), Err(Refused::UnknownAttribute(0x0003)));
    }

    #[test]
    fn junk_and_other_stun_messages_are_dropped() {
        let from: SocketAddr = V4.parse().unwrap();
        let good = request(vec![Box::new(FINGERPRINT)]).raw;
        let mut bad_fingerprint = good.clone();
        *bad_fingerprint.last_mut().unwrap() ^= 1;
        let mut success = good.clone();
        success[..2].copy_from_slice(&[0x01, 0x01]); // a Binding success response
        let mut no_cookie = request(vec![]).raw;
        no_cookie[4] = 0;
        let mut long = request(vec![]).raw;
        long.extend_from_slice(&[0; 4]);
        let mut running_past = request(vec![Box::new(TextAttribute::new(ATTR_SOFTWARE, "abcd".into()))]).raw;
        running_past[HEADER + 3] = 200;
        let mut fingerprint_not_last = good.clone();
        fingerprint_not_last.extend_from_slice(&[0x80, 0x22, 0, 0]);
        fingerprint_not_last[3] += 4;
        let cases: [(&[u8], Refused); 8] = [
            (&[], Refused::Malformed),
            (&good[..HEADER - 1], Refused::Malformed),
            (&no_cookie, Refused::Malformed),
            (&long, Refused::Malformed),
            (&running_past, Refused::Malformed),
            (&fingerprint_not_last, Refused::Malformed),
            (&bad_fingerprint, Refused::BadFingerprint),
            (&success, Refused::NotBindingRequest),
        ];
        let server = &mut StunServer::default();
        for (junk, why) in cases {
            assert_eq!(server.answer(Instant::now(), from, junk), Err(why), "{junk:02x?}");
        }
        assert_eq!(server.limiter.len(), 0, "junk takes no room in the table");
    }

    #[test]
    fn each_source_gets_its_burst_then_its_rate() {
        let (server, start) = (&mut StunServer::default(), Instant::now());
        let request = request(vec![]).raw;
        let answered = |server: &mut StunServer, now, from: &str, n| {
            (0..n).filter(|_| server.answer(now, from.parse().unwrap(), &request).is_ok()).count()
        };
        assert_eq!(answered(server, start, "192.0.2.1:1000", 100), BURST as usize);
        assert_eq!(answered(server, start, "192.0.2.1:2000", 1), 0, "another port is the same source");
        assert_eq!(answered(server, start, "192.0.2.2:1000", 100), BURST as usize, "another address has its own");
        assert_eq!(answered(server, start + Duration::from_millis(500), "192.0.2.1:1000", 100), 5, "10/s");
        assert_eq!(answered(server, start + Duration::from_secs(60), "192.0.2.1:1000", 100), BURST as usize, "refilled to the burst only");
        assert_eq!(answered(server, start, "[2001:db8:0:1::1]:1000", 100), BURST as usize);
        assert_eq!(answered(server, start, "[2001:db8:0:1::2]:1000", 100), 0, "one IPv6 /64 is one source");
        assert_eq!(answered(server, start, "[2001:db8:0:2::1]:1000", 1), 1);
        assert_eq!(answered(server, start, "192.0.2.3:1000", 1), 1);
        assert_eq!(answered(server, start - Duration::from_secs(1), "192.0.2.3:1000", 100), BURST as usize - 1, "a clock running back adds nothing");
    }

    #[test]
    fn the_table_of_sources_is_bounded_and_forgets_the_oldest() {
        let (limiter, now) = (&mut RateLimiter::default(), Instant::now());
        let first = IpAddr::from([10, 0, 0, 1]);
        while limiter.allow(now, first) {}
        for i in 0..100_000u32 {
            assert!(limiter.allow(now, IpAddr::from((0x0b00_0000 + i).to_be_bytes())), "a new source has its burst");
            assert!(limiter.len() <= MAX_SOURCES);
        }
        assert_eq!(limiter.len(), MAX_SOURCES);
        assert_eq!(limiter.order.len(), MAX_SOURCES);
        assert!(limiter.allow(now, first), "forgotten: it starts again with a full burst");
    }
}
