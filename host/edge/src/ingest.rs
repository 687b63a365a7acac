//! A publisher's edge connection: an `rtc` peer connection that receives one video track (VP8
//! or H.264) and one Opus track on the shared ports, and hands their RTP to its owner
//! ([`ConnEvent::Media`]; the host's worker gives it to the stream's hub).
//!
//! Two ways in, both as OvenMediaEngine does them: over OME's WebSocket signalling the server
//! offers (receive-only video, both codecs, then audio) and the publisher answers
//! ([`PublisherConn::offer`]); over WHIP the publisher offers and the server answers
//! ([`PublisherConn::answer_offer`]). ICE-lite either way, like the viewers' connections. The
//! same connection pulls a stream from an origin, as a player of it: the origin offers, the edge
//! answers, and, the origin being a server too (ICE-lite, or OME's full agent that waits for
//! checks), the edge is the full ICE agent that checks the origin's candidates.

use crate::conn::Offer;
use crate::connection::{Arrival, ConnEvent, Connection, Output, Source, Transmit};
use crate::demux;
use crate::error::{Error, Result};
use crate::link::{edge_settings, host_candidates, Phase, RtcLink};
use crate::media::MediaKind;
use crate::plumbing::{self, VideoCodec};
use crate::track::Plaintext;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrackId;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// What a publisher's stream carries, learned from the negotiated SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracks {
    /// The video codec the publisher sends.
    pub video: VideoCodec,
    /// Whether it sends audio.
    pub audio: bool,
}

/// Everything a new publisher connection needs.
pub struct NewPublisher<'a> {
    /// Pulling from an origin: its candidates (`candidate:` lines); the edge is then a full ICE
    /// agent that checks them. `None`: a publisher, which checks the edge's (ICE-lite).
    pub origin_candidates: Option<Vec<String>>,
    /// The addresses it is reachable at (its candidates).
    pub candidates: &'a [SocketAddr],
    /// The edge's DTLS certificate.
    pub certificate: RTCCertificate,
}

/// One publisher's edge connection.
pub struct PublisherConn {
    /// The connection itself.
    pub link: RtcLink,
    /// Its tracks by id, as they opened: their kind, the receiver that reads them, their SSRC.
    tracks: HashMap<MediaStreamTrackId, (MediaKind, RTCRtpReceiverId, u32)>,
    /// Where its datagrams really arrived.
    locals: RealLocals,
}

/// Where a publisher's datagrams really arrived, per announced address: `rtc`'s ICE agent knows
/// itself only by its candidates (the announced addresses), but its replies must leave from the
/// address each datagram was sent to. One entry per announced address it was reached at.
#[derive(Default)]
struct RealLocals(Vec<(SocketAddr, SocketAddr)>);

impl RealLocals {
    fn learn(&mut self, announced: SocketAddr, local: SocketAddr) {
        match self.0.iter_mut().find(|(a, _)| *a == announced) {
            Some(entry) => entry.1 = local,
            None => self.0.push((announced, local)),
        }
    }

    /// The local address behind `announced`, once a datagram has come to it.
    fn get(&self, announced: SocketAddr) -> Option<SocketAddr> {
        self.0.iter().find(|(a, _)| *a == announced).map(|(_, l)| *l)
    }
}

/// A peer connection that receives: both video codecs and Opus, rtc's default receive-side
/// interceptors (NACK generation, receiver reports, transport-wide congestion feedback, so the
/// browser's encoder ramps up), ICE-lite.
fn receiving_pc(now: Instant, certificate: RTCCertificate, lite: bool, video: &[VideoCodec]) -> Result<(RTCPeerConnection, String)> {
    let mut media = MediaEngine::default();
    plumbing::register_ingest_codecs(&mut media, video)?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let (setting, ufrag) = edge_settings(lite);
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().with_certificates(vec![certificate]).build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting)
        .build(now)?;
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        let recvonly = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, streams: vec![], send_encodings: vec![] };
        pc.add_transceiver_from_kind(kind, Some(recvonly))?;
    }
    Ok((pc, ufrag))
}

