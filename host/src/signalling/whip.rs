//! WHIP (RFC 9725) at OvenMediaEngine's address for it: `POST /{app}/{stream}?direction=whip`
//! with the publisher's SDP offer (`Authorization: Bearer <token>` if the application has one)
//! answers `201 Created` with the SDP answer and the session's resource in `Location`
//! (`/{app}/{stream}/{key}?direction=whip`, the names escaped) and its key as the `ETag`; `DELETE`
//! on that resource ends the publication. Errors: 400 (not a stream name, or not an SDP offer this
//! host can take), 401 (no token), 403 (a wrong token), 404 (not publishable here, or no such
//! resource), 409 (already published), 413 (too large), 415 (not `application/sdp`), 429 (this
//! address publishes `<MaxPublishersPerAddress>` streams), 503 (`<MaxPublishers>` reached). No trickle ICE (`PATCH` gets 405): the edge is ICE-lite and
//! learns the publisher's address from its checks, so an offer without candidates works.

use crate::edge::EdgeEvent;
use crate::publish::{authorize, PublishError, Publication};
use super::Signalling;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ome_signalling::query::{Direction, Query};
use ome_signalling::StreamName;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How long the publisher's connection may take to come up after the answer.
const ICE_DEADLINE: Duration = Duration::from_secs(20);
/// A publication that sends nothing for this long has ended: a WHIP publisher that goes away
/// without its `DELETE` (a closed tab) is otherwise noticed only when ICE gives up, after 30 s,
/// its viewers on a frozen picture meanwhile (a browser's DTLS close does not end the connection
/// in rtc 0.21).
const SILENCE_DEADLINE: Duration = Duration::from_secs(4);

/// Whether the query says `direction=whip`.
pub fn is_whip(query: Option<&str>) -> bool {
    query.is_some_and(|q| Query::parse(q).direction() == Direction::Whip)
}

/// CORS for browser publishers on other origins: the resource and ETag must be readable, and
/// OvenLiveKit's `Oven-Capabilities` header (its capture size) may be sent.
fn cors(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, DELETE, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Authorization, Content-Type, Oven-Capabilities, If-Match"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location, Link, ETag"));
    response
}

fn refuse(status: StatusCode, message: &str) -> Response {
    cors((status, [(header::CONTENT_TYPE, "text/plain")], format!("{message}\n")).into_response())
}

impl IntoResponse for PublishError {
    fn into_response(self) -> Response {
        refuse(StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &self.to_string())
    }
}

/// `POST /{app}/{stream}?direction=whip`: a new publication.
pub async fn post(
    State(state): State<Arc<Signalling>>,
    Path((app, stream)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_whip(query.as_deref()) {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "POST is for WHIP: add ?direction=whip");
    }
    let name = match StreamName::new(&app, &stream) {
        Ok(name) => name,
        Err(e) => {
            state.metrics.counts.names_refused.inc();
            return refuse(StatusCode::BAD_REQUEST, &format!("not a stream name: {e}"));
        }
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/sdp") {
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "a WHIP offer is application/sdp");
    }
    if body.len() > state.limits.max_sdp_bytes {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, &format!("an offer over {} bytes", state.limits.max_sdp_bytes));
    }
    let Ok(offer) = String::from_utf8(body.to_vec()) else { return refuse(StatusCode::BAD_REQUEST, "the offer is not UTF-8") };
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match publish(&state, &name, offer, bearer, client.ip()).await {
        Ok((answer, key)) => {
            let location = format!("{}/{key}?direction=whip", name.path());
            let headers = [(header::CONTENT_TYPE, "application/sdp".to_string()), (header::LOCATION, location), (header::ETAG, format!("\"{key}\""))];
            cors((StatusCode::CREATED, headers, answer).into_response())
        }
        Err(e) => e.into_response(),
    }
}

/// Authorizes, claims the name, answers the offer, and leaves the publication running; the
/// answer and the resource's key.
async fn publish(state: &Arc<Signalling>, name: &StreamName, offer: String, bearer: Option<&str>, client: IpAddr) -> Result<(String, String), PublishError> {
    authorize(name.app(), state.publishers.streams().publishing(name.app()), bearer)?;
    let key = format!("{:016x}", rand::random::<u64>());
    let publication = Publication::claim(&state.publishers, name, Some(key.clone()), client)?;
    let (edge, events, answer, tracks) = state.edge.publish_answer(offer).await.map_err(|e| match e {
        crate::edge::EdgeError::Refused(e) => PublishError::BadSdp(format!("the offer cannot be answered: {e:#}")),
        crate::edge::EdgeError::Gone => PublishError::Edge,
    })?;
    let feed = publication.activate(&edge, tracks).await?;
    tokio::spawn(async move {
        let mut events = events;
        let (edge, publication) = (edge, publication);
        let ended = tokio::select! {
            () = publication.stop.notified() => "stopped (DELETE or taken over)",
            ended = watch(&mut events) => ended,
            () = silence(feed.hub()) => "ended: nothing sent for a while",
        };
        tracing::info!(stream = %publication.name, publisher = publication.id, "WHIP publication {ended}");
        drop(edge);
    });
    Ok((answer, key))
}

/// Follows the connection: up within [`ICE_DEADLINE`], then until it fails.
async fn watch(events: &mut tokio::sync::mpsc::UnboundedReceiver<EdgeEvent>) -> &'static str {
    match tokio::time::timeout(ICE_DEADLINE, events.recv()).await {
        Ok(Some(EdgeEvent::Connected)) => {}
        Ok(_) => return "failed to connect",
        Err(_) => return "did not connect in time",
    }
    loop {
        match events.recv().await {
            Some(EdgeEvent::Connected) => continue,
            _ => return "ended: the connection closed or failed",
        }
    }
}

/// Resolves once the publication has sent nothing for [`SILENCE_DEADLINE`] (its first packet
/// included).
async fn silence(hub: &crate::media::StreamHub) {
    let started = crate::media::counters::unix_ms();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while hub.counters.silent_for(started) < SILENCE_DEADLINE {
        tick.tick().await;
    }
}

/// `DELETE /{app}/{stream}/{key}?direction=whip`: the publisher leaves.
pub async fn delete(State(state): State<Arc<Signalling>>, Path((app, stream, key)): Path<(String, String, String)>) -> Response {
    if state.publishers.stop_whip(&format!("{app}/{stream}"), &key) {
        cors(StatusCode::OK.into_response())
    } else {
        refuse(StatusCode::NOT_FOUND, "no such WHIP session")
    }
}

/// `OPTIONS`: CORS preflight.
pub async fn options() -> Response {
    cors(StatusCode::NO_CONTENT.into_response())
}

/// `PATCH` (trickle ICE, RFC 9725 4.3): not supported.
pub async fn patch() -> Response {
    let mut response = refuse(StatusCode::METHOD_NOT_ALLOWED, "no trickle ICE: the server is ICE-lite and needs none");
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST, DELETE, OPTIONS"));
    response
}
