//! A headless player on the `webrtc` crate that speaks the host's signalling: it plays from the
//! edge or from a host peer, and, as a host peer, relays the RTP it receives to each of its
//! clients over its own peer connection, without transcoding: codecs, payload types and the RTP
//! rewrite are the edge's own (`host::plumbing`), so a relay sends exactly what the edge sends.
//! Every peer NACKs the gaps in what it receives (the `rtc` crate's generator), and a relay
//! answers its clients' NACKs from what it forwarded, within the edge's bounds
//! ([`crate::nack::RelayNackResponder`]).

use crate::nack::{Arrival, LossyWire, RelayNackResponder, ResendCounts, SeqLog};
use crate::signal::{Received, Signal};
use anyhow::Context;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use host::plumbing;
use ome_signalling::messages::{Answer, CandidateInit, Offer, PlayerMessage, ServerMessage, SessionDescription};
use rtc::interceptor::{NackGeneratorBuilder, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RTCPFeedback;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCSessionDescription, Registry, SettingEngineBuilder,
    register_default_interceptors,
};

/// What a peer has seen, readable while it runs.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// The session id the host gave it (0 until known).
    pub id: AtomicU64,
    /// RTP video packets received.
    pub video_packets: AtomicU64,
    /// RTP video packets with a sequence number past the highest one seen on their track: what
    /// was delivered once and in order (no duplicates, no retransmissions).
    pub video_packets_new: AtomicU64,
    /// RTP video packets that filled a gap within [`crate::nack::REPAIR_DEADLINE`] of it: lost
    /// once, resent for a NACK, and in time.
    pub video_packets_repaired: AtomicU64,
    /// How far the new packets advanced the sequence numbers in all: new and repaired packets
    /// over this is the share delivered (1.0 when nothing was lost for good or came too late).
    pub video_seq_span: AtomicU64,
    /// RTP audio packets received.
    pub audio_packets: AtomicU64,
    /// RTP bytes received (12-byte header and payload), audio and video.
    pub rtp_bytes: AtomicU64,
    /// Who it plays from: -1 nobody, 0 the edge, else the host peer's id.
    pub source: AtomicI64,
    /// Offers it accepted.
    pub offers: AtomicU64,
    /// Packets it relayed to its clients.
    pub relayed_packets: AtomicU64,
    /// What its relays did with their clients' NACKs.
    pub resends: Arc<ResendCounts>,
    /// The last error message the host sent it, if any.
    pub last_error: std::sync::Mutex<Option<Value>>,
}

impl PeerStats {
    /// Who it plays from: `None` nobody, `Some(0)` the edge, `Some(h)` host peer `h`.
    pub fn source(&self) -> Option<u32> {
        u32::try_from(self.source.load(Ordering::Relaxed)).ok()
    }
    /// RTP video packets received so far.
    pub fn video(&self) -> u64 {
        self.video_packets.load(Ordering::Relaxed)
    }
    /// Video packets received so far that advanced their track's sequence number.
    pub fn video_new(&self) -> u64 {
        self.video_packets_new.load(Ordering::Relaxed)
    }
    /// Video packets received so far that filled a gap in time (resent for a NACK).
    pub fn video_repaired(&self) -> u64 {
        self.video_packets_repaired.load(Ordering::Relaxed)
    }
    /// Video packets delivered in time so far: new ones and repaired ones.
    pub fn video_delivered(&self) -> u64 {
        self.video_new() + self.video_repaired()
    }
    /// Sequence numbers those packets advanced over, in all (lost and late ones included).
    pub fn video_span(&self) -> u64 {
        self.video_seq_span.load(Ordering::Relaxed)
    }
    /// Its session id.
    pub fn id(&self) -> u32 {
        self.id.load(Ordering::Relaxed) as u32
    }
}

