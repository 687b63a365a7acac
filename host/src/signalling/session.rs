//! One signalling session: a WebSocket, its edge connection if it has one, and the plugin hooks at
//! each moment of its life. Every exit path closes the socket and calls `session_closed` once.

use super::protocol::{self, Incoming, ProtocolError};
use crate::edge::{EdgeConnection, EdgeEvent, Transports};
use crate::media::{SourceState, StreamHub};
use crate::config::SignallingLimits;
use crate::sessions::{OutgoingBudget, SessionCommand, SessionEntry};
use super::Signalling;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use plugin_api::{CloseReason, MessageVerdict, OfferDecision, SessionId, SessionInfo, SessionKind};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// WebSocket ping interval.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A session with nothing received for this long is closed.
const SILENCE_LIMIT: Duration = Duration::from_secs(60);
/// An edge connection not up this long after the answer is given up on.
const ICE_DEADLINE: Duration = Duration::from_secs(20);

/// Where the session stands.
enum Phase {
    /// Nothing asked yet, or served by a peer.
    Idle,
    /// A plugin took the offer request; the player waits.
    WaitingForPlugin,
    /// An edge connection exists.
    Edge,
}

/// How the session ended: the reason plugins are told and an error to send first, if any.
struct Ending {
    reason: CloseReason,
    error: Option<ProtocolError>,
    /// The WebSocket close code: 1000 normal, 1001 the server is going away.
    close_code: u16,
}

impl Ending {
    fn quietly(reason: CloseReason) -> Self {
        Self { reason, error: None, close_code: 1000 }
    }
    fn with_error(error: ProtocolError) -> Self {
        Self { reason: CloseReason::Error, error: Some(error), close_code: 1000 }
    }
    fn failed(reason: CloseReason, code: u16, message: impl Into<String>) -> Self {
        Self { reason, error: Some(ProtocolError { code, message: message.into() }), close_code: 1000 }
    }
    fn shutting_down() -> Self {
        Self { reason: CloseReason::Disconnected, error: None, close_code: 1001 }
    }
}

/// What the URL and upgrade request said about the session.
pub struct Request {
    /// The stream's hub (already checked to exist).
    pub hub: Arc<StreamHub>,
    /// The application.
    pub app: String,
    /// The stream.
    pub stream: String,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// The remote address.
    pub remote: String,
    /// The query string, as written (the plugins read it).
    pub raw_query: String,
    /// The query, read.
    pub query: ome_signalling::Query,
}

struct Session {
    id: SessionId,
    state: Arc<Signalling>,
    hub: Arc<StreamHub>,
    socket: WebSocket,
    phase: Phase,
    edge: Option<EdgeConnection>,
    /// The ICE transports its edge offers name (`?transport=`).
    transports: Transports,
    edge_events: Option<mpsc::UnboundedReceiver<EdgeEvent>>,
    /// When the pending edge offer is withdrawn if the player has not answered it.
    answer_deadline: Option<Instant>,
    ice_deadline: Option<Instant>,
    egress_bytes: Arc<AtomicU64>,
    outgoing: Arc<OutgoingBudget>,
    rate: RateLimit,
    /// ICE candidates received in all.
    candidates: usize,
    limits: SignallingLimits,
}

/// Messages per second from one player: a token bucket of twice the rate.
struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self { per_second, tokens: 2.0 * per_second, last: Instant::now() }
    }

    /// Takes one message; false if over the rate.
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(2.0 * self.per_second);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Runs a session on an accepted socket until it ends.
pub async fn run(socket: WebSocket, state: Arc<Signalling>, request: Request) {
    let (commands_tx, mut commands) = mpsc::unbounded_channel();
    let egress_bytes = Arc::new(AtomicU64::new(0));
    let limits = state.limits.clone();
    let outgoing = Arc::new(OutgoingBudget::new(limits.max_outgoing_bytes));
    // Publishers (`direction=send`) are served by `super::publisher`: a session here plays.
    let kind = SessionKind::Play;
    let mut info = None;
    let id = state.sessions.register(|id| {
        let i = SessionInfo::new(
            id,
            kind,
            "default",
            &request.app,
            &request.stream,
            &request.user_agent,
            &request.remote,
            &request.raw_query,
        );
        info = Some(i.clone());
        SessionEntry {
            info: i,
            commands: commands_tx,
            egress_bytes: egress_bytes.clone(),
            outgoing: outgoing.clone(),
            hub: request.hub.clone(),
            pulling_edge: request.query.get(ome_signalling::query::EDGE).is_some(),
            view: Default::default(),
        }
    });
    let info = info.expect("set by register");
    tracing::info!(session = id, stream = %request.hub.name, remote = %request.remote, ua = %request.user_agent, "session opened");
    state.metrics.counts.sessions_opened.inc();
    request.hub.counters.session_opened();
    state.plugins.session_opened(&info);

    let mut session = Session {
        id,
        state: state.clone(),
        hub: request.hub,
        socket,
        phase: Phase::Idle,
        edge: None,
        transports: Transports::from_query(&request.query),
        edge_events: None,
        answer_deadline: None,
        ice_deadline: None,
        egress_bytes,
        outgoing,
        rate: RateLimit::new(limits.max_messages_per_second),
        candidates: 0,
        limits,
    };
    let ending = session.serve(&mut commands).await;

    state.sessions.remove(id);
    if let Some(error) = &ending.error {
        tracing::info!(session = id, code = error.code, "closing session after error: {}", error.message);
        let _ = session.send(Message::Text(protocol::error(error.code, &error.message).into())).await;
    }
    let _ = session.send(Message::Close(Some(CloseFrame { code: ending.close_code, reason: "".into() }))).await;
    session.drop_edge();
    session.hub.counters.session_closed(ending.reason, session.egress_bytes.load(std::sync::atomic::Ordering::Relaxed));
    state.plugins.session_closed(id, ending.reason);
    state.metrics.counts.sessions_closed.inc();
    tracing::info!(session = id, reason = ?ending.reason, "session closed");
}

