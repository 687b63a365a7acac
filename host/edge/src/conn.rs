//! One viewer's edge connection, on the edge's own lean machinery rather than a full peer
//! connection: ICE-lite ([`IceLite`]), DTLS from `rtc`'s sans-IO endpoint for the keys, and the
//! media written straight into SRTP: a stream packet costs a viewer a 12-byte header and one
//! encryption, with no per-viewer pipeline between. Viewers are the many (publishers and pulls,
//! the few, run on `rtc`'s full peer connection, [`crate::link::RtcLink`]).
//!
//! Its parts: DTLS and SRTP ([`security`]), what the player sends back ([`feedback`]), the pace
//! of the keyframe cache and the sender reports ([`outgoing`]).

mod feedback;
mod outgoing;
mod security;

pub use security::EdgeIdentity;

use crate::connection::{Arrival, ConnEvent, Connection, Output, Source, Transmit};
use crate::demux::{self, Kind};
use crate::error::{Error, Result};
use crate::ice_lite::IceLite;
use crate::link::{LinkState, Phase};
use crate::media::{MediaKind, MediaPacket};
use crate::plumbing::{self, AUDIO_PT, VIDEO_PT};
use crate::sdp::{self, OfferParams};
use crate::track::{Plaintext, Track};
use bytes::BytesMut;
use feedback::{admit_rtcp, ResendBudget};
use outgoing::{Backlog, BURST_PER_PACKET, REPORT_INTERVAL};
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::shared::TransportProtocol;
use security::{Security, DTLS_PEER, EARLY_DTLS};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The offer the player gets.
pub struct Offer {
    /// The SDP (with the candidates in it).
    pub sdp: String,
    /// The candidates, as `candidate:...` lines.
    pub candidates: Vec<String>,
    /// Where the host answers plain STUN Binding requests for the player: the candidates'
    /// addresses (every edge port does).
    pub stun_servers: Vec<SocketAddr>,
}

/// Everything a new connection needs.
pub struct NewConn<'a> {
    /// The media stream id both tracks share (players play `streams[0]`).
    pub stream_id: &'a str,
    /// The stream's video codec.
    pub video_codec: plumbing::VideoCodec,
    /// Whether the stream has audio.
    pub has_audio: bool,
    /// The candidates to offer: the UDP addresses this connection is reachable at.
    pub candidates: &'a [SocketAddr],
    /// And its TCP addresses (passive candidates, RFC 6544).
    pub tcp_candidates: &'a [SocketAddr],
    pub identity: &'a Arc<EdgeIdentity>,
    /// The wall clock at `now` (sender reports carry it).
    pub wall: SystemTime,
}

/// One viewer's edge connection.
pub struct ViewerConn {
    /// What the worker keeps of it.
    pub state: LinkState,
    ice: IceLite,
    security: Security,
    identity: Arc<EdgeIdentity>,
    video: Track,
    audio: Option<Track>,
    /// Video waits for a keyframe (at the start, and after the viewer fell behind).
    waiting_for_keyframe: bool,
    /// The hub index of the next packet this viewer needs (earlier ones it has had).
    pub next_index: u64,
    /// Packets waiting their turn behind the keyframe cache.
    backlog: Backlog,
    /// Datagrams to send: `(local, remote, bytes)`.
    transmits: VecDeque<(SocketAddr, SocketAddr, BytesMut)>,
    next_report: Option<Instant>,
    /// Resends the viewer may still ask for.
    resend_budget: ResendBudget,
    /// The SSRCs the player's RTCP has come from.
    rtcp_ssrcs: Vec<u32>,
    /// A moment on both clocks, for sender reports' wall-clock time.
    epoch: (Instant, SystemTime),
    /// RTP bytes sent and not yet told ([`ConnEvent::MediaSent`]).
    unreported: u64,
}

