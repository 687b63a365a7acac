//! The WebSocket signalling server (OME-compatible, `shared/PROTOCOL.md`), the test page and
//! `/stats`, all on the signalling port.

pub mod protocol;
mod publisher;
mod session;
mod whip;

use crate::config::SignallingLimits;
use crate::edge::Edge;
use crate::metrics::Metrics;
use crate::plugins::PluginSet;
use crate::publish::Publishers;
use crate::pull::Pulls;
use crate::sessions::Sessions;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use crate::server::Admitted;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::Extension;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ome_signalling::query::{Direction, Query};
use ome_signalling::StreamName;
use std::net::SocketAddr;
use std::sync::Arc;

const PAGE: &str = include_str!("../../assets/player.html");
const PLAYER_JS: &str = include_str!("../../assets/player.js");

/// What the signalling port's requests reach: the sessions and the plugins that see them, the
/// edge, where a stream is found (its own, or pulled) and where a publisher publishes.
pub struct Signalling {
    pub limits: SignallingLimits,
    /// How long an edge offer waits for its answer.
    pub answer_timeout: std::time::Duration,
    pub sessions: Arc<Sessions>,
    pub plugins: Arc<PluginSet>,
    pub metrics: Arc<Metrics>,
    pub edge: Arc<Edge>,
    /// Every stream a viewer may ask for: the host's own, or pulled from an origin.
    pub pulls: Arc<Pulls>,
    pub publishers: Arc<Publishers>,
}

/// The router: `/` (test page), `/player.js`, `/stats`, `/{app}/{stream}[/{file}]` (signalling;
/// WHIP with `?direction=whip`).
pub fn router(state: Arc<Signalling>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/player.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript"), (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], PLAYER_JS) }))
        .route("/stats", get(stats))
        .route("/{app}/{stream}", get(signalling).post(whip::post).options(whip::options))
        .route("/{app}/{stream}/{file}", get(signalling_with_file).delete(whip::delete).patch(whip::patch).options(whip::options))
        // The only bodies are WHIP offers: read no more than an SDP may be (413 past it).
        .layer(axum::extract::DefaultBodyLimit::max(state.limits.max_sdp_bytes))
        .with_state(state)
}

/// Rows of `sessions` in one `/stats` answer at most (the response stays bounded).
const STATS_MAX_SESSIONS: usize = 1000;

/// `/stats`: with `StatsAccessToken` configured, only to `Authorization: Bearer TOKEN` (then with
/// User-Agents); without one, only to loopback and without User-Agents.
async fn stats(State(state): State<Arc<Signalling>>, headers: HeaderMap, ConnectInfo(remote): ConnectInfo<SocketAddr>) -> Response {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let with_token = match &state.limits.stats_access_token {
        Some(token) if bearer.is_some_and(|b| crate::api::access::constant_time_eq(b.as_bytes(), token.as_bytes())) => true,
        Some(_) => return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a valid access token is needed\n").into_response(),
        None if remote.ip().is_loopback() => false,
        None => return (StatusCode::FORBIDDEN, "/stats answers on loopback only (configure <StatsAccessToken>)\n").into_response(),
    };
    let (total, mut sessions) = state.sessions.stats(STATS_MAX_SESSIONS);
    if !with_token {
        sessions.iter_mut().for_each(|s| s.user_agent.clear());
    }
    Json(serde_json::json!({
        "plugins": state.plugins.names(),
        "metrics": state.metrics.snapshot(),
        "edge_egress_bytes": state.metrics.counts.edge_egress_bytes.get(),
        "lagged_packets": state.metrics.counts.edge_lagged.get(),
        "session_count": total,
        "sessions": sessions,
    }))
    .into_response()
}

async fn signalling_with_file(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<Arc<Signalling>>,
    Path((app, stream, _file)): Path<(String, String, String)>,
    query: RawQuery,
    headers: HeaderMap,
    remote: ConnectInfo<SocketAddr>,
    admitted: Option<Extension<Admitted>>,
) -> Response {
    signalling(upgrade, State(state), Path((app, stream)), query, headers, remote, admitted).await
}

async fn signalling(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<Arc<Signalling>>,
    Path((app, stream)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    admitted: Option<Extension<Admitted>>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return (StatusCode::BAD_REQUEST, "this is a WebSocket signalling endpoint\n").into_response();
    };
    let limits = &state.limits;
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let user_agent = user_agent[..user_agent.floor_char_boundary(limits.max_user_agent_bytes)].to_string();
    // Signalling messages are a few KiB (an SDP with its candidates): small buffers keep an idle
    // session cheap (tungstenite's defaults reserve 128 KiB to read per socket).
    // Frames are limited too, so an over-long frame is refused at its header, not buffered whole.
    let upgrade = upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes);
    let name = StreamName::new(&app, &stream);
    let raw_query = query.unwrap_or_default();
    let query = Query::parse(&raw_query);
    upgrade.on_upgrade(move |socket| async move {
        // The connection's place under the caps is held for as long as the session lives.
        let _admitted = admitted;
        let name = match name {
            Ok(name) => name,
            Err(e) => {
                tracing::info!(%remote, "refused: {e}");
                state.metrics.counts.names_refused.inc();
                return refuse(socket, 400, &format!("not a stream name: {e}")).await;
            }
        };
        if query.direction() == Direction::Send {
            return publisher::run(socket, state, name, &query, remote.ip()).await;
        }
        let Some(hub) = state.pulls.hub(&name, remote.ip()).await else {
            tracing::info!(%remote, "refused: no stream {name}");
            state.metrics.counts.sessions_refused.inc();
            return refuse(socket, 404, &format!("no such stream: {name}")).await;
        };
        let request = session::Request {
            hub,
            app: name.app().to_string(),
            stream: name.stream().to_string(),
            user_agent,
            remote: remote.to_string(),
            raw_query,
            query,
        };
        session::run(socket, state, request).await;
    })
}

/// Sends the protocol's error and closes: a request refused before it became a session.
async fn refuse(mut socket: WebSocket, code: u16, message: &str) {
    let _ = socket.send(Message::Text(protocol::error(code, message).into())).await;
    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
}
