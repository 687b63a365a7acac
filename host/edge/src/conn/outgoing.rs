//! The pace of what a viewer is sent beside its live packets: the keyframe cache a joining
//! viewer starts from, spread over the stream's own arrivals, and the sender reports that let
//! its player sync audio and video.

use crate::media::MediaPacket;
use crate::track::Track;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Backlog packets sent per live packet of the stream while a joining viewer catches up: the
/// keyframe cache goes out at this multiple of the stream's own rate, spread over its arrivals
/// instead of in one burst that overflows socket buffers (ours and the viewer's).
pub(super) const BURST_PER_PACKET: usize = 16;

/// Sender reports (for the player's audio/video sync) every this long.
pub(super) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Packets waiting their turn: the keyframe cache given at connect, then live packets that
/// arrived while it drained, in stream order. Sent [`BURST_PER_PACKET`] at a time.
#[derive(Debug, Default)]
pub(super) struct Backlog(VecDeque<Arc<MediaPacket>>);

impl Backlog {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Queues `packets` after those waiting.
    pub(super) fn extend(&mut self, packets: impl IntoIterator<Item = Arc<MediaPacket>>) {
        self.0.extend(packets);
    }

    /// Queues one packet after those waiting.
    pub(super) fn push(&mut self, packet: Arc<MediaPacket>) {
        self.0.push_back(packet);
    }

    /// The next packet to send.
    pub(super) fn pop(&mut self) -> Option<Arc<MediaPacket>> {
        self.0.pop_front()
    }

    /// Drops what waits (the viewer fell behind: it resumes at a keyframe).
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

/// A sender report for each of `tracks` that has sent something, at `now` (`wall` on the wall
/// clock); none if no track has.
pub(super) fn sender_reports<'a>(now: Instant, wall: SystemTime, tracks: impl IntoIterator<Item = &'a Track>) -> Vec<Box<dyn rtc::rtcp::packet::Packet>> {
    tracks.into_iter().filter_map(|track| track.report(now, wall)).map(|r| Box::new(r) as Box<dyn rtc::rtcp::packet::Packet>).collect()
}