impl ViewerConn {
    /// A new connection and its offer.
    pub fn offer(now: Instant, new: NewConn<'_>) -> Result<(Self, Offer)> {
        let ice = IceLite::new(now);
        let video = Track::new(VIDEO_PT, 90_000, true);
        let audio = new.has_audio.then(|| Track::new(AUDIO_PT, 48_000, false));
        let candidates = sdp::viewer_candidates(new.candidates, new.tcp_candidates);
        let sdp = sdp::offer(&OfferParams {
            stream_id: new.stream_id,
            video_codec: new.video_codec,
            video_ssrc: video.ssrc,
            audio_ssrc: audio.as_ref().map(|a| a.ssrc),
            ufrag: &ice.ufrag,
            pwd: ice.pwd(),
            fingerprint: &new.identity.fingerprint,
            candidates: &candidates,
        });
        let conn = Self {
            state: LinkState::new(ice.ufrag.clone(), Phase::Offered),
            ice,
            security: Security::Waiting(Vec::new()),
            identity: new.identity.clone(),
            video,
            audio,
            waiting_for_keyframe: true,
            next_index: 0,
            backlog: Backlog::default(),
            transmits: VecDeque::new(),
            next_report: None,
            resend_budget: ResendBudget::new(now),
            rtcp_ssrcs: Vec::new(),
            epoch: (now, new.wall),
            unreported: 0,
        };
        Ok((conn, Offer { sdp, candidates, stun_servers: new.candidates.to_vec() }))
    }

    /// Applies the player's answer: DTLS starts (checks may begin).
    pub fn answer(&mut self, now: Instant, answer: String) -> Result<()> {
        if self.state.phase != Phase::Offered {
            return Err(Error::AlreadyAnswered);
        }
        let answer = sdp::answer(&answer)?;
        let config = self.identity.dtls_config(answer.fingerprints, answer.edge_is_dtls_client)?;
        let (server, connect) = if answer.edge_is_dtls_client { (None, Some(config)) } else { (Some(config), None) };
        let endpoint = Box::new(Endpoint::new(DTLS_PEER, TransportProtocol::UDP, server));
        self.ice.set_remote(answer.ice);
        let early = match std::mem::replace(&mut self.security, Security::Handshake { endpoint, connect }) {
            Security::Waiting(early) => early,
            _ => Vec::new(),
        };
        self.ice.last_check = now; // the player has CONSENT_TIMEOUT to reach the edge
        self.state.phase = Phase::Answered;
        self.maybe_connect(now);
        self.probe(now); // a pair nominated before the answer can be checked now
        for datagram in early {
            self.dtls(now, &datagram);
        }
        Ok(())
    }

    /// As DTLS client, opens the handshake once the player has nominated a path: a ClientHello
    /// sent before the player's ICE has chosen its pair is dropped there and resent only after
    /// DTLS's first retransmission timeout (1 s).
    fn maybe_connect(&mut self, now: Instant) {
        if !self.ice.nominated() {
            return;
        }
        if let Security::Handshake { endpoint, connect } = &mut self.security {
            if let Some(config) = connect.take() {
                if let Err(e) = endpoint.connect(now, DTLS_PEER, config, None) {
                    tracing::debug!(ufrag = %self.state.ufrag, "DTLS connect: {e}");
                    self.state.failed();
                }
            }
        }
        self.drain_dtls();
    }

    /// A datagram for this connection, to its local address `local`.
    pub fn datagram(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: &[u8], plaintext: &mut Plaintext) {
        match demux::first_byte_kind(data) {
            Some(Kind::Stun) => self.stun(now, local, from, data),
            Some(Kind::Dtls) => self.dtls(now, data),
            Some(Kind::Rtp) if demux::is_rtcp(data) => self.rtcp(now, data, plaintext),
            _ => {}
        }
    }

    /// A check (answered), or the answer to the edge's own check of a candidate path.
    fn stun(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: &[u8]) {
        if self.state.phase == Phase::Done {
            return;
        }
        let Some(heard) = self.ice.read(now, local, from, data, self.identity.crypto.crypto()) else { return };
        if let Some(response) = heard.response {
            self.transmits.push_back((local, from, response));
            self.state.events.push_back(ConnEvent::Reached { local: Source::Local(local), remote: from });
        }
        if heard.new_path {
            self.maybe_connect(now);
        }
        self.probe(now);
    }

