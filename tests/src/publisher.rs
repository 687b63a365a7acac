//! A test publisher on the `webrtc` crate: it sends a looped VP8 (or H.264) clip and Opus audio
//! to the host's WebRTC ingest, over either of the two ways the host takes a publisher:
//!
//! - **OME WebSocket** ([`Publisher::ome`]): `ws://HOST:PORT/{app}/{stream}?direction=send`, the
//!   client asks with `request_offer`, the server offers recvonly audio and video, the client
//!   answers and trickles its candidates, as OvenLiveKit does. Closing the socket ends it.
//! - **WHIP**, RFC 9725 ([`Publisher::whip`]): the client POSTs its whole offer (sendonly audio
//!   and video, gathered candidates included) as `application/sdp`, gets `201 Created` with the
//!   answer and a `Location`, and ends the session with `DELETE <Location>`.
//!
//! Both start sending as soon as the connection is up: each frame at its time in real time, with
//! RTP timestamps and sequence numbers that run on across loops of the clip (one live source).
//! What was sent and what came back (PLI, FIR) is counted in [`PublisherStats`]. Refusals come
//! back typed ([`PublishError`]) with the HTTP status or OME's `{code, error}`.
//!
//! Media: VP8 is the host's own clip (`host/assets/test-clip.ivf`: 4 s, 30 fps, a keyframe every
//! 15 frames); H.264 is encoded at first use with ffmpeg ([`VideoClip::h264_generated`]: 10 s of
//! `testsrc` at 320x240, 25 fps, baseline, a keyframe every 250 frames), so **H.264 needs
//! `ffmpeg` with libx264**. Audio is the host's `host/assets/test-clip.opus` (Ogg Opus, one 20 ms
//! packet per page), looped on its own. A file cannot make a keyframe when asked for one, so
//! [`Keyframes`] and [`PublishOptions::keyframe_on_request`] say how the publisher moves through
//! the clip instead (skipping ahead to the clip's next keyframe, or replaying inter frames).

use crate::peer::{build_connection_with, local_sdp, wait_until};
use crate::signal::{Received, Signal};
use anyhow::{ensure, Context};
use bytes::Bytes;
use host::plumbing;
use rtc::interceptor::{Attribute, Interceptor, Packet as InterceptorPacket, Slot, StreamInfo, TaggedPacket};
use rtc::media::io::h26x_reader::{H264NalUnitType, H26xNAL, H26xReader};
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use ome_signalling::messages::{Answer, CandidateInit, Offer, PlayerMessage, ServerMessage, SessionDescription, SessionId, Trickle};
use std::collections::VecDeque;
use std::io::Cursor;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::http::Uri;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCIceGatheringState, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
};

/// The video codec a publisher sends (the host's own enum: VP8 or H.264 packetization mode 1).
pub use host::plumbing::VideoCodec;

/// The host's VP8 clip, compiled in: 4 s, 640x360, 30 fps, a keyframe every 15 frames.
const VP8_CLIP: &[u8] = include_bytes!("../../host/assets/test-clip.ivf");
/// The host's Opus clip: 4 s, 48 kHz stereo, one 20 ms packet per Ogg page.
const OPUS_CLIP: &[u8] = include_bytes!("../../host/assets/test-clip.opus");
/// RTP clock of video.
const VIDEO_CLOCK: u64 = 90_000;
/// Samples in one 20 ms Opus packet at 48 kHz.
const OPUS_PACKET_SAMPLES: u32 = 960;
/// Largest RTP payload the publisher sends (what browsers use, well under loopback's MTU).
const RTP_MTU: usize = 1200;
/// The User-Agent of the OME WebSocket upgrade (publishing is never a P2P role).
pub const PUBLISHER_USER_AGENT: &str = "p2p-host-tests publisher (webrtc-rs)";

/// Why a publisher could not start or stop. [`PublishError::code`] gives the number a test
/// asserts on (the HTTP status, or the `code` of OME's error message).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// An HTTP answer other than the one expected: WHIP's POST not `201`, DELETE not `2xx`, or
    /// the OME WebSocket upgrade refused. `body` is the response body as text.
    #[error("HTTP {status}: {body}")]
    Http {
        /// The status code (400, 401, 403, 404, 409, ...).
        status: u16,
        /// The response body (WHIP errors are plain text).
        body: String,
    },
    /// OME's error message, `{"code": N, "error": "..."}`, received instead of an offer.
    #[error("signalling error {code}: {error}")]
    Ome {
        /// OME's `code` (400, 401, 403, 404, 409, 500, ...).
        code: i64,
        /// OME's `error` text.
        error: String,
    },
    /// The OME WebSocket closed before an offer came (with the close frame's code, if any).
    #[error("the signalling socket closed before an offer (close code {0:?})")]
    Closed(Option<u16>),
    /// The server did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Anything else: connection refused, a malformed answer, a WebRTC error.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl PublishError {
    /// The HTTP status or OME error code, if the server gave one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Http { status, .. } => Some(i64::from(*status)),
            Self::Ome { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<webrtc::error::Error> for PublishError {
    fn from(e: webrtc::error::Error) -> Self {
        Self::Other(e.into())
    }
}

/// Which keyframes the publisher sends. A file's keyframes are where they are; the publisher
/// can only choose which frame of the clip to send next, so every mode keeps the bitstream
/// well-formed at the packet level (each frame is a frame of the clip, the first frame sent is a
/// keyframe) while RTP timestamps advance by exactly one frame per frame sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyframes {
    /// The clip as encoded: its own keyframes, and each loop starts on one (VP8 clip: every 15
    /// frames, 0.5 s; generated H.264 clip: every 250 frames, 10 s).
    AsEncoded,
    /// A keyframe exactly every `n` frames (`n` >= 1). When one is due, the publisher jumps to
    /// the clip's next keyframe (the picture skips ahead); when the clip reaches a keyframe that
    /// is not due, the publisher sends the inter frames of the group just finished again instead
    /// (the picture is then wrong: those frames are decoded against the wrong references. VP8
    /// decoders decode them without complaint; H.264 decoders see `frame_num` jump and may
    /// report errors). For keyframe-timing tests, not picture checks.
    EveryFrames(u32),
    /// Only the first frame is a keyframe (and those asked for, with
    /// [`PublishOptions::keyframe_on_request`]); the rest as in [`Keyframes::EveryFrames`] with
    /// an interval that never comes: a source whose keyframes are as sparse as can be.
    FirstOnly,
}