impl Session {
    /// The session's event loop; returns how it ended.
    async fn serve(&mut self, commands: &mut mpsc::UnboundedReceiver<SessionCommand>) -> Ending {
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        let mut last_heard = Instant::now();
        let mut source = self.hub.state();
        loop {
            let ice_deadline = self.ice_deadline;
            let answer_deadline = self.answer_deadline;
            tokio::select! {
                message = self.socket.recv() => {
                    last_heard = Instant::now();
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Binary(_))) => return Ending::with_error(ProtocolError::bad("binary messages are not part of the protocol")),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Err(e)) if is_too_large(&e) => {
                            let limit = self.limits.max_message_bytes;
                            return Ending::with_error(ProtocolError::bad(format!("a message (or frame) over {limit} bytes")));
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ending::quietly(CloseReason::Disconnected),
                    };
                    if !self.rate.take(last_heard) {
                        let rate = self.limits.max_messages_per_second;
                        return Ending::failed(CloseReason::Error, 429, format!("more than {rate} messages per second"));
                    }
                    if let Some(ending) = self.on_text(&text).await {
                        return ending;
                    }
                }
                Some(command) = commands.recv() => {
                    if self.outgoing.overflowed() {
                        self.state.metrics.counts.sessions_closed_slow_reader.inc();
                        return Ending::failed(CloseReason::Disconnected, 500, "the player reads too slowly");
                    }
                    if let Some(ending) = self.on_command(command).await {
                        return ending;
                    }
                }
                Some(event) = next_edge_event(&mut self.edge_events) => match event {
                    EdgeEvent::Connected => {
                        self.ice_deadline = None;
                        self.state.metrics.counts.edge_connections_up.inc();
                        self.state.sessions.set_edge_up(self.id, true);
                        tracing::info!(session = self.id, "edge connection up");
                        self.state.plugins.session_playing(self.id);
                    }
                    EdgeEvent::Failed => {
                        self.state.metrics.counts.edge_ice_failures.inc();
                        return Ending::failed(CloseReason::EdgeFailed, 500, "the WebRTC connection failed");
                    }
                    EdgeEvent::ClosedByPlayer => {
                        self.state.metrics.counts.edge_connections_closed_by_player.inc();
                        self.state.sessions.set_edge_up(self.id, false);
                        tracing::info!(session = self.id, "the player closed its edge connection");
                    }
                },
                _ = crate::deadline::sleep_until(answer_deadline) => {
                    self.state.metrics.counts.edge_offers_unanswered.inc();
                    return Ending::failed(CloseReason::EdgeFailed, 408, "the offer was not answered in time");
                }
                _ = crate::deadline::sleep_until(ice_deadline) => {
                    self.state.metrics.counts.edge_ice_timeouts.inc();
                    return Ending::failed(CloseReason::EdgeFailed, 500, "the WebRTC connection did not come up in time");
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= SILENCE_LIMIT {
                        return Ending::quietly(CloseReason::Disconnected);
                    }
                    if self.send(Message::Ping(Default::default())).await.is_err() {
                        return Ending::quietly(CloseReason::Disconnected);
                    }
                }
                Ok(()) = source.changed() => {
                    if *source.borrow_and_update() == SourceState::Stopped {
                        return Ending::failed(CloseReason::StreamEnded, 404, format!("stream {} stopped", self.hub.name));
                    }
                }
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Option<Ending> {
        let incoming = match protocol::parse_bounded(text, self.id, &self.limits) {
            Ok((incoming, candidates)) => {
                self.candidates += candidates;
                if self.candidates > self.limits.max_candidates_per_session {
                    let limit = self.limits.max_candidates_per_session;
                    return Some(Ending::with_error(ProtocolError::bad(format!("more than {limit} ICE candidates in one session"))));
                }
                incoming
            }
            Err(error) => return Some(Ending::with_error(error)),
        };
        match incoming {
            Incoming::RequestOffer => match self.state.plugins.offer_requested(self.id) {
                OfferDecision::Handled => {
                    self.drop_edge();
                    self.phase = Phase::WaitingForPlugin;
                    None
                }
                OfferDecision::ServeFromEdge => self.serve_from_edge().await.err(),
            },
            Incoming::EdgeAnswer { sdp } => {
                let Some(edge) = &self.edge else {
                    return Some(Ending::with_error(ProtocolError::bad("answer without an edge offer")));
                };
                if let Err(e) = edge.accept_answer(sdp).await {
                    return Some(Ending::with_error(ProtocolError::bad(format!("the answer was refused: {e}"))));
                }
                self.hub.counters.answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.answer_deadline = None;
                self.ice_deadline = Some(Instant::now() + ICE_DEADLINE);
                None
            }
            Incoming::EdgeCandidates { candidates: _ } => {
                // The edge is ICE-lite: it learns the player's address from its checks and never
                // probes the candidates a player names (see `crate::edge`).
                if self.edge.is_none() {
                    return Some(Ending::with_error(ProtocolError::bad("candidate without an edge offer")));
                }
                None
            }
            Incoming::ChangeRendition | Incoming::Pong => None,
            Incoming::Stop => Some(Ending::quietly(CloseReason::Stopped)),
            Incoming::ForPlugins { command } => match self.state.plugins.message_received(self.id, text) {
                MessageVerdict::Handled => None,
                MessageVerdict::Unknown => Some(Ending::with_error(ProtocolError::bad(format!("unknown command \"{command}\"")))),
            },
        }
    }

