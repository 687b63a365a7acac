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

/// A TCP connection to the host from `source` (an address of 127/8), with a receive buffer of
/// `receive_buffer` bytes if given (set before connecting, so the window stays that small).
fn connect_from(port: u16, source: &str, receive_buffer: Option<usize>) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    socket.bind(&SocketAddr::new(source.parse().unwrap(), 0).into()).unwrap();
    socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
    socket.into()
}

/// Whether the host has let go of `connection` (EOF or a reset, once what it sent is read)
/// rather than still holding it.
fn let_go(mut connection: &TcpStream) -> bool {
    connection.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match connection.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

/// Waits until `condition` holds, for at most [`T`].
async fn until(mut condition: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < T, "not within {T:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A v2 PROXY header's first 16 bytes: the signature, PROXY over TCP/IPv4, announcing `len`.
fn v2_head(len: u16) -> Vec<u8> {
    let mut head = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    head.extend(len.to_be_bytes());
    head
}

/// Issue 20, item 5: connections from the trusted proxy that stall inside their PROXY header
/// are counted against the caps while it is read (the proxy's address, the total), a header
/// announcing more than the bound is refused at once, and a client is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stalled_inside_a_proxy_header_are_counted_and_bounded_and_a_client_is_still_served() {
    let host = HostProcess::start(|port| {
        with_limits(port, "<MaxConnections>100</MaxConnections><MaxConnectionsPerAddress>40</MaxConnectionsPerAddress><HeaderTimeoutMs>3000</HeaderTimeoutMs><TrustedProxy>127.0.0.2/32</TrustedProxy>")
    })
    .unwrap();
    // 75 announce 65,535 bytes, then 75 announce 100; none sends its body.
    let stall = |len: u16| {
        let mut c = connect_from(host.port, "127.0.0.2", None);
        c.write_all(&v2_head(len)).unwrap();
        c
    };
    let mut stalled: Vec<TcpStream> = (0..75).map(|_| stall(u16::MAX)).collect();
    // Refused at once: for their size, or over the proxy's share while others are being read.
    let refused = || metric(&host, "proxy_headers_refused") + metric(&host, "connections_refused_over_cap");
    until(|| refused() == 75, "the oversized are refused at once").await;
    assert!(stalled.iter().all(let_go));
    let (oversized, over_cap) = (metric(&host, "proxy_headers_refused"), metric(&host, "connections_refused_over_cap"));
    stalled = (0..75).map(|_| stall(100)).collect();
    until(|| metric(&host, "connections_refused_over_cap") == over_cap + 35, "the excess is refused at once").await;
    let held = stalled.iter().filter(|c| !let_go(c)).count();
    assert_eq!(held, 40, "the proxy's share of headers being read");
    assert_eq!(raw_get(host.port, b"", "/"), Some(200), "a client of its own is served meanwhile");
    // Once the header deadline lets them go, the proxy's clients are served again.
    until(|| stalled.iter().all(let_go), "every stalled header is let go at the header deadline").await;
    let mut client = connect_from(host.port, "127.0.0.2", None);
    client.write_all(b"PROXY TCP4 198.51.100.7 127.0.0.1 50000 3333\r\nGET / HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    client.set_read_timeout(Some(T)).unwrap();
    let _ = client.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.0 200"), "a client through the proxy: {response:.40}");
    let stats = host.stats().unwrap();
    assert_eq!(stats["metrics"]["connections_refused_over_cap"], over_cap + 35, "{stats}");
    assert_eq!(stats["metrics"]["proxy_headers_refused"], oversized + 40, "the held ones at their deadline: {stats}");
}

/// Issue 20, item 5: a v2 LOCAL or v1 UNKNOWN header (the proxy's own health check) gives the
/// connection no client address: never loopback, so `/stats` and `/p2p` stay closed to it; the
/// health check still gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxys_local_or_unknown_header_names_no_client_and_opens_nothing_reserved_for_loopback() {
    let host = HostProcess::start(|port| with_limits(port, "<TrustedProxy>127.0.0.1/32</TrustedProxy>")).unwrap();
    let local = [&b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"[..], b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ::1 ::1 1 2\r\n"];
    for head in local {
        assert_eq!(raw_get(host.port, head, "/"), Some(200), "the health check is answered: {head:?}");
        for path in ["/stats", "/p2p", "/p2p/events"] {
            assert_eq!(raw_get(host.port, head, path), Some(403), "{path} after {head:?}");
        }
    }
}

/// Opens `/p2p/events` from `source` and reads the status only (then never reads again).
fn watch_tree(port: u16, source: &str, receive_buffer: Option<usize>) -> (u16, TcpStream) {
    let mut c = connect_from(port, source, receive_buffer);
    c.write_all(b"GET /p2p/events HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let mut status = [0u8; 12];
    c.read_exact(&mut status).unwrap();
    (std::str::from_utf8(&status[9..12]).unwrap().parse().unwrap(), c)
}

/// Issue 20, item 3: one client (or several of its addresses) opening every live-tree stream
/// it can and reading none does not lock an operator out: an address keeps its newest pages up to
/// its share, and a full cap makes room from the address holding the most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_that_never_read_do_not_lock_a_new_operator_out_of_the_live_tree() {
    let host = HostProcess::start(|port| config_xml(port, "")).unwrap();
    let one: Vec<(u16, TcpStream)> = (0..32).map(|_| watch_tree(host.port, "127.0.0.2", None)).collect();
    assert!(one.iter().all(|(status, _)| *status == 200), "a new page is let in");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held: Vec<bool> = one.iter().map(|(_, c)| !let_go(c)).collect();
    assert_eq!(held.iter().filter(|h| **h).count(), 8, "one address keeps its share");
    assert!(held[24..].iter().all(|h| *h), "its newest");
    let (status, operator) = watch_tree(host.port, "127.0.0.1", None);
    assert_eq!(status, 200, "an operator elsewhere");
    // Four addresses holding their share fill the cap: a new operator still gets in, and the
    // operator holding one page keeps it.
    let many: Vec<(u16, TcpStream)> = (3..6).flat_map(|a| (0..8).map(move |_| a)).map(|a| watch_tree(host.port, &format!("127.0.0.{a}"), None)).collect();
    assert!(many.iter().all(|(status, _)| *status == 200));
    let (status, _another) = watch_tree(host.port, "127.0.0.10", None);
    assert_eq!(status, 200, "room is made for a new operator");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!let_go(&operator), "taken from the addresses holding the most");
    assert_eq!(metric(&host, "p2p_watchers_dropped_for_room"), 24 + 2);
}