/// How to publish. [`PublishOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Video codec (default VP8). H.264 needs ffmpeg (the clip is encoded at first use).
    pub codec: VideoCodec,
    /// Which keyframes to send (default [`Keyframes::AsEncoded`]).
    pub keyframes: Keyframes,
    /// Answer a PLI or FIR with a keyframe (default true): the next frame sent is the clip's next
    /// keyframe (at most one group of pictures ahead; the picture skips ahead to it). Requests
    /// are counted in [`PublisherStats`] either way.
    pub keyframe_on_request: bool,
    /// Send audio too (default true). Without it the WHIP offer has no audio section, and the
    /// OME answer leaves the server's audio section inactive.
    pub audio: bool,
    /// How long to wait for the server's offer (OME) or HTTP answer (WHIP) (default 10 s).
    pub timeout: Duration,
}

impl PublishOptions {
    /// The defaults with `codec`.
    pub fn new(codec: VideoCodec) -> Self {
        Self {
            codec,
            keyframes: Keyframes::AsEncoded,
            keyframe_on_request: true,
            audio: true,
            timeout: Duration::from_secs(10),
        }
    }
}

impl Default for PublishOptions {
    /// The defaults with VP8.
    fn default() -> Self {
        Self::new(VideoCodec::Vp8)
    }
}

/// What a publisher has sent and received, readable while it runs. Packets count only RTP the
/// WebRTC stack accepted for sending.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// RTP video packets sent.
    pub video_packets: AtomicU64,
    /// RTP audio packets sent.
    pub audio_packets: AtomicU64,
    /// Keyframes sent.
    pub keyframes: AtomicU64,
    /// RTCP Picture Loss Indications received for the video track.
    pub pli_received: AtomicU64,
    /// RTCP Full Intra Requests received for the video track.
    pub fir_received: AtomicU64,
    /// The peer connection is connected (ICE and DTLS up); false again once it fails or closes.
    pub connected: AtomicBool,
    /// The session is over: stopped, the OME socket closed, or the connection failed or closed.
    pub ended: AtomicBool,
    /// The OME session id (0 for WHIP, or before the offer).
    pub session_id: AtomicU64,
    /// ICE candidates trickled to the server (OME only).
    pub candidates_sent: AtomicU64,
}

impl PublisherStats {
    /// RTP video packets sent so far.
    pub fn video(&self) -> u64 {
        self.video_packets.load(Ordering::Relaxed)
    }
    /// RTP audio packets sent so far.
    pub fn audio(&self) -> u64 {
        self.audio_packets.load(Ordering::Relaxed)
    }
    /// Keyframes sent so far.
    pub fn keyframes(&self) -> u64 {
        self.keyframes.load(Ordering::Relaxed)
    }
    /// PLIs plus FIRs received so far.
    pub fn keyframe_requests(&self) -> u64 {
        self.pli_received.load(Ordering::Relaxed) + self.fir_received.load(Ordering::Relaxed)
    }
    /// Whether the connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    /// Whether the session is over.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }
}

/// How the session is held, by protocol.
enum Session {
    /// WHIP: the resource to DELETE (absolute URL) and the token to DELETE it with.
    Whip { location: String, bearer: Option<String>, etag: Option<String> },
    /// OME: the task holding the WebSocket, and the way to tell it to close the socket.
    Ome { stop: oneshot::Sender<()>, task: JoinHandle<()> },
}

/// A running publisher. [`Publisher::stop`] ends it as a client would (WHIP `DELETE`, OME socket
/// closed); dropping it does the same on a best-effort basis (a spawned task, if a runtime runs).
pub struct Publisher {
    /// What it has sent and received.
    pub stats: Arc<PublisherStats>,
    pc: Arc<dyn PeerConnection>,
    media: Vec<JoinHandle<()>>,
    session: Option<Session>,
}

impl Publisher {
    /// Publishes over WHIP to `url` (`http://HOST:PORT/{app}/{stream}?direction=whip`), with
    /// `Authorization: Bearer <bearer>` if given, sending `codec` video and Opus audio.
    pub async fn whip(url: &str, bearer: Option<&str>, codec: VideoCodec) -> Result<Self, PublishError> {
        Self::whip_with(url, bearer, PublishOptions::new(codec)).await
    }

