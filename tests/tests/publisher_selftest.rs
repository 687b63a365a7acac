//! The test publisher (`tests::publisher`) against tiny in-test servers made with the `webrtc`
//! crate, on loopback: a WHIP endpoint (a hand-written HTTP/1.1 server) and an OME-style WebSocket
//! endpoint. They prove the publisher's side of both protocols and that its media flows (VP8,
//! H.264 when ffmpeg is there, Opus), with continuous RTP timestamps, and that a PLI is counted
//! and answered with a keyframe. They do not prove anything about the host's ingest.

use host::plumbing::{self, VideoCodec};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tests::peer::{build_connection_with, local_sdp, wait_until};
use tests::publisher::{Keyframes, PublishError, PublishOptions, Publisher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCSessionDescription, Registry,
};

/// One test at a time: each runs a WebRTC server and a publisher (and one an ffmpeg encode) on two
/// cores; run side by side, a starved receiver lost the keyframe a PLI had asked for.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(10);

/// What the in-test server received.
#[derive(Debug, Default)]
struct Received {
    video: AtomicU64,
    audio: AtomicU64,
    /// Keyframes (first packets of, one per RTP timestamp).
    keyframes: AtomicU64,
    /// Consecutive video packets whose timestamps differ by other than one frame.
    irregular_timestamps: AtomicU64,
    /// PLIs the server sent.
    plis: AtomicU64,
    /// Video payload type and codec seen.
    video_codec: Mutex<Option<(u8, String)>>,
    /// Signalling: the SDP the publisher sent (WHIP offer, OME answer), candidates trickled,
    /// sessions deleted or closed.
    publisher_sdp: Mutex<String>,
    candidates: AtomicU64,
    ended: AtomicU64,
}

