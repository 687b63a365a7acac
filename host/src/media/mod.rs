//! Media sources and their fan-out point: every stream has one [`StreamHub`] that every viewer's
//! edge connection reads from, and one [`Feed`], the only way into it, held by its source.
//!
//! Every source is one of [`SourceKind`]'s and feeds its stream the same way, whatever drives
//! it: the built-in clip ([`test_pattern`]) and RTP ingest ([`rtp_ingest`]), both configured and
//! started with the host ([`configured`]), and the edge's connections from WebRTC publishers and
//! to origins (pulls), which hold the feed of the hub that [`crate::streams`] or [`crate::pull`]
//! made for them. A source sends packets ([`Feed::packet`]), may take keyframe requests
//! ([`Feed::take_keyframe_requests`]), and says when it stops ([`Feed::stopped`]).

pub mod configured;
pub mod counters;
pub mod gop;
pub mod rtp_ingest;
pub mod test_pattern;

use crate::config::VideoCodec;
use gop::{GopCache, GopLimits};
use rtc::rtp;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// A stream's packets: the edge transport's own types.
pub use edge_transport::media::{MediaKind, MediaPacket};

/// What feeds a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The built-in looping clip.
    TestPattern,
    /// RTP over UDP (ffmpeg, GStreamer).
    Rtp,
    /// A WebRTC publisher (OvenLiveKit, WHIP).
    WebRtc,
    /// Another host (or OvenMediaEngine), pulled as a player of its signalling.
    Origin,
}

impl SourceKind {
    /// The name OME's API gives it (`input.sourceType`).
    pub fn ome_name(self) -> &'static str {
        match self {
            Self::TestPattern => "TestPattern",
            Self::Rtp => "Rtp",
            Self::WebRtc => "WebRTC",
            Self::Origin => "WebRtcPull",
        }
    }
}

/// Whether a stream's source is sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// No packet yet.
    Waiting,
    /// Packets arrive.
    Live,
    /// The source went silent; viewers are told and closed.
    Stopped,
}

/// How many packets a viewer may fall behind before it skips to the next keyframe (~7 s at 1 Mbit/s).
const FANOUT_CAPACITY: usize = 1024;

/// The fan-out point of one stream.
pub struct StreamHub {
    /// `app/stream`.
    pub name: String,
    /// The video codec the source sends.
    pub video_codec: VideoCodec,
    /// Whether the source sends audio.
    pub has_audio: bool,
    /// What feeds it.
    pub source: SourceKind,
    packets: broadcast::Sender<Arc<MediaPacket>>,
    state: watch::Sender<SourceState>,
    announced: AtomicBool,
    /// Packets published so far: the next packet's index.
    published: AtomicU64,
    gop: Mutex<GopCache>,
    keyframe_requests: Arc<Mutex<KeyframeRequests>>,
    /// What the stream has carried, for metrics and the stats API.
    pub counters: counters::StreamCounters,
}

/// At most one keyframe request per stream per [`KEYFRAME_REQUEST_INTERVAL`], however many viewers
/// join, fail over or send PLIs.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// The coalescing of keyframe requests to a source: one goes out at once, those within the next
/// [`KEYFRAME_REQUEST_INTERVAL`] make one more at its end (a viewer that asked after the first
/// keyframe was made still gets one).
#[derive(Default)]
struct KeyframeRequests {
    last_sent: Option<Instant>,
    /// A request is owed at the end of the interval.
    owed: bool,
    /// A way to ask the source (a WebRTC publisher takes RTCP PLI); `None` for the built-in clip
    /// and RTP ingest, whose keyframes come on their own schedule. True if the request went out.
    sink: Option<KeyframeSink>,
}

/// How a source is asked for a keyframe.
pub type KeyframeSink = Box<dyn Fn() -> bool + Send + Sync>;

impl StreamHub {
    /// Hands a packet from the source to every viewer. One source per hub: calls are sequential.
    fn publish(&self, kind: MediaKind, packet: rtp::Packet) {
        let keyframe_start = kind == MediaKind::Video && is_keyframe_start(self.video_codec, &packet.payload);
        if !self.announced.swap(true, Ordering::Relaxed) {
            tracing::info!(stream = %self.name, "source is live");
        }
        self.state.send_if_modified(|s| std::mem::replace(s, SourceState::Live) != SourceState::Live);
        self.counters.received(&packet);
        let index = self.published.fetch_add(1, Ordering::Relaxed);
        let packet = Arc::new(MediaPacket { index, kind, keyframe_start, packet });
        self.gop.lock().expect("gop lock").push(Instant::now(), &packet);
        let _ = self.packets.send(packet);
    }

    /// The video since the last keyframe, for a joining viewer (empty if none is held).
    pub fn keyframe_cache(&self) -> Vec<Arc<MediaPacket>> {
        self.gop.lock().expect("gop lock").snapshot(Instant::now())
    }