    async fn on_command(&mut self, command: SessionCommand) -> Option<Ending> {
        match command {
            SessionCommand::Send(json) => {
                let len = json.len();
                let sent = self.send(Message::Text(json.into())).await;
                self.outgoing.release(len);
                if sent.is_err() {
                    return Some(Ending::quietly(CloseReason::Disconnected));
                }
                None
            }
            SessionCommand::Wake => None,
            SessionCommand::ServeFromEdge => self.serve_from_edge().await.err(),
            SessionCommand::Close { code, reason } => Some(Ending::with_error(ProtocolError { code, message: reason })),
            SessionCommand::Shutdown => Some(Ending::shutting_down()),
            SessionCommand::PluginDisabled => match self.phase {
                Phase::WaitingForPlugin => self.serve_from_edge().await.err(),
                Phase::Idle | Phase::Edge => None,
            },
        }
    }

    /// Sends the player the edge's offer (replacing any earlier edge connection).
    async fn serve_from_edge(&mut self) -> Result<(), Ending> {
        self.drop_edge();
        let created = self.state.edge.offer(self.hub.clone(), self.egress_bytes.clone(), self.transports).await;
        let (edge, events, offer) = created.map_err(|e| {
            tracing::error!(session = self.id, "cannot create the edge connection: {e:#}");
            Ending::with_error(ProtocolError { code: 500, message: "cannot create the WebRTC connection".into() })
        })?;
        self.edge = Some(edge);
        self.edge_events = Some(events);
        self.answer_deadline = Some(Instant::now() + self.state.answer_timeout);
        self.phase = Phase::Edge;
        self.state.metrics.counts.edge_offers.inc();
        let message = protocol::viewer_offer(self.id, &offer.sdp, &offer.candidates, &offer.stun_servers);
        self.send(Message::Text(message.into())).await.map_err(|_| Ending::quietly(CloseReason::Disconnected))
    }

    /// Writes one message, giving up after the write timeout (a player that stopped reading).
    async fn send(&mut self, message: Message) -> Result<(), ()> {
        let limit = Duration::from_millis(self.limits.write_timeout_ms);
        match tokio::time::timeout(limit, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(()),
            Err(_) => {
                self.state.metrics.counts.sessions_closed_write_timeout.inc();
                Err(())
            }
        }
    }

    /// Closes the edge connection, if any (its worker frees it).
    fn drop_edge(&mut self) {
        if self.edge.is_some() {
            self.state.sessions.set_edge_up(self.id, false);
        }
        self.ice_deadline = None;
        self.answer_deadline = None;
        self.edge = None;
        self.edge_events = None;
    }
}

/// Whether a read failed because a message or frame was over the size limit.
fn is_too_large(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

async fn next_edge_event(events: &mut Option<mpsc::UnboundedReceiver<EdgeEvent>>) -> Option<EdgeEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