    /// [`Publisher::whip`] with every option.
    pub async fn whip_with(url: &str, bearer: Option<&str>, options: PublishOptions) -> Result<Self, PublishError> {
        let source = Source::load(&options).await?;
        let (gathered_tx, gathered) = watch::channel(false);
        let (connected_tx, connected) = watch::channel(false);
        let stats = Arc::new(PublisherStats::default());
        let handler = Handler { gathered: gathered_tx, connected: connected_tx, stats: stats.clone(), candidates: None };
        let pc = build_connection(handler, options.codec).await?;
        let negotiated = async {
            let tracks = add_tracks(&pc, &options).await?;
            let offer = pc.create_offer(None).await?;
            pc.set_local_description(offer).await?;
            let sdp = local_sdp(&pc, gathered).await?;
            let mut headers = vec![("Content-Type", "application/sdp".to_string()), ("Accept", "application/sdp".to_string())];
            if let Some(token) = bearer {
                headers.push(("Authorization", format!("Bearer {token}")));
            }
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let response = tokio::time::timeout(options.timeout, http_request("POST", url, &headers, &sdp))
                .await
                .map_err(|_| PublishError::Timeout("the WHIP answer"))??;
            if response.status != 201 {
                return Err(PublishError::Http { status: response.status, body: response.body });
            }
            let location = response.header("Location").context("201 Created without a Location header")?;
            let etag = response.header("ETag").map(str::to_string);
            Ok((tracks, resolve_url(url, location)?, etag, response.body))
        }
        .await;
        let (tracks, location, etag, answer) = match negotiated {
            Ok(negotiated) => negotiated,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        let session = Session::Whip { location, bearer: bearer.map(str::to_string), etag };
        let started = async {
            pc.set_remote_description(RTCSessionDescription::answer(answer)?).await?;
            start_media(tracks, source, &options, &stats, connected).await
        }
        .await;
        match started {
            Ok(media) => Ok(Self { stats, pc, media, session: Some(session) }),
            Err(e) => {
                // Leave no session behind on the server.
                let _ = Self { stats, pc, media: Vec::new(), session: Some(session) }.stop().await;
                Err(e)
            }
        }
    }

    /// Publishes over OME's WebSocket signalling to `ws_url`
    /// (`ws://HOST:PORT/{app}/{stream}?direction=send`, a token as `&token=T`; `direction=send`
    /// is added when the URL has no `direction`), sending `codec` video and Opus audio.
    pub async fn ome(ws_url: &str, codec: VideoCodec) -> Result<Self, PublishError> {
        Self::ome_with(ws_url, PublishOptions::new(codec)).await
    }

    /// [`Publisher::ome`] with every option.
    pub async fn ome_with(ws_url: &str, options: PublishOptions) -> Result<Self, PublishError> {
        let source = Source::load(&options).await?;
        let url = if ws_url.contains("direction=") {
            ws_url.to_string()
        } else {
            format!("{ws_url}{}direction=send", if ws_url.contains('?') { '&' } else { '?' })
        };
        let connecting = tokio::time::timeout(options.timeout, Signal::connect(&url, PUBLISHER_USER_AGENT))
            .await
            .map_err(|_| PublishError::Timeout("the WebSocket upgrade"))?;
        let mut signal = connecting.map_err(refused_upgrade)?;
        signal.send_message(&PlayerMessage::RequestOffer).await.context("sending request_offer")?;

        // The offer, or an error, or the socket closing (`recv`'s own, longer timeout never fires first).
        let deadline = tokio::time::Instant::now() + options.timeout;
        let offer = loop {
            let next = tokio::time::timeout_at(deadline, signal.recv(options.timeout * 2)).await.map_err(|_| PublishError::Timeout("the offer"))?;
            let m = match next.context("a JSON message")? {
                Received::Json(m) => m,
                Received::Closed => return Err(PublishError::Closed(signal.close_code)),
            };
            if let Some(error) = m.get("error") {
                let code = m["code"].as_i64().unwrap_or(0);
                return Err(PublishError::Ome { code, error: error.as_str().map_or_else(|| error.to_string(), str::to_string) });
            }
            match ServerMessage::read(&m).with_context(|| format!("reading {m}"))? {
                ServerMessage::Offer(offer) => break offer,
                ServerMessage::Ping => signal.send_message(&PlayerMessage::Pong).await.context("pong")?,
                _ => {}
            }
        };
        let Offer { id, peer_id, sdp: SessionDescription { sdp: offer_sdp, .. }, candidates, .. } = offer;
        let candidates = candidates.unwrap_or_default();

        let (gathered_tx, _gathered) = watch::channel(false);
        let (connected_tx, connected) = watch::channel(false);
        let (candidate_tx, candidate_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(PublisherStats::default());
        stats.session_id.store(u64::from(id), Ordering::Relaxed);
        let handler = Handler { gathered: gathered_tx, connected: connected_tx, stats: stats.clone(), candidates: Some(candidate_tx) };
        let pc = build_connection(handler, options.codec).await?;
        let started = async {
            // As OvenLiveKit: tracks first, then the offer, then the answer.
            // Not peer::answer_on: OME's publishers trickle their candidates, so no waiting for gathering.
            let tracks = add_tracks(&pc, &options).await?;
            pc.set_remote_description(RTCSessionDescription::offer(offer_sdp)?).await?;
            crate::peer::add_offered_candidates(&pc, &candidates).await;
            let answer = pc.create_answer(None).await?;
            pc.set_local_description(answer).await?;
            let answer_sdp = pc.local_description().await.context("no local description")?.sdp;
            let message = PlayerMessage::Answer(Answer { id, peer_id, sdp: SessionDescription::answer(answer_sdp.clone()), link_reports: false });
            signal.send_message(&message).await.context("sending the answer")?;
            let media = start_media(tracks, source, &options, &stats, connected).await?;
            Ok::<_, PublishError>((media, answer_sdp))
        }
        .await;
        let (media, answer_sdp) = match started {
            Ok(started) => started,
            Err(e) => {
                let _ = pc.close().await;
                signal.close().await;
                return Err(e);
            }
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let signalling = OmeSignalling { id, peer_id, mid: first_mid(&answer_sdp), ufrag: ice_ufrag(&answer_sdp) };
        let task = tokio::spawn(signalling.run(signal, candidate_rx, stop_rx, stats.clone(), pc.clone()));
        Ok(Self { stats, pc, media, session: Some(Session::Ome { stop: stop_tx, task }) })
    }

    /// The WHIP session's resource (absolute URL), for tests that DELETE it themselves.
    pub fn location(&self) -> Option<&str> {
        match &self.session {
            Some(Session::Whip { location, .. }) => Some(location),
            _ => None,
        }
    }

    /// The WHIP session's `ETag`, as the server sent it.
    pub fn etag(&self) -> Option<&str> {
        match &self.session {
            Some(Session::Whip { etag, .. }) => etag.as_deref(),
            _ => None,
        }
    }

    /// Waits until `cond(stats)` holds, polling; errors after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, what: &str, cond: impl Fn(&PublisherStats) -> bool) -> anyhow::Result<Duration> {
        wait_until(timeout, what, || cond(&self.stats))
            .await
            .map_err(|e| anyhow::anyhow!("publisher: {e} (stats: {:?})", self.stats))
    }

    /// Waits until the connection is up and the first video packet is sent.
    pub async fn wait_sending(&self, timeout: Duration) -> anyhow::Result<Duration> {
        self.wait_for(timeout, "connected and sending", |s| s.is_connected() && s.video() > 0).await
    }

    /// Ends the session as a client does: WHIP `DELETE <Location>` (an error unless it answers
    /// 2xx), OME: a close frame on the socket. Media stops and the connection closes either way.
    pub async fn stop(mut self) -> Result<(), PublishError> {
        self.teardown().run(Duration::from_secs(10)).await
    }

    /// Stops the media and takes what is left to end, for [`Publisher::stop`] and `drop`.
    fn teardown(&mut self) -> Teardown {
        for task in self.media.drain(..) {
            task.abort();
        }
        Teardown { session: self.session.take(), pc: self.pc.clone(), stats: self.stats.clone() }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let teardown = self.teardown();
        match tokio::runtime::Handle::try_current() {
            // Best effort, in the background: `drop` cannot wait.
            Ok(runtime) => {
                runtime.spawn(teardown.run(Duration::from_secs(2)));
            }
            Err(_) => teardown.abandon(),
        }
    }
}

/// A session to end once its media has stopped.
struct Teardown {
    session: Option<Session>,
    pc: Arc<dyn PeerConnection>,
    stats: Arc<PublisherStats>,
}

impl Teardown {
    /// Ends the session (waiting at most `patience` for the server), then closes the connection.
    async fn run(self, patience: Duration) -> Result<(), PublishError> {
        let result = match self.session {
            Some(Session::Whip { location, bearer, .. }) => delete(&location, bearer.as_deref(), patience).await,
            Some(Session::Ome { stop, task }) => {
                let _ = stop.send(());
                let _ = tokio::time::timeout(patience, task).await;
                Ok(())
            }
            None => Ok(()),
        };
        let _ = self.pc.close().await;
        self.stats.connected.store(false, Ordering::Relaxed);
        self.stats.ended.store(true, Ordering::Relaxed);
        result
    }

    /// Without a runtime nothing can be sent: stops the OME socket's task (the socket goes with it).
    fn abandon(self) {
        if let Some(Session::Ome { task, .. }) = self.session {
            task.abort();
        }
    }
}

async fn delete(location: &str, bearer: Option<&str>, patience: Duration) -> Result<(), PublishError> {
    let authorization = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("Authorization", a.as_str())).collect();
    let response = tokio::time::timeout(patience, http_request("DELETE", location, &headers, ""))
        .await
        .map_err(|_| PublishError::Timeout("the DELETE answer"))??;
    if (200..300).contains(&response.status) {
        Ok(())
    } else {
        Err(PublishError::Http { status: response.status, body: response.body })
    }
}

/// A refused WebSocket upgrade as [`PublishError::Http`], with its status and body.
fn refused_upgrade(e: anyhow::Error) -> PublishError {
    match e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            PublishError::Http { status: response.status().as_u16(), body }
        }
        _ => e.into(),
    }
}

