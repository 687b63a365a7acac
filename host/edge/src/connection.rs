//! The one interface of every edge connection, a viewer's ([`crate::conn::ViewerConn`]), a
//! publisher's or a pull's ([`crate::ingest::PublisherConn`]): datagrams and deadlines in,
//! [`Output`]s out, in the manner of `rtc` and str0m. The caller owns the sockets and the clock:
//! after every input it takes outputs with [`Connection::poll_output`] until one is
//! [`Output::Timeout`], sends each [`Transmit`], acts on each [`ConnEvent`], and calls
//! [`Connection::handle_timeout`] at the deadline. Nothing leaves a connection by another way.

use crate::media::MediaKind;
use crate::track::Plaintext;
use bytes::BytesMut;
use rtc::rtp;
use std::net::SocketAddr;
use std::time::Instant;

/// Where a datagram arrived: the local address it was sent to, and the address the edge
/// announces for that socket (the same, unless a public address is configured for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The local address it came to.
    pub local: SocketAddr,
    /// The address the edge announces for it (a candidate's).
    pub announced: SocketAddr,
}

impl Arrival {
    /// A datagram to `local`, which is announced as itself.
    pub fn at(local: SocketAddr) -> Self {
        Self { local, announced: local }
    }
}

/// Where a datagram leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This local address: the one its receiver talks to.
    Local(SocketAddr),
    /// The socket of this announced address, from whichever address the kernel picks: a
    /// publisher's or a pull's agent may send before anything came to it (a pull's first checks),
    /// and an announced address behind NAT is no local address to send from.
    Announced(SocketAddr),
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// Where it leaves from.
    pub source: Source,
    /// The remote address.
    pub to: SocketAddr,
    /// The bytes (moved out of the connection's queue: no copy).
    pub bytes: BytesMut,
}

/// What a connection tells its owner.
#[derive(Debug)]
pub enum ConnEvent {
    /// ICE and DTLS are up; media flows (a viewer starts from its stream's keyframe cache).
    Connected,
    /// ICE or DTLS failed, or the other side closed the connection: it is over.
    Failed,
    /// The player closed the connection (DTLS close_notify): it is over, but not the session's
    /// error.
    ClosedByPlayer,
    /// The connection sent STUN to `remote` from `local` (it answered a check from there, or
    /// checks it): datagrams from there are its own. An address is learned from what a
    /// connection sends, never from what a stranger claims.
    Reached { local: Source, remote: SocketAddr },
    /// The viewer asked for a keyframe (PLI or FIR).
    KeyframeRequested,
    /// Packets sent again for the viewer's NACKs.
    Resent(u32),
    /// RTP bytes of the stream sent to the viewer (payloads and 12-byte headers).
    MediaSent(u64),
    /// An RTP packet the publisher sent on its track of `kind`.
    Media(MediaKind, rtp::Packet),
}

/// What a connection has for its owner, in the order to take it.
#[derive(Debug)]
pub enum Output {
    /// A datagram to send.
    Transmit(Transmit),
    /// Something happened.
    Event(ConnEvent),
    /// Nothing more for now: the next deadline to call [`Connection::handle_timeout`] at, if any.
    Timeout(Option<Instant>),
}

/// An edge connection, sans-IO.
pub trait Connection {
    /// Its local ICE ufrag: how a connectivity check names it.
    fn ufrag(&self) -> &str;

    /// A datagram for this connection, from `from`. `plaintext` is the worker's scratch buffer of
    /// the stream packet being sent (a viewer's resends write there).
    fn handle_datagram(&mut self, now: Instant, arrival: Arrival, from: SocketAddr, data: &[u8], plaintext: &mut Plaintext);

    /// The deadline [`Output::Timeout`] named has passed.
    fn handle_timeout(&mut self, now: Instant);

    /// The next output; [`Output::Timeout`] once there is nothing else.
    fn poll_output(&mut self) -> Output;

    /// Closes the connection (DTLS close_notify goes out with the next transmits). The owner
    /// forgets it then.
    fn close(&mut self, now: Instant);

    /// Whether it is over (failed, closed by the player, or closed): the owner forgets it.
    fn is_done(&self) -> bool;
}
