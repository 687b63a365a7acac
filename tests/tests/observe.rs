//! What an operator sees, against the real host with real WebRTC peers: OME's stats API (its
//! paths, envelope, errors and access token) with the `p2p` object, and `/metrics` in the
//! Prometheus text format, both telling how much the peers carry.

use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tests::harness::{config_xml, free_port, http, p2p_xml, HostProcess};
use tests::peer::PeerAgent;
use tests::signal::CHROME_WINDOWS;

const LONG: Duration = Duration::from_secs(20);
const TOKEN: &str = "ome:s3cret";

/// A host with P2P at k = 2, the API on its own port, and OME's access token.
fn host_with_api() -> (HostProcess, u16) {
    let api = free_port();
    let token = format!("<Managers><Host><Names><Name>*</Name></Names></Host><API><AccessToken>{TOKEN}</AccessToken></API></Managers>");
    let listener = format!("<Bind><Managers><API><Port>{api}</Port></API></Managers>");
    let host = HostProcess::start(|port| config_xml(port, &format!("{}\n{token}", p2p_xml(2, 4000))).replacen("<Bind>", &listener, 1)).unwrap();
    (host, api)
}

fn basic(credentials: &str) -> String {
    format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(credentials))
}

/// GET on the API with the token: (status, JSON body).
fn api_get(api: u16, path: &str) -> (u16, Value) {
    let (status, _, body) = http("GET", api, path, &basic(TOKEN)).unwrap();
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

/// A relay and two clients fed by it, all playing.
async fn relay_and_two_clients(host: &HostProcess) -> (PeerAgent, PeerAgent, PeerAgent) {
    let url = host.ws_url("app/stream");
    let relay = PeerAgent::join(&url, CHROME_WINDOWS).await.unwrap();
    relay.wait_for(LONG, "edge media", |s| s.video() > 30).await.unwrap();
    let relay_id = relay.stats.id();
    let c1 = PeerAgent::join(&url, CHROME_WINDOWS).await.unwrap();
    let c2 = PeerAgent::join(&url, CHROME_WINDOWS).await.unwrap();
    for c in [&c1, &c2] {
        c.wait_for(LONG, "media from the relay", |s| s.source() == Some(relay_id) && s.video() > 60).await.unwrap();
    }
    (relay, c1, c2)
}

/// Polls the stream's stats until `done` holds (the book samples once a second).
async fn stream_stats_until(api: u16, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let path = "/v1/stats/current/vhosts/default/apps/app/streams/stream";
    let started = std::time::Instant::now();
    loop {
        let (status, body) = api_get(api, path);
        assert_eq!(status, 200, "{body}");
        if done(&body["response"]) {
            return body;
        }
        assert!(started.elapsed() < LONG, "{what} never held: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_api_answers_as_ome_does_and_says_how_much_the_peers_carry() {
    let (host, api) = host_with_api();
    let (_relay, c1, c2) = relay_and_two_clients(&host).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let body = stream_stats_until(api, "two P2P viewers", |r| r["p2p"]["peerViewers"] == 2).await;
    assert_eq!((body["statusCode"].clone(), body["message"].clone()), (json!(200), json!("OK")));
    let r = &body["response"];
    for field in ["createdTime", "lastUpdatedTime", "lastRecvTime", "lastSentTime", "maxTotalConnectionTime"] {
        let t = r[field].as_str().unwrap_or_else(|| panic!("{field}: {r}"));
        assert!(t.len() == 29 && t.ends_with("+00:00") && &t[10..11] == "T", "{field}: {t}");
    }
    for field in ["totalBytesIn", "totalBytesOut", "lastThroughputIn", "lastThroughputOut", "avgThroughputIn", "avgThroughputOut", "maxThroughputIn", "maxThroughputOut"] {
        assert!(r[field].is_u64(), "{field}: {r}");
    }
    assert_eq!((r["totalConnections"].clone(), r["maxTotalConnections"].clone(), r["connections"]["webrtc"].clone()), (json!(3), json!(3), json!(3)));
    assert_eq!((r["p2p"]["hostPeers"].clone(), r["p2p"]["edgeViewers"].clone()), (json!(1), json!(1)), "{r}");
    assert!(r["totalBytesIn"].as_u64().unwrap() > 0 && r["avgThroughputOut"].as_u64().unwrap() > 0, "{r}");

    // The estimate of what the peers carried against what the two clients actually received,
    // before and after the sample it comes from (the book samples once a second).
    let received = || [&c1, &c2].iter().map(|c| c.stats.rtp_bytes.load(std::sync::atomic::Ordering::Relaxed)).sum::<u64>() as f64;
    let before = received();
    let sampled = r["lastUpdatedTime"].clone();
    let body = stream_stats_until(api, "the next sample", |r| r["lastUpdatedTime"] != sampled).await;
    let after = received();
    let r = &body["response"];
    let estimated = r["p2p"]["peerBytesEstimated"].as_u64().unwrap() as f64;
    let egress: Vec<_> = [&c1, &c2].iter().map(|c| host.session_egress(c.stats.id() as u64).unwrap()).collect();
    println!("peers carried {estimated} bytes (estimate), the clients received {before}..{after} (edge egress to them {egress:?}); offload {}", r["p2p"]["offloadRatio"]);
    // The estimate counts from each client's answer, before its connection is up: it runs ahead
    // by the set-up time, a few hundred ms of the stream per link (about 5 % here).
    assert!(estimated >= before * 0.95 && estimated <= after * 1.12, "estimate {estimated}, received {before} before the sample, {after} after");
    let offload = r["p2p"]["offloadRatio"].as_f64().unwrap();
    assert!(offload > 0.3 && offload < 0.7, "two of three viewers fed by a peer for part of the time: {offload}");

    // The levels above add up; the listings name what is configured.
    for path in ["/v1/stats/current", "/v1/stats/current/vhosts/default", "/v1/stats/current/vhosts/default/apps/app"] {
        let (status, up) = api_get(api, path);
        assert_eq!(status, 200);
        assert!(up["response"]["totalBytesOut"].as_u64() >= r["totalBytesOut"].as_u64(), "{path}: {up}");
    }
    assert_eq!(api_get(api, "/v1/vhosts").1["response"], json!(["default"]));
    assert_eq!(api_get(api, "/v1/vhosts/default/apps").1["response"], json!(["app"]));
    assert_eq!(api_get(api, "/v1/vhosts/default/apps/app/streams").1["response"], json!(["stream"]));
    let info = api_get(api, "/v1/vhosts/default/apps/app/streams/stream").1;
    assert_eq!(info["response"]["input"]["tracks"][0]["video"]["codec"], "VP8", "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_api_refuses_and_errs_with_omes_words() {
    let (_host, api) = host_with_api();
    let path = "/v1/stats/current/vhosts/default/apps/app/streams/stream";
    let expect = |method: &str, path: &str, headers: &str, status: u16, message: &str| {
        let (got, head, body) = http(method, api, path, headers).unwrap();
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert_eq!((got, body["message"].as_str().unwrap_or_default()), (status, message), "{method} {path} {headers}: {body}");
        assert_eq!(body["statusCode"], status);
        assert!(head.to_ascii_lowercase().contains("content-type: application/json;charset=utf-8"), "{head}");
        head
    };
    let head = expect("GET", path, "", 401, "[HTTP] Authorization header is required to call API (401)");
    assert!(head.to_ascii_lowercase().contains("www-authenticate: basic realm=\"ovenmediaengine\""), "{head}");
    expect("GET", path, &basic("ome:wrong"), 401, "[HTTP] Invalid credential (401)");
    expect("GET", path, "Authorization: Bearer ome:s3cret\r\n", 401, "[HTTP] Not supported credential type: Bearer (401)");
    expect("GET", "/v1/stats/current/vhosts/other", &basic(TOKEN), 404, "[HTTP] Could not find the virtual host: [other] (404)");
    expect("GET", "/v1/stats/current/vhosts/default/apps/nope", &basic(TOKEN), 404, "[HTTP] Could not find the application: [default/nope] (404)");
    expect("GET", "/v1/stats/current/vhosts/default/apps/app/streams/nope", &basic(TOKEN), 404, "[HTTP] Could not find the stream: [default/#default#app/nope] (404)");
    expect("GET", "/v1/nothing/here", &basic(TOKEN), 404, "[HTTP] Controller not found (404)");
    expect("PUT", path, &basic(TOKEN), 404, "[HTTP] Controller not found (404)");
    let (status, _, _) = http("OPTIONS", api, path, "").unwrap();
    assert_eq!(status, 204, "a CORS preflight needs no credentials");
}

/// `/metrics` as `name{labels}` -> value; panics on a line that is not the text format.
fn scrape(api: u16) -> BTreeMap<String, f64> {
    let (status, head, body) = http("GET", api, "/metrics", &basic(TOKEN)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let mut series = BTreeMap::new();
    for line in body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()), "{line}");
        series.insert(name.to_string(), value);
    }
    assert!(body.contains("# TYPE viewers gauge") && body.contains("# TYPE sessions_opened_total counter"), "{body}");
    series
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_viewers_by_delivery_and_p2p_fallbacks_by_reason() {
    let (host, api) = host_with_api();
    let (relay, c1, c2) = relay_and_two_clients(&host).await;
    let stream = r#"app="app",stream="stream""#;
    let m = scrape(api);
    assert_eq!(m[&format!(r#"viewers{{{stream},delivery="p2p"}}"#)], 2.0, "{m:#?}");
    assert_eq!(m[&format!(r#"viewers{{{stream},delivery="edge"}}"#)], 1.0);
    assert_eq!(m[&format!(r#"relaying_viewers{{{stream}}}"#)], 1.0);
    assert_eq!(m[r#"p2p_host_peers"#], 1.0, "the plugin's own gauge");
    assert!(m[&format!(r#"ingest_bytes_total{{{stream}}}"#)] > 0.0);
    assert!(m.contains_key("edge_packets_resent_total") && m.contains_key("edge_connections_closed_by_player_total"), "{m:#?}");
    assert!(m[r#"plugin_hook_duration_seconds_count{plugin="p2p",hook="offer_requested"}"#] >= 3.0, "{m:#?}");

    relay.leave().await;
    for c in [&c1, &c2] {
        let before = c.stats.video();
        c.wait_for(LONG, "the edge after the relay left", |s| s.source() == Some(0) && s.video() > before + 30).await.unwrap();
    }
    let m = scrape(api);
    assert_eq!(m[r#"p2p_fallbacks_total{reason="host_left"}"#], 2.0, "the plugin's counter, with its label: {m:#?}");
    assert_eq!(m[&format!(r#"viewers{{{stream},delivery="edge"}}"#)], 2.0);
    assert_eq!(m[&format!(r#"viewers{{{stream},delivery="p2p"}}"#)], 0.0);
    assert_eq!(m[&format!(r#"sessions_closed_total{{{stream},reason="disconnected"}}"#)], 1.0);
    assert!(m[&format!(r#"peer_bytes_estimated_total{{{stream}}}"#)] > 0.0, "what the peers carried stays counted");
}

/// The live P2P page's push is bounded (32 pages in all, 8 per address: issue 20's rule): each
/// page gets the snapshot at once; a ninth page from one address is let in and takes the place of
/// that address's oldest, whose stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ninth_p2p_page_from_one_address_takes_the_place_of_its_oldest() {
    use std::io::{BufRead, BufReader, Write};
    let host = HostProcess::start(|port| config_xml(port, "")).unwrap();
    let watch = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", host.port)).unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        s.write_all(b"GET /p2p/events HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{status}");
        let first = (0..20).map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line
        });
        assert!(first.into_iter().any(|l| l.starts_with("data: {\"streams\"")), "the snapshot at once");
        reader
    };
    let mut pages: Vec<_> = (0..8).map(|_| watch()).collect();
    let _ninth = watch();
    let oldest = &mut pages[0];
    let mut line = String::new();
    while oldest.read_line(&mut line).unwrap_or(0) > 0 {
        line.clear();
    }
    let mut second = String::new();
    pages[1].get_mut().set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert!(pages[1].read_line(&mut second).unwrap_or(0) > 0, "the second page still gets updates");
}