impl PublisherConn {
    fn new(pc: RTCPeerConnection, ufrag: String, phase: Phase) -> Self {
        Self { link: RtcLink::new(pc, ufrag, phase), tracks: HashMap::new(), locals: RealLocals::default() }
    }

    /// OME's way: the server offers; [`Self::answer`] takes the publisher's answer.
    pub fn offer(now: Instant, new: NewPublisher<'_>) -> Result<(Self, Offer)> {
        let (mut pc, ufrag) = receiving_pc(now, new.certificate, true, &[VideoCodec::Vp8, VideoCodec::H264])?;
        let offer = pc.create_offer(None)?;
        pc.set_local_description(now, offer)?;
        let candidates = host_candidates(&mut pc, new.candidates)?;
        let sdp = pc.local_description().ok_or(Error::NoLocalDescription)?.sdp;
        Ok((Self::new(pc, ufrag, Phase::Offered), Offer { sdp, candidates, stun_servers: new.candidates.to_vec() }))
    }

    /// The publisher's answer to [`Self::offer`]: what it will send.
    pub fn answer(&mut self, now: Instant, sdp: String) -> Result<Tracks> {
        if self.link.state.phase != Phase::Offered {
            return Err(Error::AlreadyAnswered);
        }
        let tracks = negotiated(&sdp)?;
        self.link.pc.set_remote_description(now, RTCSessionDescription::answer(sdp)?)?;
        self.link.state.phase = Phase::Answered;
        Ok(tracks)
    }

    /// WHIP's way (and an origin's): the offer in, the answer (with the candidates in it) out.
    pub fn answer_offer(now: Instant, new: NewPublisher<'_>, offer: String) -> Result<(Self, String, Tracks)> {
        // One video codec in the answer, the offer's first that the edge takes: with both, the
        // browser might send the one the stream is not (OvenLiveKit prefers H.264 first).
        let video = offered_video(&offer)?;
        let (mut pc, ufrag) = receiving_pc(now, new.certificate, new.origin_candidates.is_none(), &[video])?;
        pc.set_remote_description(now, RTCSessionDescription::offer(offer)?)?;
        for line in new.origin_candidates.iter().flatten() {
            pc.add_remote_candidate(RTCIceCandidateInit { candidate: line.clone(), ..Default::default() })?;
        }
        let answer = pc.create_answer(None)?;
        pc.set_local_description(now, answer)?;
        host_candidates(&mut pc, new.candidates)?;
        let sdp = pc.local_description().ok_or(Error::NoLocalDescription)?.sdp;
        let tracks = negotiated(&sdp)?;
        Ok((Self::new(pc, ufrag, Phase::Answered), sdp, tracks))
    }

    /// Asks the publisher for a keyframe (a PLI on its video track); false if it has none yet.
    pub fn request_keyframe(&mut self, now: Instant) -> bool {
        let Some((_, receiver, ssrc)) = self.tracks.values().find(|(kind, ..)| *kind == MediaKind::Video).copied() else { return false };
        let Some(mut receiver) = self.link.pc.rtp_receiver(receiver) else { return false };
        let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
        receiver.write_rtcp(now, vec![Box::new(pli)]).is_ok()
    }

    /// Follows the peer connection's events: its state (the owner hears of it), its tracks.
    fn after_input(&mut self) {
        while let Some(event) = self.link.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    self.link.on_state(state);
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let kind = self.link.pc.rtp_receiver(init.receiver_id).map(|r| r.track().kind());
                    let kind = if kind == Some(RtpCodecKind::Audio) { MediaKind::Audio } else { MediaKind::Video };
                    self.tracks.insert(init.track_id, (kind, init.receiver_id, init.ssrc));
                }
                _ => {}
            }
        }
    }

    /// The next RTP packet received on one of its tracks.
    fn poll_media(&mut self) -> Option<(MediaKind, rtc::rtp::Packet)> {
        while let Some(message) = self.link.pc.poll_read() {
            let RTCMessage::RtpPacket(track, mut packet) = message.message else { continue };
            let Some((kind, ..)) = self.tracks.get(&track) else { continue };
            // Viewers negotiate no header extensions: the publisher's stay here.
            packet.header.extension = false;
            packet.header.extensions.clear();
            return Some((*kind, packet));
        }
        None
    }
}

