//! WebRTC egress: one server-offered, send-only peer connection per viewer, fed from its stream's
//! [`StreamHub`] without re-encoding.
//!
//! Each viewer has its own forwarding task that rewrites SSRC, payload type and sequence numbers to
//! what was negotiated (webrtc 0.21 silently drops packets that do not match), starts video at a
//! keyframe, and, if it falls too far behind the source, skips to the next keyframe rather than
//! slowing anyone else down.

use crate::config::{IceCandidate, VideoCodec};
use crate::media::{MediaKind, MediaPacket, StreamHub};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::shared::marshal::MarshalSize;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

/// Payload types of the edge's offers.
const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;
/// How long to wait for local ICE candidates before sending the offer anyway.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);

/// What the edge connection tells its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeEvent {
    /// ICE and DTLS are up; media flows.
    Connected,
    /// ICE or DTLS failed.
    Failed,
}

/// The offer to send to the player.
pub struct EdgeOffer {
    /// The SDP.
    pub sdp: String,
    /// The ICE candidates (also in the SDP), as `candidate:...` strings.
    pub candidates: Vec<String>,
}

/// Where edge connections bind: the configured ICE candidates with their port ranges as pools.
pub struct EgressSettings {
    candidates: Vec<IceCandidate>,
    ports_in_use: Arc<Mutex<HashSet<(usize, u16)>>>,
}

/// Ports held by one connection; returned to the pool on drop.
struct PortLease {
    ports: Vec<(usize, u16)>,
    pool: Arc<Mutex<HashSet<(usize, u16)>>>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut in_use = self.pool.lock().expect("port pool lock");
        for p in &self.ports {
            in_use.remove(p);
        }
    }
}

impl EgressSettings {
    /// Edge connections bind per `candidates` (`*` = every non-loopback interface).
    pub fn new(candidates: Vec<IceCandidate>) -> Self {
        Self { candidates, ports_in_use: Default::default() }
    }

    /// One address per candidate for a new connection: a free port of its range, or an ephemeral
    /// port when the range is used up (webrtc 0.21 has no UDP mux; each connection has a socket).
    fn lease(&self) -> (Vec<String>, PortLease) {
        let mut in_use = self.ports_in_use.lock().expect("port pool lock");
        let mut lease = PortLease { ports: Vec::new(), pool: self.ports_in_use.clone() };
        let addrs = self
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ip = c.address.map(|a| a.to_string()).unwrap_or_else(|| "0.0.0.0".into());
                let port = c.ports.clone().filter(|&p| p != 0).find(|&p| !in_use.contains(&(i, p))).unwrap_or(0);
                if port != 0 {
                    in_use.insert((i, port));
                    lease.ports.push((i, port));
                }
                if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
            })
            .collect();
        (addrs, lease)
    }
}

struct EdgeHandler {
    events: mpsc::UnboundedSender<EdgeEvent>,
    gathered: watch::Sender<bool>,
    connected: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for EdgeHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => {
                self.connected.send_replace(true);
                let _ = self.events.send(EdgeEvent::Connected);
            }
            RTCPeerConnectionState::Failed => {
                let _ = self.events.send(EdgeEvent::Failed);
            }
            _ => {}
        }
    }
}

/// One viewer's edge connection.
pub struct EdgeConnection {
    pc: Arc<dyn PeerConnection>,
    forwarder: tokio::task::JoinHandle<()>,
    /// Events for the session.
    pub events: mpsc::UnboundedReceiver<EdgeEvent>,
    _ports: PortLease,
}

fn video_codec(codec: VideoCodec) -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback { typ: typ.into(), parameter: parameter.into() };
    let (mime, fmtp) = match codec {
        VideoCodec::Vp8 => (MIME_TYPE_VP8, ""),
        VideoCodec::H264 => (MIME_TYPE_H264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
    };
    RTCRtpCodec {
        mime_type: mime.into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: fmtp.into(),
        rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

/// A send-only track of `codec` with a fresh SSRC, in media stream `stream_id`.
fn local_track(stream_id: &str, kind: RtpCodecKind, codec: RTCRtpCodec) -> (Arc<TrackLocalStaticRTP>, u32) {
    let ssrc = rand::random::<u32>();
    let label = if kind == RtpCodecKind::Video { "video" } else { "audio" };
    let track = TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream_id.to_string(),
        format!("{stream_id}-{label}"),
        label.to_string(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec,
            ..Default::default()
        }],
    ));
    (Arc::new(track), ssrc)
}

