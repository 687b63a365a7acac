//! What a stream has carried since the host started: the figures behind `/metrics`, the OME-shaped
//! stats API and the P2P page. Counters only (atomics, no locks): the source adds per packet, a
//! session adds when it ends, readers add up the live sessions themselves.

use plugin_api::CloseReason;
use rtc::rtp;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Close reasons in the order of [`StreamCounters::closed`].
pub const CLOSE_REASONS: [CloseReason; 5] =
    [CloseReason::Disconnected, CloseReason::Stopped, CloseReason::EdgeFailed, CloseReason::Error, CloseReason::StreamEnded];

/// The label of a close reason in metrics.
pub fn close_reason_label(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Disconnected => "disconnected",
        CloseReason::Stopped => "stopped",
        CloseReason::EdgeFailed => "edge_failed",
        CloseReason::Error => "error",
        CloseReason::StreamEnded => "stream_ended",
    }
}

/// One stream's counters.
#[derive(Debug)]
pub struct StreamCounters {
    /// When the stream was set up (the host's start), ms since the Unix epoch.
    pub created_ms: u64,
    /// RTP bytes from the source (header and payload: what one viewer is sent of them).
    pub ingest_bytes: AtomicU64,
    /// RTP packets from the source.
    pub ingest_packets: AtomicU64,
    /// Packets the source sent that never arrived (gaps in its sequence numbers).
    pub ingest_lost: AtomicU64,
    /// When the last packet came, ms since the Unix epoch (0: none yet).
    pub last_received_ms: AtomicU64,
    /// Edge RTP bytes sent to the stream's sessions that have ended (live ones count their own).
    pub egress_bytes_ended: AtomicU64,
    /// Bytes viewers got from peers, estimated, over P2P links that have ended: for each link,
    /// the stream's RTP bytes while it was up.
    pub peer_bytes_ended: AtomicU64,
    /// Sessions opened.
    pub opened: AtomicU64,
    /// Sessions open now.
    pub open: AtomicU64,
    /// Edge answers accepted from the stream's viewers: a pull nobody answers is released soon.
    pub answers: AtomicU64,
    /// Sessions closed, by [`CLOSE_REASONS`].
    pub closed: [AtomicU64; 5],
    /// The most sessions at once, and when (ms since the Unix epoch).
    pub max_sessions: AtomicU64,
    /// When `max_sessions` was reached.
    pub max_sessions_at_ms: AtomicU64,
}

/// Now, in ms since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl StreamCounters {
    /// Counters at zero, created now.
    pub fn new() -> Self {
        let now = unix_ms();
        Self {
            created_ms: now,
            ingest_bytes: AtomicU64::new(0),
            ingest_packets: AtomicU64::new(0),
            ingest_lost: AtomicU64::new(0),
            last_received_ms: AtomicU64::new(0),
            egress_bytes_ended: AtomicU64::new(0),
            peer_bytes_ended: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            open: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            closed: Default::default(),
            max_sessions: AtomicU64::new(0),
            max_sessions_at_ms: AtomicU64::new(now),
        }
    }

    /// A packet came from the source.
    pub fn received(&self, packet: &rtp::Packet) {
        self.ingest_bytes.fetch_add(packet.payload.len() as u64 + 12, Ordering::Relaxed);
        self.ingest_packets.fetch_add(1, Ordering::Relaxed);
        self.last_received_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// How long the source has sent nothing, counting from `since` (ms since the Unix epoch) if
    /// it sent nothing after that.
    pub fn silent_for(&self, since: u64) -> Duration {
        let last = self.last_received_ms.load(Ordering::Relaxed).max(since);
        Duration::from_millis(unix_ms().saturating_sub(last))
    }

    /// A session opened.
    pub fn session_opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_sessions.fetch_max(open, Ordering::Relaxed) < open {
            self.max_sessions_at_ms.store(unix_ms(), Ordering::Relaxed);
        }
    }

    /// A session closed for `reason` after the edge sent it `egress_bytes`.
    pub fn session_closed(&self, reason: CloseReason, egress_bytes: u64) {
        let i = CLOSE_REASONS.iter().position(|r| *r == reason).expect("every reason is listed");
        self.closed[i].fetch_add(1, Ordering::Relaxed);
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.egress_bytes_ended.fetch_add(egress_bytes, Ordering::Relaxed);
    }
}

/// Counts packets lost on one RTP stream from its sequence numbers: a forward gap of `n` numbers
/// is `n - 1` lost; a packet from behind (reordered or repeated) counts nothing, and a jump of
/// more than [`LossCounter::MAX_GAP`] is taken as the source restarting, not as loss.
#[derive(Debug, Default)]
pub struct LossCounter {
    last: Option<u16>,
}

impl LossCounter {
    /// A larger jump is a restart.
    pub const MAX_GAP: u16 = 3000;

    /// A packet with `sequence` arrived; returns how many went missing before it.
    pub fn arrived(&mut self, sequence: u16) -> u64 {
        let Some(last) = self.last else {
            self.last = Some(sequence);
            return 0;
        };
        let gap = sequence.wrapping_sub(last);
        if gap == 0 || gap > u16::MAX / 2 {
            return 0; // repeated, or from behind
        }
        self.last = Some(sequence);
        if gap > Self::MAX_GAP { 0 } else { u64::from(gap - 1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_forward_gaps_across_the_wrap_and_not_reordering_or_restarts() {
        let mut c = LossCounter::default();
        let lost: Vec<u64> = [65530u16, 65531, 65534, 1, 0, 1, 2, 9000, 9001].iter().map(|s| c.arrived(*s)).collect();
        assert_eq!(lost, [0, 0, 2, 2, 0, 0, 0, 0, 0]);
    }
}