/// The OME WebSocket after the answer: trickles candidates, answers pings, logs errors, and
/// ends the publication when the socket closes (or closes it when told to).
struct OmeSignalling {
    id: SessionId,
    peer_id: SessionId,
    mid: Option<String>,
    ufrag: Option<String>,
}

impl OmeSignalling {
    async fn run(
        self,
        mut signal: Signal,
        mut candidates: mpsc::UnboundedReceiver<RTCIceCandidateInit>,
        mut stop: oneshot::Receiver<()>,
        stats: Arc<PublisherStats>,
        pc: Arc<dyn PeerConnection>,
    ) {
        enum Event {
            Message(anyhow::Result<Received>),
            Candidate(RTCIceCandidateInit),
            Stop,
        }
        let mut trickling = true;
        loop {
            let event = tokio::select! {
                m = signal.recv(Duration::from_secs(3600)) => Event::Message(m),
                c = candidates.recv(), if trickling => match c {
                    Some(c) => Event::Candidate(c),
                    None => { trickling = false; continue }
                },
                _ = &mut stop => Event::Stop,
            };
            match event {
                Event::Candidate(c) => {
                    let candidate = CandidateInit { candidate: c.candidate, sdp_mid: self.mid.clone(), sdp_mline_index: Some(0), username_fragment: self.ufrag.clone() };
                    let message = PlayerMessage::Candidate(Trickle { id: self.id, peer_id: self.peer_id, candidates: vec![candidate] });
                    if signal.send_message(&message).await.is_ok() {
                        stats.candidates_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Event::Stop => {
                    signal.close_and_wait(Duration::from_secs(2)).await;
                    break;
                }
                Event::Message(Ok(Received::Json(m))) => {
                    if m.get("error").is_some() {
                        tracing::debug!("publisher {}: {m}", self.id);
                    } else if matches!(ServerMessage::read(&m), Ok(ServerMessage::Ping)) {
                        let _ = signal.send_message(&PlayerMessage::Pong).await;
                    }
                }
                Event::Message(Ok(Received::Closed)) => {
                    tracing::debug!("publisher {}: the socket closed (code {:?})", self.id, signal.close_code);
                    break;
                }
                // Not JSON, or an hour without a message.
                Event::Message(Err(_)) => {}
            }
        }
        // The socket is the session: without it the publication is over.
        stats.ended.store(true, Ordering::Relaxed);
        let _ = pc.close().await;
    }
}

/// The `a=mid` of the first media section.
fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.strip_prefix("a=mid:")).map(|m| m.trim().to_string())
}

/// The first `a=ice-ufrag`.
fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).map(|m| m.trim().to_string())
}

// ---------------------------------------------------------------------------------------------
// The peer connection
// ---------------------------------------------------------------------------------------------

struct Handler {
    gathered: watch::Sender<bool>,
    connected: watch::Sender<bool>,
    stats: Arc<PublisherStats>,
    /// Where gathered candidates go to be trickled (OME); WHIP sends them in the offer.
    candidates: Option<mpsc::UnboundedSender<RTCIceCandidateInit>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let (Some(tx), Ok(init)) = (&self.candidates, event.candidate.to_json()) {
            let _ = tx.send(init);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let up = state == RTCPeerConnectionState::Connected;
        self.stats.connected.store(up, Ordering::Relaxed);
        self.connected.send_replace(up);
        if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
            self.stats.ended.store(true, Ordering::Relaxed);
        }
    }
}

/// Marks inbound PLI and FIR for the application, so the video track's `poll` yields them (on a
/// default chain inbound RTCP stops inside the interceptors); drops every other inbound RTCP
/// packet after the interceptors have seen it. The webrtc crate's own `rtcp-processing` example.
#[derive(Default)]
struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptorPacket::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> =
                packets.iter().filter(|p| is_pli(p.as_ref()) || is_fir(p.as_ref())).cloned().collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = InterceptorPacket::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

fn is_pli(p: &dyn rtc::rtcp::Packet) -> bool {
    p.as_any().is::<PictureLossIndication>()
}

fn is_fir(p: &dyn rtc::rtcp::Packet) -> bool {
    p.as_any().is::<FullIntraRequest>()
}

/// A publisher's peer connection: exactly the host's codecs (`codec` video with NACK, PLI and
/// FIR feedback, at [`plumbing::VIDEO_PT`]; Opus at [`plumbing::AUDIO_PT`]), on 127.0.0.1.
/// Not `peer::build_connection`: the publisher needs the default interceptors plus [`KeyframeRequests`].
async fn build_connection(handler: Handler, codec: VideoCodec) -> Result<Arc<dyn PeerConnection>, PublishError> {
    let mut engine = MediaEngine::default();
    plumbing::register_codecs(&mut engine, codec).map_err(|e| anyhow::anyhow!("registering codecs: {e}"))?;
    let registry = register_default_interceptors(Registry::new(), &mut engine)?.with(Slot::from(14_000), KeyframeRequests::default());
    Ok(build_connection_with(handler, Ipv4Addr::LOCALHOST.into(), engine, registry).await?)
}

/// One local track and what it sends with.
struct Track {
    kind: RtpCodecKind,
    track: Arc<TrackLocalStaticRTP>,
    transceiver: Arc<dyn webrtc::rtp_transceiver::RtpTransceiver>,
    ssrc: u32,
}