/// A running test peer. Dropping it (or [`PeerAgent::leave`]) closes its socket and connections.
pub struct PeerAgent {
    /// What it has seen.
    pub stats: Arc<PeerStats>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// How a test peer behaves beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerOptions {
    /// As a relay, lose every `n`th video packet on the way to each client (not resends): a
    /// lossy path its clients repair with NACKs. None: no loss of its own.
    pub relay_loss_every: Option<u64>,
}

impl PeerAgent {
    /// Connects to `url` as `user_agent`, asks for the stream and plays it; relays to clients
    /// when asked to (the host decides, from the User-Agent).
    pub async fn join(url: &str, user_agent: &str) -> anyhow::Result<Self> {
        Self::join_with(url, user_agent, PeerOptions::default()).await
    }

    /// [`PeerAgent::join`] with `options`.
    pub async fn join_with(url: &str, user_agent: &str, options: PeerOptions) -> anyhow::Result<Self> {
        let signal = Signal::connect(url, user_agent).await?;
        let stats = Arc::new(PeerStats { source: AtomicI64::new(-1), ..Default::default() });
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(signal, stats.clone(), options, stop_rx));
        Ok(Self { stats, stop: Some(stop_tx), task })
    }

    /// Waits until `cond(stats)` holds, polling; errors after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, what: &str, cond: impl Fn(&PeerStats) -> bool) -> anyhow::Result<Duration> {
        wait_until(timeout, what, || cond(&self.stats))
            .await
            .map_err(|e| anyhow::anyhow!("peer {}: {e} (stats: {:?})", self.stats.id(), self.stats))
    }

    /// Leaves: closes the socket and every connection, as a closed browser tab would.
    pub async fn leave(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Waits until `cond()` holds, polling every 10 ms; returns how long that took, or an error
/// (`{what} not reached in {timeout:?}`) after `timeout`. The polling loop of every test wait.
pub async fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let start = tokio::time::Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            anyhow::bail!("{what} not reached in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(start.elapsed())
}

impl Drop for PeerAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Media received, for relaying: (kind, packet).
type Media = broadcast::Sender<(RtpCodecKind, rtp::Packet)>;

struct Handler {
    gathered: watch::Sender<bool>,
    stats: Option<Arc<PeerStats>>,
    media: Media,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let (Some(stats), media) = (self.stats.clone(), self.media.clone()) else { return };
        tokio::spawn(async move {
            let kind = track.kind().await;
            let mut log = SeqLog::default();
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    let counter = if kind == RtpCodecKind::Video { &stats.video_packets } else { &stats.audio_packets };
                    counter.fetch_add(1, Ordering::Relaxed);
                    stats.rtp_bytes.fetch_add(packet.payload.len() as u64 + 12, Ordering::Relaxed);
                    if kind == RtpCodecKind::Video {
                        match log.arrive(packet.header.sequence_number, std::time::Instant::now()) {
                            Arrival::New(advance) => {
                                stats.video_packets_new.fetch_add(1, Ordering::Relaxed);
                                stats.video_seq_span.fetch_add(u64::from(advance), Ordering::Relaxed);
                            }
                            Arrival::Repaired => {
                                stats.video_packets_repaired.fetch_add(1, Ordering::Relaxed);
                            }
                            Arrival::Late => {}
                        }
                    }
                    // A resend is relayed too: the relay's clients lost it as well (its numbers
                    // are the relay's, rewritten with the same offset as the original's).
                    let _ = media.send((kind, packet));
                }
            }
        });
    }
}

static BIND_ADDRESS: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();

/// Makes every peer of this process gather its candidates on `ip` instead of 127.0.0.1 (for servers
/// that will not do ICE on loopback, e.g. Janus); call once, before the first peer.
pub fn bind_to(ip: std::net::IpAddr) {
    let _ = BIND_ADDRESS.set(ip);
}

fn bind_address() -> std::net::IpAddr {
    *BIND_ADDRESS.get_or_init(|| std::net::Ipv4Addr::LOCALHOST.into())
}

