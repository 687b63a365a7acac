//! A publisher over OME's WebSocket signalling (`ws://HOST:PORT/{app}/{stream}?direction=send`,
//! what OvenLiveKit does): it asks with `request_offer`, the edge offers to receive (video in
//! VP8 or H.264, Opus), it answers; its media then feeds the stream until the socket closes.

use super::protocol::{self, Incoming, ProtocolError};
use crate::edge::EdgeEvent;
use crate::publish::{authorize, PublishError, Publication};
use super::Signalling;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use ome_signalling::query::{Query, TOKEN};
use ome_signalling::StreamName;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a publisher may take to ask for the offer after connecting.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long its connection may take to come up after its answer.
const ICE_DEADLINE: Duration = Duration::from_secs(20);
/// WebSocket ping interval.
const PING_EVERY: Duration = Duration::from_secs(20);

impl From<PublishError> for ProtocolError {
    fn from(e: PublishError) -> Self {
        Self { code: e.status(), message: e.to_string() }
    }
}

/// Serves one publisher of `name` (asking from `client`) until it leaves; the protocol's error
/// first if it is refused or fails.
pub async fn run(mut socket: WebSocket, state: Arc<Signalling>, name: StreamName, query: &Query, client: IpAddr) {
    let outcome = serve(&mut socket, &state, &name, query, client).await;
    if let Err(error) = &outcome {
        tracing::info!(stream = %name, code = error.code, "publisher refused or failed: {}", error.message);
        let _ = socket.send(Message::Text(protocol::error(error.code, &error.message).into())).await;
    }
    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
}

async fn serve(socket: &mut WebSocket, state: &Arc<Signalling>, name: &StreamName, query: &Query, client: IpAddr) -> Result<(), ProtocolError> {
    authorize(name.app(), state.publishers.streams().publishing(name.app()), query.get(TOKEN))?;
    let limits = &state.limits;
    match tokio::time::timeout(REQUEST_DEADLINE, socket.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) if protocol::parse_bounded(&text, 0, limits)?.0 == Incoming::RequestOffer => {}
        Ok(Some(Ok(_))) => return Err(ProtocolError::bad("a publisher starts with request_offer")),
        Ok(_) => return Ok(()),
        Err(_) => return Err(ProtocolError { code: 408, message: "no request_offer in time".into() }),
    }
    let publication = Publication::claim(&state.publishers, name, None, client)?;
    let (edge, mut events, offer) = state.edge.publish_offer().await.map_err(|_| PublishError::Edge)?;
    socket
        .send(Message::Text(protocol::edge_offer(publication.id, &offer.sdp, &offer.candidates).into()))
        .await
        .map_err(|_| ProtocolError::bad("the socket closed"))?;
    let mut answer_deadline = Some(Instant::now() + state.answer_timeout);
    let mut ice_deadline = None;
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        let deadline = answer_deadline.or(ice_deadline);
        tokio::select! {
            message = socket.recv() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => return Err(ProtocolError::bad("binary messages are not part of the protocol")),
                    _ => return Ok(()),
                };
                match protocol::parse_bounded(&text, publication.id, limits)?.0 {
                    Incoming::EdgeAnswer { sdp } if answer_deadline.is_some() => {
                        let tracks = edge.accept_publisher_answer(sdp).await.map_err(|e| ProtocolError::bad(format!("the answer was refused: {e}")))?;
                        publication.activate(&edge, tracks).await?;
                        (answer_deadline, ice_deadline) = (None, Some(Instant::now() + ICE_DEADLINE));
                    }
                    // ICE-lite: the publisher's checks tell the edge its address.
                    Incoming::EdgeCandidates { .. } | Incoming::Pong | Incoming::ChangeRendition => {}
                    Incoming::Stop => return Ok(()),
                    other => return Err(ProtocolError::bad(format!("not a publisher's message here: {other:?}"))),
                }
            }
            event = events.recv() => match event {
                Some(EdgeEvent::Connected) => ice_deadline = None,
                _ => return Err(ProtocolError { code: 500, message: "the WebRTC connection failed".into() }),
            },
            () = publication.stop.notified() => {
                return Err(ProtocolError { code: 409, message: format!("another publisher took {} over", publication.name) });
            }
            _ = crate::deadline::sleep_until(deadline) => {
                let what = if answer_deadline.is_some() { "the offer was not answered in time" } else { "the WebRTC connection did not come up in time" };
                return Err(ProtocolError { code: 408, message: what.into() });
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

