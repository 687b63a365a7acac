//! What a viewer's player sends back (RTCP): keyframe requests, which are its stream's, and
//! NACKs, answered from the connection's own recent packets within a budget; RTCP is opened only
//! from a bounded set of SSRCs.

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use std::time::Instant;

/// Packets resent for a viewer's NACKs, at most: a burst of this many, refilled at this many per
/// second (twice a 1 Mbit/s stream's packet rate). One RTCP datagram can NACK thousands of
/// packets; without a budget a viewer could make the edge send megabytes for every 2 KB it sends.
pub(super) const RESEND_BUDGET: f32 = 200.0;

/// Distinct SSRCs a player's RTCP may come from (a browser uses one or two). The SRTCP context
/// keeps state per SSRC before it authenticates a packet, so junk with ever new SSRCs is dropped
/// here instead of growing it.
pub(super) const RTCP_SSRCS: usize = 8;

/// Resends the viewer may still ask for, and when that was counted: a token bucket of
/// [`RESEND_BUDGET`].
#[derive(Debug)]
pub(super) struct ResendBudget {
    tokens: f32,
    at: Instant,
}

impl ResendBudget {
    /// A full budget at `now`.
    pub(super) fn new(now: Instant) -> Self {
        Self { tokens: RESEND_BUDGET, at: now }
    }

    /// Takes one resend, if any is left.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f32() * RESEND_BUDGET).min(RESEND_BUDGET);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// What one RTCP datagram asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Feedback {
    /// A keyframe (PLI or FIR).
    pub keyframe: bool,
    /// The video packets NACKed, by sequence number, each once, in order; no more than a full
    /// budget.
    pub nacked: Vec<u16>,
}

/// What `packets` ask of the video track `video_ssrc`.
pub(super) fn feedback(packets: &[Box<dyn rtc::rtcp::packet::Packet>], video_ssrc: u32) -> Feedback {
    let mut asked = Feedback::default();
    for packet in packets {
        let any = packet.as_any();
        asked.keyframe |= any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>();
        if let Some(nack) = any.downcast_ref::<TransportLayerNack>().filter(|n| n.media_ssrc == video_ssrc) {
            asked.nacked.extend(nack.nacks.iter().flat_map(|pair| pair.packet_list()).take(RESEND_BUDGET as usize));
        }
    }
    asked.nacked.sort_unstable();
    asked.nacked.dedup();
    // A compound datagram may hold several NACKs, each within the budget: a full budget at most.
    asked.nacked.truncate(RESEND_BUDGET as usize);
    asked
}

/// Whether RTCP from the SSRC in `data` (bytes 4..8, the first packet's sender) may be opened:
/// one seen before, or a new one while fewer than [`RTCP_SSRCS`] were.
pub(super) fn admit_rtcp(seen: &mut Vec<u32>, data: &[u8]) -> bool {
    let Some(ssrc) = data.get(4..8).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) else { return false };
    if seen.contains(&ssrc) {
        return true;
    }
    if seen.len() >= RTCP_SSRCS {
        return false;
    }
    seen.push(ssrc);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    fn nack(first: u16) -> Box<dyn rtc::rtcp::packet::Packet> {
        // 150 pairs of 17 packets each: 2,550 sequence numbers from `first`.
        let nacks = (0..150u16).map(|i| NackPair { packet_id: first.wrapping_add(i * 17), lost_packets: 0xffff }).collect();
        Box::new(TransportLayerNack { sender_ssrc: 1, media_ssrc: 7, nacks })
    }

    #[test]
    fn one_datagram_asks_for_no_more_than_a_full_budget_however_many_nacks_it_holds() {
        let asked = feedback(&[nack(0), nack(10_000), nack(20_000)], 7);
        assert_eq!(asked.nacked.len(), RESEND_BUDGET as usize);
        assert!(asked.nacked.windows(2).all(|w| w[0] < w[1]), "each once, in order");
        assert!(feedback(&[nack(0)], 8).nacked.is_empty(), "another track's NACKs are not the video's");
    }
}