/// Issue 20, item 3: a live-tree watcher whose socket stops taking updates is dropped at its
/// write deadline and its connection closed; a watcher that reads stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_tree_watcher_that_stops_reading_is_dropped_at_its_write_deadline() {
    let host = HostProcess::start(|port| config_xml(port, "")).unwrap();
    // 300 viewers make each update ~20 KB; one viewer coming and going makes an update every
    // few hundred milliseconds.
    let mut viewers = Vec::new();
    for _ in 0..300 {
        viewers.push(Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap());
    }
    let (status, mut stalled) = watch_tree(host.port, "127.0.0.2", Some(4096));
    assert_eq!(status, 200);
    let (status, mut reader) = watch_tree(host.port, "127.0.0.3", None);
    assert_eq!(status, 200);
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = read.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let started = Instant::now();
    while metric(&host, "p2p_watchers_dropped_not_reading") == 0 {
        assert!(started.elapsed() < Duration::from_secs(120), "the watcher that reads nothing is still held");
        drop(viewers.pop());
        viewers.push(Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("dropped after {:?}", started.elapsed());
    // The host has closed it: what was in flight drains, then EOF.
    stalled.set_read_timeout(Some(T)).unwrap();
    let mut sink = Vec::new();
    assert!(stalled.read_to_end(&mut sink).is_ok(), "closed, not held");
    let before = read.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(read.load(std::sync::atomic::Ordering::Relaxed) > before, "the reading watcher still gets updates");
    assert_eq!(metric(&host, "p2p_watchers_dropped_not_reading"), 1, "only the one that does not read");
}
