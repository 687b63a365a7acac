//! P2P with real WebRTC: Rust test peers as host and clients, the relay carrying the media, and
//! the edge taking over when the host goes.

use std::time::Duration;
use tests::harness::{config_xml, p2p_xml, HostProcess};
use tests::peer::PeerAgent;
use tests::signal::CHROME_WINDOWS;

const LONG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_play_from_their_host_peer_and_fall_back_to_the_edge_when_it_goes() {
    let host = HostProcess::start(|port| config_xml(port, &p2p_xml(2, 4000))).unwrap();
    let url = host.ws_url("app/stream");

    let relay = PeerAgent::join(&url, CHROME_WINDOWS).await.unwrap();
    relay.wait_for(LONG, "edge media", |s| s.video() > 30).await.unwrap();
    let relay_id = relay.stats.id();
    assert_eq!(relay.stats.source(), Some(0));

    let c1 = PeerAgent::join(&url, CHROME_WINDOWS).await.unwrap();
    let c2 = PeerAgent::join(&url, CHROME_WINDOWS).await.unwrap();
    for c in [&c1, &c2] {
        c.wait_for(LONG, "media from the host peer", |s| s.source() == Some(relay_id) && s.video() > 60).await.unwrap();
    }
    for c in [&c1, &c2] {
        let egress = host.session_egress(c.stats.id() as u64).unwrap().unwrap();
        assert_eq!(egress, 0, "the edge sends nothing to a P2P client");
    }
    let third = PeerAgent::join(&url, CHROME_WINDOWS).await.unwrap();
    third.wait_for(LONG, "edge media for the third", |s| s.video() > 10).await.unwrap();
    assert_eq!(third.stats.source(), Some(0), "the host peer is full at k=2");

    let before = (c1.stats.video(), c2.stats.video());
    relay.leave().await;
    let t1 = c1.wait_for(LONG, "edge media after failover", |s| s.source() == Some(0) && s.video() > before.0 + 30).await.unwrap();
    let t2 = c2.wait_for(LONG, "edge media after failover", |s| s.source() == Some(0) && s.video() > before.1 + 30).await.unwrap();
    println!("failover (host peer gone -> 30 edge video packets): {t1:?}, {t2:?}");
    for c in [&c1, &c2] {
        assert!(host.session_egress(c.stats.id() as u64).unwrap().unwrap() > 0, "the edge serves it now");
    }
    let stats = host.stats().unwrap();
    assert_eq!(stats["metrics"][r#"p2p.fallbacks_total{reason="host_left"}"#], 2, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_of_another_stream_never_get_this_streams_host() {
    let host = HostProcess::start(|port| {
        config_xml(port, &p2p_xml(2, 4000)).replace(
            "<Stream><Name>stream</Name><TestPattern/></Stream>",
            "<Stream><Name>stream</Name><TestPattern/></Stream><Stream><Name>other</Name><TestPattern/></Stream>",
        )
    })
    .unwrap();
    let a = PeerAgent::join(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    a.wait_for(LONG, "edge media", |s| s.video() > 30).await.unwrap();
    let b = PeerAgent::join(&host.ws_url("app/other"), CHROME_WINDOWS).await.unwrap();
    b.wait_for(LONG, "media", |s| s.video() > 30).await.unwrap();
    assert_eq!(b.stats.source(), Some(0));
}
