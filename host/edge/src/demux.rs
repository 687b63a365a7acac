//! Which connection a datagram on a shared port belongs to.
//!
//! Every viewer's ICE, DTLS and SRTP arrive on the same few sockets. A STUN binding request names
//! its connection in the USERNAME attribute (`<our ufrag>:<their ufrag>`, RFC 8445 7.2.2): that
//! is how a new pair is found. A binding request without USERNAME is no connection's check: it
//! asks the host's STUN server ([`crate::stun_server`]) where its sender is, whoever sends it.
//! Everything else (DTLS, SRTP, SRTCP, other STUN) is routed by the remote address, which a
//! connection gets only once it has answered a binding request from it: an address is learned
//! from what the connection sends, never from what a stranger claims.
//!
//! Pure and allocation-free per datagram: no I/O, no clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

/// Why a datagram was dropped before it reached any connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dropped {
    /// A STUN message whose USERNAME names no connection of ours.
    UnknownUfrag,
    /// DTLS, SRTP or STUN without a username, from an address no connection has answered.
    UnknownAddress,
    /// Not STUN, DTLS or RTP/RTCP (RFC 7983's first-byte ranges), or too short to be one.
    NotWebRtc,
}

impl Dropped {
    /// Every reason, in the order of their discriminants.
    pub const ALL: [Dropped; 3] = [Self::UnknownUfrag, Self::UnknownAddress, Self::NotWebRtc];
}

/// What kind of datagram it is, by its first byte (RFC 7983 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// STUN (0-3).
    Stun,
    /// DTLS (20-63).
    Dtls,
    /// RTP or RTCP (128-191).
    Rtp,
}

impl Kind {
    /// The kind RFC 7983's first-byte ranges give a datagram starting with `byte`; `None` for
    /// anything else. The one place the edge writes the ranges.
    pub fn of_first_byte(byte: u8) -> Option<Self> {
        match byte {
            0..=3 => Some(Self::Stun),
            20..=63 => Some(Self::Dtls),
            128..=191 => Some(Self::Rtp),
            _ => None,
        }
    }

    /// The shortest datagram of this kind: a STUN header, a DTLS record header, an RTP header.
    fn min_len(self) -> usize {
        match self {
            Self::Stun => STUN_HEADER,
            Self::Dtls => 13,
            Self::Rtp => 12,
        }
    }
}

/// Classifies a datagram by RFC 7983's first-byte ranges; `None` for anything else, or for one
/// too short to be of its kind (what the routing takes).
pub fn kind(datagram: &[u8]) -> Option<Kind> {
    let kind = Kind::of_first_byte(*datagram.first()?)?;
    (datagram.len() >= kind.min_len()).then_some(kind)
}

/// Classifies a datagram by its first byte alone, whatever its length (a connection reading what
/// was routed to it, or classifying what it sends, judges the rest itself).
pub fn first_byte_kind(datagram: &[u8]) -> Option<Kind> {
    Kind::of_first_byte(*datagram.first()?)
}

/// Whether a datagram of [`Kind::Rtp`] is RTCP: its second byte, the packet type, is one of
/// RTCP's (192-223, RFC 5761 section 4).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

const STUN_HEADER: usize = 20;
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const STUN_BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const STUN_ATTR_USERNAME: u16 = 0x0006;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<K> {
    /// To a connection.
    Conn(K),
    /// To the STUN server: a binding request without USERNAME.
    StunServer,
}

/// The local ufrag of a USERNAME: what comes before its `:`.
fn local_ufrag(username: &[u8]) -> Option<&str> {
    std::str::from_utf8(username).ok()?.split_once(':').map(|(local, _)| local)
}

/// A STUN binding request's USERNAME: `Some(None)` for a request without one, `None` for anything
/// that is not a binding request or whose attributes run past its end.
fn binding_request_username(datagram: &[u8]) -> Option<Option<&[u8]>> {
    if datagram.len() < STUN_HEADER || datagram[..2] != STUN_BINDING_REQUEST || datagram[4..8] != STUN_MAGIC_COOKIE {
        return None;
    }
    let length = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    let body = datagram.get(STUN_HEADER..STUN_HEADER + length)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + len)?;
        if typ == STUN_ATTR_USERNAME {
            return Some(Some(value));
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    Some(None)
}

/// The local ufrag a connectivity check names (a binding request with USERNAME): how the first
/// frame of an ICE-TCP stream finds its connection (the host's ICE-TCP streams).
pub fn check_ufrag(datagram: &[u8]) -> Option<&str> {
    local_ufrag(binding_request_username(datagram)??)
}

/// The routing table of one set of shared sockets: ufrags and learned addresses to connections.
#[derive(Debug)]
pub struct Demux<K> {
    by_ufrag: HashMap<Box<str>, K>,
    by_addr: HashMap<SocketAddr, K>,
    addrs_per_conn: usize,
}