impl Connection for PublisherConn {
    fn ufrag(&self) -> &str {
        &self.link.state.ufrag
    }

    /// `rtc`'s agent takes the datagram as sent to the announced address (its candidate); the
    /// replies leave from the address it really came to.
    fn handle_datagram(&mut self, now: Instant, arrival: Arrival, from: SocketAddr, data: &[u8], _: &mut Plaintext) {
        self.locals.learn(arrival.announced, arrival.local);
        self.link.read(now, arrival.announced, from, data);
        self.after_input();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.link.timeout(now);
        self.after_input();
    }

    fn poll_output(&mut self) -> Output {
        if let Some((announced, to, bytes)) = self.link.poll_transmit() {
            let source = self.locals.get(announced).map_or(Source::Announced(announced), Source::Local);
            if demux::first_byte_kind(&bytes) == Some(demux::Kind::Stun) {
                self.link.state.events.push_back(ConnEvent::Reached { local: source, remote: to });
            }
            return Output::Transmit(Transmit { source, to, bytes });
        }
        if let Some(event) = self.link.state.events.pop_front() {
            return Output::Event(event);
        }
        if let Some((kind, packet)) = self.poll_media() {
            return Output::Event(ConnEvent::Media(kind, packet));
        }
        Output::Timeout(self.link.poll_timeout())
    }

    fn close(&mut self, _: Instant) {
        self.link.close();
    }

    fn is_done(&self) -> bool {
        self.link.state.phase == Phase::Done
    }
}

/// An SDP's video section.
fn video_section(sdp: &str) -> Result<&str> {
    plumbing::sdp_sections(sdp).find(|s| s.starts_with("video ")).ok_or(Error::NoVideo)
}

/// The codec of the first VP8 or H.264 payload type in an offer's video section.
pub fn offered_video(offer: &str) -> Result<VideoCodec> {
    plumbing::section_codecs(video_section(offer)?).find_map(VideoCodec::from_rtpmap).ok_or(Error::OfferedVideo)
}

/// What the negotiated `sdp` (an answer, or the server's own answer) says the publisher sends:
/// the first payload type of its video section names the codec; an audio section that is not
/// rejected means audio.
pub fn negotiated(sdp: &str) -> Result<Tracks> {
    let first = plumbing::section_codecs(video_section(sdp)?).next().ok_or(Error::NoVideoCodec)?;
    let video = VideoCodec::from_rtpmap(first).ok_or_else(|| Error::PublisherVideo(first.to_owned()))?;
    let audio = plumbing::sdp_sections(sdp).any(|s| s.starts_with("audio ") && !s.starts_with("audio 0 "));
    Ok(Tracks { video, audio })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_negotiated_codec_is_the_first_video_payload_type() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 96\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(negotiated(sdp).unwrap(), Tracks { video: VideoCodec::H264, audio: true });
        let no_audio = sdp.replace("m=audio 9", "m=audio 0");
        assert_eq!(negotiated(&no_audio).unwrap(), Tracks { video: VideoCodec::H264, audio: false });
        let vp9 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:98 VP9/90000\r\n";
        assert!(negotiated(vp9).unwrap_err().to_string().contains("VP9"));
        assert!(negotiated("v=0\r\nm=audio 9 X 111\r\n").is_err());
    }

    #[test]
    fn the_answer_takes_the_offers_first_codec_the_edge_takes() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 98 103 96\r\na=rtpmap:98 VP9/90000\r\na=rtpmap:103 H264/90000\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(offered_video(offer).unwrap(), VideoCodec::H264);
        assert_eq!(offered_video(&offer.replace("103 H264", "103 AV1")).unwrap(), VideoCodec::Vp8);
        assert!(offered_video("v=0\r\nm=video 9 X 98\r\na=rtpmap:98 VP9/90000\r\n").is_err());
    }
}
