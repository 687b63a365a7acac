//! The WebRTC plumbing the edge and the test peers share, written once: the codecs and payload
//! types the edge offers, the host candidate line, and the rewrite that turns a stream's RTP into
//! one viewer's track (its SSRC, its payload type, one continuous run of sequence numbers).

use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use std::net::SocketAddr;

/// The payload type of video in every offer the edge (and a relaying test peer) makes.
pub const VIDEO_PT: u8 = 96;
/// The payload type of Opus audio.
pub const AUDIO_PT: u8 = 111;

/// A video codec a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    #[serde(rename = "VP8")]
    Vp8,
    /// H.264 (RFC 6184), packetization mode 1.
    #[serde(rename = "H264")]
    H264,
}

impl VideoCodec {
    /// The codec an SDP `rtpmap` names (`VP8`, `H264`, any case), if it is one of these.
    pub fn from_rtpmap(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "VP8" => Some(Self::Vp8),
            "H264" => Some(Self::H264),
            _ => None,
        }
    }
}

/// The media sections of an SDP, each from the kind after its `m=` (`video 9 UDP/TLS/...`).
pub fn sdp_sections(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.split("\nm=").skip(1)
}

/// The codec names (`VP8`, `H264`, `VP9`, ...) of a media section's payload types, in the order
/// its `m=` line lists them.
pub fn section_codecs(section: &str) -> impl Iterator<Item = &str> {
    let payload_types = section.lines().next().unwrap_or_default().split_whitespace().skip(3);
    payload_types.filter_map(move |pt| {
        let rtpmap = format!("a=rtpmap:{pt} ");
        section.lines().find_map(|l| l.trim_end().strip_prefix(rtpmap.as_str())).and_then(|c| c.split('/').next())
    })
}

/// The video codec as offered: NACK, PLI and FIR feedback.
pub fn video_codec(codec: VideoCodec) -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback { typ: typ.into(), parameter: parameter.into() };
    let (mime, fmtp) = match codec {
        VideoCodec::Vp8 => (MIME_TYPE_VP8, ""),
        VideoCodec::H264 => (MIME_TYPE_H264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
    };
    RTCRtpCodec {
        mime_type: mime.into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: fmtp.into(),
        rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
    }
}

/// Opus as offered (stereo, in-band FEC).
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

/// Registers exactly the edge's two codecs, at [`VIDEO_PT`] and [`AUDIO_PT`].
pub fn register_codecs(media: &mut MediaEngine, video: VideoCodec) -> Result<(), rtc::shared::error::Error> {
    media.register_codec(RTCRtpCodecParameters { rtp_codec: video_codec(video), payload_type: VIDEO_PT }, RtpCodecKind::Video)?;
    media.register_codec(RTCRtpCodecParameters { rtp_codec: opus_codec(), payload_type: AUDIO_PT }, RtpCodecKind::Audio)
}

/// The payload type of H.264 where a publisher may choose between the video codecs.
pub const H264_PT: u8 = 102;

/// Registers what the edge takes from a publisher: `video` (VP8 at [`VIDEO_PT`], H.264 at
/// [`H264_PT`]) or, when it offers, both, for the publisher to choose; and Opus.
pub fn register_ingest_codecs(media: &mut MediaEngine, video: &[VideoCodec]) -> Result<(), rtc::shared::error::Error> {
    for codec in video {
        let payload_type = if *codec == VideoCodec::Vp8 { VIDEO_PT } else { H264_PT };
        media.register_codec(RTCRtpCodecParameters { rtp_codec: video_codec(*codec), payload_type }, RtpCodecKind::Video)?;
    }
    media.register_codec(RTCRtpCodecParameters { rtp_codec: opus_codec(), payload_type: AUDIO_PT }, RtpCodecKind::Audio)
}

/// The `candidate:` line of a UDP host candidate at `addr` (RFC 8839 5.1), component 1.
pub fn host_candidate(foundation: u32, addr: SocketAddr) -> String {
    // Type preference 126 (host), local preference 65535 - foundation, component 1.
    let priority = (126u32 << 24) | ((65535 - foundation.min(65535)) << 8) | 255;
    format!("candidate:{foundation} 1 udp {priority} {} {} typ host", addr.ip(), addr.port())
}

/// Turns one source's RTP into one receiver's track: that track's SSRC and payload type, header
/// extensions dropped (none is negotiated), and sequence numbers that run on without a gap across
/// every restart (a viewer skipping to the next keyframe, a new source), so a receiver's decoder
/// sees one continuous stream. Timestamps are the source's (already continuous).
#[derive(Debug, Clone)]
pub struct RtpRewriter {
    /// Added to the source's sequence number; set at each restart.
    offset: Option<u16>,
    /// The last sequence number written.
    last: u16,
    /// The source's SSRC of the current run: a new one (a restarted encoder) starts a new run.
    source: Option<u32>,
}

impl Default for RtpRewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl RtpRewriter {
    /// A rewriter whose first sequence number is random (RFC 3550 5.1).
    pub fn new() -> Self {
        Self { offset: None, last: rand::random::<u16>(), source: None }
    }

    /// The next packet starts a new run (after skipped packets): it follows the last one written.
    pub fn restart(&mut self) {
        self.offset = None;
    }

    /// The rewritten copy of `packet` (the payload is shared, not copied).
    pub fn rewrite(&mut self, packet: &rtp::Packet, ssrc: u32, payload_type: u8) -> rtp::Packet {
        rtp::Packet { header: self.header(&packet.header, ssrc, payload_type), payload: packet.payload.clone() }
    }

