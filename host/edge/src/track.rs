//! One of a viewer's send-only tracks: the rewrite of the stream's RTP into it, what it sent
//! (for sender reports), and the packets a viewer may ask to have resent, kept as references to
//! the stream's packets (shared by every viewer: a viewer's history costs a slot per packet, not
//! a copy).

use crate::media::MediaPacket;
use crate::plumbing::{rewritten_header, RtpRewriter};
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::header::Header;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Packets of a video track a viewer can ask to have resent (~2.5 s of 1 Mbit/s video).
const HISTORY: usize = 256;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A packet sent and kept for resending: its sequence number on the track, and the packet.
type Kept = Option<(u16, Arc<MediaPacket>)>;

/// One send-only track.
pub struct Track {
    pub ssrc: u32,
    pt: u8,
    clock_rate: u32,
    pub rewriter: RtpRewriter,
    /// Sent packets by sequence number modulo [`HISTORY`] (video only: players NACK video).
    history: Option<Box<[Kept]>>,
    packets: u32,
    octets: u32,
    /// The RTP timestamp of the last packet sent, and when.
    last: Option<(u32, Instant)>,
}

impl Track {
    /// A track; `resendable` keeps a history for NACKs.
    pub fn new(pt: u8, clock_rate: u32, resendable: bool) -> Self {
        Self {
            ssrc: rand::random(),
            pt,
            clock_rate,
            rewriter: RtpRewriter::new(),
            history: resendable.then(|| vec![None; HISTORY].into_boxed_slice()),
            packets: 0,
            octets: 0,
            last: None,
        }
    }

    /// The header `packet` goes out with on this track; the packet is counted and kept.
    pub fn next(&mut self, now: Instant, packet: &Arc<MediaPacket>) -> Header {
        let header = self.rewriter.header(&packet.packet.header, self.ssrc, self.pt);
        if let Some(history) = &mut self.history {
            history[header.sequence_number as usize % HISTORY] = Some((header.sequence_number, packet.clone()));
        }
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(packet.packet.payload.len() as u32);
        // The send time of a frame's first packet maps its timestamp (its later packets are
        // spread over the time the frame takes to send).
        if self.last.is_none_or(|(timestamp, _)| timestamp != header.timestamp) {
            self.last = Some((header.timestamp, now));
        }
        header
    }

    /// The header and packet to resend for a NACKed sequence number, if still kept.
    pub fn resend(&self, sequence_number: u16) -> Option<(Header, &Arc<MediaPacket>)> {
        let (kept, packet) = self.history.as_ref()?[sequence_number as usize % HISTORY].as_ref()?;
        (*kept == sequence_number).then(|| (rewritten_header(&packet.packet.header, sequence_number, self.ssrc, self.pt), packet))
    }

    /// A sender report at `now` (`wall` the same moment on the wall clock), once anything was
    /// sent: the RTP time is the last packet's, moved on by the time since.
    pub fn report(&self, now: Instant, wall: SystemTime) -> Option<SenderReport> {
        let (timestamp, at) = self.last?;
        let elapsed = now.saturating_duration_since(at);
        let ticks = (elapsed.as_secs_f64() * f64::from(self.clock_rate)) as u32;
        Some(SenderReport {
            ssrc: self.ssrc,
            ntp_time: ntp(wall),
            rtp_time: timestamp.wrapping_add(ticks),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }
}

/// `wall` as a 64-bit NTP timestamp (RFC 3550 4).
fn ntp(wall: SystemTime) -> u64 {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let seconds = since.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// The plaintext of the packet being sent: a 12-byte RTP header slot and the payload. The
/// payload is copied in once per stream packet, however many viewers send it; each viewer
/// writes its own header over the slot.
#[derive(Default)]
pub struct Plaintext {
    buf: Vec<u8>,
    loaded: Option<Arc<MediaPacket>>,
}

impl Plaintext {
    /// The packet as `header` says (a header without CSRCs or extensions: 12 bytes).
    pub fn with_header(&mut self, packet: &Arc<MediaPacket>, header: &Header) -> &[u8] {
        if !self.loaded.as_ref().is_some_and(|p| Arc::ptr_eq(p, packet)) {
            self.buf.clear();
            self.buf.resize(12, 0);
            self.buf.extend_from_slice(&packet.packet.payload);
            self.loaded = Some(packet.clone());
        }
        self.buf[0] = 0x80;
        self.buf[1] = (u8::from(header.marker) << 7) | header.payload_type;
        self.buf[2..4].copy_from_slice(&header.sequence_number.to_be_bytes());
        self.buf[4..8].copy_from_slice(&header.timestamp.to_be_bytes());
        self.buf[8..12].copy_from_slice(&header.ssrc.to_be_bytes());
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MediaKind;
    use rtc::shared::marshal::{Marshal, Unmarshal};

    fn packet(index: u64, sequence_number: u16, timestamp: u32, marker: bool) -> Arc<MediaPacket> {
        Arc::new(MediaPacket {
            index,
            kind: MediaKind::Video,
            keyframe_start: false,
            packet: rtc::rtp::Packet {
                header: Header { version: 2, marker, payload_type: 100, sequence_number, timestamp, ssrc: 5, ..Default::default() },
                payload: bytes::Bytes::from(vec![index as u8; 100]),
            },
        })
    }

    #[test]
    fn the_plaintext_is_the_marshalled_rewritten_packet() {
        let mut track = Track::new(96, 90_000, true);
        let mut plaintext = Plaintext::default();
        let now = Instant::now();
        for (i, p) in [packet(0, 65_535, 1000, false), packet(1, 0, 1000, true)].iter().enumerate() {
            let header = track.next(now, p);
            let expected = rtc::rtp::Packet { header: header.clone(), payload: p.packet.payload.clone() }.marshal().unwrap();
            assert_eq!(plaintext.with_header(p, &header), &expected[..], "packet {i}");
            let parsed = rtc::rtp::Packet::unmarshal(&mut &expected[..]).unwrap();
            assert_eq!((parsed.header.ssrc, parsed.header.payload_type), (track.ssrc, 96));
        }
    }

    #[test]
    fn nacked_packets_are_resent_as_first_sent_while_kept() {
        let mut track = Track::new(96, 90_000, true);
        let now = Instant::now();
        let first = track.next(now, &packet(0, 10, 1000, true));
        let (header, resent) = track.resend(first.sequence_number).expect("kept");
        assert_eq!((header.sequence_number, header.timestamp, header.marker, resent.index), (first.sequence_number, 1000, true, 0));
        for i in 1..=HISTORY as u64 {
            track.next(now, &packet(i, 10 + i as u16, 1000, false));
        }
        assert!(track.resend(first.sequence_number).is_none(), "overwritten after {HISTORY} packets");
        assert!(Track::new(111, 48_000, false).resend(0).is_none(), "no history kept");
    }

    #[test]
    fn a_sender_report_moves_the_last_timestamp_on_by_the_time_since() {
        let mut track = Track::new(96, 90_000, true);
        let now = Instant::now();
        assert!(track.report(now, SystemTime::now()).is_none(), "nothing sent yet");
        track.next(now, &packet(0, 1, 9000, false));
        let wall = UNIX_EPOCH + Duration::from_millis(1_500);
        let report = track.report(now + Duration::from_millis(500), wall).unwrap();
        assert_eq!(report.rtp_time, 9000 + 45_000);
        assert_eq!((report.packet_count, report.octet_count), (1, 100));
        assert_eq!(report.ntp_time, ((NTP_UNIX_OFFSET + 1) << 32) | (1u64 << 31));
    }
}
