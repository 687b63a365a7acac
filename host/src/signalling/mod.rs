//! The WebSocket signalling server (OME-compatible, `shared/PROTOCOL.md`), the test page and
//! `/stats`, all on the signalling port.

pub mod protocol;
mod session;

use crate::state::HostState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const PAGE: &str = include_str!("../../assets/player.html");

/// The largest signalling message accepted (an SDP offer with every candidate is well under this).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The router: `/` (test page), `/stats`, and `/{app}/{stream}[/{file}]` (signalling).
pub fn router(state: Arc<HostState>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/stats", get(stats))
        .route("/{app}/{stream}", get(signalling))
        .route("/{app}/{stream}/{file}", get(signalling_with_file))
        .with_state(state)
}

async fn stats(State(state): State<Arc<HostState>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "plugins": state.plugins.names(),
        "metrics": state.metrics.snapshot(),
        "edge_egress_bytes": state.edge.counters.egress_bytes.load(Ordering::Relaxed),
        "lagged_packets": state.edge.counters.lagged.load(Ordering::Relaxed),
        "sessions": state.sessions.stats(),
    }))
}

async fn signalling_with_file(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<Arc<HostState>>,
    Path((app, stream, _file)): Path<(String, String, String)>,
    query: RawQuery,
    headers: HeaderMap,
    remote: ConnectInfo<SocketAddr>,
) -> Response {
    signalling(upgrade, State(state), Path((app, stream)), query, headers, remote).await
}

async fn signalling(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<Arc<HostState>>,
    Path((app, stream)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return (StatusCode::BAD_REQUEST, "this is a WebSocket signalling endpoint\n").into_response();
    };
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let hub = state.streams.get(&format!("{app}/{stream}")).cloned();
    // Signalling messages are a few KiB (an SDP with its candidates): small buffers keep an idle
    // session cheap (tungstenite's defaults reserve 128 KiB to read per socket).
    let upgrade = upgrade.read_buffer_size(4 * 1024).write_buffer_size(0).max_message_size(MAX_MESSAGE_BYTES);
    upgrade.on_upgrade(move |mut socket| async move {
        let Some(hub) = hub else {
            tracing::info!(%remote, "refused: no stream {app}/{stream}");
            state.metrics.add("sessions_refused", 1);
            let error = protocol::error(404, &format!("no such stream: {app}/{stream}"));
            let _ = socket.send(Message::Text(error.into())).await;
            let _ = socket.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
            return;
        };
        let request = session::Request {
            hub,
            app,
            stream,
            user_agent,
            remote: remote.to_string(),
            query: query.unwrap_or_default(),
        };
        session::run(socket, state, request).await;
    })
}
