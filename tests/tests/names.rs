//! Stream names and what they claim (issue 20, items 1 and 4), against the real host: a name is
//! checked where a request enters, before anything is claimed; a name that passes is one stream
//! everywhere (an origin pulled once for it, a WHIP resource that can be deleted); a pull nobody
//! plays is released within seconds; one address gets only a share of the publishers.

use std::time::{Duration, Instant};
use tests::harness::{config_xml, HostProcess};
use tests::peer::PeerAgent;
use tests::publisher::{Publisher, VideoCodec};
use tests::signal::{Received, Signal, CHROME_WINDOWS};

const T: Duration = Duration::from_secs(10);
const LONG: Duration = Duration::from_secs(20);
const TOKEN: &str = "s3cret";

/// Names that are not one path segment once percent-decoded.
const BAD_NAMES: [&str; 6] = ["stream%2F1", "stream%3Fz%3Fp2p=0", "%2E%2E", "a%0Ab", "nul%00", "percent%2541"];

/// A host that takes publishers of any name in application `live`, with `limits` in `<Signalling>`.
fn publishing_host(limits: &str) -> HostProcess {
    HostProcess::start(|port| {
        config_xml(port, "")
            .replacen("</Signalling>", &format!("{limits}</Signalling>"), 1)
            .replace("</Applications>", &format!("<Application><Name>live</Name><Publish><Token>{TOKEN}</Token></Publish></Application></Applications>"))
    })
    .unwrap()
}

/// An edge of the origin on `origin_port` for application `app`, releasing unwatched pulls only
/// after a minute: whatever releases a pull sooner is the rule under test.
fn edge_of(origin_port: u16) -> HostProcess {
    HostProcess::start(|port| {
        let origins = format!(
            "<Origins><Properties><UnusedStreamDeletionTimeout>60000</UnusedStreamDeletionTimeout></Properties>\
             <Origin><Location>/app/</Location><Pass><Scheme>webrtc</Scheme><Urls><Url>127.0.0.1:{origin_port}/app/</Url></Urls></Pass></Origin></Origins>"
        );
        config_xml(port, &origins).replace("<Stream><Name>stream</Name><TestPattern/></Stream>", "")
    })
    .unwrap()
}

/// Connects to `path` and expects the protocol's error `code`, then a close.
async fn refused_with(host: &HostProcess, path: &str, code: u16) {
    let mut s = Signal::connect(&host.ws_url(path), CHROME_WINDOWS).await.unwrap();
    let error = s.recv_json(T).await.unwrap();
    assert_eq!(error["code"], code, "{path}: {error}");
    assert!(matches!(s.recv(T).await.unwrap(), Received::Closed), "{path}: closed after the error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_is_not_one_segment_gets_the_protocols_error_and_a_close() {
    let host = HostProcess::start(|port| config_xml(port, "")).unwrap();
    for name in BAD_NAMES {
        refused_with(&host, &format!("app/{name}"), 400).await;
    }
    refused_with(&host, "app/other", 404).await;
    assert_eq!(host.stats().unwrap()["metrics"]["names_refused"], BAD_NAMES.len(), "counted apart from unknown streams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_pulls_nothing_for_a_refused_name_and_releases_a_pull_nobody_plays() {
    let origin = HostProcess::start(|port| config_xml(port, "")).unwrap();
    let edge = edge_of(origin.port);
    for name in BAD_NAMES {
        refused_with(&edge, &format!("app/{name}"), 400).await;
    }
    assert_eq!(origin.stats().unwrap()["session_count"], 0, "no pull for a refused name");

    // A socket that asks for the stream and never plays it.
    let idle = Signal::connect(&edge.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let started = Instant::now();
    while origin.stats().unwrap()["session_count"] == 0 {
        assert!(started.elapsed() < T, "the pull never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while origin.stats().unwrap()["session_count"] != 0 {
        assert!(started.elapsed() < LONG, "a pull nobody answered outlived its deadline: {}", origin.stats().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("RELEASED an unanswered pull {:?} after it started", started.elapsed());
    drop(idle);

    let viewer = PeerAgent::join(&edge.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    viewer.wait_for(LONG, "the origin's stream through the edge", |s| s.video() > 60).await.unwrap();
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(origin.stats().unwrap()["session_count"], 1, "a pull a viewer plays stays");
    assert!(viewer.stats.last_error.lock().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_names_are_checked_before_a_claim_and_every_accepted_name_can_be_deleted() {
    let host = publishing_host("");
    let url = |name: &str| format!("http://127.0.0.1:{}/live/{name}?direction=whip", host.port);
    for name in BAD_NAMES {
        let refused = Publisher::whip(&url(name), Some(TOKEN), VideoCodec::Vp8).await;
        assert_eq!(refused.err().and_then(|e| e.code()), Some(400), "{name}");
    }
    let publisher = Publisher::whip(&url("%C3%9Cber%20cam%26more"), Some(TOKEN), VideoCodec::Vp8).await.unwrap();
    let location = publisher.location().unwrap().to_string();
    assert!(location.contains("/live/%C3%9Cber%20cam%26more/"), "the Location is escaped: {location}");
    let key = location.rsplit_once('/').and_then(|(_, k)| k.strip_suffix("?direction=whip")).unwrap();
    assert_eq!(publisher.etag(), Some(format!("\"{key}\"").as_str()), "the ETag is the key, without the query");
    publisher.wait_sending(LONG).await.unwrap();
    let viewer = PeerAgent::join(&host.ws_url("live/%C3%9Cber%20cam%26more"), CHROME_WINDOWS).await.unwrap();
    viewer.wait_for(LONG, "the published stream", |s| s.video() > 30).await.unwrap();
    publisher.stop().await.expect("DELETE on the Location ends it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_only_its_share_of_the_publishers() {
    let host = publishing_host("<MaxPublishers>8</MaxPublishers><MaxPublishersPerAddress>2</MaxPublishersPerAddress>");
    let url = |name: &str| format!("http://127.0.0.1:{}/live/{name}?direction=whip", host.port);
    let a = Publisher::whip(&url("a"), Some(TOKEN), VideoCodec::Vp8).await.unwrap();
    let _b = Publisher::whip(&url("b"), Some(TOKEN), VideoCodec::Vp8).await.unwrap();
    let third = Publisher::whip(&url("c"), Some(TOKEN), VideoCodec::Vp8).await;
    assert_eq!(third.err().and_then(|e| e.code()), Some(429));
    let ome = host.ws_url(&format!("live/d?direction=send&token={TOKEN}"));
    assert_eq!(Publisher::ome(&ome, VideoCodec::Vp8).await.err().and_then(|e| e.code()), Some(429), "OME's signalling: the same share");
    a.stop().await.unwrap();
    let started = Instant::now();
    loop {
        match Publisher::whip(&url("c"), Some(TOKEN), VideoCodec::Vp8).await {
            Ok(_) => break,
            Err(e) if e.code() == Some(429) && started.elapsed() < LONG => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("the share was not freed: {e}"),
        }
    }
}
