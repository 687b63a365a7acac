//! Media sources and their fan-out point: every stream has one [`StreamHub`] that its source
//! feeds RTP packets into and every viewer's edge connection reads from.

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

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// The stream's video track.
    Video,
    /// The stream's Opus audio track.
    Audio,
}

/// One RTP packet of a stream, as the source sent it (its SSRC and payload type are the source's).
#[derive(Debug, Clone)]
pub struct MediaPacket {
    /// Its place in the stream: 0, 1, 2, ... in the order the source sent them.
    pub index: u64,
    /// Which track it belongs to.
    pub kind: MediaKind,
    /// True if this packet starts a video keyframe: a viewer may start decoding here.
    pub keyframe_start: bool,
    /// The packet.
    pub packet: rtp::Packet,
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
    packets: broadcast::Sender<Arc<MediaPacket>>,
    state: watch::Sender<SourceState>,
    announced: AtomicBool,
    /// Packets published so far: the next packet's index.
    published: AtomicU64,
    gop: Mutex<GopCache>,
    keyframe_requests: Mutex<KeyframeRequests>,
    /// What the stream has carried, for metrics and the stats API.
    pub counters: counters::StreamCounters,
}

/// At most one keyframe request per stream per [`KEYFRAME_REQUEST_INTERVAL`], however many viewers
/// join, fail over or send PLIs.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// The coalescing of keyframe requests to a source.
#[derive(Default)]
struct KeyframeRequests {
    last_sent: Option<Instant>,
    /// A way to ask the source (a WebRTC publisher takes RTCP PLI); `None` for the built-in clip
    /// and RTP ingest, whose keyframes come on their own schedule. True if the request went out.
    sink: Option<KeyframeSink>,
}

/// How a source is asked for a keyframe.
pub type KeyframeSink = Box<dyn Fn() -> bool + Send + Sync>;

impl StreamHub {
    /// A hub for stream `name` whose source sends `video_codec` (and Opus if `has_audio`).
    pub fn new(name: String, video_codec: VideoCodec, has_audio: bool, gop: GopLimits) -> Self {
        Self {
            name,
            video_codec,
            has_audio,
            packets: broadcast::channel(FANOUT_CAPACITY).0,
            state: watch::channel(SourceState::Waiting).0,
            announced: AtomicBool::new(false),
            published: AtomicU64::new(0),
            gop: Mutex::new(GopCache::new(gop)),
            keyframe_requests: Mutex::default(),
            counters: counters::StreamCounters::new(),
        }
    }

    /// Hands a packet from the source to every viewer. One source per hub: calls are sequential.
    pub fn publish(&self, kind: MediaKind, packet: rtp::Packet) {
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

    /// Lets the source be asked for keyframes (`sink` is called once per request, already
    /// coalesced); `None`: it cannot be asked any more (its publisher left).
    pub fn set_keyframe_sink(&self, sink: Option<KeyframeSink>) {
        self.keyframe_requests.lock().expect("keyframe lock").sink = sink;
    }

    /// A viewer needs a keyframe (joined with an empty cache, failed over, sent a PLI). Returns
    /// true if a request went to the source now, false if coalesced or the source cannot take one.
    pub fn request_keyframe(&self, now: Instant) -> bool {
        let mut r = self.keyframe_requests.lock().expect("keyframe lock");
        let Some(sink) = &r.sink else { return false };
        if r.last_sent.is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL) {
            return false;
        }
        let sent = sink();
        r.last_sent = Some(now);
        sent
    }

    /// Marks the source as stopped (silent); viewers watching [`Self::state`] end their sessions.
    pub fn source_stopped(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_are_coalesced_to_one_per_second_per_stream() {
        let hub = StreamHub::new("app/s".into(), VideoCodec::Vp8, false, GopLimits::default());
        let t0 = Instant::now();
        assert!(!hub.request_keyframe(t0), "a source that cannot take requests gets none");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        hub.set_keyframe_sink(Some(Box::new(move || tx.send(()).is_ok())));
        let sent: Vec<bool> = [0, 10, 500, 999, 1000, 1500, 2100]
            .iter()
            .map(|ms| hub.request_keyframe(t0 + Duration::from_millis(*ms)))
            .collect();
        assert_eq!(sent, [true, false, false, false, true, false, true]);
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 3);
    }
}