/// A peer connection on loopback (or [`bind_to`]'s address) with the default codecs and the
/// test peers' interceptors ([`peer_interceptors`]); `stats` set means it plays what it gets.
async fn connection(
    stats: Option<Arc<PeerStats>>,
    media: Media,
    resends: Arc<ResendCounts>,
    loss_every: Option<u64>,
) -> anyhow::Result<(Arc<dyn PeerConnection>, watch::Receiver<bool>)> {
    let (gathered_tx, gathered) = watch::channel(false);
    let mut engine = MediaEngine::default();
    engine.register_default_codecs()?;
    let registry = peer_interceptors(&mut engine, resends, loss_every)?;
    let pc = build_connection_with(Handler { gathered: gathered_tx, stats, media }, bind_address(), engine, registry).await?;
    Ok((pc, gathered))
}

/// The default interceptors (`register_default_interceptors`: NACK generator, TWCC receiver,
/// RTCP reports) with [`RelayNackResponder`] as the NACK responder, adding to `resends`, and,
/// with `loss_every`, a [`LossyWire`] between it and the wire.
pub fn peer_interceptors(engine: &mut MediaEngine, resends: Arc<ResendCounts>, loss_every: Option<u64>) -> anyhow::Result<Registry> {
    for parameter in ["", "pli"] {
        engine.register_feedback(RTCPFeedback { typ: "nack".into(), parameter: parameter.into() }, RtpCodecKind::Video);
    }
    let mut registry = Registry::new()
        .with(Slot::NackResponder, RelayNackResponder::new(resends))
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    if let Some(nth) = loss_every {
        // Between the pacer's slot and the responder's: what it drops is in the history.
        registry = registry.with(Slot::Custom((Slot::Pacer.slot() + Slot::NackResponder.slot()) / 2), LossyWire::new(nth));
    }
    configure_simulcast_extension_headers(engine)?;
    let registry = configure_twcc_receiver_only(registry, engine)?;
    Ok(configure_rtcp_reports(registry))
}

/// A player's peer connection as every Rust test peer makes it: the default codecs and
/// interceptors, no mDNS, prflx candidates accepted at once, gathering on `ip` only.
pub async fn build_connection(
    handler: impl PeerConnectionEventHandler + 'static,
    ip: std::net::IpAddr,
) -> anyhow::Result<Arc<dyn PeerConnection>> {
    let mut engine = MediaEngine::default();
    engine.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut engine)?;
    build_connection_with(handler, ip, engine, registry).await
}

/// [`build_connection`] with the caller's codecs and interceptors (no mDNS, prflx candidates
/// accepted at once, gathering on `ip` only).
pub async fn build_connection_with(
    handler: impl PeerConnectionEventHandler + 'static,
    ip: std::net::IpAddr,
    engine: MediaEngine,
    registry: Registry,
) -> anyhow::Result<Arc<dyn PeerConnection>> {
    let setting = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting)
        .with_handler(Arc::new(handler))
        .with_udp_addrs(vec![SocketAddr::new(ip, 0).to_string()])
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// The local description once ICE gathering completes (`gathered` turns true), or after 3 s
/// with the candidates there are by then.
pub async fn local_sdp(pc: &Arc<dyn PeerConnection>, mut gathered: watch::Receiver<bool>) -> anyhow::Result<String> {
    let _ = tokio::time::timeout(Duration::from_secs(3), gathered.wait_for(|g| *g)).await;
    Ok(pc.local_description().await.context("no local description")?.sdp)
}

/// Answers an offer (from the edge or a host peer) and plays what arrives.
async fn play(sdp: &str, candidates: &[CandidateInit], stats: &Arc<PeerStats>, media: &Media) -> anyhow::Result<(Arc<dyn PeerConnection>, String)> {
    let (pc, gathered) = connection(Some(stats.clone()), media.clone(), stats.resends.clone(), None).await?;
    let sdp = answer(&pc, gathered, sdp, candidates).await?;
    Ok((pc, sdp))
}

