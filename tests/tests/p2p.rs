//! P2P with real WebRTC: Rust test peers as host and clients, the relay carrying the media, and
//! the edge taking over when the host goes.

use std::time::Duration;
use tests::harness::{config_xml, p2p_xml, HostProcess};
use tests::peer::{PeerAgent, PeerOptions};
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

/// A relay whose path to its clients loses every 10th video packet: the clients NACK the gaps,
/// the relay resends from what it forwarded, and they get (nearly) everything in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relays_clients_get_what_its_path_lost_resent_for_their_nacks() {
    let host = HostProcess::start(|port| config_xml(port, &p2p_xml(2, 4000))).unwrap();
    let url = host.ws_url("app/stream");
    let relay = PeerAgent::join_with(&url, CHROME_WINDOWS, PeerOptions { relay_loss_every: Some(10) }).await.unwrap();
    relay.wait_for(LONG, "edge media", |s| s.video() > 30).await.unwrap();
    let relay_id = relay.stats.id();
    let clients = [PeerAgent::join(&url, CHROME_WINDOWS).await.unwrap(), PeerAgent::join(&url, CHROME_WINDOWS).await.unwrap()];
    for c in &clients {
        c.wait_for(LONG, "media from the relay", |s| s.source() == Some(relay_id) && s.video() > 60).await.unwrap();
    }
    let before: Vec<(u64, u64, u64)> = clients.iter().map(|c| (c.stats.video_new(), c.stats.video_delivered(), c.stats.video_span())).collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (c, b) in clients.iter().zip(before) {
        let span = (c.stats.video_span() - b.2) as f64;
        let (in_order, delivered) = ((c.stats.video_new() - b.0) as f64 / span, (c.stats.video_delivered() - b.1) as f64 / span);
        println!("client {}: {:.1} % in order, {:.1} % delivered in time", c.stats.id(), in_order * 100.0, delivered * 100.0);
        assert!(span > 200.0, "too few packets: {span}");
        assert!(in_order < 0.95, "the path lost packets ({in_order})");
        assert!(delivered > 0.98, "resent in time: {delivered} (stats: {:?})", c.stats);
    }
    let resent = relay.stats.resends.resent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(resent > 40, "the relay resent {resent}");
}
