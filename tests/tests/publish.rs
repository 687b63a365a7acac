//! Publishing over WebRTC against the real host: the Rust test publisher (`tests::publisher`)
//! over WHIP and over OME's signalling, Rust viewers playing what it sends; who may publish;
//! keyframe requests coalesced; the grace time; a player that cannot take the codec.

use serde_json::json;
use std::time::{Duration, Instant};
use tests::harness::{config_xml, HostProcess};
use tests::peer::PeerAgent;
use tests::publisher::{Keyframes, PublishOptions, Publisher, VideoCodec};
use tests::signal::{Signal, CHROME_WINDOWS};

const LONG: Duration = Duration::from_secs(20);
const TOKEN: &str = "s3cret";

/// A host whose application `live` takes publishers with `rules` (children of `<Publish>`), its
/// config edited by `edit`.
fn host_publishing_with(rules: &str, edit: impl FnOnce(String) -> String) -> HostProcess {
    HostProcess::start(|port| {
        edit(config_xml(port, "").replace(
            "</Applications>",
            &format!("<Application><Name>live</Name><Publish><Token>{TOKEN}</Token>{rules}</Publish></Application></Applications>"),
        ))
    })
    .unwrap()
}

/// [`host_publishing_with`] the config as it is.
fn host_publishing(rules: &str) -> HostProcess {
    host_publishing_with(rules, |xml| xml)
}

fn whip_url(host: &HostProcess, stream: &str) -> String {
    format!("http://127.0.0.1:{}/live/{stream}?direction=whip", host.port)
}

