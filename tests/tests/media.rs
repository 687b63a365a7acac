//! Real media: a Rust WebRTC viewer receives RTP from the built-in stream and from ffmpeg.

use std::time::Duration;
use tests::harness::{config_xml, free_port, HostProcess};
use tests::peer::PeerAgent;
use tests::signal::CHROME_WINDOWS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_receives_the_builtin_stream() {
    let host = HostProcess::start(|port| config_xml(port, "")).unwrap();
    let viewer = PeerAgent::join(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let first = viewer.wait_for(Duration::from_secs(15), "first video packet", |s| s.video() > 0).await.unwrap();
    viewer.wait_for(Duration::from_secs(15), "200 video packets", |s| s.video() >= 200).await.unwrap();
    assert!(viewer.stats.audio_packets.load(std::sync::atomic::Ordering::Relaxed) > 0, "audio flows too");
    assert_eq!(viewer.stats.source(), Some(0));
    let egress = host.session_egress(viewer.stats.id() as u64).unwrap().unwrap();
    assert!(egress > 100_000, "the host counts what it sends: {egress}");
    println!("first video packet {first:?} after joining; edge egress {egress} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_receives_an_ffmpeg_rtp_ingest() {
    if std::process::Command::new("ffmpeg").arg("-version").output().is_err() {
        panic!("ffmpeg is required for this test (apt-get install ffmpeg; .ci/run installs it)");
    }
    let (video_port, audio_port) = (free_port(), free_port());
    let host = HostProcess::start(|port| {
        config_xml(
            port,
            &format!(
                "<Applications><Application><Name>live</Name><Stream><Name>cam</Name><RtpIngest><VideoPort>{video_port}</VideoPort><AudioPort>{audio_port}</AudioPort><SilenceTimeout>2</SilenceTimeout></RtpIngest></Stream></Application></Applications>"
            ),
        )
        .replace("<Applications><Application><Name>app</Name><Stream><Name>stream</Name><TestPattern/></Stream></Application></Applications>", "")
    })
    .unwrap();
    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-map", "0:v", "-c:v", "libvpx", "-deadline", "realtime", "-b:v", "500k", "-g", "30", "-f", "rtp", &format!("rtp://127.0.0.1:{video_port}")])
        .args(["-map", "1:a", "-c:a", "libopus", "-f", "rtp", &format!("rtp://127.0.0.1:{audio_port}")])
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg");
    let viewer = PeerAgent::join(&host.ws_url("live/cam"), CHROME_WINDOWS).await.unwrap();
    viewer.wait_for(Duration::from_secs(20), "100 video packets", |s| s.video() >= 100).await.unwrap();
    viewer.wait_for(Duration::from_secs(10), "audio packets", |s| s.audio_packets.load(std::sync::atomic::Ordering::Relaxed) > 20).await.unwrap();

    // The source stops: the viewer is told (an error message), not left hanging.
    ffmpeg.kill().await.unwrap();
    viewer
        .wait_for(Duration::from_secs(10), "the stream-stopped error", |s| s.last_error.lock().unwrap().as_ref().is_some_and(|e| e["code"] == 404))
        .await
        .unwrap();
    assert!(host.log().contains("source stopped sending"), "{}", host.log());
}
