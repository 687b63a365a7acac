//! The SDP of a viewer's edge connection, written and read by hand: the offer is always the same
//! shape (one send-only video track, maybe one send-only Opus track, bundled, ICE-lite), and of
//! the answer the edge needs four facts.

use crate::ice_lite::RemoteCredentials;
use crate::plumbing::{self, VideoCodec, AUDIO_PT, VIDEO_PT};
use std::fmt::Write;
use std::net::SocketAddr;

/// What a viewer's offer says.
pub struct OfferParams<'a> {
    /// The media stream id both tracks share (players play `streams[0]`).
    pub stream_id: &'a str,
    pub video_codec: VideoCodec,
    pub video_ssrc: u32,
    /// The audio track's SSRC, if the stream has audio.
    pub audio_ssrc: Option<u32>,
    pub ufrag: &'a str,
    pub pwd: &'a str,
    /// The edge certificate's SHA-256 fingerprint (`AB:CD:...`).
    pub fingerprint: &'a str,
    /// The `candidate:` lines.
    pub candidates: &'a [String],
}

/// `name` as an SDP token (msid, cname): what a stream name may hold beyond `[A-Za-z0-9_.-]`
/// (a space, a line break) becomes `_`, so no name can break or add a line of the offer.
fn token(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect()
}

/// The offer. Candidates go in the first section (everything is bundled on it).
pub fn offer(p: &OfferParams<'_>) -> String {
    let mut sdp = String::with_capacity(2048);
    let session_id = rand::random::<u64>() >> 1;
    let mids = if p.audio_ssrc.is_some() { "0 1" } else { "0" };
    let stream = token(p.stream_id);
    let _ = write!(
        sdp,
        "v=0\r\no=- {session_id} 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 {}\r\na=ice-lite\r\na=group:BUNDLE {mids}\r\na=msid-semantic: WMS {stream}\r\n",
        p.fingerprint
    );
    let video = plumbing::video_codec(p.video_codec);
    let name = video.mime_type.trim_start_matches("video/");
    section(&mut sdp, p, &stream, "video", 0, VIDEO_PT, p.video_ssrc);
    let _ = write!(sdp, "a=rtpmap:{VIDEO_PT} {name}/{}\r\n", video.clock_rate);
    if !video.sdp_fmtp_line.is_empty() {
        let _ = write!(sdp, "a=fmtp:{VIDEO_PT} {}\r\n", video.sdp_fmtp_line);
    }
    for fb in &video.rtcp_feedback {
        let _ = write!(sdp, "a=rtcp-fb:{VIDEO_PT} {}{}{}\r\n", fb.typ, if fb.parameter.is_empty() { "" } else { " " }, fb.parameter);
    }
    for candidate in p.candidates {
        let _ = write!(sdp, "a={candidate}\r\n");
    }
    sdp.push_str("a=end-of-candidates\r\n");
    if let Some(ssrc) = p.audio_ssrc {
        let opus = plumbing::opus_codec();
        section(&mut sdp, p, &stream, "audio", 1, AUDIO_PT, ssrc);
        let _ = write!(sdp, "a=rtpmap:{AUDIO_PT} opus/{}/{}\r\na=fmtp:{AUDIO_PT} {}\r\n", opus.clock_rate, opus.channels, opus.sdp_fmtp_line);
    }
    sdp
}

/// A media section's common lines, up to its codecs (`stream`: the stream id as a token).
fn section(sdp: &mut String, p: &OfferParams<'_>, stream: &str, kind: &str, mid: u8, pt: u8, ssrc: u32) {
    let (ufrag, pwd) = (p.ufrag, p.pwd);
    let _ = write!(
        sdp,
        "m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=setup:actpass\r\na=mid:{mid}\r\n\
         a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=sendonly\r\n\
         a=msid:{stream} {stream}-{kind}\r\na=ssrc:{ssrc} cname:{stream}\r\na=ssrc:{ssrc} msid:{stream} {stream}-{kind}\r\n"
    );
}

