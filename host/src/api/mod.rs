//! What operators read: OME's REST stats API and `/metrics` on the API port (OME's
//! `<Bind><Managers><API><Port>`), and the live P2P page on the signalling port ([`tree`]), all
//! behind OME's access token ([`access`]).
//!
//! The API answers as OME does (`controllers/root_controller.cpp` and `v1/` of OME's
//! `api_server`): `{"message":"OK","response":...,"statusCode":200}`, errors as
//! `{"message":"[HTTP] <what> (<code>)","statusCode":<code>}`, keys in alphabetical order, a 404
//! "Controller not found" for any other path or method; OPTIONS needs no credentials.
//!
//! OME's certificate actions too: `POST /v1/vhosts:reloadAllCertificates` and
//! `POST /v1/vhosts/default:reloadCertificate` read every certificate file again (the API's
//! included); a certificate that fails keeps the old one and the answer is a 500.

pub mod access;
pub mod book;
pub mod prometheus;
mod time;
pub mod tree;

use crate::config::Application;
use crate::metrics::Metrics;
use crate::plugins::PluginSet;
use crate::sessions::Sessions;
use crate::streams::Streams;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use book::VHOST;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// What the API reads: the configured applications, the live streams and sessions, the counts.
pub struct Api {
    /// `<Applications>`.
    pub applications: Vec<Application>,
    /// `<Managers><API><AccessToken>`: HTTP Basic credentials; without one, loopback only.
    pub access_token: Option<String>,
    pub streams: Arc<Streams>,
    pub sessions: Arc<Sessions>,
    pub plugins: Arc<PluginSet>,
    pub metrics: Arc<Metrics>,
    /// OME's statistics, sampled once a second ([`sample_every_second`]).
    pub book: book::StatsBook,
}

/// The API port's router: OME's stats and listing paths, `/v1/version`, `/metrics` and the
/// certificate reloads.
pub fn router(state: Arc<Api>, certificates: crate::tls::Certificates) -> Router {
    Router::new()
        .route("/v1/vhosts:reloadAllCertificates", post(reload_all_certificates))
        .route("/v1/version", get(version))
        .route("/v1/stats/current", get(server_stats))
        .route("/v1/stats/current/vhosts/{vhost}", get(vhost_stats))
        .route("/v1/stats/current/vhosts/{vhost}/apps/{app}", get(app_stats))
        .route("/v1/stats/current/vhosts/{vhost}/apps/{app}/streams/{stream}", get(stream_stats))
        .route("/v1/vhosts", get(vhosts))
        .route("/v1/vhosts/{vhost}", get(vhost).post(vhost_action))
        .route("/v1/vhosts/{vhost}/apps", get(apps))
        .route("/v1/vhosts/{vhost}/apps/{app}", get(app))
        .route("/v1/vhosts/{vhost}/apps/{app}/streams", get(streams))
        .route("/v1/vhosts/{vhost}/apps/{app}/streams/{stream}", get(stream))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Controller not found") })
        .method_not_allowed_fallback(|| async { error(StatusCode::NOT_FOUND, "Controller not found") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(Extension(certificates))
        .with_state(state)
}

/// OPTIONS passes (CORS preflight, as in OME); anything else needs the token.
async fn guard(State(state): State<Arc<Api>>, ConnectInfo(remote): ConnectInfo<SocketAddr>, request: Request, next: Next) -> Response {
    if request.method() == Method::OPTIONS {
        return StatusCode::NO_CONTENT.into_response();
    }
    match access::check(state.access_token.as_deref(), request.headers(), remote.ip()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refused(&refusal),
    }
}

/// The answer to a refused request: OME's 401 with its challenge, or 403 off loopback.
pub fn refused(refusal: &access::Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).expect("401 or 403");
    let mut response = error(status, &refusal.to_string());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"OvenMediaEngine\""));
    }
    response
}

/// OME's JSON content type.
const JSON: &str = "application/json;charset=UTF-8";

fn envelope(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response.headers_mut().insert(header::SERVER, HeaderValue::from_static("OvenMediaEngine-compatible p2p-host"));
    response
}

fn ok(response: Value) -> Response {
    envelope(StatusCode::OK, json!({"message": "OK", "response": response, "statusCode": 200}))
}

fn error(status: StatusCode, what: &str) -> Response {
    let code = status.as_u16();
    envelope(status, json!({"message": format!("[HTTP] {what} ({code})"), "statusCode": code}))
}

/// What a path names that does not exist, worded as OME words it (`helpers.cpp`).
#[derive(Debug, thiserror::Error)]
enum NotFound {
    #[error("Could not find the virtual host: [{0}]")]
    Vhost(String),
    #[error("Could not find the application: [{0}/{1}]")]
    App(String, String),
    #[error("Could not find the stream: [{0}/#{0}#{1}/{2}]")]
    Stream(String, String, String),
}

impl IntoResponse for NotFound {
    fn into_response(self) -> Response {
        error(StatusCode::NOT_FOUND, &self.to_string())
    }
}

/// Checks that `vhost` (and `app`, `stream`, when given) exist.
fn find(state: &Api, vhost: &str, app: Option<&str>, stream: Option<&str>) -> Result<(), NotFound> {
    if vhost != VHOST {
        return Err(NotFound::Vhost(vhost.into()));
    }
    let Some(app) = app else { return Ok(()) };
    if !state.applications.iter().any(|a| a.name == app) {
        return Err(NotFound::App(vhost.into(), app.into()));
    }
    match stream {
        Some(stream) if state.streams.get(&format!("{app}/{stream}")).is_none() => Err(NotFound::Stream(vhost.into(), app.into(), stream.into())),
        _ => Ok(()),
    }
}