impl<K: Copy + Eq + Hash> Demux<K> {
    /// A table that remembers at most `addrs_per_conn` remote addresses per connection (a browser
    /// uses one or two; the bound keeps a peer from filling the table).
    pub fn new(addrs_per_conn: usize) -> Self {
        Self { by_ufrag: HashMap::new(), by_addr: HashMap::new(), addrs_per_conn }
    }

    /// Registers a connection under its local ufrag; false if the ufrag is taken.
    pub fn add(&mut self, ufrag: &str, conn: K) -> bool {
        if self.by_ufrag.contains_key(ufrag) {
            return false;
        }
        self.by_ufrag.insert(ufrag.into(), conn);
        true
    }

    /// Forgets a connection: its ufrag and every address learned for it.
    pub fn remove(&mut self, ufrag: &str, conn: K, addrs: &[SocketAddr]) {
        if self.by_ufrag.get(ufrag) == Some(&conn) {
            self.by_ufrag.remove(ufrag);
        }
        for a in addrs {
            if self.by_addr.get(a) == Some(&conn) {
                self.by_addr.remove(a);
            }
        }
    }

    /// Records that `conn` sent to `addr` (it answered a check from there). Returns true if the
    /// address is new for it; `known` is the connection's list of addresses, kept by the caller.
    pub fn learn(&mut self, conn: K, addr: SocketAddr, known: &mut Vec<SocketAddr>) -> bool {
        // An address moves to the connection that answered it last (a port reused by a new peer,
        // or taken back from a connection that answered a check spoofed from it).
        if known.contains(&addr) {
            if self.by_addr.get(&addr) != Some(&conn) {
                self.by_addr.insert(addr, conn);
            }
            return false;
        }
        if known.len() >= self.addrs_per_conn {
            return false;
        }
        self.by_addr.insert(addr, conn);
        known.push(addr);
        true
    }

    /// The connection a connectivity check names, if any: a TCP stream's first frame must be one.
    pub fn route_check(&self, datagram: &[u8]) -> Option<K> {
        self.by_ufrag.get(check_ufrag(datagram)?).copied()
    }

    /// Where a datagram from `from` goes, or why it is dropped.
    pub fn route(&self, datagram: &[u8], from: SocketAddr) -> Result<Route<K>, Dropped> {
        let kind = kind(datagram).ok_or(Dropped::NotWebRtc)?;
        if kind == Kind::Stun {
            match binding_request_username(datagram) {
                Some(None) => return Ok(Route::StunServer),
                Some(Some(username)) => {
                    if let Some(ufrag) = local_ufrag(username) {
                        return self.by_ufrag.get(ufrag).copied().map(Route::Conn).ok_or(Dropped::UnknownUfrag);
                    }
                }
                None => {}
            }
        }
        self.by_addr.get(&from).copied().map(Route::Conn).ok_or(Dropped::UnknownAddress)
    }