    /// Queues the edge's check of a candidate path, if ICE has one to send.
    fn probe(&mut self, now: Instant) {
        if let Some(((local, remote), request)) = self.ice.probe(now, self.identity.crypto.crypto()) {
            self.transmits.push_back((local, remote, request));
            self.state.events.push_back(ConnEvent::Reached { local: Source::Local(local), remote });
        }
    }

    fn dtls(&mut self, now: Instant, data: &[u8]) {
        if self.ice.path().is_none() {
            return;
        }
        let endpoint = match &mut self.security {
            Security::Handshake { endpoint, .. } | Security::Up { endpoint, .. } => endpoint,
            Security::Waiting(early) => {
                if early.len() < EARLY_DTLS {
                    early.push(BytesMut::from(data));
                }
                return;
            }
        };
        let events = match endpoint.read(now, DTLS_PEER, None, BytesMut::from(data)) {
            Ok(events) => events,
            Err(e) => {
                tracing::debug!(ufrag = %self.state.ufrag, "DTLS: {e}");
                Vec::new()
            }
        };
        for event in events {
            match event {
                EndpointEvent::HandshakeComplete => match self.security.start_srtp(&self.identity) {
                    Ok(()) => {
                        self.state.connected();
                        self.next_report = Some(now + REPORT_INTERVAL);
                    }
                    Err(e) => {
                        tracing::warn!(ufrag = %self.state.ufrag, "SRTP keys: {e}");
                        self.state.failed();
                    }
                },
                // The player closed DTLS (as a browser does when it closes the connection): the
                // connection is over at once, not after the checks have stopped for 30 s.
                EndpointEvent::PeerClosed => self.state.closed_by_player(),
                _ => {}
            }
        }
        self.drain_dtls();
    }

    /// Queues what DTLS has to send, on the path.
    fn drain_dtls(&mut self) {
        let Some(endpoint) = self.security.endpoint() else { return };
        while let Some(out) = endpoint.poll_transmit() {
            if let Some((local, remote)) = self.ice.path() {
                self.transmits.push_back((local, remote, out.message));
            }
        }
    }