impl EdgeConnection {
    /// Creates the connection for a viewer of `hub` and its offer (all candidates gathered).
    pub async fn offer(
        hub: Arc<StreamHub>,
        settings: &EgressSettings,
        egress_bytes: Arc<AtomicU64>,
        egress_total: Arc<AtomicU64>,
        lagged_packets: Arc<AtomicU64>,
    ) -> anyhow::Result<(Self, EdgeOffer)> {
        let mut media = MediaEngine::default();
        media.register_codec(
            RTCRtpCodecParameters { rtp_codec: video_codec(hub.video_codec), payload_type: VIDEO_PT },
            RtpCodecKind::Video,
        )?;
        media.register_codec(
            RTCRtpCodecParameters { rtp_codec: opus_codec(), payload_type: AUDIO_PT },
            RtpCodecKind::Audio,
        )?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let setting = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            .build();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (gathered_tx, mut gathered) = watch::channel(false);
        let (connected_tx, connected) = watch::channel(false);
        let handler = Arc::new(EdgeHandler { events: events_tx, gathered: gathered_tx, connected: connected_tx });
        let (addrs, ports) = settings.lease();
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().build())
                .with_media_engine(media)
                .with_interceptor_registry(registry)
                .with_setting_engine(setting)
                .with_handler(handler)
                .with_udp_addrs(addrs)
                .build()
                .await?,
        );

        // One media stream id for both tracks: players play `streams[0]` and expect both in it.
        let stream_id = hub.name.replace('/', "-");
        let sendonly = || RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![stream_id.clone()],
            send_encodings: vec![],
        };
        let (video, video_ssrc) = local_track(&stream_id, RtpCodecKind::Video, video_codec(hub.video_codec));
        pc.add_transceiver_from_track(video.clone() as Arc<dyn TrackLocal>, Some(sendonly())).await?;
        let audio = if hub.has_audio {
            let (audio, audio_ssrc) = local_track(&stream_id, RtpCodecKind::Audio, opus_codec());
            pc.add_transceiver_from_track(audio.clone() as Arc<dyn TrackLocal>, Some(sendonly())).await?;
            Some((audio, audio_ssrc))
        } else {
            None
        };

        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|g| *g)).await;
        let sdp = pc.local_description().await.ok_or_else(|| anyhow::anyhow!("no local description"))?.sdp;
        let candidates = sdp
            .lines()
            .filter_map(|l| l.strip_prefix("a="))
            .filter(|l| l.starts_with("candidate:"))
            .map(str::to_string)
            .collect();

        let forwarder = tokio::spawn(
            Forwarder {
                video: (video, video_ssrc),
                audio,
                egress_bytes,
                egress_total,
                lagged_packets,
            }
            .run(hub.subscribe(), connected),
        );
        Ok((Self { pc, forwarder, events, _ports: ports }, EdgeOffer { sdp, candidates }))
    }

    /// Applies the player's answer.
    pub async fn accept_answer(&self, sdp: String) -> anyhow::Result<()> {
        Ok(self.pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?)
    }

    /// Adds a trickled candidate of the player's.
    pub async fn add_candidate(&self, candidate: RTCIceCandidateInit) -> anyhow::Result<()> {
        Ok(self.pc.add_ice_candidate(candidate).await?)
    }

    /// Stops forwarding and closes the connection.
    pub async fn close(self) {
        self.forwarder.abort();
        if let Err(e) = self.pc.close().await {
            tracing::debug!("closing an edge connection: {e}");
        }
    }
}

/// Copies one stream's packets to one viewer's tracks.
struct Forwarder {
    video: (Arc<TrackLocalStaticRTP>, u32),
    audio: Option<(Arc<TrackLocalStaticRTP>, u32)>,
    egress_bytes: Arc<AtomicU64>,
    egress_total: Arc<AtomicU64>,
    lagged_packets: Arc<AtomicU64>,
}

impl Forwarder {
    async fn run(self, packets: broadcast::Receiver<MediaPacket>, mut connected: watch::Receiver<bool>) {
        // What is written before the connection is up is accepted and lost: wait, and start fresh.
        if connected.wait_for(|c| *c).await.is_err() {
            return;
        }
        let mut packets = packets.resubscribe();
        let mut waiting_for_keyframe = true;
        // Per track: the offset that maps the source's sequence numbers to this viewer's.
        let mut seq_offset: [Option<u16>; 2] = [None, None];
        loop {
            let MediaPacket { kind, keyframe_start, mut packet } = match packets.recv().await {
                Ok(p) => p,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lagged_packets.fetch_add(n, Ordering::Relaxed);
                    waiting_for_keyframe = true;
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let (track, ssrc, pt, slot) = match (kind, &self.audio) {
                (MediaKind::Video, _) => {
                    if waiting_for_keyframe && !keyframe_start {
                        continue;
                    }
                    waiting_for_keyframe = false;
                    (&self.video.0, self.video.1, VIDEO_PT, 0)
                }
                (MediaKind::Audio, Some((track, ssrc))) => (track, *ssrc, AUDIO_PT, 1),
                (MediaKind::Audio, None) => continue,
            };
            let offset = *seq_offset[slot]
                .get_or_insert_with(|| rand::random::<u16>().wrapping_sub(packet.header.sequence_number));
            packet.header.ssrc = ssrc;
            packet.header.payload_type = pt;
            packet.header.sequence_number = packet.header.sequence_number.wrapping_add(offset);
            let size = (packet.header.marshal_size() + packet.payload.len()) as u64;
            if track.write_rtp(packet).await.is_err() {
                return;
            }
            self.egress_bytes.fetch_add(size, Ordering::Relaxed);
            self.egress_total.fetch_add(size, Ordering::Relaxed);
        }
    }
}
