//! The packets of a stream as the edge sends them to viewers and receives them from publishers:
//! one RTP packet with its place in the stream. The hub that numbers and fans them out is the
//! host's (`host::media::StreamHub`).

use rtc::rtp;

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