    /// The player's RTCP: keyframe requests are the worker's, NACKs are answered here.
    fn rtcp(&mut self, now: Instant, data: &[u8], plaintext: &mut Plaintext) {
        let Security::Up { remote, .. } = &mut self.security else { return };
        if !admit_rtcp(&mut self.rtcp_ssrcs, data) {
            return;
        }
        let Ok(mut opened) = remote.decrypt_rtcp(data) else { return };
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut opened) else { return };
        let asked = feedback::feedback(&packets, self.video.ssrc);
        let mut resent = 0;
        for sequence_number in asked.nacked {
            if !self.resend_budget.take(now) {
                break;
            }
            resent += u32::from(self.resend(sequence_number, plaintext));
        }
        if asked.keyframe {
            self.state.events.push_back(ConnEvent::KeyframeRequested);
        }
        if resent > 0 {
            self.state.events.push_back(ConnEvent::Resent(resent));
        }
    }

    /// Sends a NACKed video packet again, if still kept; true if it was.
    fn resend(&mut self, sequence_number: u16, plaintext: &mut Plaintext) -> bool {
        let Some((header, packet)) = self.video.resend(sequence_number) else { return false };
        let packet = packet.clone();
        self.seal_and_queue(&packet, &header, plaintext)
    }

    /// The connection's deadline passed. (A handshake that stalls, a DTLS error the endpoint
    /// only logs, is the session's to end: it gives ICE and DTLS 20 s after the answer.)
    pub fn timeout(&mut self, now: Instant) {
        if self.state.phase == Phase::Done {
            return;
        }
        if self.state.phase != Phase::Offered && now >= self.ice.deadline() {
            tracing::debug!(ufrag = %self.state.ufrag, "no ICE check for {:?}: the viewer is gone", crate::ice_lite::CONSENT_TIMEOUT);
            self.state.failed();
            return;
        }
        if let Security::Handshake { endpoint, .. } = &mut self.security {
            if endpoint.poll_timeout(&DTLS_PEER).is_some_and(|t| t <= now) && endpoint.handle_timeout(DTLS_PEER, now).is_err() {
                self.state.failed();
            }
            self.drain_dtls();
        }
        if self.next_report.is_some_and(|t| t <= now) {
            self.next_report = Some(now + REPORT_INTERVAL);
            self.send_reports(now);
        }
    }

    /// When the connection next needs [`Self::timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state.phase, Phase::Offered | Phase::Done) {
            return None;
        }
        let dtls = match &self.security {
            Security::Handshake { endpoint, .. } => endpoint.poll_timeout(&DTLS_PEER),
            _ => None,
        };
        [Some(self.ice.deadline()), dtls, self.next_report].into_iter().flatten().min()
    }

    /// One compound RTCP packet with a sender report per track that has sent something.
    fn send_reports(&mut self, now: Instant) {
        let (Security::Up { local, .. }, Some((from, to))) = (&mut self.security, self.ice.path()) else { return };
        let wall = self.epoch.1 + now.saturating_duration_since(self.epoch.0);
        let reports = outgoing::sender_reports(now, wall, [Some(&self.video), self.audio.as_ref()].into_iter().flatten());
        if reports.is_empty() {
            return;
        }
        match rtc::rtcp::packet::marshal(&reports).and_then(|plain| local.encrypt_rtcp(&plain)) {
            Ok(sealed) => self.transmits.push_back((from, to, sealed)),
            Err(e) => tracing::debug!(ufrag = %self.state.ufrag, "sender report: {e}"),
        }
    }

    /// The next datagram to send: `(local address, remote address, bytes)`.
    fn poll_transmit(&mut self) -> Option<(SocketAddr, SocketAddr, BytesMut)> {
        self.transmits.pop_front()
    }

    /// Closes the connection (DTLS close_notify goes out with the next transmits).
    pub fn close(&mut self, now: Instant) {
        if let Some(endpoint) = self.security.endpoint() {
            let _ = endpoint.close(now);
        }
        self.drain_dtls();
        self.state.phase = Phase::Done;
    }

    /// The viewer fell behind its stream: resume video at the next keyframe.
    pub fn lagged(&mut self) {
        self.waiting_for_keyframe = true;
        self.backlog.clear();
    }

    /// A viewer that just came up starts from `cache` (the stream's video since its last keyframe).
    pub fn start_from(&mut self, now: Instant, cache: Vec<Arc<MediaPacket>>, plaintext: &mut Plaintext) {
        self.backlog.extend(cache);
        self.unreported += self.pump(now, plaintext);
    }

    /// The media path's way out, beside [`Connection::poll_output`]: after
    /// [`Self::send_media`], the datagrams it queued (sending media makes no other output and
    /// moves no deadline, so the worker need not ask for them), ...
    pub fn next_transmit(&mut self) -> Option<Transmit> {
        self.poll_transmit().map(|(local, to, bytes)| Transmit { source: Source::Local(local), to, bytes })
    }

    /// ... and the RTP bytes they carried (else told as [`ConnEvent::MediaSent`]).
    pub fn take_media_sent(&mut self) -> u64 {
        std::mem::take(&mut self.unreported)
    }

    /// Takes one live packet of the stream: sent now, or after the backlog.
    pub fn send_media(&mut self, now: Instant, packet: &Arc<MediaPacket>, plaintext: &mut Plaintext) {
        self.unreported += if self.backlog.is_empty() {
            self.send_one(now, packet, plaintext)
        } else {
            self.backlog.push(packet.clone());
            self.pump(now, plaintext)
        };
    }

    /// Sends up to [`BURST_PER_PACKET`] packets of the backlog.
    fn pump(&mut self, now: Instant, plaintext: &mut Plaintext) -> u64 {
        let mut sent = 0;
        for _ in 0..BURST_PER_PACKET {
            let Some(packet) = self.backlog.pop() else { break };
            sent += self.send_one(now, &packet, plaintext);
        }
        sent
    }

    /// Sends one packet of the stream (numbered `packet.index` by the hub) if this viewer takes
    /// it; returns the RTP bytes sent.
    fn send_one(&mut self, now: Instant, packet: &Arc<MediaPacket>, plaintext: &mut Plaintext) -> u64 {
        if self.state.phase != Phase::Connected || packet.index < self.next_index {
            return 0;
        }
        let track = match packet.kind {
            MediaKind::Video => {
                if self.waiting_for_keyframe {
                    if !packet.keyframe_start {
                        return 0;
                    }
                    self.waiting_for_keyframe = false;
                    self.video.rewriter.restart();
                }
                &mut self.video
            }
            MediaKind::Audio => match &mut self.audio {
                Some(audio) => audio,
                None => return 0,
            },
        };
        self.next_index = packet.index + 1;
        let header = track.next(now, packet);
        if !self.seal_and_queue(packet, &header, plaintext) {
            return 0;
        }
        packet.packet.payload.len() as u64 + 12
    }

    /// Encrypts `packet` under `header` and queues it on the path.
    fn seal_and_queue(&mut self, packet: &Arc<MediaPacket>, header: &rtc::rtp::header::Header, plaintext: &mut Plaintext) -> bool {
        let (Security::Up { local, .. }, Some((from, to))) = (&mut self.security, self.ice.path()) else { return false };
        match local.encrypt_rtp_with_header(plaintext.with_header(packet, header), header) {
            Ok(sealed) => {
                self.transmits.push_back((from, to, sealed));
                true
            }
            Err(e) => {
                tracing::trace!(ufrag = %self.state.ufrag, "media not sent: {e}");
                false
            }
        }
    }
}

