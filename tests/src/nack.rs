//! Loss repair for the Rust test peers: a relaying peer answers its clients' generic NACKs
//! (RFC 4585 6.2.1) from the packets it forwarded, as the edge does (`host/src/edge/conn.rs`), and
//! a receiving peer tells a packet repaired in time from one lost.
//!
//! The `rtc` crate's default interceptors already have the receiving side: its NACK generator
//! (every 100 ms, for every gap in its 512-packet receive log) runs on every test peer's
//! connection, and `tests/tests/edge.rs` shows the edge resending what it asks for. Its NACK
//! responder keeps 1024 packets per stream and resends whatever a NACK lists, without a limit;
//! [`RelayNackResponder`] takes its place on the peers' connections with the edge's bounds: a
//! history of [`HISTORY`] packets per SSRC and a budget of [`RESEND_BUDGET`] resends per
//! connection, refilled at that many per second, so one RTCP datagram cannot make a relay send
//! a flood. It also counts what it resent and what it could not.

use rtc::interceptor::{Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::TransportContext;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Packets kept per SSRC for resending: the edge's history (about 2.3 s of the built-in clip's
/// ~110 video packets/s).
pub const HISTORY: usize = 256;

/// Resends per connection, at most: a burst of this many, refilled at this many per second (the
/// edge's `RESEND_BUDGET`).
pub const RESEND_BUDGET: f32 = 200.0;

/// A repaired packet counts as delivered if it arrives within this long of the packet that
/// showed its gap: on loopback the NACK round trip is the generator's 100 ms interval plus
/// scheduling, so a repair later than this is a peer that could not keep up.
pub const REPAIR_DEADLINE: Duration = Duration::from_millis(500);

/// The half of a `Protocol` impl that this file's interceptors share: they pass packets on, in
/// order, from what their `handle_read` and `handle_write` queued (`read_queue`, `write_queue`).
macro_rules! queued_protocol {
    () => {
        type Rout = TaggedPacket;
        type Wout = TaggedPacket;
        type Eout = ();
        type Error = Error;
        type Time = Instant;

        fn poll_read(&mut self) -> Option<TaggedPacket> {
            self.read_queue.pop_front()
        }

        fn poll_write(&mut self) -> Option<TaggedPacket> {
            self.write_queue.pop_front()
        }
    };
}

/// The half of an `Interceptor` impl that this file's interceptors share: remote streams are
/// nothing to them.
macro_rules! no_remote_streams {
    () => {
        fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

        fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
    };
}

/// What a peer's responders did, over all its connections.
#[derive(Debug, Default)]
pub struct ResendCounts {
    /// Packets resent for NACKs.
    pub resent: AtomicU64,
    /// NACKed packets not resent: no longer (or never) in the history, or over the budget.
    pub unanswered: AtomicU64,
}

/// Answers NACKs for the connection's local streams that negotiated generic NACK, from the last
/// [`HISTORY`] packets sent on each, within a budget of [`RESEND_BUDGET`] resends per connection.
/// Resends are the original packets (no RTX), tagged `Retransmission`, and are not kept again.
pub struct RelayNackResponder {
    histories: HashMap<u32, Box<[Option<rtp::Packet>]>>,
    /// Resends left, and when they were last counted.
    budget: (f32, Option<Instant>),
    counts: Arc<ResendCounts>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RelayNackResponder {
    /// A responder that adds what it does to `counts`.
    pub fn new(counts: Arc<ResendCounts>) -> Self {
        Self { histories: HashMap::new(), budget: (RESEND_BUDGET, None), counts, read_queue: VecDeque::new(), write_queue: VecDeque::new() }
    }

    /// Takes one resend from the budget, if any is left.
    fn take_resend(&mut self, now: Instant) -> bool {
        let (tokens, at) = &mut self.budget;
        if let Some(at) = at {
            *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f32() * RESEND_BUDGET).min(RESEND_BUDGET);
        }
        *at = Some(now);
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    fn answer(&mut self, now: Instant, nack: &TransportLayerNack) {
        let Some(history) = self.histories.get(&nack.media_ssrc) else { return };
        let mut wanted: Vec<u16> = nack.nacks.iter().flat_map(|pair| pair.packet_list()).take(4 * RESEND_BUDGET as usize).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let kept: Vec<Option<rtp::Packet>> =
            wanted.iter().map(|&seq| history[usize::from(seq) % HISTORY].as_ref().filter(|p| p.header.sequence_number == seq).cloned()).collect();
        for packet in kept {
            let Some(packet) = packet.filter(|_| self.take_resend(now)) else {
                self.counts.unanswered.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            self.counts.resent.fetch_add(1, Ordering::Relaxed);
            self.write_queue.push_back(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtp(packet)).with(Attribute::Retransmission),
            });
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RelayNackResponder {
    queued_protocol!();

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let nacks: Vec<TransportLayerNack> = packets.iter().filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>().cloned()).collect();
            for nack in &nacks {
                self.answer(msg.now, nack);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(packet) = &msg.message.packet {
            if let Some(history) = self.histories.get_mut(&packet.header.ssrc).filter(|_| !msg.message.has(&Attribute::Retransmission)) {
                history[usize::from(packet.header.sequence_number) % HISTORY] = Some(packet.clone());
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }
}

impl Interceptor for RelayNackResponder {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.rtcp_feedback.iter().any(|fb| fb.typ == "nack" && fb.parameter.is_empty()) {
            self.histories.insert(info.ssrc, vec![None; HISTORY].into_boxed_slice());
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.histories.remove(&info.ssrc);
    }

    no_remote_streams!();
}

/// Loses every `nth` RTP packet of the streams that negotiated NACK on its way to the wire (not
/// resends): a lossy path, for tests. Sits nearer the wire than the responder, so what it drops
/// is in the responder's history.
pub struct LossyWire {
    nth: u64,
    seen: u64,
    ssrcs: Vec<u32>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl LossyWire {
    /// Drops every `nth` packet (`nth` >= 2).
    pub fn new(nth: u64) -> Self {
        Self { nth: nth.max(2), seen: 0, ssrcs: Vec::new(), read_queue: VecDeque::new(), write_queue: VecDeque::new() }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LossyWire {
    queued_protocol!();

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(packet) = &msg.message.packet {
            if !msg.message.has(&Attribute::Retransmission) && self.ssrcs.contains(&packet.header.ssrc) {
                self.seen += 1;
                if self.seen.is_multiple_of(self.nth) {
                    return Ok(());
                }
            }
        }
        self.write_queue.push_back(msg);
        Ok(())
    }
}

impl Interceptor for LossyWire {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.rtcp_feedback.iter().any(|fb| fb.typ == "nack" && fb.parameter.is_empty()) {
            self.ssrcs.push(info.ssrc);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.ssrcs.retain(|&s| s != info.ssrc);
    }

    no_remote_streams!();
}

/// What a receiver makes of one track's sequence numbers: packets new (past the highest seen),
/// packets that filled a gap within [`REPAIR_DEADLINE`] (a NACK answered in time), and how far
/// the numbers advanced. Remembers the last [`SeqLog::WINDOW`] numbers' gaps.
#[derive(Debug)]
pub struct SeqLog {
    highest: Option<u16>,
    /// For each missing number (modulo the window): the number, and when its gap was seen.
    missing: Box<[Option<(u16, Instant)>]>,
}

/// What one packet was to a [`SeqLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Past the highest number seen, which it advanced by this much (1 when in order).
    New(u16),
    /// It filled a gap within the deadline.
    Repaired,
    /// It filled a gap too late, or came twice, or from too far back: not counted.
    Late,
}

impl Default for SeqLog {
    fn default() -> Self {
        Self { highest: None, missing: vec![None; Self::WINDOW].into_boxed_slice() }
    }
}

impl SeqLog {
    /// Sequence numbers whose gaps are remembered.
    pub const WINDOW: usize = 1024;

    /// Takes a packet numbered `seq` arriving at `now`.
    pub fn arrive(&mut self, seq: u16, now: Instant) -> Arrival {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return Arrival::New(1);
        };
        let ahead = seq.wrapping_sub(highest);
        if (1..0x8000).contains(&ahead) {
            for skipped in (1..ahead).rev().take(Self::WINDOW).map(|back| seq.wrapping_sub(back)) {
                self.missing[usize::from(skipped) % Self::WINDOW] = Some((skipped, now));
            }
            self.highest = Some(seq);
            return Arrival::New(ahead);
        }
        let slot = &mut self.missing[usize::from(seq) % Self::WINDOW];
        match slot.take() {
            Some((s, gap)) if s == seq => {
                if now.saturating_duration_since(gap) <= REPAIR_DEADLINE {
                    Arrival::Repaired
                } else {
                    Arrival::Late
                }
            }
            other => {
                *slot = other;
                Arrival::Late
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    fn rtp(ssrc: u32, seq: u16) -> TaggedPacket {
        let packet = rtp::Packet { header: rtp::header::Header { version: 2, ssrc, sequence_number: seq, ..Default::default() }, payload: vec![seq as u8].into() };
        TaggedPacket { now: Instant::now(), transport: TransportContext::default(), message: AttributedPacket::new(Packet::Rtp(packet)) }
    }

    fn nack(now: Instant, ssrc: u32, seqs: &[u16]) -> TaggedPacket {
        let nacks = seqs.iter().map(|&s| NackPair { packet_id: s, lost_packets: 0 }).collect();
        let packet: Box<dyn rtc::rtcp::Packet> = Box::new(TransportLayerNack { sender_ssrc: 1, media_ssrc: ssrc, nacks });
        TaggedPacket { now, transport: TransportContext::default(), message: AttributedPacket::new(Packet::Rtcp(vec![packet])) }
    }

    fn info(ssrc: u32, nack: bool) -> StreamInfo {
        let rtcp_feedback = if nack { vec![rtc::interceptor::RTCPFeedback { typ: "nack".into(), parameter: String::new() }] } else { vec![] };
        StreamInfo { ssrc, rtcp_feedback, ..Default::default() }
    }

    /// Sends `seqs` through the responder (draining what passes) and returns it.
    fn sent(r: &mut RelayNackResponder, ssrc: u32, seqs: impl IntoIterator<Item = u16>) {
        for s in seqs {
            r.handle_write(rtp(ssrc, s)).unwrap();
            while r.poll_write().is_some() {}
        }
    }

    fn resent(r: &mut RelayNackResponder) -> Vec<u16> {
        std::iter::from_fn(|| r.poll_write())
            .map(|m| {
                assert!(m.message.has(&Attribute::Retransmission));
                let Packet::Rtp(p) = m.message.packet else { panic!("not RTP") };
                p.header.sequence_number
            })
            .collect()
    }

    #[test]
    fn a_nacked_packet_is_resent_from_the_history_of_its_ssrc_only_while_kept() {
        let counts = Arc::new(ResendCounts::default());
        let mut r = RelayNackResponder::new(counts.clone());
        r.bind_local_stream(&info(7, true));
        r.bind_local_stream(&info(8, false));
        sent(&mut r, 7, 1000..1300);
        sent(&mut r, 8, 0..10);
        let t = Instant::now();
        r.handle_read(nack(t, 7, &[1299, 1290, 1290])).unwrap();
        assert!(r.poll_read().is_some(), "the NACK goes on up the chain");
        assert_eq!(resent(&mut r), vec![1290, 1299], "each wanted packet once");
        // 1000..1044 were overwritten by 1256..1300 (256 kept).
        r.handle_read(nack(t, 7, &[1000, 1043, 1044])).unwrap();
        assert_eq!(resent(&mut r), vec![1044]);
        r.handle_read(nack(t, 8, &[5])).unwrap();
        assert_eq!(resent(&mut r), Vec::<u16>::new(), "no NACK negotiated: nothing kept");
        assert_eq!((counts.resent.load(Ordering::Relaxed), counts.unanswered.load(Ordering::Relaxed)), (3, 2));
    }

    #[test]
    fn resends_stop_at_the_budget_and_refill_at_its_rate() {
        let mut r = RelayNackResponder::new(Arc::default());
        r.bind_local_stream(&info(7, true));
        sent(&mut r, 7, 0..256);
        let t = Instant::now();
        let all: Vec<u16> = (0..256).collect();
        r.handle_read(nack(t, 7, &all)).unwrap();
        assert_eq!(resent(&mut r).len(), RESEND_BUDGET as usize, "a burst of at most the budget");
        r.handle_read(nack(t + Duration::from_millis(100), 7, &all)).unwrap();
        assert_eq!(resent(&mut r).len(), RESEND_BUDGET as usize / 10, "100 ms refill a tenth");
    }

    #[test]
    fn the_seq_log_counts_a_gap_filled_in_time_and_nothing_else() {
        let t = Instant::now();
        let mut log = SeqLog::default();
        assert_eq!(log.arrive(65534, t), Arrival::New(1));
        assert_eq!(log.arrive(2, t), Arrival::New(4), "across the wrap: 65535, 0, 1 missing");
        assert_eq!(log.arrive(0, t + Duration::from_millis(100)), Arrival::Repaired);
        assert_eq!(log.arrive(0, t + Duration::from_millis(150)), Arrival::Late, "a duplicate");
        assert_eq!(log.arrive(65535, t + REPAIR_DEADLINE + Duration::from_millis(1)), Arrival::Late, "too late");
        assert_eq!(log.arrive(1, t + REPAIR_DEADLINE), Arrival::Repaired);
        assert_eq!(log.arrive(2, t), Arrival::Late, "never missing");
        assert_eq!(log.arrive(3, t), Arrival::New(1));
    }
}
