//! The built-in test stream: a 4 s VP8 + Opus clip compiled into the binary (see
//! `assets/make-test-clip.sh`), packetized once at start and played in a loop in real time, with
//! RTP timestamps and sequence numbers that run on across loops as if it were one live source.

use super::{Feed, MediaKind};
use crate::plumbing::{AUDIO_PT, VIDEO_PT};
use bytes::Bytes;
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;
use rtc::rtp::codec::opus::OpusPayloader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::header::Header;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp::{self};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

const CLIP_VIDEO: &[u8] = include_bytes!("../../assets/test-clip.ivf");
const CLIP_AUDIO: &[u8] = include_bytes!("../../assets/test-clip.opus");
const VIDEO_CLOCK: u64 = 90_000;
const AUDIO_CLOCK: u64 = 48_000;
const OPUS_PACKET_SAMPLES: u64 = 960;
const RTP_MTU: usize = 1200;

/// One packet of the clip, with its send time relative to the clip's start.
struct ClipPacket {
    at: Duration,
    kind: MediaKind,
    timestamp: u32,
    marker: bool,
    payload: Bytes,
}

/// The clip, packetized.
pub struct Clip {
    packets: Vec<ClipPacket>,
    duration: Duration,
    video_ticks: u32,
    audio_ticks: u32,
}

impl Clip {
    /// Packetizes the clip compiled into the binary.
    pub fn builtin() -> anyhow::Result<Self> {
        let (mut ivf, header) = IVFReader::new(Cursor::new(CLIP_VIDEO))?;
        anyhow::ensure!(&header.four_cc == b"VP80", "the built-in clip is not VP8");
        let (num, den) = (u64::from(header.timebase_numerator), u64::from(header.timebase_denominator));
        let mut packets = Vec::new();
        let mut vp8 = Vp8Payloader::default();
        let mut frames = 0u64;
        let mut frame_ticks = 0u64;
        while let Ok((frame, fh)) = ivf.parse_next_frame() {
            let ticks = fh.timestamp * num * VIDEO_CLOCK / den;
            frame_ticks = num * VIDEO_CLOCK / den;
            let parts = vp8.payload(RTP_MTU, &frame.freeze())?;
            let last = parts.len().saturating_sub(1);
            for (i, payload) in parts.into_iter().enumerate() {
                packets.push(ClipPacket {
                    at: Duration::from_micros(ticks * 1_000_000 / VIDEO_CLOCK),
                    kind: MediaKind::Video,
                    timestamp: ticks as u32,
                    marker: i == last,
                    payload,
                });
            }
            frames += 1;
        }
        anyhow::ensure!(frames > 0, "the built-in clip has no video frames");
        let video_ticks = frames * frame_ticks;
        let duration = Duration::from_micros(video_ticks * 1_000_000 / VIDEO_CLOCK);

        let (mut ogg, _head) = OggReader::new(Cursor::new(CLIP_AUDIO), false)?;
        let mut samples = 0u64;
        while let Ok((page, page_header)) = ogg.parse_next_page() {
            if page_header.opus_header_type(&page).is_some() || page.is_empty() {
                continue; // OpusHead / OpusTags
            }
            let at = Duration::from_micros(samples * 1_000_000 / AUDIO_CLOCK);
            if at >= duration {
                break;
            }
            for payload in OpusPayloader.payload(RTP_MTU, &page.freeze())? {
                packets.push(ClipPacket { at, kind: MediaKind::Audio, timestamp: samples as u32, marker: false, payload });
            }
            samples += OPUS_PACKET_SAMPLES;
        }
        packets.sort_by_key(|p| p.at);
        let audio_ticks = (duration.as_micros() as u64 * AUDIO_CLOCK / 1_000_000) as u32;
        Ok(Self { packets, duration, video_ticks: video_ticks as u32, audio_ticks })
    }

    /// The clip's length (one loop).
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

/// Plays `clip` into its stream's `feed` forever, in real time.
pub async fn play(clip: Arc<Clip>, feed: Feed) {
    let ssrc = (rand::random::<u32>(), rand::random::<u32>());
    let mut seq = (rand::random::<u16>(), rand::random::<u16>());
    let start = tokio::time::Instant::now();
    for lap in 0u32.. {
        let lap_start = start + clip.duration * lap;
        for p in &clip.packets {
            tokio::time::sleep_until(lap_start + p.at).await;
            let (ssrc, seq, pt, lap_ticks) = match p.kind {
                MediaKind::Video => (ssrc.0, &mut seq.0, VIDEO_PT, clip.video_ticks),
                MediaKind::Audio => (ssrc.1, &mut seq.1, AUDIO_PT, clip.audio_ticks),
            };
            let header = Header {
                version: 2,
                marker: p.marker,
                payload_type: pt,
                sequence_number: *seq,
                timestamp: p.timestamp.wrapping_add(lap_ticks.wrapping_mul(lap)),
                ssrc,
                ..Default::default()
            };
            *seq = seq.wrapping_add(1);
            feed.packet(p.kind, rtp::Packet { header, payload: p.payload.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::is_keyframe_start;

    #[test]
    fn builtin_clip_is_whole_frames_and_starts_on_a_keyframe() {
        let clip = Clip::builtin().unwrap();
        assert_eq!(clip.duration(), Duration::from_secs(4));
        assert_eq!(clip.video_ticks, 4 * 90_000);
        assert_eq!(clip.audio_ticks, 4 * 48_000);
        let first_video = clip.packets.iter().find(|p| p.kind == MediaKind::Video).unwrap();
        assert!(is_keyframe_start(crate::config::VideoCodec::Vp8, &first_video.payload));
        let keyframes = clip
            .packets
            .iter()
            .filter(|p| p.kind == MediaKind::Video && is_keyframe_start(crate::config::VideoCodec::Vp8, &p.payload))
            .count();
        assert_eq!(keyframes, 8, "a keyframe every 0.5 s");
        let audio = clip.packets.iter().filter(|p| p.kind == MediaKind::Audio).count();
        assert!((195..=200).contains(&audio), "about 4 s of 20 ms Opus packets, got {audio}");
    }
}
