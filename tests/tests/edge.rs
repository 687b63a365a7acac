//! The edge on the configured UDP ports only: every viewer shares them, an unanswered offer is
//! withdrawn, bad datagrams aimed at a playing viewer's port are dropped and counted without the
//! viewer noticing, a player's close frees its connection at once, lost packets are resent, a
//! check forged from another address sends that address no media, and the ports answer plain
//! STUN.

use serde_json::Value;
use std::net::UdpSocket;
use std::time::Duration;
use tests::harness::{config_xml_with_ice, HostProcess};
use tests::peer::PeerAgent;
use tests::signal::{request_offer, Received, Signal, CHROME_WINDOWS};
use tests::stun::{binding_success, mapped_address, nominating_check, plain_binding_request};

const T: Duration = Duration::from_secs(10);

/// `n` consecutive UDP ports free on loopback right now (a race is possible but unlikely).
fn free_udp_ports(n: u16) -> std::ops::RangeInclusive<u16> {
    loop {
        let first = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if first > u16::MAX - n {
            continue;
        }
        if (first..first + n).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            return first..=first + n - 1;
        }
    }
}

/// The ports of every candidate in an edge offer (its `candidates` and its SDP's `a=candidate`).
fn offered_ports(offer: &Value) -> Vec<u16> {
    let listed = offer["candidates"].as_array().unwrap().iter().map(|c| c["candidate"].as_str().unwrap().to_string());
    let in_sdp = offer["sdp"]["sdp"].as_str().unwrap().lines().filter_map(|l| l.strip_prefix("a=")).map(str::to_string);
    listed
        .chain(in_sdp)
        .filter(|c| c.starts_with("candidate:"))
        .map(|c| c.split_whitespace().nth(5).unwrap().parse().unwrap())
        .collect()
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn metric(stats: &Value, name: &str) -> i64 {
    stats["metrics"][name].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_viewers_are_offered_only_the_three_configured_ports_and_cost_no_socket_each() {
    let ports = free_udp_ports(3);
    let ice = format!("127.0.0.1:{}-{}/udp", ports.start(), ports.end());
    let host = HostProcess::start(|port| config_xml_with_ice(port, &ice, "")).unwrap();
    let before = open_descriptors(host.pid());
    let mut sessions = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
        let offer = request_offer(&mut s).await.unwrap();
        let offered = offered_ports(&offer);
        assert!(!offered.is_empty(), "{offer}");
        assert!(offered.iter().all(|p| ports.contains(p)), "offered {offered:?}, configured {ports:?}");
        assert!(offer["sdp"]["sdp"].as_str().unwrap().contains("a=ice-lite"), "the edge is ICE-lite");
        used.extend(offered);
        sessions.push(s);
    }
    assert_eq!(used.len(), 3, "viewers are spread over every configured port: {used:?}");
    let grown = open_descriptors(host.pid()) - before;
    assert!(grown <= 40 + 4, "40 offers open {grown} descriptors: one per WebSocket is the budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_left_unanswered_is_withdrawn_with_the_protocols_error() {
    let ports = free_udp_ports(1);
    let ice = format!("127.0.0.1:{}/udp", ports.start());
    let host = HostProcess::start(|port| {
        config_xml_with_ice(port, &ice, "").replace("</IceCandidates>", "</IceCandidates><AnswerTimeoutMs>600</AnswerTimeoutMs>")
    })
    .unwrap();
    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let offer = request_offer(&mut s).await.unwrap();
    let id = offer["id"].as_u64().unwrap();
    let started = std::time::Instant::now();
    let error = s.recv_json(T).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(error["code"], 408, "{error}");
    assert!(error.get("command").is_none(), "{error}");
    assert!(waited >= Duration::from_millis(400), "withdrawn after the deadline, not before: {waited:?}");
    assert_eq!(s.recv(T).await.unwrap(), Received::Closed);
    let stats = host.stats().unwrap();
    assert!(!stats["sessions"].as_array().unwrap().iter().any(|s| s["id"] == id), "its state is freed: {stats}");
    assert_eq!(metric(&stats, "edge_offers_unanswered"), 1);
}

/// A STUN binding request with USERNAME `user` (no integrity: it must not matter).
fn stun_binding_request(user: &str) -> Vec<u8> {
    let mut attrs = vec![0x00, 0x06];
    attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
    attrs.extend_from_slice(user.as_bytes());
    attrs.resize(attrs.len().div_ceil(4) * 4, 0);
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    m.extend_from_slice(&rand::random::<[u8; 12]>());
    m.extend_from_slice(&attrs);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datagrams_at_a_playing_viewers_port_are_dropped_and_counted_and_it_plays_on() {
    let ports = free_udp_ports(1);
    let port = *ports.start();
    let host = HostProcess::start(|p| config_xml_with_ice(p, &format!("127.0.0.1:{port}/udp"), "")).unwrap();
    let viewer = PeerAgent::join(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    viewer.wait_for(T, "first video packet", |s| s.video() > 0).await.unwrap();

    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let truncated_stun = stun_binding_request("someone:else")[..23].to_vec();
    let mut dtls_hello = vec![22u8, 0xfe, 0xfd];
    dtls_hello.extend_from_slice(&[0u8; 60]);
    let mut srtp = vec![0x80u8, 96];
    srtp.extend_from_slice(&rand::random::<[u8; 100]>());
    let junk: Vec<Vec<u8>> = vec![
        stun_binding_request("nosuchufrag:x"), // unknown ufrag
        dtls_hello,                            // DTLS from an address no one answered
        srtp,                                  // SRTP from it
        vec![0xff; 300],                       // not WebRTC at all
        vec![],                                // empty
        vec![0x80],                            // truncated RTP
        truncated_stun,                        // truncated STUN
    ];
    let playing_before = viewer.stats.video();
    for _ in 0..200 {
        for d in &junk {
            attacker.send_to(d, ("127.0.0.1", port)).unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = host.stats().unwrap();
    assert!(metric(&stats, "edge_datagrams_dropped_unknown_ufrag") >= 150, "{stats}");
    assert!(metric(&stats, "edge_datagrams_dropped_unknown_address") >= 300, "{stats}");
    assert!(metric(&stats, "edge_datagrams_dropped_not_webrtc") >= 600, "{stats}");
    // The viewer did not notice: it plays on, and its session is still the edge's.
    let at = viewer.stats.video();
    viewer.wait_for(T, "video after the attack", |s| s.video() > at + 100).await.unwrap();
    assert!(at > playing_before, "it played during the attack too");
    assert_eq!(viewer.stats.source(), Some(0));
    // A new viewer still connects.
    let second = PeerAgent::join(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    second.wait_for(T, "a second viewer's first video", |s| s.video() > 0).await.unwrap();
}

/// A player that closes its WebRTC connection (DTLS close_notify) but keeps its signalling: the
/// edge lets the connection go at once (not after ICE's 30 s without checks), and the session,
/// which the WebSocket owns, goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_closing_its_connection_frees_it_at_once_and_keeps_its_session() {
    let ports = free_udp_ports(1);
    let host = HostProcess::start(|p| config_xml_with_ice(p, &format!("127.0.0.1:{}/udp", ports.start()), "")).unwrap();
    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let offer = request_offer(&mut s).await.unwrap();
    let id = offer["id"].as_u64().unwrap();
    let (pc, answer, stats) = tests::peer::answer_offer(offer["sdp"]["sdp"].as_str().unwrap()).await.unwrap();
    let answer = serde_json::json!({"command": "answer", "id": id, "peer_id": 0, "sdp": {"type": "answer", "sdp": answer}});
    s.send(answer).await.unwrap();
    let started = std::time::Instant::now();
    while stats.video() == 0 {
        assert!(started.elapsed() < T, "no video");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&host.stats().unwrap(), "edge_connections_closed_by_player"), 0);

    pc.close().await.unwrap();
    let closed = std::time::Instant::now();
    while metric(&host.stats().unwrap(), "edge_connections_closed_by_player") == 0 {
        assert!(closed.elapsed() < Duration::from_secs(5), "the edge did not notice the close in 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = host.stats().unwrap();
    assert!(stats["sessions"].as_array().unwrap().iter().any(|s| s["id"] == id), "the session goes on: {stats}");
    assert_eq!(metric(&stats, "edge_ice_failures"), 0, "a close is not a failure");
    s.send(serde_json::json!({"command": "stop", "id": id})).await.unwrap();
}

/// Forwards UDP between a viewer (on `front`) and the host (from `back`), dropping every `nth`
/// RTP packet on the way to the viewer. Runs until aborted.
async fn lossy_relay(front: tokio::net::UdpSocket, back: tokio::net::UdpSocket, host: std::net::SocketAddr, nth: u64) {
    let (mut viewer, mut seen) = (None, 0u64);
    let (mut up, mut down) = ([0u8; 2048], [0u8; 2048]);
    loop {
        tokio::select! {
            Ok((n, from)) = front.recv_from(&mut up) => {
                viewer = Some(from);
                let _ = back.send_to(&up[..n], host).await;
            }
            Ok((n, _)) = back.recv_from(&mut down) => {
                let rtp = n > 1 && (128..192).contains(&down[0]) && !(192..224).contains(&down[1]);
                if rtp {
                    seen += 1;
                    if seen % nth == 0 {
                        continue;
                    }
                }
                if let Some(to) = viewer {
                    let _ = front.send_to(&down[..n], to).await;
                }
            }
        }
    }
}

/// A viewer whose path loses packets asks for them (NACK) and the edge sends them again, from
/// the stream's packets it keeps for every viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_a_viewer_lost_are_resent_when_it_nacks_them() {
    let ports = free_udp_ports(1);
    let port = *ports.start();
    let host = HostProcess::start(|p| config_xml_with_ice(p, &format!("127.0.0.1:{port}/udp"), "")).unwrap();
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let front_port = front.local_addr().unwrap().port();
    let relay = tokio::spawn(lossy_relay(front, back, ([127, 0, 0, 1], port).into(), 20));

    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let offer = request_offer(&mut s).await.unwrap();
    let id = offer["id"].as_u64().unwrap();
    // The viewer reaches the edge only through the relay.
    let sdp = offer["sdp"]["sdp"].as_str().unwrap().replace(&format!(" {port} typ host"), &format!(" {front_port} typ host"));
    let (_pc, answer, stats) = tests::peer::answer_offer(&sdp).await.unwrap();
    s.send(serde_json::json!({"command": "answer", "id": id, "peer_id": 0, "sdp": {"type": "answer", "sdp": answer}})).await.unwrap();
    let started = std::time::Instant::now();
    while metric(&host.stats().unwrap(), "edge_packets_resent") < 20 {
        assert!(started.elapsed() < Duration::from_secs(15), "fewer than 20 packets resent in 15 s (video packets: {})", stats.video());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stats.video() > 100, "the viewer plays through the loss");
    relay.abort();
}

/// The first value of the SDP attribute `a=<name>:`.
fn sdp_attribute<'a>(sdp: &'a str, name: &str) -> &'a str {
    sdp.lines().find_map(|l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':')).unwrap().trim()
}

/// A test peer playing straight from the edge at `port`, and what its checks to the edge carry.
struct Playing {
    _signal: Signal,
    _pc: std::sync::Arc<dyn webrtc::peer_connection::PeerConnection>,
    stats: std::sync::Arc<tests::peer::PeerStats>,
    /// USERNAME: the edge's ufrag, then the peer's (both are in the SDPs).
    user: String,
    /// The edge's ICE password (in the offer).
    pwd: String,
    /// The peer's address (its one candidate).
    at: std::net::SocketAddr,
}

/// The test peer plays straight from the edge.
async fn play_directly(host: &HostProcess) -> Playing {
    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let offer = request_offer(&mut s).await.unwrap();
    let id = offer["id"].as_u64().unwrap();
    let offer_sdp = offer["sdp"]["sdp"].as_str().unwrap();
    let (pc, answer, stats) = tests::peer::answer_offer(offer_sdp).await.unwrap();
    let user = format!("{}:{}", sdp_attribute(offer_sdp, "ice-ufrag"), sdp_attribute(&answer, "ice-ufrag"));
    let pwd = sdp_attribute(offer_sdp, "ice-pwd").to_owned();
    let candidate: Vec<&str> = sdp_attribute(&answer, "candidate").split_whitespace().collect();
    let at = format!("{}:{}", candidate[4], candidate[5]).parse().unwrap();
    s.send(serde_json::json!({"command": "answer", "id": id, "peer_id": 0, "sdp": {"type": "answer", "sdp": answer}})).await.unwrap();
    tests::peer::wait_until(T, "first video packet", || stats.video() > 0).await.unwrap();
    Playing { _signal: s, _pc: pc, stats, user, pwd, at }
}

/// Whether a datagram is RTP or RTCP (RFC 7983).
fn is_rtp(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (128..192).contains(b))
}

/// RFC 7675: a viewer that knows its ICE password (it is in the offer) forges nominating checks
/// from another address (another socket on loopback: another port is another address). That
/// address gets the answers to the checks and the edge's own check, STUN, and nothing else: no
/// media, no DTLS; the viewer plays on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_forged_from_another_address_send_it_no_media_and_the_viewer_plays_on() {
    let port = *free_udp_ports(1).start();
    let host = HostProcess::start(|p| config_xml_with_ice(p, &format!("127.0.0.1:{port}/udp"), "")).unwrap();
    let viewer = play_directly(&host).await;

    let victim = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let before = viewer.stats.video();
    let mut received = Vec::new();
    let mut buf = [0u8; 2048];
    for _ in 0..6 {
        victim.send_to(&nominating_check(&viewer.user, &viewer.pwd).raw, ("127.0.0.1", port)).await.unwrap();
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(until, victim.recv_from(&mut buf)).await {
            received.push(buf[..n.min(2)].to_vec());
        }
    }
    assert!(received.contains(&vec![0x01, 0x01]), "the forged checks were valid: answered with a binding success");
    let other: Vec<_> = received.iter().filter(|d| d[0] >= 4).collect();
    assert!(other.is_empty(), "the forged address got {} datagrams that are not STUN (media, DTLS), e.g. {:?}", other.len(), other.first());
    let during = viewer.stats.video();
    assert!(during > before + 50, "the viewer played during the forged checks: {before} -> {during} video packets");
    tests::peer::wait_until(T, "video after the forged checks", || viewer.stats.video() > during + 50).await.unwrap();
}

/// The other side of that rule: a player's network changes (here a relay socket stands for its
/// new address: it passes everything between the edge and the test peer). Its nominating check
/// from there makes the edge check that address; the peer's ICE agent (`webrtc-rs`) answers
/// through the relay, and from then on the media goes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nominated_address_gets_the_media_once_the_players_agent_answers_the_edges_check_there() {
    let port = *free_udp_ports(1).start();
    let host = HostProcess::start(|p| config_xml_with_ice(p, &format!("127.0.0.1:{port}/udp"), "")).unwrap();
    let viewer = play_directly(&host).await;
    let edge: std::net::SocketAddr = ([127, 0, 0, 1], port).into();

    let relay = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    relay.send_to(&nominating_check(&viewer.user, &viewer.pwd).raw, edge).await.unwrap();
    let (mut media, mut buf) = (0, [0u8; 2048]);
    let until = tokio::time::Instant::now() + T;
    while media < 50 {
        let Ok(Ok((n, from))) = tokio::time::timeout_at(until, relay.recv_from(&mut buf)).await else { break };
        let to = if from == edge { viewer.at } else { edge };
        media += usize::from(from == edge && is_rtp(&buf[..n]));
        let _ = relay.send_to(&buf[..n], to).await;
    }
    assert_eq!(media, 50, "the media moved to the address whose agent answered");
}