/// Adds the sendonly video (and audio) tracks, in one stream (one `a=msid`).
async fn add_tracks(pc: &Arc<dyn PeerConnection>, options: &PublishOptions) -> Result<Vec<Track>, PublishError> {
    let stream = "publisher".to_string();
    let mut kinds = vec![(RtpCodecKind::Video, plumbing::video_codec(options.codec))];
    if options.audio {
        kinds.push((RtpCodecKind::Audio, plumbing::opus_codec()));
    }
    let mut tracks = Vec::new();
    for (kind, codec) in kinds {
        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream.clone(),
            format!("publisher-{kind}"),
            format!("{kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec,
                ..Default::default()
            }],
        )));
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, streams: vec![stream.clone()], send_encodings: vec![] };
        let transceiver = pc.add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(init)).await?;
        tracks.push(Track { kind, track, transceiver, ssrc });
    }
    Ok(tracks)
}

/// The payload type negotiated for `track`'s codec (the server's, when it offered).
async fn negotiated_payload_type(track: &Track, codec: VideoCodec) -> Result<u8, PublishError> {
    let sender = track.transceiver.sender().await?.context("a transceiver without a sender")?;
    let parameters = sender.get_parameters().await?;
    let wanted = match (track.kind, codec) {
        (RtpCodecKind::Audio, _) => "audio/opus",
        (_, VideoCodec::Vp8) => "video/vp8",
        (_, VideoCodec::H264) => "video/h264",
    };
    let found = parameters
        .rtp_parameters
        .codecs
        .iter()
        .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(wanted))
        // For H.264, packetization mode 1 if there is a choice.
        .max_by_key(|c| c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1"))
        .map(|c| c.payload_type);
    Ok(found.with_context(|| {
        let names: Vec<_> = parameters.rtp_parameters.codecs.iter().map(|c| format!("{}:{}", c.rtp_codec.mime_type, c.payload_type)).collect();
        format!("{wanted} was not negotiated (sender codecs: {names:?})")
    })?)
}

