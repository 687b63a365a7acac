//! ICE over TCP (issue 24, item 2; RFC 6544 with RFC 4571 framing) against the real host: a
//! `/tcp` ICE port is offered as a passive TCP candidate, `?transport=` picks the transports, and
//! a raw TCP client doing what Chromium does (framed checks on its own stream) gets its check
//! answered and the edge's DTLS handshake on that stream. webrtc-rs 0.21's driver has code to dial
//! a trickled passive TCP candidate (`RemoteIceTcpPassiveCandidate`), but the test peer as built
//! (UDP only, no local TCP candidate) did not connect over it within 10 s, so the media part is
//! Chromium's: the browser test
//! `an_ovenplayer_0_10_54_viewer_whose_network_drops_all_udp_plays_over_ice_tcp`.

use rtc::stun::integrity::MessageIntegrity;
use serde_json::Value;
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;
use tests::harness::{config_xml_with_ice, HostProcess};
use tests::signal::{request_offer, Signal, CHROME_WINDOWS};
use tests::stun::{binding_success, mapped_address, nominating_check};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

/// A host with one UDP and one TCP ICE port on loopback; its TCP port.
fn host() -> (HostProcess, u16) {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ice = format!("127.0.0.1:{udp}/udp</IceCandidate><IceCandidate>127.0.0.1:{tcp}/tcp");
    (HostProcess::start(|p| config_xml_with_ice(p, &ice, "")).unwrap(), tcp)
}

/// The `a=candidate` lines of an offer's SDP, and its `candidates` list, which must agree.
fn candidates(offer: &Value) -> Vec<String> {
    let in_sdp: Vec<String> =
        offer["sdp"]["sdp"].as_str().unwrap().lines().filter_map(|l| l.strip_prefix("a=")).filter(|l| l.starts_with("candidate:")).map(str::to_owned).collect();
    let listed: Vec<String> = offer["candidates"].as_array().unwrap().iter().map(|c| c["candidate"].as_str().unwrap().to_owned()).collect();
    assert_eq!(in_sdp, listed, "{offer}");
    in_sdp
}

fn sdp_attribute<'a>(sdp: &'a str, name: &str) -> &'a str {
    sdp.lines().find_map(|l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':')).unwrap().trim()
}

/// `data` with its RFC 4571 length prefix.
fn framed(data: &[u8]) -> Vec<u8> {
    [&(data.len() as u16).to_be_bytes()[..], data].concat()
}

/// The next frame of `stream`, or `None` once the host has closed it.
async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 2];
    tokio::time::timeout(T, stream.read_exact(&mut prefix)).await.expect("a frame or the end").ok()?;
    let mut frame = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    tokio::time::timeout(T, stream.read_exact(&mut frame)).await.expect("the frame's bytes").ok()?;
    Some(frame)
}

/// Whether the host closed `stream` (within [`T`]), reading away anything it sent first.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(T, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_ice_port_is_offered_as_passive_candidates_and_transport_picks_which() {
    let (host, tcp) = host();
    for (query, want_udp, want_tcp) in [("", true, true), ("?transport=tcp", false, true), ("?transport=UDP", true, false)] {
        let mut s = Signal::connect(&host.ws_url(&format!("app/stream{query}")), CHROME_WINDOWS).await.unwrap();
        let offer = request_offer(&mut s).await.unwrap();
        let lines = candidates(&offer);
        let tcp_lines: Vec<&String> = lines.iter().filter(|l| l.contains(" tcp ")).collect();
        assert_eq!(tcp_lines.len(), usize::from(want_tcp), "{query}: {lines:?}");
        assert_eq!(lines.len() - tcp_lines.len(), usize::from(want_udp), "{query}: {lines:?}");
        for line in tcp_lines {
            assert!(line.ends_with(&format!(" 127.0.0.1 {tcp} typ host tcptype passive")), "{line}");
        }
        // The host's STUN server is on its UDP ports only.
        assert_eq!(offer["p2p_ice_servers"].as_array().is_some_and(|a| !a.is_empty()), want_udp, "{query}: {offer}");
    }
}

/// What Chromium does on a passive TCP candidate: its own stream, a framed nominating check on
/// it; the answer comes back framed on that stream, then the edge's DTLS handshake (the player
/// answered `a=setup:passive`: the edge is the DTLS client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framed_check_on_a_tcp_stream_is_answered_there_and_dtls_starts_on_it() {
    let (host, tcp) = host();
    let mut s = Signal::connect(&host.ws_url("app/stream?transport=tcp"), CHROME_WINDOWS).await.unwrap();
    let offer = request_offer(&mut s).await.unwrap();
    let sdp = offer["sdp"]["sdp"].as_str().unwrap();
    let (ufrag, pwd) = (sdp_attribute(sdp, "ice-ufrag"), sdp_attribute(sdp, "ice-pwd").to_owned());
    let answer = "v=0\r\na=fingerprint:sha-256 AB:CD\r\na=ice-ufrag:play\r\na=ice-pwd:playerpasswordplayerpassword\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=setup:passive\r\n";
    let id = offer["id"].as_u64().unwrap();
    s.send(serde_json::json!({"command": "answer", "id": id, "peer_id": 0, "sdp": {"type": "answer", "sdp": answer}})).await.unwrap();

    let mut stream = TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    let check = nominating_check(&format!("{ufrag}:play"), &pwd);
    stream.write_all(&framed(&check.raw)).await.unwrap();
    let mut response = binding_success(&read_frame(&mut stream).await.expect("the check's answer"), &check);
    let crypto = rtc::crypto::default_provider().unwrap();
    MessageIntegrity::check(&mut response, pwd.as_bytes(), crypto.crypto()).expect("signed with the edge's password");
    assert_eq!(mapped_address(&response), stream.local_addr().unwrap(), "the stream's address as the edge sees it");

    let hello = read_frame(&mut stream).await.expect("the edge's DTLS handshake");
    assert_eq!((hello[0], hello[13]), (22, 1), "a DTLS handshake record carrying a ClientHello: {hello:?}");
}

/// The bounds of the UDP path hold on TCP: a first frame that is no check naming a connection,
/// a frame longer than a datagram, or nothing within the first check's deadline (5 s) gets the
/// stream closed, counted in `edge_tcp_streams_refused`; a viewer's check still works after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_name_no_connection_send_oversized_frames_or_nothing_are_closed() {
    let (host, tcp) = host();
    let unknown = nominating_check("nosuchufrag:play", "whatever");
    let mut junk = Vec::new();
    for first in [framed(&unknown.raw), framed(&[22u8; 40]), [0x08, 0x01].iter().copied().chain([0u8; 2049]).collect()] {
        let mut stream = TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
        stream.write_all(&first).await.unwrap();
        junk.push(stream);
    }
    for stream in &mut junk {
        assert!(closed(stream).await, "the host closes a stream whose first frame names no connection");
    }
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    assert!(closed(&mut silent).await, "closed after the first check's deadline");
    let waited = started.elapsed();
    assert!((Duration::from_secs(4)..Duration::from_secs(7)).contains(&waited), "closed after {waited:?}");
    let stats = host.stats().unwrap();
    assert_eq!(stats["metrics"]["edge_tcp_streams_refused"].as_i64(), Some(4), "{}", stats["metrics"]);
}

