//! Past one machine: a host as an edge of another (its origin), pulling a stream over WebRTC as
//! a player of the origin's OME signalling, on the first viewer, for as long as anyone watches,
//! again when the origin restarts. Real hosts and real WebRTC on loopback.

use std::time::Duration;
use tests::harness::{config_xml, free_port, HostProcess};
use tests::peer::PeerAgent;
use tests::signal::CHROME_WINDOWS;

const LONG: Duration = Duration::from_secs(20);

/// An edge whose application `app` comes from the origin on `origin_port`.
fn edge_of(origin_port: u16, unused_ms: u64) -> HostProcess {
    HostProcess::start(|port| {
        let origins = format!(
            "<Origins><Properties><NoInputFailoverTimeout>1500</NoInputFailoverTimeout><UnusedStreamDeletionTimeout>{unused_ms}</UnusedStreamDeletionTimeout></Properties>\
             <Origin><Location>/app/</Location><Pass><Scheme>webrtc</Scheme><Urls><Url>127.0.0.1:{origin_port}/app/</Url></Urls></Pass></Origin></Origins>"
        );
        // The edge has no stream of its own: its application is all pulled.
        config_xml(port, &origins).replace("<Stream><Name>stream</Name><TestPattern/></Stream>", "")
    })
    .unwrap()
}

fn origin_on(port: u16) -> HostProcess {
    HostProcess::start_on(port, |port| config_xml(port, "")).unwrap()
}

/// The origin's `/metrics` sample `series` (its API on `api`).
fn scrape(api: u16, series: &str) -> Option<f64> {
    let (_, _, body) = tests::harness::http("GET", api, "/metrics", "").unwrap();
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_pulls_from_its_origin_on_the_first_viewer_and_releases_it_after_the_last() {
    let api = free_port();
    let origin = HostProcess::start(|port| config_xml(port, "").replacen("<Bind>", &format!("<Bind><Managers><API><Port>{api}</Port></API></Managers>"), 1)).unwrap();
    let edge = edge_of(origin.port, 1500);
    assert_eq!(origin.stats().unwrap()["session_count"], 0, "nothing pulled before a viewer comes");
    let a = PeerAgent::join(&edge.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let b = PeerAgent::join(&edge.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    for v in [&a, &b] {
        v.wait_for(LONG, "the origin's stream through the edge", |s| s.source() == Some(0) && s.video() > 60).await.unwrap();
    }
    let stats = origin.stats().unwrap();
    assert_eq!(stats["session_count"], 1, "one pull for both viewers: {stats}");
    let stream = r#"{app="app",stream="stream"}"#;
    assert_eq!(scrape(api, &format!("pulling_edges{stream}")), Some(1.0), "the origin counts the edge apart");
    assert_eq!(scrape(api, r#"viewers{app="app",stream="stream",delivery="edge"}"#), Some(0.0), "not as a viewer");
    let unknown = PeerAgent::join(&edge.ws_url("other/stream"), CHROME_WINDOWS).await.unwrap();
    unknown.wait_for(LONG, "the error", |s| s.last_error.lock().unwrap().is_some()).await.unwrap();
    assert_eq!(unknown.stats.last_error.lock().unwrap().as_ref().unwrap()["code"], 404);

    a.leave().await;
    b.leave().await;
    let started = std::time::Instant::now();
    while origin.stats().unwrap()["session_count"] != 0 {
        assert!(started.elapsed() < LONG, "the edge never released the pull: {}", origin.stats().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("released {:?} after the last viewer left (UnusedStreamDeletionTimeout 1500 ms)", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(1200), "not before the timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_of_an_edge_keep_their_sessions_when_the_origin_restarts() {
    let port = free_port();
    let mut origin = origin_on(port);
    let edge = edge_of(port, 60_000);
    let v = PeerAgent::join(&edge.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    v.wait_for(LONG, "video through the edge", |s| s.video() > 60).await.unwrap();
    origin.terminate(Duration::from_secs(5));
    drop(origin);
    let down = std::time::Instant::now();
    let origin = origin_on(port);
    let before = v.stats.video();
    v.wait_for(LONG, "video again after the origin restarted", |s| s.video() > before + 60).await.unwrap();
    println!("RESUMED {:?} after the origin went down", down.elapsed());
    assert!(v.stats.last_error.lock().unwrap().is_none(), "the viewer was told nothing");
    assert_eq!(origin.stats().unwrap()["session_count"], 1, "the edge pulls again");
}
