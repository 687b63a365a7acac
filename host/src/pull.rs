//! Edges: a stream this host does not have but an origin does (`<Origins>`) is pulled from the
//! origin over WebRTC, as a player of its OME signalling (`?p2p=0`, so the origin never makes an
//! edge a P2P peer; `edge=NAME`, so it counts edges apart), on the first viewer's request. The
//! pull feeds the stream's hub like any source; while it is being made again (the origin
//! restarted, or sent nothing for `NoInputFailoverTimeout`) the hub stays and so do its viewers,
//! who resume at the next keyframe. A stream nobody has watched for `UnusedStreamDeletionTimeout`
//! is released. The origin can be this host or OvenMediaEngine.

use crate::edge::EdgeEvent;
use crate::media::{SourceKind, StreamHub};
use crate::state::HostState;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// How long a viewer waits for a pull to start before it is told the stream is not there.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long the origin may take to connect and to offer.
const ORIGIN_DEADLINE: Duration = Duration::from_secs(5);
/// Between two rounds over the origins' addresses: doubling from the first, up to the last.
const RETRY: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(4));
/// Pulls at once (starting or running): requests for names the origin may not have cannot make
/// an edge open connections to it without bound.
pub const MAX_PULLS: usize = 256;

/// The pulls, by stream, from the first viewer's request until the pull ends: a viewer arriving
/// meanwhile waits for the same one.
#[derive(Default)]
pub struct Pulls {
    starting: Mutex<HashMap<String, watch::Receiver<bool>>>,
}

/// The hub of `app/stream`: the host's own, or one pulled from its origin (started now if need
/// be); `None` if neither has it.
pub async fn hub(state: &Arc<HostState>, app: &str, stream: &str) -> Option<Arc<StreamHub>> {
    let name = format!("{app}/{stream}");
    if let Some(hub) = state.streams.get(&name) {
        return Some(hub);
    }
    let urls = state.config.origins.urls_for(app, stream, &state.config.name);
    if urls.is_empty() {
        return None;
    }
    let mut started = {
        let mut starting = state.pulls.starting.lock().expect("pulls lock");
        match starting.get(&name) {
            Some(started) => started.clone(),
            None if starting.len() >= MAX_PULLS => {
                tracing::warn!(stream = %name, "not pulled: {MAX_PULLS} pulls already");
                return None;
            }
            None => {
                let (tx, rx) = watch::channel(false);
                starting.insert(name.clone(), rx.clone());
                tokio::spawn(run(state.clone(), name.clone(), urls, tx));
                rx
            }
        }
    };
    let _ = tokio::time::timeout(START_DEADLINE, started.wait_for(|s| *s)).await;
    state.streams.get(&name)
}

/// The signalling connection to an origin.
type OriginSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How one pull ended.
enum Ended {
    /// Nobody watched for `UnusedStreamDeletionTimeout`: the stream is released.
    Unused,
    /// The origin went, failed or fell silent: pull again.
    Lost(String),
}

/// Pulls `name` from `urls` (in turn) until nobody watches it, or until no origin gives it.
async fn run(state: Arc<HostState>, name: String, urls: Vec<String>, started: watch::Sender<bool>) {
    let mut hub = None;
    let mut retry = RETRY.0;
    'pulling: loop {
        for url in &urls {
            match pull_once(&state, &name, url, &mut hub, &started).await {
                Ended::Unused => break 'pulling,
                Ended::Lost(why) => tracing::warn!(stream = %name, %url, "pull from the origin ended: {why}"),
            }
        }
        match &hub {
            None => {
                tracing::warn!(stream = %name, "no origin gives the stream");
                break;
            }
            // Nobody is waiting for it to come back.
            Some(hub) if hub.counters.open.load(Ordering::Relaxed) == 0 => break,
            Some(_) => {}
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY.1);
    }
    state.pulls.starting.lock().expect("pulls lock").remove(&name);
    state.streams.set_pulled(&name, None);
    if let Some(hub) = hub {
        hub.source_stopped();
        tracing::info!(stream = %name, "pulled stream released");
    }
    started.send_replace(true);
}