    /// The rewritten header of a packet whose header is `source`.
    pub fn header(&mut self, source: &rtp::header::Header, ssrc: u32, payload_type: u8) -> rtp::header::Header {
        if self.source != Some(source.ssrc) {
            self.source = Some(source.ssrc);
            self.offset = None;
        }
        let offset = *self.offset.get_or_insert_with(|| self.last.wrapping_add(1).wrapping_sub(source.sequence_number));
        let sequence_number = source.sequence_number.wrapping_add(offset);
        self.last = sequence_number;
        rewritten_header(source, sequence_number, ssrc, payload_type)
    }
}

/// `source` as one receiver's track carries it: numbered `sequence_number`, its SSRC and payload
/// type, no extensions (none is negotiated); marker and timestamp the source's.
pub fn rewritten_header(source: &rtp::header::Header, sequence_number: u16, ssrc: u32, payload_type: u8) -> rtp::header::Header {
    rtp::header::Header {
        version: 2,
        marker: source.marker,
        payload_type,
        sequence_number,
        timestamp: source.timestamp,
        ssrc,
        ..Default::default()
    }
}

/// The codec-level facts the edge needs about a video payload.
/// True if `payload` is the first RTP packet of a keyframe for `codec`.
pub fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_keyframe_start(payload),
        VideoCodec::H264 => h264_keyframe_start(payload),
    }
}

/// VP8 (RFC 7741): start of partition 0 (S=1, PID=0) and the frame tag's P bit clear.
fn vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else { return false };
    let start_of_partition = first & 0x10 != 0 && first & 0x07 == 0;
    if !start_of_partition {
        return false;
    }
    let mut offset = 1;
    if first & 0x80 != 0 {
        // X: extension byte with I/L/T/K flags, then their fields.
        let Some(&ext) = payload.get(1) else { return false };
        offset = 2;
        if ext & 0x80 != 0 {
            // I: picture id, 7 or 15 bits.
            offset += if payload.get(2).is_some_and(|b| b & 0x80 != 0) { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            offset += 1; // L: TL0PICIDX
        }
        if ext & 0x30 != 0 {
            offset += 1; // T/K: TID/KEYIDX
        }
    }
    payload.get(offset).is_some_and(|tag| tag & 0x01 == 0)
}

/// H.264 (RFC 6184): an IDR slice or SPS, alone, first in a STAP-A, or starting an FU-A.
fn h264_keyframe_start(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    let Some(&first) = payload.first() else { return false };
    match first & 0x1f {
        IDR | SPS => true,
        24 => payload.get(3).is_some_and(|nal| matches!(nal & 0x1f, IDR | SPS)),
        28 => payload.get(1).is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes_are_recognised() {
        // S=1, PID=0, no extension; frame tag P=0 (key) vs P=1 (delta).
        assert!(vp8_keyframe_start(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        assert!(!vp8_keyframe_start(&[0x10, 0x01]));
        // Continuation packet (S=0).
        assert!(!vp8_keyframe_start(&[0x00, 0x00]));
        // X=1 with a 15-bit picture id: descriptor is 4 bytes.
        assert!(vp8_keyframe_start(&[0x90, 0x80, 0x81, 0x23, 0x00]));
        assert!(!vp8_keyframe_start(&[0x90, 0x80, 0x81, 0x23, 0x01]));
        assert!(!vp8_keyframe_start(&[]));
    }

    #[test]
    fn h264_keyframes_are_recognised() {
        assert!(h264_keyframe_start(&[0x65]));
        assert!(h264_keyframe_start(&[0x67]));
        assert!(!h264_keyframe_start(&[0x41]));
        assert!(h264_keyframe_start(&[0x78, 0x00, 0x0a, 0x67]));
        assert!(h264_keyframe_start(&[0x7c, 0x85]));
        assert!(!h264_keyframe_start(&[0x7c, 0x05]));
    }

    fn packet(seq: u16) -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.sequence_number = seq;
        p.header.ssrc = 1;
        p.header.payload_type = 100;
        p.header.timestamp = 9000;
        p
    }

    #[test]
    fn sequence_numbers_run_on_across_a_restart_and_wrap() {
        let mut r = RtpRewriter::new();
        let a = r.rewrite(&packet(65534), 7, VIDEO_PT);
        let b = r.rewrite(&packet(65535), 7, VIDEO_PT);
        let c = r.rewrite(&packet(0), 7, VIDEO_PT);
        assert_eq!(b.header.sequence_number, a.header.sequence_number.wrapping_add(1));
        assert_eq!(c.header.sequence_number, a.header.sequence_number.wrapping_add(2));
        assert_eq!((c.header.ssrc, c.header.payload_type, c.header.timestamp), (7, VIDEO_PT, 9000));
        // Skipped to a later packet (a lagging viewer): the next number still follows on.
        r.restart();
        let d = r.rewrite(&packet(500), 7, VIDEO_PT);
        assert_eq!(d.header.sequence_number, c.header.sequence_number.wrapping_add(1));
        let e = r.rewrite(&packet(501), 7, VIDEO_PT);
        assert_eq!(e.header.sequence_number, d.header.sequence_number.wrapping_add(1));
        // A restarted source (new SSRC, new random sequence base) also runs on.
        let mut restarted = packet(40000);
        restarted.header.ssrc = 2;
        let f = r.rewrite(&restarted, 7, VIDEO_PT);
        assert_eq!(f.header.sequence_number, e.header.sequence_number.wrapping_add(1));
    }

    #[test]
    fn the_host_candidate_line_names_the_address() {
        let line = host_candidate(1, "192.0.2.1:10000".parse().unwrap());
        assert_eq!(line, format!("candidate:1 1 udp {} 192.0.2.1 10000 typ host", (126u32 << 24) | (65534 << 8) | 255));
        assert!(host_candidate(2, "[2001:db8::1]:10001".parse().unwrap()).contains(" 2001:db8::1 10001 "));
    }
}