struct Receiving {
    received: Arc<Received>,
    gathered: watch::Sender<bool>,
    /// Send one PLI this long after the first video packet.
    pli_after: Option<Duration>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Receiving {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        let pli_after = self.pli_after;
        tokio::spawn(async move {
            let kind = track.kind().await;
            let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
            let mime = track.codec(ssrc).await.map(|c| c.mime_type).unwrap_or_default();
            let codec = if mime.eq_ignore_ascii_case(MIME_TYPE_H264) { VideoCodec::H264 } else { VideoCodec::Vp8 };
            let frame_ticks = if codec == VideoCodec::H264 { 3600 } else { 3000 };
            if kind == RtpCodecKind::Video {
                if let Some(after) = pli_after {
                    let (track, received) = (track.clone(), received.clone());
                    tokio::spawn(async move {
                        while received.video.load(Ordering::Relaxed) == 0 {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        tokio::time::sleep(after).await;
                        let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
                        if track.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
                            received.plis.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            }
            let mut last: Option<(u16, u32)> = None;
            let mut last_key: Option<u32> = None;
            while let Some(event) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(packet) = event else { continue };
                if kind == RtpCodecKind::Audio {
                    received.audio.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let (seq, ts) = (packet.header.sequence_number, packet.header.timestamp);
                received.video.fetch_add(1, Ordering::Relaxed);
                received.video_codec.lock().unwrap().get_or_insert((packet.header.payload_type, mime.clone()));
                if let Some((last_seq, last_ts)) = last {
                    if seq == last_seq.wrapping_add(1) && ts != last_ts && ts.wrapping_sub(last_ts) != frame_ticks {
                        received.irregular_timestamps.fetch_add(1, Ordering::Relaxed);
                    }
                }
                last = Some((seq, ts));
                if plumbing::is_keyframe_start(codec, &packet.payload) && last_key != Some(ts) {
                    last_key = Some(ts);
                    received.keyframes.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

/// The server side: VP8, H.264 and Opus at payload types of its own (not the publisher's), so
/// that the OME case proves the publisher sends with the offer's.
async fn receiver(received: &Arc<Received>, pli_after: Option<Duration>) -> (Arc<dyn PeerConnection>, watch::Receiver<bool>) {
    let mut engine = MediaEngine::default();
    let mut video = |codec: VideoCodec, pt: u8| {
        let rtp_codec = plumbing::video_codec(codec);
        engine.register_codec(RTCRtpCodecParameters { rtp_codec, payload_type: pt }, RtpCodecKind::Video).unwrap();
    };
    video(VideoCodec::Vp8, 100);
    video(VideoCodec::H264, 102);
    let opus = RTCRtpCodec { mime_type: MIME_TYPE_OPUS.into(), clock_rate: 48_000, channels: 2, ..Default::default() };
    engine.register_codec(RTCRtpCodecParameters { rtp_codec: opus, payload_type: 109 }, RtpCodecKind::Audio).unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut engine).unwrap();
    let (gathered_tx, gathered) = watch::channel(false);
    let handler = Receiving { received: received.clone(), gathered: gathered_tx, pli_after };
    let pc = build_connection_with(handler, Ipv4Addr::LOCALHOST.into(), engine, registry).await.unwrap();
    (pc, gathered)
}

// ---------------------------------------------------------------------------------------------
// WHIP
// ---------------------------------------------------------------------------------------------

/// A WHIP endpoint at `/app/stream?direction=whip` taking `Bearer secret`; sessions at
/// `/app/stream/{n}?direction=whip` (a relative Location).
struct WhipServer {
    port: u16,
    received: Arc<Received>,
}

async fn whip_server(pli_after: Option<Duration>) -> WhipServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Received::default());
    let sessions: Arc<Mutex<HashMap<String, Arc<dyn PeerConnection>>>> = Arc::default();
    let state = received.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(whip_exchange(conn, state.clone(), sessions.clone(), pli_after));
        }
    });
    WhipServer { port, received }
}

async fn whip_exchange(
    mut conn: TcpStream,
    received: Arc<Received>,
    sessions: Arc<Mutex<HashMap<String, Arc<dyn PeerConnection>>>>,
    pli_after: Option<Duration>,
) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines().skip(1).filter_map(|l| l.split_once(':')).find(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
    };
    let length: usize = header("Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + 4 + length {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end + 4..]).to_string();
    let mut request_line = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (request_line.next().unwrap_or_default(), request_line.next().unwrap_or_default());

    let (status, extra, reply) = match (method, target) {
        ("POST", "/app/stream?direction=whip") if header("Authorization").as_deref() != Some("Bearer secret") => {
            (401, String::new(), "bad token".to_string())
        }
        ("POST", "/app/stream?direction=whip") if header("Content-Type").as_deref() != Some("application/sdp") => {
            (415, String::new(), "not SDP".to_string())
        }
        ("POST", "/app/stream?direction=whip") => {
            *received.publisher_sdp.lock().unwrap() = body.clone();
            let (pc, gathered) = receiver(&received, pli_after).await;
            pc.set_remote_description(RTCSessionDescription::offer(body).unwrap()).await.unwrap();
            let answer = pc.create_answer(None).await.unwrap();
            pc.set_local_description(answer).await.unwrap();
            let sdp = local_sdp(&pc, gathered).await.unwrap();
            let key = format!("{}", sessions.lock().unwrap().len() + 1);
            sessions.lock().unwrap().insert(key.clone(), pc);
            (201, format!("Location: /app/stream/{key}?direction=whip\r\nContent-Type: application/sdp\r\n"), sdp)
        }
        ("POST", _) => (404, String::new(), "no such stream".to_string()),
        ("DELETE", target) => {
            let key = target.strip_prefix("/app/stream/").and_then(|t| t.strip_suffix("?direction=whip")).unwrap_or_default();
            let pc = sessions.lock().unwrap().remove(key);
            match pc {
                Some(pc) => {
                    let _ = pc.close().await;
                    received.ended.fetch_add(1, Ordering::Relaxed);
                    (200, String::new(), String::new())
                }
                None => (404, String::new(), "no such session".to_string()),
            }
        }
        _ => (405, String::new(), String::new()),
    };
    let response = format!("HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len());
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Waits for `cond`, or fails with `what` and the server's view.
async fn wait(received: &Received, what: &str, cond: impl Fn(&Received) -> bool) {
    if let Err(e) = wait_until(WAIT, what, || cond(received)).await {
        panic!("{e}: {received:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_vp8_flows_a_pli_gets_a_keyframe_and_delete_ends_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = whip_server(Some(Duration::from_millis(1200))).await;
    let url = format!("http://127.0.0.1:{}/app/stream?direction=whip", server.port);

    let refused = Publisher::whip(&url, Some("wrong"), VideoCodec::Vp8).await.err().expect("a wrong token is refused");
    assert!(matches!(&refused, PublishError::Http { status: 401, body } if body == "bad token"), "{refused:?}");
    let missing = format!("http://127.0.0.1:{}/app/nothing?direction=whip", server.port);
    assert_eq!(Publisher::whip(&missing, Some("secret"), VideoCodec::Vp8).await.err().and_then(|e| e.code()), Some(404));

    // Keyframes only when asked for: the first, then the one the PLI asks for.
    let options = PublishOptions { keyframes: Keyframes::FirstOnly, ..PublishOptions::new(VideoCodec::Vp8) };
    let publisher = Publisher::whip_with(&url, Some("secret"), options).await.unwrap();
    assert_eq!(publisher.location(), Some(format!("http://127.0.0.1:{}/app/stream/1?direction=whip", server.port).as_str()));
    let offer = server.received.publisher_sdp.lock().unwrap().clone();
    assert_eq!(offer.matches("a=sendonly").count(), 2, "sendonly audio and video:\n{offer}");
    assert!(offer.contains("a=candidate:") && offer.contains("VP8/90000") && offer.contains("opus/48000/2"), "{offer}");

    publisher.wait_sending(WAIT).await.unwrap();
    let r = &server.received;
    wait(r, "video, audio and the first keyframe", |r| r.video.load(Ordering::Relaxed) > 20 && r.audio.load(Ordering::Relaxed) > 10 && r.keyframes.load(Ordering::Relaxed) == 1).await;
    wait(r, "the PLI sent", |r| r.plis.load(Ordering::Relaxed) == 1).await;
    publisher.wait_for(WAIT, "the PLI counted", |s| s.pli_received.load(Ordering::Relaxed) == 1).await.unwrap();
    wait(r, "the keyframe the PLI asked for", |r| r.keyframes.load(Ordering::Relaxed) == 2).await;
    // No other keyframe: the clip's own (every 15 frames) are not sent.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(r.keyframes.load(Ordering::Relaxed), 2, "{r:?}");
    assert_eq!(publisher.stats.keyframes(), 2, "{:?}", publisher.stats);
    assert_eq!(r.irregular_timestamps.load(Ordering::Relaxed), 0, "one frame of 90 kHz ticks between frames, replays and skips included");
    assert_eq!(*r.video_codec.lock().unwrap(), Some((plumbing::VIDEO_PT, MIME_TYPE_VP8.to_string())));
    let sent = publisher.stats.video();
    assert!(sent >= r.video.load(Ordering::Relaxed) && publisher.stats.audio() > 10, "{:?}", publisher.stats);

    publisher.stop().await.unwrap();
    assert_eq!(r.ended.load(Ordering::Relaxed), 1, "DELETE reached the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_h264_flows_when_ffmpeg_is_there() {
    let _serial = ONE_AT_A_TIME.lock().await;
    if std::process::Command::new("ffmpeg").arg("-version").output().is_err() {
        eprintln!("skipped: no ffmpeg to encode the H.264 clip");
        return;
    }
    let server = whip_server(None).await;
    let url = format!("http://127.0.0.1:{}/app/stream?direction=whip", server.port);
    let publisher = Publisher::whip(&url, Some("secret"), VideoCodec::H264).await.unwrap();
    let r = &server.received;
    wait(r, "H.264 video with a keyframe, and audio", |r| r.video.load(Ordering::Relaxed) > 20 && r.keyframes.load(Ordering::Relaxed) >= 1 && r.audio.load(Ordering::Relaxed) > 10).await;
    assert_eq!(*r.video_codec.lock().unwrap(), Some((plumbing::VIDEO_PT, MIME_TYPE_H264.to_string())));
    assert_eq!(r.irregular_timestamps.load(Ordering::Relaxed), 0);
    publisher.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// OME WebSocket
// ---------------------------------------------------------------------------------------------

/// An OME-style publishing endpoint: `/app/stream?direction=send` offers recvonly video (VP8 at
/// 100, H.264 at 102) and audio (Opus at 109) as session 7; any other path gets error 404.
async fn ome_server() -> (u16, Arc<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Received::default());
    let state = received.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let received = state.clone();
            tokio::spawn(async move {
                let path = Arc::new(Mutex::new(String::new()));
                let seen = path.clone();
                #[allow(clippy::result_large_err)] // tungstenite's callback type
                let callback = move |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                    *seen.lock().unwrap() = request.uri().to_string();
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(conn, callback).await else { return };
                let send = |v: Value| Message::Text(v.to_string().into());
                let mut pc: Option<Arc<dyn PeerConnection>> = None;
                while let Some(Ok(Message::Text(text))) = ws.next().await {
                    let m: Value = serde_json::from_str(&text).unwrap();
                    match m["command"].as_str().unwrap_or_default() {
                        "request_offer" if *path.lock().unwrap() != "/app/stream?direction=send" => {
                            let _ = ws.send(send(json!({"code": 404, "error": "Cannot find stream"}))).await;
                            let _ = ws.close(None).await;
                        }
                        "request_offer" => {
                            let (receiver, gathered) = receiver(&received, None).await;
                            for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
                                let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
                                receiver.add_transceiver_from_kind(kind, Some(init)).await.unwrap();
                            }
                            let offer = receiver.create_offer(None).await.unwrap();
                            receiver.set_local_description(offer).await.unwrap();
                            let sdp = local_sdp(&receiver, gathered).await.unwrap();
                            let candidates: Vec<Value> = sdp
                                .lines()
                                .filter_map(|l| l.strip_prefix("a="))
                                .filter(|l| l.starts_with("candidate:"))
                                .map(|c| json!({"candidate": c, "sdpMLineIndex": 0}))
                                .collect();
                            let offer = json!({"command": "offer", "id": 7, "peer_id": 0, "sdp": {"type": "offer", "sdp": sdp}, "candidates": candidates, "code": 200});
                            ws.send(send(offer)).await.unwrap();
                            pc = Some(receiver);
                        }
                        "answer" => {
                            assert_eq!((m["id"].as_u64(), m["peer_id"].as_u64()), (Some(7), Some(0)), "{m}");
                            let sdp = m["sdp"]["sdp"].as_str().unwrap().to_string();
                            *received.publisher_sdp.lock().unwrap() = sdp.clone();
                            pc.as_ref().unwrap().set_remote_description(RTCSessionDescription::answer(sdp).unwrap()).await.unwrap();
                        }
                        "candidate" => {
                            assert_eq!((m["id"].as_u64(), m["peer_id"].as_u64()), (Some(7), Some(0)), "{m}");
                            assert!(m["candidates"][0]["candidate"].as_str().unwrap().starts_with("candidate:"), "{m}");
                            received.candidates.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                // The socket closed: that ends the publication.
                if let Some(pc) = pc {
                    let _ = pc.close().await;
                    received.ended.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    (port, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ome_vp8_answers_the_offer_with_its_payload_types_and_closing_ends_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (port, r) = ome_server().await;
    let missing = Publisher::ome(&format!("ws://127.0.0.1:{port}/app/nothing"), VideoCodec::Vp8).await.err().expect("refused");
    assert!(matches!(&missing, PublishError::Ome { code: 404, error } if error == "Cannot find stream"), "{missing:?}");

    let publisher = Publisher::ome(&format!("ws://127.0.0.1:{port}/app/stream"), VideoCodec::Vp8).await.unwrap();
    assert_eq!(publisher.stats.session_id.load(Ordering::Relaxed), 7);
    publisher.wait_sending(WAIT).await.unwrap();
    wait(&r, "video with a keyframe, audio, trickled candidates", |r| {
        r.video.load(Ordering::Relaxed) > 20 && r.keyframes.load(Ordering::Relaxed) >= 1 && r.audio.load(Ordering::Relaxed) > 10 && r.candidates.load(Ordering::Relaxed) >= 1
    })
    .await;
    let answer = r.publisher_sdp.lock().unwrap().clone();
    assert_eq!(answer.matches("a=sendonly").count(), 2, "{answer}");
    assert!(!answer.contains("H264"), "only the chosen codec is answered:\n{answer}");
    assert_eq!(*r.video_codec.lock().unwrap(), Some((100, MIME_TYPE_VP8.to_string())), "the offer's payload type");
    assert_eq!(r.irregular_timestamps.load(Ordering::Relaxed), 0);
    assert!(publisher.stats.candidates_sent.load(Ordering::Relaxed) >= 1);

    publisher.stop().await.unwrap();
    wait(&r, "the server seeing the socket close", |r| r.ended.load(Ordering::Relaxed) == 1).await;
}
