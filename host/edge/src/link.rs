//! What every edge connection has, a viewer's or a publisher's ([`LinkState`]: its ICE ufrag,
//! its phase, the events it has for its owner), and the `rtc` peer connection (sans-IO) that
//! drives publishers and pulls ([`RtcLink`]). Viewers, the many, run on the edge's own lean
//! machinery instead ([`crate::conn`]).

use crate::connection::ConnEvent;
use crate::error::Result;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::RTCPeerConnection;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

pub use crate::ice_lite::ice_credentials;

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Offer sent, no answer yet.
    Offered,
    /// Answer applied; ICE and DTLS under way.
    Answered,
    /// Up: media flows.
    Connected,
    /// Failed or closed: its owner forgets it.
    Done,
}

/// What every connection has, whatever drives it.
pub struct LinkState {
    /// The local ICE username fragment: how STUN finds this connection.
    pub ufrag: String,
    /// Where it stands.
    pub phase: Phase,
    /// Events not yet taken by the owner ([`crate::connection::Connection::poll_output`]).
    pub events: VecDeque<ConnEvent>,
}

impl LinkState {
    /// A connection at `phase`.
    pub fn new(ufrag: String, phase: Phase) -> Self {
        Self { ufrag, phase, events: VecDeque::new() }
    }

    /// The connection came up (from [`Phase::Answered`]); true if that is news.
    pub fn connected(&mut self) -> bool {
        if self.phase != Phase::Answered {
            return false;
        }
        self.phase = Phase::Connected;
        self.events.push_back(ConnEvent::Connected);
        true
    }

    /// The player closed the connection: it is over, but not the session's error.
    pub fn closed_by_player(&mut self) {
        self.end(ConnEvent::ClosedByPlayer);
    }

    /// The connection failed or the other side closed it: the owner hears of it once.
    pub fn failed(&mut self) {
        self.end(ConnEvent::Failed);
    }

    fn end(&mut self, event: ConnEvent) {
        if self.phase != Phase::Done {
            self.phase = Phase::Done;
            self.events.push_back(event);
        }
    }
}

/// A publisher's or a pull's connection: an `rtc` peer connection.
pub struct RtcLink {
    /// The peer connection.
    pub pc: RTCPeerConnection,
    /// What every connection has.
    pub state: LinkState,
}

impl RtcLink {
    /// A link at `phase`.
    pub fn new(pc: RTCPeerConnection, ufrag: String, phase: Phase) -> Self {
        Self { pc, state: LinkState::new(ufrag, phase) }
    }

    /// Hands a datagram to the peer connection.
    pub fn read(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: &[u8]) {
        if let Err(e) = self.pc.handle_read(tagged(now, local, from, data)) {
            tracing::debug!(ufrag = %self.state.ufrag, "datagram refused: {e}");
        }
    }

    /// The deadline passed.
    pub fn timeout(&mut self, now: Instant) {
        if let Err(e) = self.pc.handle_timeout(now) {
            tracing::debug!(ufrag = %self.state.ufrag, "timeout handling: {e}");
        }
    }

    /// When the connection next needs [`Self::timeout`].
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    /// The next datagram to send: `(local address, remote address, bytes)`.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, SocketAddr, BytesMut)> {
        let out = self.pc.poll_write()?;
        Some((out.transport.local_addr, out.transport.peer_addr, out.message))
    }

    /// Closes the peer connection (DTLS close_notify goes out with the next transmits).
    pub fn close(&mut self) {
        if let Err(e) = self.pc.close() {
            tracing::debug!(ufrag = %self.state.ufrag, "closing: {e}");
        }
        self.state.phase = Phase::Done;
    }

    /// Follows a state change, telling the owner.
    pub fn on_state(&mut self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => {
                self.state.connected();
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => self.state.failed(),
            _ => {}
        }
    }
}

/// Fresh ICE credentials and no mDNS: the settings of an edge connection, and its local ufrag
/// (how STUN finds it). ICE-lite (`lite`) for every connection a client makes to the edge; a full
/// agent, which sends the checks, only where the edge is the client (pulling from an origin).
pub fn edge_settings(lite: bool) -> (SettingEngine, String) {
    let (ufrag, pwd) = ice_credentials();
    let setting = SettingEngineBuilder::new()
        .with_lite(lite)
        .with_ice_credentials(ufrag.clone(), pwd)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    (setting, ufrag)
}

/// Adds a host candidate for each of `addrs` (then the end of candidates); their lines.
pub fn host_candidates(pc: &mut RTCPeerConnection, addrs: &[SocketAddr]) -> Result<Vec<String>> {
    let candidates = crate::sdp::candidates(addrs);
    for line in &candidates {
        pc.add_local_candidate(RTCIceCandidateInit { candidate: line.clone(), ..Default::default() })?;
    }
    pc.add_local_candidate(RTCIceCandidateInit::default())?;
    Ok(candidates)
}

/// A received datagram as `rtc` takes it.
fn tagged(now: Instant, local: SocketAddr, from: SocketAddr, data: &[u8]) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext { local_addr: local, peer_addr: from, ecn: None, transport_protocol: TransportProtocol::UDP },
        message: BytesMut::from(data),
    }
}