impl Connection for ViewerConn {
    fn ufrag(&self) -> &str {
        &self.state.ufrag
    }

    fn handle_datagram(&mut self, now: Instant, arrival: Arrival, from: SocketAddr, data: &[u8], plaintext: &mut Plaintext) {
        self.datagram(now, arrival.local, from, data, plaintext);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.timeout(now);
    }

    fn poll_output(&mut self) -> Output {
        if let Some((local, to, bytes)) = self.poll_transmit() {
            return Output::Transmit(Transmit { source: Source::Local(local), to, bytes });
        }
        if self.unreported > 0 {
            return Output::Event(ConnEvent::MediaSent(std::mem::take(&mut self.unreported)));
        }
        match self.state.events.pop_front() {
            Some(event) => Output::Event(event),
            None => Output::Timeout(self.poll_timeout()),
        }
    }

    fn close(&mut self, now: Instant) {
        ViewerConn::close(self, now);
    }

    fn is_done(&self) -> bool {
        self.state.phase == Phase::Done
    }
}

#[cfg(test)]
mod tests {
    use super::feedback::{RESEND_BUDGET, RTCP_SSRCS};
    use super::security::SRTP_PROFILES;
    use super::*;
    use rtc::dtls::config::{ConfigBuilder, ExtendedMasterSecretType};
    use std::time::Duration;

    fn conn(now: Instant) -> ViewerConn {
        let identity = Arc::new(EdgeIdentity::generate().unwrap());
        let addrs = ["10.0.0.1:10000".parse().unwrap()];
        let new = NewConn {
            stream_id: "app-stream",
            video_codec: plumbing::VideoCodec::Vp8,
            has_audio: true,
            candidates: &addrs,
            tcp_candidates: &[],
            identity: &identity,
            wall: SystemTime::now(),
        };
        ViewerConn::offer(now, new).unwrap().0
    }

