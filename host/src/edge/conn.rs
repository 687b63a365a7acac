//! One viewer's edge connection: its [`RtcLink`], the viewer's two send-only tracks, and the
//! rewrite of the stream's RTP into them.

use super::link::{edge_settings, host_candidates, Phase, RtcLink};
use super::EdgeEvent;
use crate::media::{MediaKind, MediaPacket};
use crate::plumbing::{self, RtpRewriter, AUDIO_PT, VIDEO_PT};
use rtc::interceptor::{NackResponderBuilder, Registry, SenderReportBuilder, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Backlog packets sent per live packet of the stream while a joining viewer catches up: the
/// keyframe cache goes out at this multiple of the stream's own rate, spread over its arrivals
/// instead of in one burst that overflows socket buffers (ours and the viewer's).
const BURST_PER_PACKET: usize = 16;

/// Packets per track a viewer can ask to have resent (~2.5 s of 1 Mbit/s video).
const NACK_HISTORY: u16 = 256;

/// One of the viewer's send-only tracks.
struct Track {
    ssrc: u32,
    pt: u8,
    rewriter: RtpRewriter,
}

/// What the connection asks of its worker after an input.
#[derive(Debug, Default)]
pub struct Wants {
    /// The connection just came up: media may start.
    pub connected: bool,
    /// The viewer asked for a keyframe (PLI or FIR).
    pub keyframe: bool,
}

/// One viewer's edge connection.
pub struct ViewerConn {
    /// The connection itself.
    pub link: RtcLink,
    video: Track,
    audio: Option<Track>,
    /// Video waits for a keyframe (at the start, and after the viewer fell behind).
    waiting_for_keyframe: bool,
    /// The hub index of the next packet this viewer needs (earlier ones it has had).
    pub next_index: u64,
    /// Packets waiting their turn: the keyframe cache given at connect, then live packets that
    /// arrived while it drained, in stream order. Sent [`BURST_PER_PACKET`] at a time.
    backlog: VecDeque<Arc<MediaPacket>>,
    /// Media tracks that have sent their first packet, and whether the worker was told.
    first_media: (u8, bool),
    /// The stream's video codec (for the error when a player takes none of it).
    codec: plumbing::VideoCodec,
    egress_bytes: Arc<AtomicU64>,
}

/// Whether an answer turns the video down (`m=video 0`: no codec in common).
fn rejects_video(answer: &str) -> bool {
    plumbing::sdp_sections(answer).any(|section| section.starts_with("video 0 "))
}

/// The offer the player gets.
pub struct Offer {
    /// The SDP (with the candidates in it).
    pub sdp: String,
    /// The candidates, as `candidate:...` lines.
    pub candidates: Vec<String>,
}

/// Everything a new connection needs.
pub struct NewConn<'a> {
    /// The media stream id both tracks share (players play `streams[0]`).
    pub stream_id: &'a str,
    /// The stream's video codec.
    pub video_codec: plumbing::VideoCodec,
    /// Whether the stream has audio.
    pub has_audio: bool,
    /// The candidates to offer: the addresses this connection is reachable at.
    pub candidates: &'a [SocketAddr],
    /// The session's event inbox.
    pub events: mpsc::UnboundedSender<EdgeEvent>,
    /// Bytes sent to this viewer.
    pub egress_bytes: Arc<AtomicU64>,
    /// The edge's DTLS certificate (one for all: a key pair per viewer would cost set-up time).
    pub certificate: RTCCertificate,
}

/// The DTLS certificate every edge connection presents (ECDSA P-256, as browsers prefer).
pub fn edge_certificate() -> anyhow::Result<RTCCertificate> {
    let provider = rtc::crypto::default_provider()?;
    Ok(RTCCertificate::generate(
        provider.crypto(),
        rtc::crypto::SignatureScheme::EcdsaP256Sha256,
        CertificateParams::new(vec!["p2p-host".to_owned()])?,
    )?)
}

fn track(stream_id: &str, kind: RtpCodecKind, codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec) -> (MediaStreamTrack, u32) {
    let ssrc = rand::random::<u32>();
    let label = if kind == RtpCodecKind::Video { "video" } else { "audio" };
    let track = MediaStreamTrack::new(
        stream_id.to_string(),
        format!("{stream_id}-{label}"),
        label.to_string(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec,
            ..Default::default()
        }],
    );
    (track, ssrc)
}