/// Starts the media tasks (video, audio, the video track's RTCP) once negotiation is done; they
/// send from the moment the connection is up.
async fn start_media(
    tracks: Vec<Track>,
    source: Source,
    options: &PublishOptions,
    stats: &Arc<PublisherStats>,
    connected: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, PublishError> {
    let mut tasks = Vec::new();
    for track in tracks {
        let pt = negotiated_payload_type(&track, options.codec).await?;
        let out = Outbound { track: track.track.clone(), ssrc: track.ssrc, pt, stats: stats.clone() };
        if track.kind == RtpCodecKind::Video {
            let requested = Arc::new(AtomicBool::new(false));
            tasks.push(tokio::spawn(read_rtcp(track.track.clone(), stats.clone(), requested.clone())));
            let scheduler = FrameScheduler::new(source.video.keyframe_flags(), options.keyframes);
            let on_request = options.keyframe_on_request;
            tasks.push(tokio::spawn(send_video(source.video.clone(), scheduler, out, requested, on_request, connected.clone())));
        } else {
            tasks.push(tokio::spawn(send_audio(source.audio.clone(), out, connected.clone())));
        }
    }
    Ok(tasks)
}

/// Where a track's packets go, and what they are counted as.
struct Outbound {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pt: u8,
    stats: Arc<PublisherStats>,
}

impl Outbound {
    /// Sends one packet; true if the stack took it.
    async fn send(&self, kind: RtpCodecKind, seq: &mut u16, timestamp: u32, marker: bool, payload: Bytes) -> bool {
        let header = rtp::header::Header {
            version: 2,
            marker,
            payload_type: self.pt,
            sequence_number: *seq,
            timestamp,
            ssrc: self.ssrc,
            ..Default::default()
        };
        *seq = seq.wrapping_add(1);
        if self.track.write_rtp(rtp::Packet { header, payload }).await.is_err() {
            return false;
        }
        let packets = if kind == RtpCodecKind::Video { &self.stats.video_packets } else { &self.stats.audio_packets };
        packets.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Counts the PLIs and FIRs the server sends about the video track and flags a keyframe request.
/// The track yields nothing until it is bound (negotiation done) and after it is unbound.
async fn read_rtcp(track: Arc<TrackLocalStaticRTP>, stats: Arc<PublisherStats>, requested: Arc<AtomicBool>) {
    loop {
        match track.poll().await {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                for p in &packets {
                    let counter = if is_pli(p.as_ref()) {
                        &stats.pli_received
                    } else if is_fir(p.as_ref()) {
                        &stats.fir_received
                    } else {
                        continue;
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    requested.store(true, Ordering::Relaxed);
                }
            }
            Some(_) => {}
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits for the connection to be up (the first frame sent is then one that can arrive).
async fn wait_connected(mut connected: watch::Receiver<bool>) -> bool {
    connected.wait_for(|c| *c).await.is_ok()
}

async fn send_video(
    clip: Arc<VideoClip>,
    mut scheduler: FrameScheduler,
    out: Outbound,
    requested: Arc<AtomicBool>,
    on_request: bool,
    connected: watch::Receiver<bool>,
) {
    if !wait_connected(connected).await {
        return;
    }
    let mut payloader: Box<dyn Payloader + Send> = match clip.codec {
        VideoCodec::Vp8 => {
            // With a picture id, as browsers send it.
            let mut vp8 = Vp8Payloader::default();
            vp8.enable_picture_id = true;
            Box::new(vp8)
        }
        VideoCodec::H264 => Box::new(H264Payloader::default()),
    };
    let mut seq = rand::random::<u16>();
    let base = rand::random::<u32>();
    let start = tokio::time::Instant::now();
    for n in 0u32.. {
        tokio::time::sleep_until(start + clip.frame_interval * n).await;
        let asked = requested.swap(false, Ordering::Relaxed) && on_request;
        let frame = &clip.frames[scheduler.next(asked)];
        let Ok(payloads) = payloader.payload(RTP_MTU, &frame.data) else { continue };
        let timestamp = base.wrapping_add(clip.frame_ticks.wrapping_mul(n));
        let last = payloads.len().saturating_sub(1);
        let mut sent = false;
        for (i, payload) in payloads.into_iter().enumerate() {
            sent |= out.send(RtpCodecKind::Video, &mut seq, timestamp, i == last, payload).await;
        }
        if sent && frame.keyframe {
            out.stats.keyframes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn send_audio(packets: Arc<Vec<Bytes>>, out: Outbound, connected: watch::Receiver<bool>) {
    if packets.is_empty() || !wait_connected(connected).await {
        return;
    }
    let mut seq = rand::random::<u16>();
    let base = rand::random::<u32>();
    let start = tokio::time::Instant::now();
    for n in 0u32.. {
        tokio::time::sleep_until(start + Duration::from_millis(20) * n).await;
        let payload = packets[n as usize % packets.len()].clone();
        out.send(RtpCodecKind::Audio, &mut seq, base.wrapping_add(OPUS_PACKET_SAMPLES.wrapping_mul(n)), false, payload).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Media
// ---------------------------------------------------------------------------------------------

/// One encoded video frame: a VP8 frame, or an H.264 access unit in Annex B.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The encoded frame.
    pub data: Bytes,
    /// Whether it is a keyframe (VP8: the frame tag's P bit clear; H.264: an IDR slice, with
    /// the SPS and PPS put in front when the stream had them only once).
    pub keyframe: bool,
}

/// A video clip the publisher loops.
#[derive(Debug)]
pub struct VideoClip {
    /// Its codec.
    pub codec: VideoCodec,
    /// Its frames in order; the first is a keyframe.
    pub frames: Vec<Frame>,
    /// Time between frames.
    pub frame_interval: Duration,
    /// RTP timestamp ticks (90 kHz) between frames.
    pub frame_ticks: u32,
}

impl VideoClip {
    /// The host's VP8 clip (`host/assets/test-clip.ivf`, compiled in).
    pub fn vp8_builtin() -> anyhow::Result<Arc<Self>> {
        static CLIP: OnceLock<Arc<VideoClip>> = OnceLock::new();
        if let Some(clip) = CLIP.get() {
            return Ok(clip.clone());
        }
        let clip = Arc::new(Self::from_ivf(VP8_CLIP)?);
        Ok(CLIP.get_or_init(|| clip).clone())
    }

    /// A VP8 clip from IVF bytes, at the IVF's frame rate.
    pub fn from_ivf(ivf: &[u8]) -> anyhow::Result<Self> {
        let (mut reader, header) = IVFReader::new(Cursor::new(ivf))?;
        ensure!(&header.four_cc == b"VP80", "not a VP8 IVF file ({:?})", header.four_cc);
        let (num, den) = (u64::from(header.timebase_numerator), u64::from(header.timebase_denominator));
        ensure!(num > 0 && den > 0, "IVF time base {num}/{den}");
        let mut frames = Vec::new();
        let mut timestamps = Vec::new();
        while let Ok((frame, frame_header)) = reader.parse_next_frame() {
            let data = frame.freeze();
            let keyframe = data.first().is_some_and(|tag| tag & 0x01 == 0);
            timestamps.push(frame_header.timestamp);
            frames.push(Frame { data, keyframe });
        }
        // One frame's step in the IVF's time base (1 for ffmpeg's IVF files).
        let step = timestamps.windows(2).map(|w| w[1].saturating_sub(w[0])).find(|d| *d > 0).unwrap_or(1);
        let frame_ticks = step * num * VIDEO_CLOCK / den;
        Self::checked(VideoCodec::Vp8, frames, Duration::from_micros(step * num * 1_000_000 / den), frame_ticks as u32)
    }

    /// An H.264 clip from an Annex B byte stream, at `fps`.
    pub fn from_annex_b(annex_b: &[u8], fps: u32) -> anyhow::Result<Self> {
        let mut reader = H26xReader::new(Cursor::new(annex_b), 1 << 20, false);
        let mut nals = Vec::new();
        while let Ok(nal) = reader.next_nal() {
            if let H26xNAL::H264(nal) = nal {
                nals.push((nal.unit_type, nal.data.freeze()));
            }
        }
        let frames = h264_access_units(nals);
        ensure!(fps > 0, "fps 0");
        Self::checked(VideoCodec::H264, frames, Duration::from_secs(1) / fps, (VIDEO_CLOCK / u64::from(fps)) as u32)
    }

    /// The H.264 clip, encoded once per process with ffmpeg (libx264): 10 s of `testsrc` at
    /// 320x240 and 25 fps, baseline profile, a keyframe every 250 frames (so one per loop).
    pub async fn h264_generated() -> anyhow::Result<Arc<Self>> {
        static CLIP: OnceLock<Result<Arc<VideoClip>, String>> = OnceLock::new();
        if let Some(clip) = CLIP.get() {
            return clip.clone().map_err(anyhow::Error::msg);
        }
        let made = tokio::task::spawn_blocking(|| encode_h264().map(Arc::new).map_err(|e| format!("{e:#}"))).await?;
        CLIP.get_or_init(|| made).clone().map_err(anyhow::Error::msg)
    }

    /// The indices of its keyframes.
    pub fn keyframe_indices(&self) -> Vec<usize> {
        self.frames.iter().enumerate().filter(|(_, f)| f.keyframe).map(|(i, _)| i).collect()
    }

    fn keyframe_flags(&self) -> Vec<bool> {
        self.frames.iter().map(|f| f.keyframe).collect()
    }

    fn checked(codec: VideoCodec, mut frames: Vec<Frame>, frame_interval: Duration, frame_ticks: u32) -> anyhow::Result<Self> {
        // Start on the first keyframe.
        let first = frames.iter().position(|f| f.keyframe).context("the clip has no keyframe")?;
        frames.drain(..first);
        ensure!(!frame_interval.is_zero() && frame_ticks > 0, "the clip has no frame rate");
        Ok(Self { codec, frames, frame_interval, frame_ticks })
    }
}

/// Groups NAL units into access units (Annex B, start codes included): a new one starts at the
/// first non-VCL unit after a VCL one, or at a slice with `first_mb_in_slice` 0 after a VCL
/// one. An IDR access unit without SPS and PPS gets the stream's latest ones in front.
fn h264_access_units(nals: Vec<(H264NalUnitType, Bytes)>) -> Vec<Frame> {
    let is_vcl = |t: H264NalUnitType| {
        matches!(
            t,
            H264NalUnitType::CodedSliceNonIdr
                | H264NalUnitType::CodedSliceDataPartitionA
                | H264NalUnitType::CodedSliceDataPartitionB
                | H264NalUnitType::CodedSliceDataPartitionC
                | H264NalUnitType::CodedSliceIdr
        )
    };
    let mut frames = Vec::new();
    let mut current: Vec<(H264NalUnitType, Bytes)> = Vec::new();
    let (mut sps, mut pps): (Option<Bytes>, Option<Bytes>) = (None, None);
    let mut flush = |units: &mut Vec<(H264NalUnitType, Bytes)>, sps: &Option<Bytes>, pps: &Option<Bytes>| {
        if !units.iter().any(|(t, _)| is_vcl(*t)) {
            return;
        }
        let keyframe = units.iter().any(|(t, _)| *t == H264NalUnitType::CodedSliceIdr);
        let mut data = Vec::new();
        if keyframe && !units.iter().any(|(t, _)| *t == H264NalUnitType::SPS) {
            for unit in [sps, pps].into_iter().flatten() {
                data.extend_from_slice(&[0, 0, 0, 1]);
                data.extend_from_slice(unit);
            }
        }
        for (_, unit) in units.drain(..) {
            data.extend_from_slice(&[0, 0, 0, 1]);
            data.extend_from_slice(&unit);
        }
        frames.push(Frame { data: data.into(), keyframe });
    };
    for (unit_type, data) in nals {
        if data.is_empty() {
            continue;
        }
        let has_vcl = current.iter().any(|(t, _)| is_vcl(*t));
        // ue(v) first_mb_in_slice == 0 is a single 1 bit: the byte after the header has its top bit set.
        let starts_picture = is_vcl(unit_type) && data.get(1).is_some_and(|b| b & 0x80 != 0);
        if has_vcl && (!is_vcl(unit_type) || starts_picture) {
            flush(&mut current, &sps, &pps);
        }
        match unit_type {
            H264NalUnitType::SPS => sps = Some(data.clone()),
            H264NalUnitType::PPS => pps = Some(data.clone()),
            _ => {}
        }
        current.push((unit_type, data));
    }
    flush(&mut current, &sps, &pps);
    frames
}

/// Encodes the H.264 clip with ffmpeg into a temporary file and reads it.
fn encode_h264() -> anyhow::Result<VideoClip> {
    let path = std::env::temp_dir().join(format!("p2p-host-publisher-{}-{}.h264", std::process::id(), rand::random::<u32>()));
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "10"])
        .args(["-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "250"])
        .args(["-bsf:v", "h264_mp4toannexb", "-f", "h264"])
        .arg(&path)
        .status()
        .context("running ffmpeg (H.264 publishing needs ffmpeg with libx264: apt-get install ffmpeg)")?;
    let read = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    ensure!(status.success(), "ffmpeg could not encode the H.264 clip ({status})");
    VideoClip::from_annex_b(&read?, 25)
}

/// The host's Opus clip, one RTP payload per 20 ms packet (its Ogg pages, headers skipped).
fn opus_packets() -> anyhow::Result<Arc<Vec<Bytes>>> {
    static PACKETS: OnceLock<Arc<Vec<Bytes>>> = OnceLock::new();
    if let Some(p) = PACKETS.get() {
        return Ok(p.clone());
    }
    let (mut ogg, _head) = OggReader::new(Cursor::new(OPUS_CLIP), false)?;
    let mut packets = Vec::new();
    while let Ok((page, header)) = ogg.parse_next_page() {
        if header.opus_header_type(&page).is_some() || page.is_empty() {
            continue; // OpusHead, OpusTags
        }
        packets.push(page.freeze());
    }
    ensure!(!packets.is_empty(), "the Opus clip has no packets");
    Ok(PACKETS.get_or_init(|| Arc::new(packets)).clone())
}

/// What a publisher sends.
struct Source {
    video: Arc<VideoClip>,
    audio: Arc<Vec<Bytes>>,
}

impl Source {
    async fn load(options: &PublishOptions) -> Result<Self, PublishError> {
        let video = match options.codec {
            VideoCodec::Vp8 => VideoClip::vp8_builtin()?,
            VideoCodec::H264 => VideoClip::h264_generated().await?,
        };
        Ok(Self { video, audio: opus_packets()? })
    }
}

/// Chooses which frame of the clip to send next, by [`Keyframes`] and keyframe requests.
#[derive(Debug, Clone)]
struct FrameScheduler {
    keyframes: Vec<bool>,
    policy: Keyframes,
    /// The frame that follows, unless a keyframe is due or must be avoided.
    next: usize,
    /// Frames sent since the last keyframe, that one included (None before the first frame).
    since_key: Option<u64>,
}

impl FrameScheduler {
    fn new(keyframes: Vec<bool>, policy: Keyframes) -> Self {
        assert!(keyframes.iter().any(|k| *k), "a clip without keyframes");
        Self { keyframes, policy, next: 0, since_key: None }
    }

    /// The index of the frame to send now; `requested`: a keyframe was asked for.
    fn next(&mut self, requested: bool) -> usize {
        let len = self.keyframes.len();
        let due = match (self.policy, self.since_key) {
            (_, None) => true,
            (Keyframes::EveryFrames(n), Some(since)) => since >= u64::from(n.max(1)),
            _ => false,
        };
        if due || requested {
            while !self.keyframes[self.next] {
                self.next = (self.next + 1) % len;
            }
        } else if self.keyframes[self.next] && self.policy != Keyframes::AsEncoded {
            // Not due: send the inter frames of the group that just ended again.
            let mut start = (self.next + len - 1) % len;
            while !self.keyframes[start] {
                start = (start + len - 1) % len;
            }
            let replay = (start + 1) % len;
            if !self.keyframes[replay] {
                self.next = replay;
            }
        }
        let index = self.next;
        self.next = (index + 1) % len;
        self.since_key = Some(if self.keyframes[index] { 1 } else { self.since_key.unwrap_or(0) + 1 });
        index
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text (chunked transfer decoded).
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client for `http://` URLs (one request per connection,
/// `Connection: close`): sends `method` with `headers` and `body` (with its `Content-Length`
/// when not empty), returns the response. For WHIP and its error cases in tests.
pub async fn http_request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> anyhow::Result<HttpResponse> {
    let uri: Uri = url.parse().with_context(|| format!("URL {url}"))?;
    ensure!(uri.scheme_str() == Some("http"), "only http:// URLs are supported ({url})");
    let host = uri.host().context("URL without host")?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let mut stream = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .with_context(|| format!("connecting {host}:{port}"))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    // Until the response is whole (by its length), or the server closes.
    let mut response = Vec::new();
    while !response_complete(&response) {
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await.context("reading the response")?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    parse_response(&response)
}

/// Whether `buf` holds a whole response: its head, and its body by `Content-Length`, by the last
/// chunk, or none for 1xx, 204 and 304. A response delimited by the connection's end is never
/// complete before it.
fn response_complete(buf: &[u8]) -> bool {
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let body = buf.len() - split - 4;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status.starts_with('1') || status == "204" || status == "304" {
        return true;
    }
    let header = |name: &str| head.lines().skip(1).filter_map(|l| l.split_once(':')).find(|(k, _)| k.trim() == name).map(|(_, v)| v.trim().to_string());
    if header("transfer-encoding").is_some_and(|v| v == "chunked") {
        return buf.ends_with(b"0\r\n\r\n");
    }
    header("content-length").and_then(|v| v.parse::<usize>().ok()).is_some_and(|length| body >= length)
}

fn parse_response(response: &[u8]) -> anyhow::Result<HttpResponse> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").context("a response without the end of its head")?;
    let head = std::str::from_utf8(&response[..split]).context("a response head in UTF-8")?;
    let mut raw_body = &response[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).context("no status line")?.parse().context("a status code")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let find = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let body = if find("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        loop {
            let end = raw_body.windows(2).position(|w| w == b"\r\n").context("a chunk size line")?;
            let size_text = std::str::from_utf8(&raw_body[..end])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).context("a chunk size")?;
            raw_body = &raw_body[end + 2..];
            if size == 0 {
                break;
            }
            ensure!(raw_body.len() >= size, "a truncated chunk");
            out.extend_from_slice(&raw_body[..size]);
            raw_body = raw_body.get(size + 2..).unwrap_or_default();
        }
        out
    } else if let Some(length) = find("Content-Length").and_then(|v| v.parse::<usize>().ok()) {
        raw_body[..length.min(raw_body.len())].to_vec()
    } else {
        raw_body.to_vec()
    };
    Ok(HttpResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// `location` (a `Location` header) resolved against the URL it answered (RFC 3986, the forms
/// servers send: absolute, `//authority/path`, `/path`, or relative to the request's directory).
pub fn resolve_url(base: &str, location: &str) -> anyhow::Result<String> {
    let location = location.trim();
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_string());
    }
    let uri: Uri = base.parse().with_context(|| format!("URL {base}"))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().context("a base URL without authority")?;
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    let path = uri.path();
    let directory = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Ok(format!("{scheme}://{authority}{}{location}", if directory.is_empty() { "/" } else { directory }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scheduler: &mut FrameScheduler, frames: usize, request_at: &[usize]) -> Vec<usize> {
        (0..frames).map(|n| scheduler.next(request_at.contains(&n))).collect()
    }

    #[test]
    fn the_builtin_clips_are_what_the_docs_say() {
        let vp8 = VideoClip::vp8_builtin().unwrap();
        assert_eq!(vp8.frames.len(), 120);
        assert_eq!(vp8.frame_ticks, 3000);
        assert_eq!(vp8.frame_interval, Duration::from_micros(33_333));
        assert_eq!(vp8.keyframe_indices(), (0..120).step_by(15).collect::<Vec<_>>());
        let opus = opus_packets().unwrap();
        assert!((195..=201).contains(&opus.len()), "{} Opus packets", opus.len());
        // Every packet is one 20 ms frame: TOC config 0..=31 with frame code 0 (one frame) and 20 ms.
        assert!(opus.iter().all(|p| p[0] & 0x03 == 0), "one Opus frame per packet");
    }

    #[test]
    fn the_scheduler_skips_ahead_on_request_and_replays_when_keyframes_are_not_due() {
        // Groups of 4: keyframes at 0, 4, 8.
        let flags: Vec<bool> = (0..12).map(|i| i % 4 == 0).collect();
        let mut encoded = FrameScheduler::new(flags.clone(), Keyframes::AsEncoded);
        assert_eq!(run(&mut encoded, 14, &[6]), vec![0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 0, 1, 2, 3]);

        let mut first = FrameScheduler::new(flags.clone(), Keyframes::FirstOnly);
        assert_eq!(run(&mut first, 12, &[9]), vec![0, 1, 2, 3, 1, 2, 3, 1, 2, 4, 5, 6]);

        let mut every = FrameScheduler::new(flags.clone(), Keyframes::EveryFrames(6));
        let sent = run(&mut every, 13, &[]);
        assert_eq!(sent, vec![0, 1, 2, 3, 1, 2, 4, 5, 6, 7, 5, 6, 8]);
        let keys: Vec<usize> = sent.iter().enumerate().filter(|(_, i)| flags[**i]).map(|(n, _)| n).collect();
        assert_eq!(keys, vec![0, 6, 12]);

        let mut often = FrameScheduler::new(flags, Keyframes::EveryFrames(2));
        assert_eq!(run(&mut often, 6, &[]), vec![0, 1, 4, 5, 8, 9]);
    }

    #[test]
    fn h264_nal_units_group_into_access_units_with_parameter_sets_before_each_idr() {
        let nal = |t: H264NalUnitType, bytes: &[u8]| (t, Bytes::copy_from_slice(bytes));
        let units = vec![
            nal(H264NalUnitType::SPS, &[0x67, 1]),
            nal(H264NalUnitType::PPS, &[0x68, 2]),
            nal(H264NalUnitType::CodedSliceIdr, &[0x65, 0x88]),
            nal(H264NalUnitType::CodedSliceNonIdr, &[0x41, 0x9a]),
            nal(H264NalUnitType::CodedSliceNonIdr, &[0x41, 0x9a]),
            nal(H264NalUnitType::CodedSliceNonIdr, &[0x41, 0x01]), // second slice of the same picture
            nal(H264NalUnitType::CodedSliceIdr, &[0x65, 0x88]),
        ];
        let frames = h264_access_units(units);
        assert_eq!(frames.len(), 4);
        assert!(frames[0].keyframe && !frames[1].keyframe && !frames[2].keyframe && frames[3].keyframe);
        assert_eq!(&frames[0].data[..], &[0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 0x88]);
        assert_eq!(&frames[2].data[..], &[0, 0, 0, 1, 0x41, 0x9a, 0, 0, 0, 1, 0x41, 0x01]);
        assert_eq!(frames[3].data, frames[0].data, "the SPS and PPS go in front of a later IDR");
    }

    #[tokio::test]
    async fn a_refused_websocket_upgrade_is_an_http_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let _ = conn.read(&mut [0u8; 4096]).await;
            let _ = conn.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope").await;
        });
        let refused = Publisher::ome(&format!("ws://127.0.0.1:{port}/app/s"), VideoCodec::Vp8).await.err().expect("refused");
        assert!(matches!(&refused, PublishError::Http { status: 403, body } if body == "nope"), "{refused:?}");
    }

    #[test]
    fn responses_parse_and_locations_resolve() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\nlocation: /app/s/k?direction=whip\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nv=0\r\n2\r\n\r\n\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.header("Location"), r.body.as_str()), (201, Some("/app/s/k?direction=whip"), "v=0\r\n"));
        assert!(response_complete(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nv=0\r\n0\r\n\r\n"));
        assert!(!response_complete(b"HTTP/1.1 201 Created\r\nContent-Length: 9\r\n\r\nv=0"));
        assert!(response_complete(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(!response_complete(b"HTTP/1.1 200 OK\r\n\r\nto the end"));
        let r = parse_response(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!extra").unwrap();
        assert_eq!((r.status, r.body.as_str()), (401, "nope!"));
        let base = "http://127.0.0.1:3333/app/stream?direction=whip";
        assert_eq!(resolve_url(base, "/app/stream/abc?direction=whip").unwrap(), "http://127.0.0.1:3333/app/stream/abc?direction=whip");
        assert_eq!(resolve_url(base, "stream/abc").unwrap(), "http://127.0.0.1:3333/app/stream/abc");
        assert_eq!(resolve_url(base, "http://h/x").unwrap(), "http://h/x");
    }
}