    #[test]
    fn a_viewer_gets_at_most_the_resend_budget_refilled_at_its_rate() {
        let t0 = Instant::now();
        let mut conn = conn(t0);
        let granted = (0..1000).filter(|_| conn.resend_budget.take(t0)).count();
        assert_eq!(granted, RESEND_BUDGET as usize, "a burst of at most the budget");
        let later = t0 + Duration::from_millis(500);
        let granted = (0..1000).filter(|_| conn.resend_budget.take(later)).count();
        assert_eq!(granted, RESEND_BUDGET as usize / 2, "half a second refills half of it");
    }

    #[test]
    fn an_answer_without_a_fingerprint_or_taking_no_video_is_refused_and_the_offer_stands() {
        let t0 = Instant::now();
        let mut conn = conn(t0);
        let answer = "v=0\r\na=fingerprint:sha-256 AB:CD\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=setup:active\r\n";
        assert!(conn.answer(t0, answer.replace("m=video 9", "m=video 0")).is_err());
        assert!(conn.answer(t0, answer.replace("sha-256", "md5")).is_err());
        assert_eq!(conn.state.phase, Phase::Offered);
        conn.answer(t0, answer.to_owned()).unwrap();
        assert_eq!(conn.state.phase, Phase::Answered);
        assert_eq!(conn.poll_timeout(), Some(t0 + crate::ice_lite::CONSENT_TIMEOUT), "the player has 30 s to check");
        assert!(conn.answer(t0, answer.to_owned()).is_err(), "answered once");
    }

    #[test]
    fn rtcp_from_at_most_8_ssrcs_is_opened() {
        let mut seen = Vec::new();
        let rtcp = |ssrc: u32| [&[0x81, 201, 0, 1][..], &ssrc.to_be_bytes()].concat();
        assert!((0..RTCP_SSRCS as u32).all(|ssrc| admit_rtcp(&mut seen, &rtcp(ssrc))));
        assert!(!admit_rtcp(&mut seen, &rtcp(99)), "a ninth SSRC is dropped unopened");
        assert!(admit_rtcp(&mut seen, &rtcp(3)), "one seen before still is opened");
        assert!(!admit_rtcp(&mut seen, &[0x81, 201, 0]), "truncated");
        assert_eq!(seen.len(), RTCP_SSRCS);
    }

    #[test]
    fn dtls_before_the_answer_is_kept_up_to_its_bound() {
        let t0 = Instant::now();
        let mut conn = conn(t0);
        let (local, player) = ("10.0.0.1:10000".parse().unwrap(), "10.0.0.2:5000".parse().unwrap());
        let check = crate::ice_lite::tests::request(&format!("{}:p", conn.state.ufrag), conn.ice.pwd(), true);
        let mut plaintext = Plaintext::default();
        conn.datagram(t0, local, player, &check, &mut plaintext);
        assert_eq!(conn.ice.path(), Some((local, player)), "the check set the path");
        for _ in 0..10 {
            conn.datagram(t0, local, player, &[22, 0xfe, 0xfd, 0, 0], &mut plaintext);
        }
        assert!(matches!(&conn.security, Security::Waiting(early) if early.len() == EARLY_DTLS));
    }

    /// The edge's address in the scenarios below.
    fn edge() -> SocketAddr {
        "10.0.0.1:10000".parse().unwrap()
    }

    /// The player's side of a viewer connection, as the scenarios drive it: its ICE credentials
    /// and its DTLS client.
    struct Player {
        ufrag: String,
        pwd: String,
        dtls: Endpoint,
    }

    impl Player {
        /// A binding request to the edge from this player.
        fn check(&self, conn: &ViewerConn, nominate: bool) -> Vec<u8> {
            crate::ice_lite::tests::request(&format!("{}:{}", conn.state.ufrag, self.ufrag), conn.ice.pwd(), nominate)
        }
    }