impl ViewerConn {
    /// A new connection and its offer. ICE-lite: the edge has a reachable address and only
    /// answers the player's checks, so it never sends a STUN request to an address a player names
    /// (no checks to amplify) and needs no remote candidates; the player, a full agent, controls.
    pub fn offer(now: Instant, new: NewConn<'_>) -> anyhow::Result<(Self, Offer)> {
        let mut media = MediaEngine::default();
        plumbing::register_codecs(&mut media, new.video_codec)?;
        // Send-only: a NACK responder (its history bounded at NACK_HISTORY packets per track; the
        // payloads are shared with the stream, the buffer holds headers) and sender reports, so
        // the player can sync audio and video. No receive-side interceptors, no TWCC: the edge
        // forwards one bitrate and has nothing to adapt.
        let registry = Registry::new()
            .with(Slot::NackResponder, NackResponderBuilder::new().with_size(NACK_HISTORY).build())
            .with(Slot::SenderReport, SenderReportBuilder::new().build());
        let (setting, ufrag) = edge_settings(true);
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().with_certificates(vec![new.certificate]).build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting)
            .build(now)?;
        let sendonly = || RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![new.stream_id.to_string()],
            send_encodings: vec![],
        };
        let (video_track, video_ssrc) = track(new.stream_id, RtpCodecKind::Video, plumbing::video_codec(new.video_codec));
        pc.add_transceiver_from_track(video_track, Some(sendonly()))?;
        let audio = if new.has_audio {
            let (audio_track, ssrc) = track(new.stream_id, RtpCodecKind::Audio, plumbing::opus_codec());
            pc.add_transceiver_from_track(audio_track, Some(sendonly()))?;
            Some(Track { ssrc, pt: AUDIO_PT, rewriter: RtpRewriter::new() })
        } else {
            None
        };
        let offer = pc.create_offer(None)?;
        pc.set_local_description(now, offer)?;
        let candidates = host_candidates(&mut pc, new.candidates)?;
        let sdp = pc.local_description().ok_or_else(|| anyhow::anyhow!("no local description"))?.sdp;
        let conn = Self {
            link: RtcLink::new(pc, ufrag, Phase::Offered, new.events),
            video: Track { ssrc: video_ssrc, pt: VIDEO_PT, rewriter: RtpRewriter::new() },
            audio,
            waiting_for_keyframe: true,
            next_index: 0,
            backlog: VecDeque::new(),
            first_media: (0, false),
            codec: new.video_codec,
            egress_bytes: new.egress_bytes,
        };
        Ok((conn, Offer { sdp, candidates }))
    }

    /// Applies the player's answer.
    pub fn answer(&mut self, now: Instant, sdp: String) -> anyhow::Result<()> {
        if self.link.phase != Phase::Offered {
            anyhow::bail!("the offer was already answered");
        }
        if rejects_video(&sdp) {
            anyhow::bail!("the player takes none of the stream's video codec ({:?}): it cannot play this stream", self.codec);
        }
        self.link.pc.set_remote_description(now, RTCSessionDescription::answer(sdp)?)?;
        self.link.phase = Phase::Answered;
        Ok(())
    }

    /// A datagram for this connection.
    pub fn datagram(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: &[u8]) -> Wants {
        self.link.read(now, local, from, data);
        self.after_input()
    }

    /// The connection's deadline passed.
    pub fn timeout(&mut self, now: Instant) -> Wants {
        self.link.timeout(now);
        self.after_input()
    }

    /// The viewer fell behind its stream: resume video at the next keyframe.
    pub fn lagged(&mut self) {
        self.waiting_for_keyframe = true;
        self.backlog.clear();
    }

    /// A viewer that just came up starts from `cache` (the stream's video since its last keyframe).
    pub fn start_from(&mut self, now: Instant, cache: Vec<Arc<MediaPacket>>) -> u64 {
        self.backlog.extend(cache);
        self.pump(now)
    }

    /// Takes one live packet of the stream: sent now, or after the backlog. Returns RTP bytes sent.
    pub fn send_media(&mut self, now: Instant, packet: &Arc<MediaPacket>) -> u64 {
        if self.backlog.is_empty() {
            return self.send_one(now, packet);
        }
        self.backlog.push_back(packet.clone());
        self.pump(now)
    }

    /// True once, after a packet was sent on a track that had sent none (its timers just armed).
    pub fn take_first_media(&mut self) -> bool {
        std::mem::take(&mut self.first_media.1)
    }

    /// Sends up to [`BURST_PER_PACKET`] packets of the backlog.
    fn pump(&mut self, now: Instant) -> u64 {
        let mut sent = 0;
        for _ in 0..BURST_PER_PACKET {
            let Some(packet) = self.backlog.pop_front() else { break };
            sent += self.send_one(now, &packet);
        }
        sent
    }

    /// Sends one packet of the stream (numbered `packet.index` by the hub) if this viewer takes
    /// it; returns the RTP bytes sent.
    fn send_one(&mut self, now: Instant, packet: &MediaPacket) -> u64 {
        let index = packet.index;
        if self.link.phase != Phase::Connected || index < self.next_index {
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
        self.next_index = index + 1;
        let out = track.rewriter.rewrite(&packet.packet, track.ssrc, track.pt);
        let size = out.payload.len() as u64 + 12;
        // Straight into the pipeline: `RTCRtpSender::write_rtp` would check SSRC, payload type and
        // extensions (the rewrite guarantees them) by building the sender's parameters, several
        // allocations per packet per viewer. The track id is not read on this path.
        let message = TaggedRTCMessage { now, message: RTCMessage::RtpPacket(String::new(), out) };
        let bit = if packet.kind == MediaKind::Video { 1 } else { 2 };
        match self.link.pc.handle_write(message) {
            Ok(()) => {
                if self.first_media.0 & bit == 0 {
                    self.first_media = (self.first_media.0 | bit, true);
                }
                self.egress_bytes.fetch_add(size, Ordering::Relaxed);
                size
            }
            Err(e) => {
                tracing::trace!(ufrag = %self.link.ufrag, "media not sent: {e}");
                0
            }
        }
    }

    /// Drains events and inbound RTCP after an input.
    fn after_input(&mut self) -> Wants {
        let mut wants = Wants::default();
        while let Some(event) = self.link.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                wants.connected |= self.link.on_state(state);
            }
        }
        while let Some(message) = self.link.pc.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = message.message {
                wants.keyframe |= packets.iter().any(|p| {
                    p.as_any().downcast_ref::<PictureLossIndication>().is_some()
                        || p.as_any().downcast_ref::<FullIntraRequest>().is_some()
                });
            }
        }
        wants
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_answer_that_turns_the_video_down_is_told_apart() {
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert!(!super::rejects_video(answer));
        assert!(super::rejects_video(&answer.replace("m=video 9", "m=video 0")));
        assert!(!super::rejects_video(&answer.replace("m=audio 9", "m=audio 0")), "audio alone does not matter");
    }
}