/// The stats of the level `key`: a level not sampled yet (the first second) reads as zeros.
fn stats_of(state: &Api, key: &str) -> Response {
    ok(book::ome_stats(&state.book.level(key).unwrap_or_default()))
}

async fn version() -> Response {
    ok(json!({"version": env!("CARGO_PKG_VERSION"), "gitVersion": concat!("p2p-host-", env!("CARGO_PKG_VERSION"))}))
}

async fn server_stats(State(state): State<Arc<Api>>) -> Response {
    stats_of(&state, "")
}

async fn vhost_stats(State(state): State<Arc<Api>>, Path(vhost): Path<String>) -> Response {
    find(&state, &vhost, None, None).map_or_else(IntoResponse::into_response, |()| stats_of(&state, &vhost))
}

async fn app_stats(State(state): State<Arc<Api>>, Path((vhost, app)): Path<(String, String)>) -> Response {
    find(&state, &vhost, Some(&app), None).map_or_else(IntoResponse::into_response, |()| stats_of(&state, &format!("{vhost}/{app}")))
}

async fn stream_stats(State(state): State<Arc<Api>>, Path((vhost, app, stream)): Path<(String, String, String)>) -> Response {
    find(&state, &vhost, Some(&app), Some(&stream)).map_or_else(IntoResponse::into_response, |()| stats_of(&state, &format!("{vhost}/{app}/{stream}")))
}

async fn vhosts() -> Response {
    ok(json!([VHOST]))
}

async fn vhost(State(state): State<Arc<Api>>, Path(vhost): Path<String>) -> Response {
    find(&state, &vhost, None, None).map_or_else(IntoResponse::into_response, |()| ok(json!({"name": VHOST})))
}

async fn apps(State(state): State<Arc<Api>>, Path(vhost): Path<String>) -> Response {
    let names: Vec<&str> = state.applications.iter().map(|a| a.name.as_str()).collect();
    find(&state, &vhost, None, None).map_or_else(IntoResponse::into_response, |()| ok(json!(names)))
}

async fn app(State(state): State<Arc<Api>>, Path((vhost, app)): Path<(String, String)>) -> Response {
    find(&state, &vhost, Some(&app), None).map_or_else(IntoResponse::into_response, |()| ok(json!({"name": app, "dynamic": false, "type": "live"})))
}

async fn streams(State(state): State<Arc<Api>>, Path((vhost, app)): Path<(String, String)>) -> Response {
    if let Err(e) = find(&state, &vhost, Some(&app), None) {
        return e.into_response();
    }
    let prefix = format!("{app}/");
    let names: Vec<String> = state.streams.all().iter().filter_map(|h| h.name.strip_prefix(&prefix).map(str::to_string)).collect();
    ok(json!(names))
}

/// A stream's description, OME's `{name, input: {sourceType, createdTime, tracks}, outputs}`.
async fn stream(State(state): State<Arc<Api>>, Path((vhost, app, stream)): Path<(String, String, String)>) -> Response {
    if let Err(e) = find(&state, &vhost, Some(&app), Some(&stream)) {
        return e.into_response();
    }
    let Some(hub) = state.streams.get(&format!("{app}/{stream}")) else { return NotFound::Stream(vhost, app, stream).into_response() };
    let mut tracks = vec![json!({"id": 0, "name": "video", "type": "Video", "video": {"codec": codec_name(hub.video_codec), "bypass": true}})];
    if hub.has_audio {
        tracks.push(json!({"id": 1, "name": "audio", "type": "Audio", "audio": {"codec": "OPUS", "bypass": true, "samplerate": 48000, "channel": 2}}));
    }
    ok(json!({
        "name": stream,
        "input": {"sourceType": hub.source.ome_name(), "createdTime": time::iso8601(hub.counters.created_ms), "tracks": tracks},
        "outputs": [{"name": stream, "tracks": tracks, "playlists": []}],
    }))
}

fn codec_name(codec: crate::config::VideoCodec) -> &'static str {
    match codec {
        crate::config::VideoCodec::Vp8 => "VP8",
        crate::config::VideoCodec::H264 => "H264",
    }
}

/// OME's `POST /v1/vhosts:reloadAllCertificates`: 200, or 500 when a certificate failed to load
/// (it keeps the old one; the log says why).
async fn reload_all_certificates(Extension(certificates): Extension<crate::tls::Certificates>) -> Response {
    match certificates.reload_all() {
        Ok(()) => envelope(StatusCode::OK, json!({"message": "OK", "statusCode": 200})),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("Failed to reload certificate: {e}")),
    }
}

/// OME's `POST /v1/vhosts/{vhost}:reloadCertificate`, the one action on a virtual host.
async fn vhost_action(Path(target): Path<String>, certificates: Extension<crate::tls::Certificates>) -> Response {
    match target.split_once(':') {
        Some((VHOST, "reloadCertificate")) => reload_all_certificates(certificates).await,
        Some((vhost, "reloadCertificate")) => NotFound::Vhost(vhost.into()).into_response(),
        _ => error(StatusCode::NOT_FOUND, "Controller not found"),
    }
}

async fn metrics(State(state): State<Arc<Api>>) -> Response {
    ([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], prometheus::render(&state)).into_response()
}

/// Samples the stats book once a second until the host stops.
pub async fn sample_every_second(state: Arc<Api>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        state.book.sample(&state.applications, &state.sessions, &state.streams);
    }
}