    /// A connection that is up with a player at `at`: checked and nominated from there, its DTLS
    /// handshake done (the player its client).
    fn connected(t0: Instant, at: SocketAddr, plaintext: &mut Plaintext) -> (ViewerConn, Player) {
        let mut conn = conn(t0);
        let certificate = EdgeIdentity::generate().unwrap();
        let (ufrag, pwd) = crate::ice_lite::ice_credentials();
        let answer = format!(
            "v=0\r\na=fingerprint:sha-256 {}\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=setup:active\r\n",
            certificate.fingerprint
        );
        conn.answer(t0, answer).unwrap();
        let mut player = Player { ufrag, pwd, dtls: Endpoint::new(at, TransportProtocol::UDP, None) };
        conn.datagram(t0, edge(), at, &player.check(&conn, true), plaintext);
        let config = ConfigBuilder::default()
            .with_crypto_provider(certificate.crypto.clone())
            .with_certificates(vec![certificate.certificate.dtls_certificate.clone()])
            .with_srtp_protection_profiles(SRTP_PROFILES.to_vec())
            .with_insecure_skip_verify(true)
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(true, None)
            .unwrap();
        player.dtls.connect(t0, edge(), Arc::new(config), None).unwrap();
        for _ in 0..8 {
            while let Some(out) = player.dtls.poll_transmit() {
                conn.datagram(t0, edge(), at, &out.message, plaintext);
            }
            while let Some((_, to, data)) = conn.poll_transmit() {
                assert_eq!(to, at);
                if demux::kind(&data) == Some(demux::Kind::Dtls) {
                    player.dtls.read(t0, edge(), None, data).unwrap();
                }
            }
        }
        assert_eq!(conn.state.phase, Phase::Connected, "the handshake is done");
        (conn, player)
    }

    /// Packet `index` of the stream: a video keyframe's start.
    fn media(index: u64) -> Arc<MediaPacket> {
        let mut packet = rtc::rtp::packet::Packet::default();
        packet.header.sequence_number = index as u16;
        packet.header.timestamp = index as u32 * 3000;
        packet.payload = bytes::Bytes::from_static(&[0x10, 0x80, 0x00, 0x9d, 0x01, 0x2a]);
        Arc::new(MediaPacket { index, kind: MediaKind::Video, keyframe_start: true, packet })
    }

    /// Where each datagram the connection queued goes, and its kind.
    fn sent(conn: &mut ViewerConn) -> Vec<(SocketAddr, Option<demux::Kind>)> {
        std::iter::from_fn(|| conn.poll_transmit()).map(|(_, to, data)| (to, demux::kind(&data))).collect()
    }

    /// Driven only through [`Connection`], a viewer tells the address it answered, that it came
    /// up, then for a stream packet its datagram and the bytes it carried, and its deadline.
    #[test]
    fn through_the_connection_interface_a_viewer_tells_what_it_reached_that_it_is_up_and_what_it_sent() {
        let t0 = Instant::now();
        let at: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let mut plaintext = Plaintext::default();
        let (mut conn, _) = connected(t0, at, &mut plaintext);
        let mut events = Vec::new();
        let deadline = loop {
            match conn.poll_output() {
                Output::Transmit(transmit) => assert_eq!(transmit.to, at),
                Output::Event(event) => events.push(event),
                Output::Timeout(deadline) => break deadline,
            }
        };
        assert!(matches!(events.first(), Some(ConnEvent::Reached { local: Source::Local(local), remote }) if *local == edge() && *remote == at), "{events:?}");
        assert!(matches!(events.last(), Some(ConnEvent::Connected)), "{events:?}");
        assert!(deadline.is_some_and(|t| t > t0), "consent and reports keep a deadline");
        conn.send_media(t0, &media(0), &mut plaintext);
        let Output::Transmit(transmit) = conn.poll_output() else { panic!("the packet first") };
        assert_eq!((transmit.source, transmit.to, demux::kind(&transmit.bytes)), (Source::Local(edge()), at, Some(Kind::Rtp)));
        assert!(matches!(conn.poll_output(), Output::Event(ConnEvent::MediaSent(18))), "a 6-byte payload and its header");
        assert!(matches!(conn.poll_output(), Output::Timeout(t) if t == deadline));
        assert!(!conn.is_done());
        Connection::close(&mut conn, t0);
        assert!(conn.is_done());
    }