    fn set_keyframe_sink(&self, sink: Option<KeyframeSink>) {
        self.keyframe_requests.lock().expect("keyframe lock").sink = sink;
    }

    /// A viewer needs a keyframe (joined with an empty cache, failed over, sent a PLI). Returns
    /// true if a request went to the source now; false if it will go at the end of the current
    /// interval (coalesced with the others there), or if the source cannot take one.
    pub fn request_keyframe(&self, now: Instant) -> bool {
        let mut r = self.keyframe_requests.lock().expect("keyframe lock");
        let Some(sink) = &r.sink else { return false };
        match r.last_sent.map(|t| t + KEYFRAME_REQUEST_INTERVAL).filter(|due| now < *due) {
            None => {
                let sent = sink();
                r.last_sent = Some(now);
                sent
            }
            Some(due) => {
                if !std::mem::replace(&mut r.owed, true) {
                    let requests = self.keyframe_requests.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(due.into()).await;
                        let mut r = requests.lock().expect("keyframe lock");
                        r.owed = false;
                        if let Some(sink) = &r.sink {
                            sink();
                            r.last_sent = Some(Instant::now());
                        }
                    });
                }
                false
            }
        }
    }

    fn source_stopped(&self) {
        if self.announced.swap(false, Ordering::Relaxed) {
            tracing::warn!(stream = %self.name, "source stopped sending");
        }
        self.state.send_replace(SourceState::Stopped);
    }

    /// A receiver of the stream's packets from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<MediaPacket>> {
        self.packets.subscribe()
    }

    /// The source's state, to watch for it stopping.
    pub fn state(&self) -> watch::Receiver<SourceState> {
        self.state.subscribe()
    }
}

pub use crate::plumbing::is_keyframe_start;

/// The way into one stream, held by its source: viewers read the [`StreamHub`], only the holder
/// of its feed writes it. Clones feed the same stream (a publisher's feed is also kept by
/// [`crate::streams`], which ends the stream when the publisher leaves).
#[derive(Clone)]
pub struct Feed(Arc<StreamHub>);

impl Feed {
    /// A new stream `name` whose `source` sends `video_codec` (and Opus if `has_audio`): its
    /// source's feed ([`Feed::hub`] is the hub, for its viewers).
    pub fn new(name: String, source: SourceKind, video_codec: VideoCodec, has_audio: bool, gop: GopLimits) -> Self {
        Feed(Arc::new(StreamHub {
            name,
            video_codec,
            has_audio,
            source,
            packets: broadcast::channel(FANOUT_CAPACITY).0,
            state: watch::channel(SourceState::Waiting).0,
            announced: AtomicBool::new(false),
            published: AtomicU64::new(0),
            gop: Mutex::new(GopCache::new(gop)),
            keyframe_requests: Arc::default(),
            counters: counters::StreamCounters::new(),
        }))
    }

    /// The stream this feeds, for its viewers.
    pub fn hub(&self) -> &Arc<StreamHub> {
        &self.0
    }

    /// Hands a packet from the source to every viewer. One source per stream: calls are
    /// sequential.
    pub fn packet(&self, kind: MediaKind, packet: rtp::Packet) {
        self.0.publish(kind, packet);
    }

    /// Lets the source be asked for keyframes (`sink` is called once per request, already
    /// coalesced; [`StreamHub::request_keyframe`]); `None`: it cannot be asked any more (its
    /// publisher left). The built-in clip and RTP ingest send keyframes on their own schedule.
    pub fn take_keyframe_requests(&self, sink: Option<KeyframeSink>) {
        self.0.set_keyframe_sink(sink);
    }

    /// The source stopped (went silent, left, or the stream is released): viewers watching
    /// [`StreamHub::state`] end their sessions.
    pub fn stopped(&self) {
        self.0.source_stopped();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keyframe_requests_are_coalesced_to_one_per_second_and_none_is_lost() {
        let feed = Feed::new("app/s".into(), SourceKind::WebRtc, VideoCodec::Vp8, false, GopLimits::default());
        let hub = feed.hub();
        let t0 = Instant::now();
        assert!(!hub.request_keyframe(t0), "a source that cannot take requests gets none");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        feed.take_keyframe_requests(Some(Box::new(move || tx.send(Instant::now()).is_ok())));
        let sent: Vec<bool> = [0, 10, 500, 999].iter().map(|ms| hub.request_keyframe(t0 + Duration::from_millis(*ms))).collect();
        assert_eq!(sent, [true, false, false, false], "one at once, the rest owed");
        let first = rx.recv().await.unwrap();
        let trailing = rx.recv().await.unwrap();
        assert!(trailing >= t0 + KEYFRAME_REQUEST_INTERVAL, "the owed one waits for the interval's end");
        assert!(trailing.duration_since(first) >= Duration::from_millis(900));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err(), "three requests owed make one");
        assert!(hub.request_keyframe(Instant::now() + KEYFRAME_REQUEST_INTERVAL), "a quiet interval later: at once");
    }
}