    /// Connections registered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_ufrag.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_reasons_are_listed_in_discriminant_order() {
        assert!(Dropped::ALL.iter().enumerate().all(|(i, &d)| d as usize == i));
    }

    /// A binding request with USERNAME `user` (and a dummy PRIORITY attribute before it).
    fn binding_request(user: &str) -> Vec<u8> {
        let mut attrs = vec![0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4];
        attrs.extend_from_slice(&STUN_ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attrs.extend_from_slice(user.as_bytes());
        attrs.resize(attrs.len().div_ceil(4) * 4, 0);
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&STUN_MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 9], port))
    }

    #[test]
    fn a_binding_request_is_routed_by_its_local_ufrag() {
        let mut d = Demux::new(4);
        assert!(d.add("abcd", 1));
        assert!(d.add("efgh", 2));
        assert!(!d.add("abcd", 3), "a ufrag names one connection");
        assert_eq!(d.route(&binding_request("efgh:remote"), addr(1)), Ok(Route::Conn(2)));
        assert_eq!(d.route(&binding_request("abcd:x"), addr(1)), Ok(Route::Conn(1)));
        assert_eq!(d.route(&binding_request("zzzz:x"), addr(1)), Err(Dropped::UnknownUfrag));
        assert_eq!(d.route(&binding_request("no-colon"), addr(1)), Err(Dropped::UnknownAddress));
    }

    #[test]
    fn other_traffic_is_routed_by_an_address_the_connection_answered() {
        let mut d = Demux::new(2);
        d.add("abcd", 1);
        let dtls = [22u8; 40];
        let srtp = [0x80u8; 40];
        assert_eq!(d.route(&dtls, addr(5)), Err(Dropped::UnknownAddress));
        let mut known = vec![];
        assert!(d.learn(1, addr(5), &mut known));
        assert!(!d.learn(1, addr(5), &mut known), "learned once");
        assert_eq!(d.route(&dtls, addr(5)), Ok(Route::Conn(1)));
        assert_eq!(d.route(&srtp, addr(5)), Ok(Route::Conn(1)));
        assert_eq!(d.route(&srtp, addr(6)), Err(Dropped::UnknownAddress));
        // Bounded: a third address is not learned.
        assert!(d.learn(1, addr(6), &mut known));
        assert!(!d.learn(1, addr(7), &mut known));
        assert_eq!(d.route(&srtp, addr(7)), Err(Dropped::UnknownAddress));
        d.remove("abcd", 1, &known);
        assert_eq!(d.route(&srtp, addr(5)), Err(Dropped::UnknownAddress));
        assert_eq!(d.route(&binding_request("abcd:x"), addr(5)), Err(Dropped::UnknownUfrag));
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn an_address_taken_by_a_spoofed_check_returns_to_its_connection_when_it_answers_again() {
        let mut d = Demux::new(4);
        d.add("vvvv", 1);
        d.add("mmmm", 2);
        let (mut v, mut m) = (vec![], vec![]);
        d.learn(1, addr(5), &mut v);
        d.learn(2, addr(5), &mut m); // 2 answered a check spoofed from 1's address
        assert_eq!(d.route(&[22u8; 40], addr(5)), Ok(Route::Conn(2)));
        d.learn(1, addr(5), &mut v); // 1 answers its own peer again
        assert_eq!(d.route(&[22u8; 40], addr(5)), Ok(Route::Conn(1)));
    }

    #[test]
    fn a_binding_request_without_username_goes_to_the_stun_server_from_any_address() {
        let mut d = Demux::new(4);
        d.add("abcd", 1);
        d.learn(1, addr(5), &mut vec![]);
        let mut plain = vec![0x00, 0x01, 0x00, 0x00];
        plain.extend_from_slice(&STUN_MAGIC_COOKIE);
        plain.extend_from_slice(&[7; 12]);
        assert_eq!(d.route(&plain, addr(9)), Ok(Route::StunServer));
        assert_eq!(d.route(&plain, addr(5)), Ok(Route::StunServer), "even from a connection's address");
        assert_eq!(d.route(&binding_request("abcd:x"), addr(9)), Ok(Route::Conn(1)), "a check goes to its connection");
        let mut success = plain.clone();
        success[..2].copy_from_slice(&[0x01, 0x01]);
        assert_eq!(d.route(&success, addr(5)), Ok(Route::Conn(1)), "other STUN goes by address");
        assert_eq!(d.route(&success, addr(9)), Err(Dropped::UnknownAddress));
    }

    #[test]
    fn a_tcp_streams_first_frame_finds_its_connection_only_by_a_check_naming_it() {
        let mut d = Demux::new(4);
        d.add("abcd", 1);
        d.learn(1, addr(5), &mut vec![]);
        assert_eq!(check_ufrag(&binding_request("abcd:x")), Some("abcd"));
        assert_eq!(d.route_check(&binding_request("abcd:x")), Some(1));
        assert_eq!(d.route_check(&binding_request("zzzz:x")), None);
        assert_eq!(d.route_check(&[22u8; 40]), None, "DTLS names no connection, whoever sends it");
        let mut plain = vec![0x00, 0x01, 0x00, 0x00];
        plain.extend_from_slice(&STUN_MAGIC_COOKIE);
        plain.extend_from_slice(&[7; 12]);
        assert_eq!(d.route_check(&plain), None, "nor does a check without USERNAME");
    }

    #[test]
    fn the_first_byte_rule_is_rfc_7983s_and_rtcp_is_told_by_its_packet_type() {
        let expected = [(0, Some(Kind::Stun)), (3, Some(Kind::Stun)), (4, None), (19, None), (20, Some(Kind::Dtls)), (63, Some(Kind::Dtls))];
        let more = [(64, None), (127, None), (128, Some(Kind::Rtp)), (191, Some(Kind::Rtp)), (192, None), (255, None)];
        for (byte, kind) in expected.into_iter().chain(more) {
            assert_eq!(Kind::of_first_byte(byte), kind, "{byte}");
        }
        assert_eq!(first_byte_kind(&[22, 0xfe, 0xfd]), Some(Kind::Dtls), "whatever its length");
        assert_eq!(kind(&[22, 0xfe, 0xfd]), None, "the routing takes a whole record header");
        assert_eq!(first_byte_kind(&[]), None);
        assert!(is_rtcp(&[0x81, 200]) && is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 96]) && !is_rtcp(&[0x80, 224]) && !is_rtcp(&[0x80]));
    }

    #[test]
    fn garbage_and_truncated_datagrams_are_not_webrtc() {
        let d: Demux<u32> = Demux::new(2);
        for junk in [&[][..], &[0x00][..], &[0x01; 19][..], &[0xff; 100][..], &[70; 30][..], &[0x80; 11][..]] {
            assert_eq!(d.route(junk, addr(1)), Err(Dropped::NotWebRtc), "{junk:?}");
        }
        // A STUN header that claims more attributes than it carries yields no username (and is
        // not for the STUN server either).
        let mut m = binding_request("abcd:x");
        m.truncate(m.len() - 3);
        assert_eq!(binding_request_username(&m), None);
        // An attribute length running past the end.
        let mut m = binding_request("abcd:x");
        m[STUN_HEADER + 2] = 0xff;
        assert_eq!(binding_request_username(&m), None);
    }
}