/// Applies an `offer` message (its SDP and candidates) to `pc` and returns the answer SDP with
/// the candidates gathered (`gathered` turns true when gathering is complete).
pub async fn answer_on(pc: &Arc<dyn PeerConnection>, gathered: watch::Receiver<bool>, offer: &Value) -> anyhow::Result<String> {
    let ServerMessage::Offer(offer) = ServerMessage::read(offer).context("reading the offer")? else { anyhow::bail!("not an offer: {offer}") };
    answer(pc, gathered, &offer.sdp.sdp, offer.candidates.as_deref().unwrap_or_default()).await
}

/// Applies an offer's SDP and candidates to `pc` and returns the answer SDP with the candidates
/// gathered.
async fn answer(pc: &Arc<dyn PeerConnection>, gathered: watch::Receiver<bool>, sdp: &str, candidates: &[CandidateInit]) -> anyhow::Result<String> {
    pc.set_remote_description(RTCSessionDescription::offer(sdp.to_string())?).await?;
    add_offered_candidates(pc, candidates).await;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    local_sdp(pc, gathered).await
}

/// Adds the `candidates` of an OME `offer` message to `pc`. Best effort, as a browser: one
/// unusable candidate (another family, TCP) must not stop the others.
pub async fn add_offered_candidates(pc: &Arc<dyn PeerConnection>, candidates: &[CandidateInit]) {
    for c in candidates.iter().filter(|c| !c.candidate.is_empty()) {
        let init = RTCIceCandidateInit {
            candidate: c.candidate.clone(),
            sdp_mline_index: c.sdp_mline_index,
            sdp_mid: c.sdp_mid.clone(),
            ..Default::default()
        };
        let _ = pc.add_ice_candidate(init).await;
    }
}

/// A bare player for servers with another signalling (e.g. Janus): answers `offer_sdp` and plays
/// what arrives. Returns the connection (closing it ends playback), the answer SDP with its
/// candidates, and what it has seen.
pub async fn answer_offer(offer_sdp: &str) -> anyhow::Result<(Arc<dyn PeerConnection>, String, Arc<PeerStats>)> {
    let stats = Arc::new(PeerStats { source: AtomicI64::new(0), ..Default::default() });
    let media: Media = broadcast::channel(16).0;
    let (pc, sdp) = play(offer_sdp, &[], &stats, &media).await?;
    Ok((pc, sdp, stats))
}