async fn viewer(host: &HostProcess, stream: &str) -> PeerAgent {
    PeerAgent::join(&host.ws_url(&format!("live/{stream}")), CHROME_WINDOWS).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_publisher_feeds_a_stream_rust_viewers_play_and_its_leaving_ends_it() {
    let host = host_publishing("");
    let publisher = Publisher::whip(&whip_url(&host, "cam"), Some(TOKEN), VideoCodec::Vp8).await.unwrap();
    publisher.wait_sending(LONG).await.unwrap();
    assert!(publisher.location().unwrap().contains("/live/cam/"), "{:?}", publisher.location());
    let (a, b) = (viewer(&host, "cam").await, viewer(&host, "cam").await);
    for v in [&a, &b] {
        v.wait_for(LONG, "the publisher's video", |s| s.source() == Some(0) && s.video() > 60 && s.audio_packets.load(std::sync::atomic::Ordering::Relaxed) > 20).await.unwrap();
    }
    publisher.stop().await.unwrap();
    a.wait_for(LONG, "the stream-ended error", |s| s.last_error.lock().unwrap().is_some()).await.unwrap();
    let error = a.stats.last_error.lock().unwrap().clone().unwrap();
    assert_eq!(error["code"], 404, "{error}");
    assert!(error["error"].as_str().unwrap().contains("stopped"), "{error}");
    // The name is free again.
    let again = Publisher::whip(&whip_url(&host, "cam"), Some(TOKEN), VideoCodec::Vp8).await.unwrap();
    again.wait_sending(LONG).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_publisher_over_omes_signalling_is_played_in_h264() {
    let host = host_publishing("");
    let url = host.ws_url(&format!("live/h264?direction=send&token={TOKEN}"));
    let publisher = Publisher::ome(&url, VideoCodec::H264).await.unwrap();
    publisher.wait_sending(LONG).await.unwrap();
    let v = viewer(&host, "h264").await;
    v.wait_for(LONG, "H.264 from the publisher", |s| s.video() > 60).await.unwrap();
    // The offer the viewer got names H.264 only.
    let mut s = Signal::connect(&host.ws_url("live/h264"), CHROME_WINDOWS).await.unwrap();
    let offer = tests::signal::request_offer(&mut s).await.unwrap();
    let sdp = offer["sdp"]["sdp"].as_str().unwrap();
    assert!(sdp.contains("H264/90000") && !sdp.contains("VP8/90000"), "{sdp}");
    // A player that takes none of it (its answer turns the video down) is told so.
    let rejected = sdp.replace("m=video 9 ", "m=video 0 ");
    let id = offer["id"].clone();
    s.send(json!({"command": "answer", "id": id, "peer_id": 0, "sdp": {"type": "answer", "sdp": rejected}})).await.unwrap();
    let error = s.recv_json(LONG).await.unwrap();
    assert_eq!(error["code"], 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("cannot play this stream"), "{error}");
    publisher.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_token_holder_publishes_and_a_published_name_is_not_taken_twice() {
    let host = host_publishing("<Stream>cam</Stream>");
    let code = |r: Result<Publisher, tests::publisher::PublishError>| r.err().and_then(|e| e.code());
    assert_eq!(code(Publisher::whip(&whip_url(&host, "cam"), None, VideoCodec::Vp8).await), Some(401));
    assert_eq!(code(Publisher::whip(&whip_url(&host, "cam"), Some("wrong"), VideoCodec::Vp8).await), Some(403));
    assert_eq!(code(Publisher::whip(&whip_url(&host, "other"), Some(TOKEN), VideoCodec::Vp8).await), Some(403), "not a listed name");
    let app_url = format!("http://127.0.0.1:{}/app/cam?direction=whip", host.port);
    assert_eq!(code(Publisher::whip(&app_url, Some(TOKEN), VideoCodec::Vp8).await), Some(403), "an application without <Publish>");
    let ome = host.ws_url("live/cam?direction=send&token=wrong");
    assert_eq!(code(Publisher::ome(&ome, VideoCodec::Vp8).await), Some(403), "OME's signalling: the same rule");

    let first = Publisher::whip(&whip_url(&host, "cam"), Some(TOKEN), VideoCodec::Vp8).await.unwrap();
    first.wait_sending(LONG).await.unwrap();
    assert_eq!(code(Publisher::whip(&whip_url(&host, "cam"), Some(TOKEN), VideoCodec::Vp8).await), Some(409));
    let ome = host.ws_url(&format!("live/cam?direction=send&token={TOKEN}"));
    assert_eq!(code(Publisher::ome(&ome, VideoCodec::Vp8).await), Some(409));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_publishers_a_publisher_gets_503() {
    let host = host_publishing_with("", |xml| xml.replacen("</Signalling>", "<MaxPublishers>1</MaxPublishers></Signalling>", 1));
    let first = Publisher::whip(&whip_url(&host, "a"), Some(TOKEN), VideoCodec::Vp8).await.unwrap();
    first.wait_sending(LONG).await.unwrap();
    let second = Publisher::whip(&whip_url(&host, "b"), Some(TOKEN), VideoCodec::Vp8).await;
    assert_eq!(second.err().and_then(|e| e.code()), Some(503));
    first.stop().await.unwrap();
    let started = Instant::now();
    loop {
        match Publisher::whip(&whip_url(&host, "b"), Some(TOKEN), VideoCodec::Vp8).await {
            Ok(p) => {
                p.wait_sending(LONG).await.unwrap();
                break;
            }
            Err(e) if e.code() == Some(503) && started.elapsed() < LONG => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("the place was not freed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_take_over_a_second_publisher_replaces_the_first_and_viewers_keep_playing() {
    let host = host_publishing("<TakeOver>true</TakeOver>");
    let first = Publisher::whip(&whip_url(&host, "cam"), Some(TOKEN), VideoCodec::Vp8).await.unwrap();
    first.wait_sending(LONG).await.unwrap();
    let v = viewer(&host, "cam").await;
    v.wait_for(LONG, "the first publisher's video", |s| s.video() > 30).await.unwrap();
    let url = host.ws_url(&format!("live/cam?direction=send&token={TOKEN}"));
    let second = Publisher::ome(&url, VideoCodec::Vp8).await.unwrap();
    second.wait_sending(LONG).await.unwrap();
    let before = v.stats.video();
    v.wait_for(LONG, "video from the second publisher", |s| s.video() > before + 60).await.unwrap();
    first.wait_for(LONG, "the first publisher's end", |s| s.is_ended() || !s.is_connected()).await.ok();
    assert!(v.stats.last_error.lock().unwrap().is_none(), "the viewer was not told anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_grace_time_viewers_wait_for_their_publisher_to_come_back() {
    let host = host_publishing("<GraceMs>5000</GraceMs>");
    let first = Publisher::whip(&whip_url(&host, "cam"), Some(TOKEN), VideoCodec::Vp8).await.unwrap();
    first.wait_sending(LONG).await.unwrap();
    let v = viewer(&host, "cam").await;
    v.wait_for(LONG, "video", |s| s.video() > 30).await.unwrap();
    first.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = Publisher::whip(&whip_url(&host, "cam"), Some(TOKEN), VideoCodec::Vp8).await.unwrap();
    again.wait_sending(LONG).await.unwrap();
    let before = v.stats.video();
    v.wait_for(LONG, "video from the returning publisher", |s| s.video() > before + 60).await.unwrap();
    assert!(v.stats.last_error.lock().unwrap().is_none(), "the viewer stayed");
}

/// Joins, one by one, timed from the join to the first video packet.
async fn timed_joins(host: &HostProcess, stream: &str, n: usize) -> Vec<u128> {
    let mut joins = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let v = viewer(host, stream).await;
        v.wait_for(LONG, "video", |s| s.video() > 0).await.unwrap();
        joins.push(started.elapsed().as_millis());
    }
    joins
}

/// No keyframe cache on the host, and publishers whose encoder makes a keyframe every 10 s
/// (300 frames at 30 fps): joins wait for the next one, unless the publisher answers keyframe
/// requests. Eight viewers joining at once ask it at most once a second, and every one plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_reach_the_publisher_as_at_most_one_keyframe_request_per_second() {
    let host = host_publishing_with("", |xml| xml.replacen("</WebRTC>", "<KeyframeCache><MaxBytes>0</MaxBytes></KeyframeCache></WebRTC>", 1));
    let sparse = |on_request| PublishOptions { keyframes: Keyframes::EveryFrames(300), keyframe_on_request: on_request, ..PublishOptions::new(VideoCodec::Vp8) };
    let deaf = Publisher::whip_with(&whip_url(&host, "deaf"), Some(TOKEN), sparse(false)).await.unwrap();
    let answering = Publisher::whip_with(&whip_url(&host, "cam"), Some(TOKEN), sparse(true)).await.unwrap();
    for p in [&deaf, &answering] {
        p.wait_sending(LONG).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("JOIN_MS keyframe requests answered {:?}", timed_joins(&host, "cam", 3).await);
    println!("JOIN_MS keyframe requests ignored {:?}", timed_joins(&host, "deaf", 1).await);

    let asked_before = answering.stats.keyframe_requests();
    let started = Instant::now();
    let mut viewers = Vec::new();
    for _ in 0..8 {
        viewers.push(viewer(&host, "cam").await);
    }
    for v in &viewers {
        v.wait_for(LONG, "video after a requested keyframe", |s| s.video() > 10).await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let asked = answering.stats.keyframe_requests() - asked_before;
    println!("8 joins at once: {asked} keyframe requests over {elapsed:.1} s");
    assert!(asked >= 1, "a keyframe was asked for");
    assert!(asked as f64 <= elapsed.ceil() + 1.0, "{asked} requests in {elapsed:.1} s: not coalesced");
}