/// The value of the unlabelled `/metrics` series `name` on the API port `api`.
fn scraped(api: u16, name: &str) -> f64 {
    let (status, _, body) = tests::harness::http("GET", api, "/metrics", "").unwrap();
    assert_eq!(status, 200, "{body}");
    let line = body.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("no {name} in {body}"));
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

/// Issue 22, item 4: the ICE port the offer names answers a plain Binding request (no USERNAME)
/// with the sender's own address, as a STUN server; the offer says so in `p2p_ice_servers` (not
/// `iceServers`, which OvenPlayer 0.10.38 takes as relay-only); a burst from one address gets at
/// most the rate limiter's burst answered; a viewer plays meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ice_port_answers_plain_stun_with_the_senders_address_within_a_rate_and_viewers_play() {
    let port = *free_udp_ports(1).start();
    let api = tests::harness::free_port();
    let host = HostProcess::start(|p| {
        let listener = format!("<Bind><Managers><API><Port>{api}</Port></API></Managers>");
        config_xml_with_ice(p, &format!("127.0.0.1:{port}/udp"), "").replacen("<Bind>", &listener, 1)
    })
    .unwrap();
    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let offer = request_offer(&mut s).await.unwrap();
    let offered = offered_ports(&offer)[0];
    assert_eq!(offer["p2p_ice_servers"], serde_json::json!([{"urls": [format!("stun:127.0.0.1:{offered}")]}]), "{offer}");
    assert!(offer.get("iceServers").is_none() && offer.get("ice_servers").is_none(), "{offer}");

    let player = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let request = plain_binding_request();
    player.send_to(&request.raw, ("127.0.0.1", offered)).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(T, player.recv_from(&mut buf)).await.expect("an answer").unwrap();
    assert_eq!(from, std::net::SocketAddr::from(([127, 0, 0, 1], offered)));
    let answer = binding_success(&buf[..n], &request);
    assert_eq!(mapped_address(&answer), player.local_addr().unwrap());
    assert!(n <= request.raw.len() + 12, "no amplification: {n} bytes for {}", request.raw.len());

    let viewer = PeerAgent::join(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    viewer.wait_for(T, "first video packet", |s| s.video() > 0).await.unwrap();
    let burst = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..100 {
        burst.send_to(&plain_binding_request().raw, ("127.0.0.1", offered)).await.unwrap();
    }
    let mut answered = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(1000), burst.recv_from(&mut buf)).await {
        answered += 1;
    }
    assert!((1..=20).contains(&answered), "{answered} of 100 requests from one address answered; the burst is 20");
    assert_eq!(scraped(api, "stun_binding_answered_total"), 1.0 + answered as f64);
    assert_eq!(scraped(api, "stun_binding_dropped_total"), 100.0 - answered as f64);
    let at = viewer.stats.video();
    viewer.wait_for(T, "video after the burst", |s| s.video() > at + 50).await.unwrap();
    assert_eq!(viewer.stats.source(), Some(0), "it plays from the edge");
}
