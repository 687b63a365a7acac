//! Bad input gets the protocol's error, the socket is closed after it, and other sessions are
//! not harmed.

use serde_json::json;
use std::time::Duration;
use tests::harness::{config_xml, p2p_xml, HostProcess};
use tests::signal::{Received, Signal, CHROME_WINDOWS};

const T: Duration = Duration::from_secs(10);

async fn expect_error(host: &HostProcess, path: &str, send: Option<&str>, code: u16, text: &str) {
    let mut s = Signal::connect(&host.ws_url(path), CHROME_WINDOWS).await.unwrap();
    if let Some(send) = send {
        s.send_text(send).await.unwrap();
    }
    let error = s.recv_json(T).await.unwrap();
    assert_eq!(error["code"], code, "{send:?}: {error}");
    assert!(error["error"].as_str().unwrap().contains(text), "{send:?}: {error}");
    assert!(error.get("command").is_none());
    assert_eq!(s.recv(T).await.unwrap(), Received::Closed, "the socket is closed after an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_protocols_error_and_harms_no_one_else() {
    let host = HostProcess::start(|port| config_xml(port, &p2p_xml(2, 4000))).unwrap();
    // A bystander with a live edge offer.
    let mut bystander = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    bystander.send(json!({"command": "request_offer"})).await.unwrap();
    let offer = bystander.recv_json(T).await.unwrap();
    let id = offer["id"].as_u64().unwrap();
    assert!((1..1 << 31).contains(&id));
    assert_eq!(offer["code"], 200);
    assert!(offer["sdp"]["sdp"].as_str().unwrap().contains("a=msid:app-stream "), "stream-level msid");
    assert!(!offer["candidates"].as_array().unwrap().is_empty());

    expect_error(&host, "app/nope", None, 404, "no such stream").await;
    expect_error(&host, "app/stream", Some("{not json"), 400, "malformed JSON").await;
    expect_error(&host, "app/stream", Some("[1,2]"), 400, "JSON object").await;
    expect_error(&host, "app/stream", Some(r#"{"id":1}"#), 400, "command").await;
    expect_error(&host, "app/stream", Some(r#"{"command":"answer","id":12345,"peer_id":0,"sdp":{}}"#), 400, "Invalid ID").await;
    expect_error(&host, "app/stream", Some(r#"{"command":"stop"}"#), 400, "Invalid ID").await;
    // A spoofed id: speaking for the bystander.
    expect_error(&host, "app/stream", Some(&json!({"command": "stop", "id": id}).to_string()), 400, "Invalid ID").await;

    // Unknown commands need the session's own id first: learn it from an offer.
    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    s.send(json!({"command": "request_offer"})).await.unwrap();
    let mine = s.recv_json(T).await.unwrap()["id"].as_u64().unwrap();
    s.send(json!({"command": "dance", "id": mine})).await.unwrap();
    let error = s.recv_json(T).await.unwrap();
    assert_eq!((error["code"].as_u64(), error["error"].as_str()), (Some(400), Some("unknown command \"dance\"")));
    // Addressing a stranger through the P2P plugin.
    let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
    s.send(json!({"command": "request_offer"})).await.unwrap();
    let mine = s.recv_json(T).await.unwrap()["id"].as_u64().unwrap();
    s.send(json!({"command": "offer_p2p", "id": mine, "peer_id": id, "sdp": {"type": "offer", "sdp": "v=0"}})).await.unwrap();
    let error = s.recv_json(T).await.unwrap();
    assert_eq!(error["code"], 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("not your P2P partner"), "{error}");

    // The bystander is still there and can still speak.
    bystander.send(json!({"command": "change_rendition", "id": id, "auto": true})).await.unwrap();
    assert!(bystander.recv(Duration::from_millis(500)).await.is_err(), "nothing comes back, the session lives");
    let stats = host.stats().unwrap();
    assert!(stats["sessions"].as_array().unwrap().iter().any(|s| s["id"] == id), "{stats}");
}
