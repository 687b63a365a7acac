//! What the edge counts, typed: one named field per thing counted, so a misspelt count does not
//! compile. A worker adds to its [`EdgeCounts`] as it routes datagrams and drives connections
//! (what they tell, [`crate::connection::ConnEvent`], and why a datagram was dropped,
//! [`crate::demux::Dropped`]), and hands them to the host's metrics once per turn of its loop:
//! plain numbers here, no atomics and no lock on the path of a packet.

use crate::connection::ConnEvent;
use crate::demux::Dropped;

/// Counts of an edge worker since it last handed them on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EdgeCounts {
    /// Datagrams dropped: a STUN username naming no connection.
    pub dropped_unknown_ufrag: u64,
    /// Datagrams dropped: from an address no connection answered.
    pub dropped_unknown_address: u64,
    /// Datagrams dropped: not STUN, DTLS or RTP/RTCP.
    pub dropped_not_webrtc: u64,
    /// Plain STUN Binding requests answered.
    pub stun_binding_answered: u64,
    /// Plain STUN Binding requests dropped: malformed, not understood, or over their source's rate.
    pub stun_binding_dropped: u64,
    /// Video packets sent again for viewers' NACKs.
    pub packets_resent: u64,
    /// RTP bytes of the streams sent to viewers.
    pub media_bytes_sent: u64,
    /// Viewers started from their stream's keyframe cache.
    pub keyframe_cache_joins: u64,
    /// Times the worker fell behind a stream (its viewers resumed at the next keyframe).
    pub lagged: u64,
    /// Frames dropped for a viewer over ICE-TCP whose write queue was full.
    pub tcp_frames_dropped: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
}

impl EdgeCounts {
    /// A datagram dropped before it reached any connection, for `reason`.
    pub fn dropped(&mut self, reason: Dropped) {
        match reason {
            Dropped::UnknownUfrag => self.dropped_unknown_ufrag += 1,
            Dropped::UnknownAddress => self.dropped_unknown_address += 1,
            Dropped::NotWebRtc => self.dropped_not_webrtc += 1,
        }
    }

    /// What a connection told, if it is a count.
    pub fn event(&mut self, event: &ConnEvent) {
        match event {
            ConnEvent::Resent(n) => self.packets_resent += u64::from(*n),
            ConnEvent::MediaSent(n) => self.media_bytes_sent += n,
            _ => {}
        }
    }

    /// The counts so far, leaving zeros.
    pub fn take(&mut self) -> Self {
        std::mem::take(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_and_event_lands_in_its_own_count() {
        let mut counts = EdgeCounts::default();
        counts.dropped(Dropped::UnknownUfrag);
        counts.dropped(Dropped::NotWebRtc);
        counts.dropped(Dropped::NotWebRtc);
        counts.event(&ConnEvent::Resent(3));
        counts.event(&ConnEvent::MediaSent(1200));
        counts.event(&ConnEvent::KeyframeRequested);
        let taken = counts.take();
        assert_eq!(
            taken,
            EdgeCounts { dropped_unknown_ufrag: 1, dropped_not_webrtc: 2, packets_resent: 3, media_bytes_sent: 1200, ..Default::default() }
        );
        assert_eq!(counts, EdgeCounts::default(), "taken: zeros left");
    }
}