/// One client of this peer acting as a host peer.
struct Relay {
    pc: Arc<dyn PeerConnection>,
    forwarder: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Offers the relayed stream to a client; returns the offer SDP.
    async fn offer(media: &Media, stats: &Arc<PeerStats>, options: PeerOptions) -> anyhow::Result<(Self, String)> {
        let (pc, gathered) = connection(None, media.clone(), stats.resends.clone(), options.relay_loss_every).await?;
        let stream = "relay".to_string();
        let mut tracks = Vec::new();
        let video = plumbing::video_codec(plumbing::VideoCodec::Vp8);
        for (kind, codec, pt) in [(RtpCodecKind::Video, video, plumbing::VIDEO_PT), (RtpCodecKind::Audio, plumbing::opus_codec(), plumbing::AUDIO_PT)] {
            let ssrc = rand::random::<u32>();
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                stream.clone(),
                format!("relay-{kind}"),
                format!("{kind}"),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                    codec,
                    ..Default::default()
                }],
            )));
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![stream.clone()],
                send_encodings: vec![],
            };
            pc.add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(init)).await?;
            tracks.push((kind, track, ssrc, pt));
        }
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let sdp = local_sdp(&pc, gathered).await?;
        let mut received = media.subscribe();
        let stats = stats.clone();
        let forwarder = tokio::spawn(async move {
            let mut rewriters: HashMap<RtpCodecKind, plumbing::RtpRewriter> = HashMap::new();
            loop {
                let (kind, packet) = match received.recv().await {
                    Ok(m) => m,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some((_, track, ssrc, pt)) = tracks.iter().find(|t| t.0 == kind) else { continue };
                let packet = rewriters.entry(kind).or_default().rewrite(&packet, *ssrc, *pt);
                // Before the client connects a write is accepted and lost, which is fine here.
                if track.write_rtp(packet).await.is_ok() {
                    stats.relayed_packets.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok((Self { pc, forwarder }, sdp))
    }

    async fn close(self) {
        self.forwarder.abort();
        let _ = self.pc.close().await;
    }
}

async fn run(mut signal: Signal, stats: Arc<PeerStats>, options: PeerOptions, mut stop: oneshot::Receiver<()>) {
    if let Err(e) = serve(&mut signal, &stats, options, &mut stop).await {
        tracing::debug!("test peer {} ended: {e:#}", stats.id());
    }
    signal.close().await;
}

async fn serve(signal: &mut Signal, stats: &Arc<PeerStats>, options: PeerOptions, stop: &mut oneshot::Receiver<()>) -> anyhow::Result<()> {
    let media: Media = broadcast::channel(1024).0;
    let mut playing: Option<Arc<dyn PeerConnection>> = None;
    let mut relays: HashMap<u32, Relay> = HashMap::new();
    signal.send_message(&PlayerMessage::RequestOffer).await?;
    let result = async {
        loop {
            let message = tokio::select! {
                m = signal.recv(Duration::from_secs(3600)) => m?,
                _ = &mut *stop => return Ok(()),
            };
            let Received::Json(m) = message else { return Ok(()) };
            if m.get("error").is_some() {
                *stats.last_error.lock().unwrap() = Some(m.clone());
                continue;
            }
            match ServerMessage::read(&m).with_context(|| format!("reading {m}"))? {
                ServerMessage::Offer(Offer { id, peer_id: peer, sdp, candidates, .. }) => {
                    stats.id.store(u64::from(id), Ordering::Relaxed);
                    if let Some(old) = playing.take() {
                        let _ = old.close().await;
                    }
                    let (pc, sdp) = play(&sdp.sdp, candidates.as_deref().unwrap_or_default(), stats, &media).await?;
                    playing = Some(pc);
                    stats.source.store(i64::from(peer), Ordering::Relaxed);
                    stats.offers.fetch_add(1, Ordering::Relaxed);
                    signal.send_message(&PlayerMessage::Answer(Answer { id, peer_id: peer, sdp: SessionDescription::answer(sdp), link_reports: false })).await?;
                }
                ServerMessage::RequestOfferP2p(request) => {
                    let (relay, sdp) = Relay::offer(&media, stats, options).await?;
                    relays.insert(request.peer_id, relay);
                    let offer = Offer { id: request.id, peer_id: request.peer_id, sdp: SessionDescription::offer(sdp), candidates: None, code: None, ice_servers: None, p2p_ice_servers: None };
                    signal.send_message(&PlayerMessage::OfferP2p(offer)).await?;
                }
                ServerMessage::AnswerP2p(answer) => {
                    if let Some(relay) = relays.get(&answer.peer_id) {
                        relay.pc.set_remote_description(RTCSessionDescription::answer(answer.sdp.sdp)?).await?;
                    }
                }
                ServerMessage::Stop(stop) => {
                    let peer = stop.peer_id.unwrap_or(0);
                    if let Some(relay) = relays.remove(&peer) {
                        relay.close().await;
                    } else if stats.source() == Some(peer) {
                        // Our host peer left: ask again (the edge will serve us).
                        if let Some(old) = playing.take() {
                            let _ = old.close().await;
                        }
                        stats.source.store(-1, Ordering::Relaxed);
                        signal.send_message(&PlayerMessage::RequestOffer).await?;
                    }
                }
                // Candidates are all in the SDPs (gathering completes before each offer/answer).
                _ => {}
            }
        }
    }
    .await;
    for (_, relay) in relays {
        relay.close().await;
    }
    if let Some(pc) = playing {
        let _ = pc.close().await;
    }
    result
}
