//! What an attacker tries on the signalling port (issue 10): each attack gets the protocol's
//! answer and a close, holds no more than its bounds, and never keeps a new viewer out.

use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tests::harness::{config_xml, HostProcess, ONE_ADDRESS_CAP};
use tests::signal::{request_offer, Received, Signal, CHROME_WINDOWS};

const T: Duration = Duration::from_secs(10);

/// A test config with `<Signalling>` limits added after the port.
fn with_limits(port: u16, limits: &str) -> String {
    config_xml(port, "").replace(ONE_ADDRESS_CAP, limits)
}

fn metric(host: &HostProcess, name: &str) -> i64 {
    host.stats().unwrap()["metrics"][name].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_gets_the_protocols_error_and_a_close_before_it_is_buffered() {
    let host = HostProcess::start(|port| with_limits(port, "<MaxMessageBytes>4096</MaxMessageBytes>")).unwrap();
    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    // The host answers from the frame's header, before the payload: it may close while this
    // client is still writing, so the write may fail; the answer must arrive all the same.
    let _ = s.send_text(&format!(r#"{{"command":"request_offer","pad":"{}"}}"#, "x".repeat(1 << 20))).await;
    let error = s.recv_json(T).await.unwrap();
    assert_eq!(error["code"], 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("over 4096 bytes"), "{error}");
    assert_eq!(s.recv(T).await.unwrap(), Received::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_candidates_or_messages_close_the_session_with_the_protocols_error() {
    let host = HostProcess::start(|port| with_limits(port, "<MaxMessagesPerSecond>20</MaxMessagesPerSecond>")).unwrap();
    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let id = request_offer(&mut s).await.unwrap()["id"].as_u64().unwrap();
    let candidates: Vec<_> = (0..65).map(|i| json!({"candidate": format!("candidate:{i} 1 udp 1 192.0.2.9 9 typ host")})).collect();
    s.send(json!({"command": "candidate", "id": id, "peer_id": 0, "candidates": candidates})).await.unwrap();
    let error = s.recv_json(T).await.unwrap();
    assert_eq!(error["code"], 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("65 candidates"), "{error}");

    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let id = request_offer(&mut s).await.unwrap()["id"].as_u64().unwrap();
    for _ in 0..100 {
        if s.send(json!({"command": "change_rendition", "id": id, "auto": true})).await.is_err() {
            break;
        }
    }
    let error = s.recv_json(T).await.unwrap();
    assert_eq!(error["code"], 429, "{error}");
}

/// Opens a TCP connection to the host from `source` (an address of 127/8) and sends half a request.
fn half_open_request(host: &HostProcess, source: &str) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.bind(&SocketAddr::new(source.parse().unwrap(), 0).into()).ok()?;
    socket.connect(&SocketAddr::from(([127, 0, 0, 1], host.port)).into()).ok()?;
    let mut stream: TcpStream = socket.into();
    stream.write_all(b"GET /app/stream HTTP/1.1\r\nHost: x\r\nUpgrade: web").ok()?;
    Some(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_sent_requests_is_capped_and_timed_out_and_a_new_viewer_is_still_served() {
    let host = HostProcess::start(|port| {
        with_limits(port, "<MaxConnectionsPerAddress>20</MaxConnectionsPerAddress><HeaderTimeoutMs>1500</HeaderTimeoutMs>")
    })
    .unwrap();
    let flood: Vec<TcpStream> = (0..300).filter_map(|_| half_open_request(&host, "127.0.0.2")).collect();
    assert!(flood.len() >= 250, "the attacker's connections are accepted by the kernel: {}", flood.len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A viewer from another address is served while the flood is held off.
    let mut viewer = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    assert_eq!(request_offer(&mut viewer).await.unwrap()["code"], 200);
    assert!(metric(&host, "connections_refused_over_cap") >= 250, "all but 20 are refused at once");
    // The 20 admitted half-open requests are dropped at the header deadline.
    let started = Instant::now();
    let total = flood.len();
    let closed = flood
        .into_iter()
        .filter(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 256];
            // EOF or a reset: the host let go of it. A timeout: still held.
            !matches!(c.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
        })
        .count();
    assert_eq!(closed, total, "every half-sent request is let go");
    assert!(started.elapsed() < Duration::from_secs(5), "closed by the header deadline, not held: {:?}", started.elapsed());
    // Places are free again: the same address can connect.
    assert!(half_open_request(&host, "127.0.0.2").is_some());
    let mut again = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    assert_eq!(request_offer(&mut again).await.unwrap()["code"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_needs_the_token_when_one_is_configured_and_never_shows_user_agents_without_it() {
    let host = HostProcess::start(|port| config_xml(port, "")).unwrap();
    let _viewer = Signal::connect(&host.ws_url("app/stream"), "SecretAgent/1.0").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = host.get("/stats", "").unwrap();
    assert_eq!(status, 200, "loopback without a token configured");
    assert!(!body.contains("SecretAgent"), "no User-Agent without the token: {body}");

    let host = HostProcess::start(|port| with_limits(port, "<StatsAccessToken>s3cret</StatsAccessToken>")).unwrap();
    let _viewer = Signal::connect(&host.ws_url("app/stream"), "SecretAgent/1.0").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(host.get("/stats", "").unwrap().0, 401);
    assert_eq!(host.get("/stats", "Authorization: Bearer wrong\r\n").unwrap().0, 401);
    let (status, body) = host.get("/stats", "Authorization: Bearer s3cret\r\n").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("SecretAgent"), "the token holder sees User-Agents: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_session_with_going_away_and_exits_0_despite_a_half_open_request() {
    let mut host = HostProcess::start(|port| with_limits(port, "<DrainTimeoutMs>3000</DrainTimeoutMs>")).unwrap();
    let mut viewer = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    assert_eq!(request_offer(&mut viewer).await.unwrap()["code"], 200);
    let _half_open = half_open_request(&host, "127.0.0.1").unwrap();
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = host.terminate(Duration::from_secs(10));
        (status, host.log())
    });
    assert_eq!(viewer.recv(T).await.unwrap(), Received::Closed);
    assert_eq!(viewer.close_code, Some(1001), "the protocol's close: going away");
    let (status, log) = status.await.unwrap();
    let status = status.expect("the host exits within its drain bound");
    assert!(status.success(), "exit 0: {status:?}\n{log}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(log.contains("session closed"), "plugins and logs see the session close:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_that_stops_reading_is_closed_not_buffered_for() {
    let plugin = format!("<Plugins><Plugin><Path>{}</Path></Plugin></Plugins>", tests::harness::library("test_plugin_flooder").display());
    let host = HostProcess::start(|port| {
        config_xml(port, &plugin).replace("</Port>", "</Port><WriteTimeoutMs>1000</WriteTimeoutMs>")
    })
    .unwrap();
    let idle = tests::procstat::sample(host.pid()).unwrap().rss;
    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let id = request_offer(&mut s).await.unwrap()["id"].as_u64().unwrap();
    // Ask the plugin for 25 MiB, then read nothing.
    s.send(json!({"command": "flood", "id": id})).await.unwrap();
    let started = Instant::now();
    loop {
        let stats = host.stats().unwrap();
        if !stats["sessions"].as_array().unwrap().iter().any(|s| s["id"] == id) {
            // Whichever bound bit first: the plugin's queue for the session, the session's
            // outgoing queue, or the write deadline.
            let bounded = ["plugin_messages_dropped_over_bound", "sessions_closed_slow_reader", "sessions_closed_write_timeout"]
                .iter()
                .map(|m| stats["metrics"][m].as_i64().unwrap_or(0))
                .sum::<i64>();
            assert!(bounded >= 1, "closed by a bound: {stats}");
            break;
        }
        assert!(started.elapsed() < T, "the slow reader is still open after {T:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown = tests::procstat::sample(host.pid()).unwrap().rss.saturating_sub(idle);
    assert!(grown < 16 << 20, "25 MiB asked for, {} MiB held", grown >> 20);
    let mut viewer = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    assert_eq!(request_offer(&mut viewer).await.unwrap()["code"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_naming_a_victim_make_the_edge_send_it_nothing() {
    let host = HostProcess::start(|port| config_xml(port, "")).unwrap();
    let victim = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = victim.local_addr().unwrap().port();
    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    let id = request_offer(&mut s).await.unwrap()["id"].as_u64().unwrap();
    let candidates: Vec<_> = (0..60).map(|i| json!({"candidate": format!("candidate:{i} 1 udp {} 127.0.0.1 {port} typ host", 2_000_000_000 - i)})).collect();
    for _ in 0..8 {
        s.send(json!({"command": "candidate", "id": id, "peer_id": 0, "candidates": candidates})).await.unwrap();
    }
    victim.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 1500];
    assert!(victim.recv(&mut buf).is_err(), "the ICE-lite edge never sends checks to a candidate a player names");
    // 480 candidates is within the session's bound: the session lives.
    assert!(host.stats().unwrap()["sessions"].as_array().unwrap().iter().any(|x| x["id"] == id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_user_agent_is_cut_to_its_bound_before_anyone_keeps_it() {
    let host = HostProcess::start(|port| with_limits(port, "<StatsAccessToken>t</StatsAccessToken>")).unwrap();
    let huge = format!("Mozilla/5.0 (Windows NT 10.0) {}", "A".repeat(200 * 1024));
    let _s = Signal::connect(&host.ws_url("app/stream"), &huge).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = host.get("/stats", "Authorization: Bearer t\r\n").unwrap();
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kept = stats["sessions"][0]["user_agent"].as_str().unwrap();
    assert_eq!(kept.len(), 512, "kept (and classified) at most MaxUserAgentBytes");
    assert!(huge.starts_with(kept));
}

/// Sends `head` then an HTTP request for `path` on a fresh connection: the status, if any came.
fn raw_get(port: u16, head: &[u8], path: &str) -> Option<u16> {
    raw_get_body(port, head, path).map(|(status, _)| status)
}

/// [`raw_get`] with the response's body.
fn raw_get_body(port: u16, head: &[u8], path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(head).unwrap();
    let _ = s.write_all(format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes());
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok())?;
    Some((status, response.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string())))
}

/// Behind a load balancer on the same machine (a trusted proxy sending the PROXY protocol), the
/// host sees the clients, not the balancer: `/stats` is not opened to everyone through it, the
/// per-address cap counts clients; a trusted proxy's connection without the header is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_host_sees_the_client_the_proxy_names() {
    let host = HostProcess::start(|port| {
        with_limits(port, "<MaxConnectionsPerAddress>1</MaxConnectionsPerAddress><TrustedProxy>127.0.0.1/32</TrustedProxy>")
    })
    .unwrap();
    let far = b"PROXY TCP4 198.51.100.7 127.0.0.1 50000 3333\r\n";
    assert_eq!(raw_get(host.port, far, "/stats"), Some(403), "a client far away, through the proxy");
    let near = b"PROXY TCP4 127.0.0.1 127.0.0.1 50001 3333\r\n";
    assert_eq!(raw_get(host.port, near, "/stats"), Some(200), "a client on this machine");
    assert_eq!(raw_get(host.port, b"", "/stats"), None, "the proxy's own connection must carry the header");
    let (_, stats) = raw_get_body(host.port, near, "/stats").unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["metrics"]["proxy_headers_refused"], 1, "{stats}");
    // The cap of one connection per address holds per client, not per proxy.
    let mut held = TcpStream::connect(("127.0.0.1", host.port)).unwrap();
    held.write_all(b"PROXY TCP4 198.51.100.8 127.0.0.1 50002 3333\r\nGET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let other = b"PROXY TCP4 198.51.100.9 127.0.0.1 50003 3333\r\n";
    assert_eq!(raw_get(host.port, other, "/"), Some(200), "another client through the same proxy");
    let same = b"PROXY TCP4 198.51.100.8 127.0.0.1 50004 3333\r\n";
    assert_eq!(raw_get(host.port, same, "/"), None, "the first client's second connection, over its cap");
    drop(held);
}