/// What the edge takes from a player's answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// The SHA-256 fingerprints of the player's certificate, lower case.
    pub fingerprints: Vec<String>,
    /// The player answered `a=setup:passive`: the edge opens DTLS (as its client).
    pub edge_is_dtls_client: bool,
    /// The player's ICE ufrag and password (the edge's own checks carry them), if it gave both.
    pub ice: Option<RemoteCredentials>,
}

/// Why an answer cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error("the player takes none of the stream's video codec: it cannot play this stream")]
    VideoRejected,
    #[error("the answer names no sha-256 certificate fingerprint")]
    NoFingerprint,
}

/// Reads a player's answer.
pub fn answer(sdp: &str) -> Result<Answer, AnswerError> {
    if plumbing::sdp_sections(sdp).any(|section| section.starts_with("video 0 ")) {
        return Err(AnswerError::VideoRejected);
    }
    let attribute = |name: &'static str| sdp.lines().filter_map(move |l| l.trim_end().strip_prefix(name));
    let fingerprints: Vec<String> = attribute("a=fingerprint:")
        .filter_map(|v| v.split_once(' '))
        .filter(|(algorithm, _)| algorithm.eq_ignore_ascii_case("sha-256"))
        .map(|(_, value)| value.trim().to_ascii_lowercase())
        .collect();
    if fingerprints.is_empty() {
        return Err(AnswerError::NoFingerprint);
    }
    let edge_is_dtls_client = attribute("a=setup:").any(|v| v == "passive");
    let ice = attribute("a=ice-ufrag:")
        .next()
        .zip(attribute("a=ice-pwd:").next())
        .map(|(ufrag, pwd)| RemoteCredentials { ufrag: ufrag.trim().to_owned(), pwd: pwd.trim().to_owned() });
    Ok(Answer { fingerprints, edge_is_dtls_client, ice })
}

/// The candidate lines of `addrs`.
pub fn candidates(addrs: &[SocketAddr]) -> Vec<String> {
    addrs.iter().enumerate().map(|(i, addr)| plumbing::host_candidate(i as u32 + 1, *addr)).collect()
}

/// RFC 6544's direction preference of a passive host candidate (section 4.2): a host candidate's
/// local preference is `2^13 * direction + other`.
const TCP_PASSIVE_DIRECTION: u32 = 4;

