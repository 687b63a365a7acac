//! The keyframe cache: a stream's video packets since its last keyframe, so a joining viewer starts
//! decoding at once instead of waiting for the source's next keyframe (up to a whole GOP: 10 s with
//! ffmpeg's default `-g 250` at 25 fps).
//!
//! Bounded in bytes and in age: a GOP that outgrows either is dropped whole (a partial GOP is no
//! use to a decoder) and the cache stays empty until the next keyframe. Pure: time is an input.

use super::{MediaKind, MediaPacket};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bounds of one stream's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GopLimits {
    /// Payload bytes kept at most; 0 turns the cache off.
    pub max_bytes: usize,
    /// The oldest packet kept, relative to the newest.
    pub max_age: Duration,
}

impl Default for GopLimits {
    fn default() -> Self {
        Self { max_bytes: 4 << 20, max_age: Duration::from_secs(10) }
    }
}

/// The video packets since the last keyframe, with when each arrived.
#[derive(Debug, Default)]
pub struct GopCache {
    limits: GopLimits,
    packets: Vec<(Instant, Arc<MediaPacket>)>,
    bytes: usize,
    /// The RTP timestamp of the keyframe the cache starts with: H.264 marks both its SPS/PPS
    /// packet and its IDR's first fragment as keyframe starts, and they share this timestamp.
    keyframe_timestamp: Option<u32>,
}

impl GopCache {
    /// An empty cache with `limits`.
    pub fn new(limits: GopLimits) -> Self {
        Self { limits, packets: Vec::new(), bytes: 0, keyframe_timestamp: None }
    }

    /// Takes a packet of the stream as it is published.
    pub fn push(&mut self, now: Instant, packet: &Arc<MediaPacket>) {
        if packet.kind != MediaKind::Video || self.limits.max_bytes == 0 {
            return;
        }
        let timestamp = packet.packet.header.timestamp;
        if packet.keyframe_start && self.keyframe_timestamp != Some(timestamp) {
            self.clear();
            self.keyframe_timestamp = Some(timestamp);
        } else if self.packets.is_empty() {
            return; // no keyframe to start from yet
        }
        let size = packet.packet.payload.len();
        let too_old = self.packets.first().is_some_and(|(t, _)| now.saturating_duration_since(*t) > self.limits.max_age);
        if self.bytes + size > self.limits.max_bytes || too_old {
            self.clear();
            return;
        }
        if self.packets.is_empty() {
            self.keyframe_timestamp = Some(timestamp);
        }
        self.bytes += size;
        self.packets.push((now, packet.clone()));
    }

    /// The packets a joining viewer gets first (empty when no complete GOP start is held).
    pub fn snapshot(&self, now: Instant) -> Vec<Arc<MediaPacket>> {
        match self.packets.first() {
            Some((t, _)) if now.saturating_duration_since(*t) <= self.limits.max_age => {
                self.packets.iter().map(|(_, p)| p.clone()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Payload bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.keyframe_timestamp = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp;

    fn packet(index: u64, kind: MediaKind, keyframe_start: bool, size: usize) -> Arc<MediaPacket> {
        let mut packet = rtp::Packet { payload: vec![0u8; size].into(), ..Default::default() };
        packet.header.timestamp = index as u32 * 3000; // one frame per packet
        Arc::new(MediaPacket { index, kind, keyframe_start, packet })
    }

    fn indices(packets: &[Arc<MediaPacket>]) -> Vec<u64> {
        packets.iter().map(|p| p.index).collect()
    }

    #[test]
    fn holds_the_video_since_the_last_keyframe_only() {
        let t0 = Instant::now();
        let mut c = GopCache::new(GopLimits::default());
        c.push(t0, &packet(0, MediaKind::Video, false, 100)); // before any keyframe: useless
        assert!(c.snapshot(t0).is_empty());
        c.push(t0, &packet(1, MediaKind::Video, true, 100));
        c.push(t0, &packet(2, MediaKind::Audio, false, 100));
        c.push(t0, &packet(3, MediaKind::Video, false, 100));
        assert_eq!(indices(&c.snapshot(t0)), vec![1, 3]);
        c.push(t0, &packet(4, MediaKind::Video, true, 100));
        c.push(t0, &packet(5, MediaKind::Video, false, 100));
        assert_eq!(indices(&c.snapshot(t0)), vec![4, 5]);
        assert_eq!(c.bytes(), 200);
    }

    #[test]
    fn a_gop_over_the_byte_bound_is_dropped_whole_until_the_next_keyframe() {
        let t0 = Instant::now();
        let mut c = GopCache::new(GopLimits { max_bytes: 250, max_age: Duration::from_secs(10) });
        c.push(t0, &packet(1, MediaKind::Video, true, 100));
        c.push(t0, &packet(2, MediaKind::Video, false, 100));
        c.push(t0, &packet(3, MediaKind::Video, false, 100));
        assert!(c.snapshot(t0).is_empty(), "over the bound: nothing rather than a partial GOP");
        c.push(t0, &packet(4, MediaKind::Video, false, 10));
        assert!(c.snapshot(t0).is_empty(), "stays empty until a keyframe");
        c.push(t0, &packet(5, MediaKind::Video, true, 10));
        assert_eq!(indices(&c.snapshot(t0)), vec![5]);
    }

    #[test]
    fn a_gop_older_than_the_age_bound_is_not_given_out() {
        let t0 = Instant::now();
        let mut c = GopCache::new(GopLimits { max_bytes: 1 << 20, max_age: Duration::from_secs(2) });
        c.push(t0, &packet(1, MediaKind::Video, true, 10));
        c.push(t0 + Duration::from_secs(1), &packet(2, MediaKind::Video, false, 10));
        assert_eq!(c.snapshot(t0 + Duration::from_secs(1)).len(), 2);
        assert!(c.snapshot(t0 + Duration::from_secs(3)).is_empty(), "source went quiet");
        c.push(t0 + Duration::from_secs(3), &packet(3, MediaKind::Video, false, 10));
        assert!(c.snapshot(t0 + Duration::from_secs(3)).is_empty());
    }

    #[test]
    fn an_h264_keyframe_keeps_its_parameter_sets_before_the_idr() {
        let t0 = Instant::now();
        let mut c = GopCache::new(GopLimits::default());
        let at = |index, keyframe_start, timestamp| {
            let mut p = packet(index, MediaKind::Video, keyframe_start, 10);
            Arc::get_mut(&mut p).unwrap().packet.header.timestamp = timestamp;
            p
        };
        c.push(t0, &at(1, true, 9000)); // STAP-A with SPS and PPS
        c.push(t0, &at(2, true, 9000)); // the IDR's first FU-A fragment, same frame
        c.push(t0, &at(3, false, 9000));
        c.push(t0, &at(4, false, 12000));
        assert_eq!(indices(&c.snapshot(t0)), vec![1, 2, 3, 4]);
        c.push(t0, &at(5, true, 99000)); // the next keyframe starts a new cache
        assert_eq!(indices(&c.snapshot(t0)), vec![5]);
    }

    #[test]
    fn zero_bytes_turns_it_off() {
        let t0 = Instant::now();
        let mut c = GopCache::new(GopLimits { max_bytes: 0, max_age: Duration::from_secs(2) });
        c.push(t0, &packet(1, MediaKind::Video, true, 10));
        assert!(c.snapshot(t0).is_empty());
    }
}