/// One pull from `url`: connect, be offered, answer, feed the hub until it ends.
async fn pull_once(state: &Arc<HostState>, name: &str, url: &str, hub: &mut Option<Arc<StreamHub>>, started: &watch::Sender<bool>) -> Ended {
    let connected = tokio::time::timeout(ORIGIN_DEADLINE, tokio_tungstenite::connect_async(url)).await;
    let mut socket = match connected {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(e)) => return Ended::Lost(format!("cannot connect: {e}")),
        Err(_) => return Ended::Lost("cannot connect in time".into()),
    };
    if socket.send(Message::Text(json!({"command": "request_offer"}).to_string().into())).await.is_err() {
        return Ended::Lost("the origin closed".into());
    }
    let offer = match tokio::time::timeout(ORIGIN_DEADLINE, next_json(&mut socket)).await {
        Ok(Some(m)) if m["command"] == "offer" => m,
        Ok(Some(m)) => return Ended::Lost(format!("the origin answered {m}")),
        Ok(None) => return Ended::Lost("the origin closed".into()),
        Err(_) => return Ended::Lost("no offer in time".into()),
    };
    let sdp = offer["sdp"]["sdp"].as_str().unwrap_or_default().to_string();
    let candidates = offer["candidates"].as_array().into_iter().flatten().filter_map(|c| c["candidate"].as_str()).map(str::to_string).collect();
    let (edge, mut events, answer, tracks) = match state.edge.pull(sdp, candidates).await {
        Ok(pulled) => pulled,
        Err(e) => return Ended::Lost(format!("cannot answer the origin's offer: {e}")),
    };
    let message = json!({"command": "answer", "id": offer["id"], "peer_id": 0, "sdp": {"type": "answer", "sdp": answer.sdp}});
    if socket.send(Message::Text(message.to_string().into())).await.is_err() {
        return Ended::Lost("the origin closed".into());
    }
    let current = match hub.take() {
        Some(h) if h.video_codec == tracks.video && h.has_audio == tracks.audio => h,
        old => {
            if let Some(old) = old {
                old.source_stopped(); // another codec: its viewers start over
            }
            let fresh = Arc::new(StreamHub::new(name.to_string(), SourceKind::Origin, tracks.video, tracks.audio, state.config.keyframe_cache));
            state.streams.set_pulled(name, Some(fresh.clone()));
            fresh
        }
    };
    *hub = Some(current.clone());
    if edge.publish_to(&current).await.is_err() {
        return Ended::Lost("the edge is stopping".into());
    }
    started.send_replace(true);
    tracing::info!(stream = %name, %url, video = ?tracks.video, "pulling from the origin");
    follow(state, &current, &mut socket, &mut events).await
}

/// Follows a pull: the origin's socket, the connection, the input and the viewers.
async fn follow(
    state: &Arc<HostState>,
    hub: &StreamHub,
    socket: &mut OriginSocket,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<EdgeEvent>,
) -> Ended {
    let properties = &state.config.origins.properties;
    let (no_input, unused_limit) = (Duration::from_millis(properties.no_input_failover_timeout), Duration::from_millis(properties.unused_stream_deletion_timeout));
    let started = crate::media::counters::unix_ms();
    let mut unused_since: Option<Instant> = None;
    let mut check = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            message = next_json(socket) => match message {
                Some(m) if m.get("error").is_some() => return Ended::Lost(format!("the origin: {m}")),
                Some(_) => {}
                None => return Ended::Lost("the origin closed the signalling".into()),
            },
            event = events.recv() => match event {
                Some(EdgeEvent::Connected) => {}
                _ => return Ended::Lost("the connection failed".into()),
            },
            _ = check.tick() => {
                let now = Instant::now();
                let silent = hub.counters.silent_for(started);
                if silent >= no_input {
                    return Ended::Lost(format!("no input for {} ms", silent.as_millis()));
                }
                if hub.counters.open.load(Ordering::Relaxed) > 0 {
                    unused_since = None;
                } else if now.duration_since(*unused_since.get_or_insert(now)) >= unused_limit {
                    return Ended::Unused;
                }
            }
        }
    }
}

/// The next JSON text message (pings are answered by tungstenite); `None` when the socket ends.
async fn next_json(socket: &mut OriginSocket) -> Option<Value> {
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap_or(Value::Null)),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    None
}