/// The candidate lines of the viewer's UDP addresses `udp` then its TCP ones `tcp` (RFC 6544
/// passive: the player connects). A TCP candidate's priority is below every UDP one's (its local
/// preference at most 2^15 + 2^13, theirs near 2^16), so a player uses TCP only when UDP fails.
pub fn viewer_candidates(udp: &[SocketAddr], tcp: &[SocketAddr]) -> Vec<String> {
    let mut lines = candidates(udp);
    for (i, addr) in tcp.iter().enumerate() {
        let foundation = (udp.len() + i) as u32 + 1;
        let local_preference = (TCP_PASSIVE_DIRECTION << 13) | (8191 - foundation.min(8191));
        let priority = (126u32 << 24) | (local_preference << 8) | 255;
        lines.push(format!("candidate:{foundation} 1 tcp {priority} {} {} typ host tcptype passive", addr.ip(), addr.port()));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(candidates: &'a [String], audio: Option<u32>) -> OfferParams<'a> {
        OfferParams {
            stream_id: "app-stream",
            video_codec: VideoCodec::H264,
            video_ssrc: 7,
            audio_ssrc: audio,
            ufrag: "uf",
            pwd: "pw",
            fingerprint: "AB:CD",
            candidates,
        }
    }

    #[test]
    fn the_offer_parses_and_says_what_the_edge_sends() {
        let candidates = candidates(&["10.0.0.1:10000".parse().unwrap()]);
        let sdp = offer(&params(&candidates, Some(9)));
        let parsed = rtc::sdp::SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp.as_bytes())).expect("valid SDP");
        assert_eq!(parsed.media_descriptions.len(), 2);
        let sections: Vec<&str> = plumbing::sdp_sections(&sdp).collect();
        assert_eq!(plumbing::section_codecs(sections[0]).collect::<Vec<_>>(), ["H264"]);
        assert_eq!(plumbing::section_codecs(sections[1]).collect::<Vec<_>>(), ["opus"]);
        assert!(sections[0].contains("a=candidate:1 1 udp") && sections[0].contains("a=sendonly") && sections[0].contains("a=ssrc:7 "));
        assert!(sdp.contains("a=ice-lite") && sdp.contains("a=group:BUNDLE 0 1") && sdp.contains("a=rtcp-fb:96 nack pli"));
        let video_only = offer(&params(&candidates, None));
        assert_eq!(plumbing::sdp_sections(&video_only).count(), 1);
        assert!(video_only.contains("a=group:BUNDLE 0\r\n"));
    }

    #[test]
    fn tcp_candidates_are_passive_and_below_every_udp_one() {
        let lines = viewer_candidates(&["10.0.0.1:10000".parse().unwrap(), "10.0.0.2:10001".parse().unwrap()], &["10.0.0.1:10005".parse().unwrap()]);
        assert_eq!(lines.len(), 3);
        assert!(lines[2].starts_with("candidate:3 1 tcp ") && lines[2].ends_with(" 10.0.0.1 10005 typ host tcptype passive"), "{}", lines[2]);
        let priority = |l: &str| l.split_whitespace().nth(3).unwrap().parse::<u32>().unwrap();
        assert!(priority(&lines[2]) < priority(&lines[1]) && priority(&lines[1]) < priority(&lines[0]));
        for line in &lines {
            let parsed: rtc::ice::candidate::Candidate = rtc::ice::candidate::unmarshal_candidate(line).expect(line);
            assert_eq!(parsed.priority(), priority(line), "{line}");
        }
    }

    #[test]
    fn no_stream_name_can_break_or_add_a_line_of_the_offer() {
        let candidates = candidates(&["10.0.0.1:10000".parse().unwrap()]);
        let name = "live stream\r\na=candidate:9 1 udp 1 203.0.113.9 9 typ host";
        let sdp = offer(&OfferParams { stream_id: name, ..params(&candidates, Some(9)) });
        assert_eq!(sdp.matches("a=candidate:").count(), 1, "{sdp}");
        assert!(sdp.contains("a=msid:live_stream__a_candidate_9_1_udp_1_203.0.113.9_9_typ_host "), "{sdp}");
    }

    #[test]
    fn an_answer_gives_its_fingerprints_and_dtls_role_or_a_reason() {
        let answer_sdp = "v=0\r\na=fingerprint:sha-256 AB:CD\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=setup:active\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert_eq!(answer(answer_sdp), Ok(Answer { fingerprints: vec!["ab:cd".into()], edge_is_dtls_client: false, ice: None }));
        let with_ice = answer_sdp.replace("a=setup:active\r\n", "a=setup:active\r\na=ice-ufrag:Pl4y\r\na=ice-pwd:s3cret/pwd \r\n");
        let ice = RemoteCredentials { ufrag: "Pl4y".into(), pwd: "s3cret/pwd".into() };
        assert_eq!(answer(&with_ice).unwrap().ice, Some(ice), "the player's ICE credentials");
        assert!(answer(&answer_sdp.replace("active", "passive")).unwrap().edge_is_dtls_client);
        assert_eq!(answer(&answer_sdp.replace("m=video 9", "m=video 0")), Err(AnswerError::VideoRejected));
        assert!(answer(&answer_sdp.replace("m=audio 9", "m=audio 0")).is_ok(), "audio alone does not matter");
        assert_eq!(answer(&answer_sdp.replace("sha-256", "sha-1")), Err(AnswerError::NoFingerprint));
    }
}