    /// RFC 7675: a viewer that knows its ICE password forges checks from a victim's address, one
    /// every 20 s. The victim gets the answers to those checks (STUN, no bigger than them) and
    /// nothing else; the player keeps its media, and its consent, for as long as it checks.
    #[test]
    fn a_check_forged_from_another_address_moves_no_media_and_takes_no_consent() {
        let t0 = Instant::now();
        let (player_at, victim): (SocketAddr, SocketAddr) = ("10.0.0.2:5000".parse().unwrap(), "10.0.0.66:6000".parse().unwrap());
        let mut plaintext = Plaintext::default();
        let (mut conn, player) = connected(t0, player_at, &mut plaintext);
        let mut to_player = 0;
        for second in 0..90u64 {
            let now = t0 + Duration::from_secs(second);
            if second % 20 == 0 {
                conn.datagram(now, edge(), victim, &player.check(&conn, true), &mut plaintext);
            }
            if second % 5 == 1 {
                conn.datagram(now, edge(), player_at, &player.check(&conn, true), &mut plaintext);
            }
            conn.send_media(now, &media(second), &mut plaintext);
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.timeout(now);
            }
            for (to, kind) in sent(&mut conn) {
                if to == victim {
                    assert_eq!(kind, Some(demux::Kind::Stun), "at {second} s the victim got {kind:?}");
                } else {
                    assert_eq!(to, player_at);
                    to_player += u32::from(kind == Some(demux::Kind::Rtp));
                }
            }
            assert_eq!(conn.state.phase, Phase::Connected, "at {second} s");
        }
        assert!(to_player >= 90, "the player got its media and reports: {to_player}");
    }

    /// A player whose network changes checks from its new address, nominating it, and answers
    /// the edge's check there (as every ICE agent does, whether or not it sends RTCP): media
    /// moves there, and consent with it.
    #[test]
    fn a_player_that_moves_gets_its_media_at_its_new_address_once_it_answers_there() {
        let t0 = Instant::now();
        let (old, new): (SocketAddr, SocketAddr) = ("10.0.0.2:5000".parse().unwrap(), "10.0.0.9:7000".parse().unwrap());
        let mut plaintext = Plaintext::default();
        let (mut conn, player) = connected(t0, old, &mut plaintext);
        conn.send_media(t0, &media(0), &mut plaintext);
        assert!(sent(&mut conn).contains(&(old, Some(demux::Kind::Rtp))));

        let t1 = t0 + Duration::from_secs(20);
        conn.datagram(t1, edge(), new, &player.check(&conn, true), &mut plaintext);
        let out: Vec<_> = std::iter::from_fn(|| conn.poll_transmit()).collect();
        assert_eq!(out.len(), 2, "the check's answer, and the edge's own check");
        assert!(out.iter().all(|(_, to, data)| *to == new && demux::kind(data) == Some(demux::Kind::Stun)));
        conn.send_media(t1, &media(1), &mut plaintext);
        assert_eq!(sent(&mut conn), [(old, Some(demux::Kind::Rtp))], "media stays until the new address answers");

        let (answer, _) = crate::ice_lite::tests::answer(&out[1].2, &player.pwd);
        conn.datagram(t1, edge(), new, &answer, &mut plaintext);
        assert_eq!(conn.ice.path(), Some((edge(), new)));
        let t2 = t1 + Duration::from_secs(25);
        conn.send_media(t2, &media(2), &mut plaintext);
        assert_eq!(sent(&mut conn), [(new, Some(demux::Kind::Rtp))]);
        conn.timeout(t2);
        assert_eq!(conn.state.phase, Phase::Connected, "the answer was consent: 45 s after the last check from the old address");
    }
}
