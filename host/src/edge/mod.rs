//! The WebRTC edge: every viewer's connection on the configured UDP ports, shared.
//!
//! This module is the edge's I/O layer: sockets, tasks, channels. The connections themselves are
//! sans-IO, in their own crate ([`edge_transport`]): one interface for every connection
//! ([`edge_transport::Connection`]: a datagram or a deadline in, datagrams, deadlines and events
//! out), which the workers drive.
//!
//! The edge owns the sockets and the clock. Each configured port is one socket, bound once; the
//! ports are split among [`worker`]s (one task per core), and a worker drives every connection
//! on its sockets. A viewer costs no socket and no task: a connection is an entry in its worker's
//! table, found by the STUN USERNAME's ufrag while it is new and by its remote address once
//! established ([`demux`]).
//!
//! A viewer's connection ([`conn`]) is the edge's own: ICE-lite ([`edge_transport::ice_lite`]),
//! the SDP written by hand ([`edge_transport::sdp`]), DTLS from `rtc`'s sans-IO endpoint for the
//! keys, and media sealed straight into SRTP ([`edge_transport::track`]). A full `rtc` peer
//! connection per viewer cost twice the CPU (every packet moved through six pipeline stages and
//! copied three times) and carried per-viewer machinery a send-only viewer never uses. Publishers and pulls, the few, use `rtc`'s peer connection
//! ([`edge_transport::link::RtcLink`], [`ingest`]): they receive, and a pull is a full ICE agent.
//!
//! ICE-lite: the edge is a server with a reachable address (or a configured public one), so it
//! only answers the player's connectivity checks. It never probes addresses a player names, which
//! also means a player cannot make it send checks anywhere; trickled remote candidates are not
//! needed and are ignored.
//!
//! Viewers whose network blocks UDP reach the edge over TCP ([`tcp`], RFC 6544 with RFC 4571
//! framing, [`framing`]): each `/tcp` candidate's port is offered as a passive TCP candidate, and a
//! stream, routed by its first check's ufrag, carries its connection's packets like a path.
//!
//! Every edge port is also a STUN server ([`edge_transport::stun_server`]): a Binding request
//! without credentials is answered with the address it came from, so that players relaying to
//! each other can learn their public address from the host. Viewers' offers name it (`p2p_ice_servers`).
//!
//! A joining viewer gets the stream's video since the last keyframe first ([`crate::media::gop`]),
//! rewritten onto its own track, then live packets: its picture starts at once.

pub mod batch;
pub mod net;
pub mod tcp;
pub mod worker;

pub use edge_transport::{conn, demux, framing, ingest};

use crate::config::Config;
use crate::media::{Feed, StreamHub};
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use worker::{Command, ConnKey, Worker};

/// What an edge connection tells its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeEvent {
    /// ICE and DTLS are up; media flows.
    Connected,
    /// ICE or DTLS failed, or the connection closed.
    Failed,
    /// The player closed the connection (DTLS close_notify): its session goes on as long as its
    /// signalling does (a player closes its edge connection when it moves to a peer, or stops).
    ClosedByPlayer,
}

/// Which transports a viewer's offer names: both unless its signalling URL asks otherwise with
/// OME's `?transport=tcp` or `?transport=udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    pub udp: bool,
    pub tcp: bool,
}

impl Transports {
    /// Both transports.
    pub const BOTH: Self = Self { udp: true, tcp: true };

    /// What `query` asks for.
    pub fn from_query(query: &ome_signalling::query::Query) -> Self {
        match query.get(ome_signalling::query::TRANSPORT) {
            Some(t) if t.eq_ignore_ascii_case("tcp") => Self { udp: false, tcp: true },
            Some(t) if t.eq_ignore_ascii_case("udp") => Self { udp: true, tcp: false },
            _ => Self::BOTH,
        }
    }
}

/// The offer to send to the player.
pub use conn::Offer as EdgeOffer;

/// A handle to one worker.
struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    load: Arc<AtomicUsize>,
}

/// The edge: its workers, shared by every session.
pub struct Edge {
    workers: Vec<WorkerHandle>,
}

/// Failures a session can meet on the edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The edge is shutting down.
    #[error("the edge is shutting down")]
    Gone,
    /// The connection could not be made or refused the answer.
    #[error(transparent)]
    Refused(#[from] anyhow::Error),
}

impl Edge {
    /// Binds every configured ICE port and starts the workers: one per core, each owning every
    /// n-th port (fewer when a range has fewer ports). Fewer workers than ports means fuller
    /// `sendmmsg` batches and fewer wake-ups per packet.
    pub fn start(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let per_candidate = net::bind_all(&config.ice_candidates, &config.public_addresses)?;
        let tcp_ports = tcp::bind_all(&config.ice_candidates, &config.public_addresses)?;
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let count = per_candidate.iter().map(Vec::len).filter(|n| *n > 0).min().unwrap_or(0).min(cores);
        anyhow::ensure!(count > 0, "no ICE candidate port to bind: configure <IceCandidate>");
        let mut sockets: Vec<Vec<net::EdgeSocket>> = (0..count).map(|_| Vec::new()).collect();
        for list in per_candidate {
            for (i, s) in list.into_iter().enumerate() {
                tracing::info!(bound = %s.bound, announced = ?s.announced, "edge UDP port");
                sockets[i % count].push(s);
            }
        }
        let identity = Arc::new(conn::EdgeIdentity::generate()?);
        // Each TCP candidate's ports, each port's announced addresses: what a worker offers.
        let tcp_candidates: Vec<Vec<Vec<std::net::SocketAddr>>> =
            tcp_ports.iter().map(|ports| ports.iter().map(|p| p.announced.clone()).collect()).collect();
        let routes = Arc::new(tcp::Routes::default());
        let (mut tcp_inboxes, mut workers) = (Vec::new(), Vec::new());
        for (index, sockets) in sockets.into_iter().enumerate() {
            let (commands, rx) = mpsc::channel(worker::COMMAND_QUEUE);
            let (tcp_inbox, tcp_rx) = mpsc::channel(worker::TCP_EVENT_QUEUE);
            let load = Arc::new(AtomicUsize::new(0));
            let tcp = worker::TcpSide { index, routes: routes.clone(), candidates: tcp_candidates.clone(), events: tcp_rx };
            tokio::spawn(Worker::new(sockets, tcp, metrics.clone(), load.clone(), identity.clone()).run(rx));
            tcp_inboxes.push(tcp_inbox);
            workers.push(WorkerHandle { commands, load });
        }
        let shared = Arc::new(tcp::Shared { routes, admission: Arc::default(), workers: tcp_inboxes, next_id: Default::default(), metrics });
        for port in tcp_ports.into_iter().flatten() {
            tracing::info!(bound = %port.bound, announced = ?port.announced, "edge TCP port");
            tokio::spawn(tcp::accept(port, shared.clone()));
        }
        Ok(Self { workers })
    }

    /// A new connection for a viewer of `hub`, and its offer.
    pub async fn offer(
        &self,
        hub: Arc<StreamHub>,
        egress_bytes: Arc<AtomicU64>,
        transports: Transports,
    ) -> Result<(EdgeConnection, mpsc::UnboundedReceiver<EdgeEvent>, EdgeOffer), EdgeError> {
        let worker = self.workers.iter().min_by_key(|w| w.load.load(Ordering::Relaxed)).ok_or(EdgeError::Gone)?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        let command = Command::Offer { hub, events: events_tx, egress_bytes, transports, reply };
        worker.commands.send(command).await.map_err(|_| EdgeError::Gone)?;
        let (key, offer) = answer.await.map_err(|_| EdgeError::Gone)??;
        Ok((EdgeConnection { worker: worker.commands.clone(), key }, events, offer))
    }
}

impl Edge {
    /// A new connection for a publisher of OME's signalling: the edge's offer;
    /// [`EdgeConnection::accept_publisher_answer`] then says what it will send.
    pub async fn publish_offer(&self) -> Result<(EdgeConnection, mpsc::UnboundedReceiver<EdgeEvent>, EdgeOffer), EdgeError> {
        self.publisher(|events, reply| Command::PublishOffer { events, reply }).await
    }

    /// A new connection for a WHIP publisher's `offer`: the edge's answer, and what it will send.
    pub async fn publish_answer(&self, offer: String) -> Result<(EdgeConnection, mpsc::UnboundedReceiver<EdgeEvent>, String, ingest::Tracks), EdgeError> {
        let (edge, events, (answer, tracks)) = self.publisher(|events, reply| Command::PublishAnswer { offer, origin_candidates: None, events, reply }).await?;
        Ok((edge, events, answer, tracks))
    }

    /// A new connection pulling a stream from an origin: its `offer` and `candidates` in, the
    /// answer and what the origin sends out. The edge checks the origin's candidates itself.
    pub async fn pull(
        &self,
        offer: String,
        candidates: Vec<String>,
    ) -> Result<(EdgeConnection, mpsc::UnboundedReceiver<EdgeEvent>, String, ingest::Tracks), EdgeError> {
        let origin_candidates = Some(candidates);
        let (edge, events, (answer, tracks)) = self.publisher(|events, reply| Command::PublishAnswer { offer, origin_candidates, events, reply }).await?;
        Ok((edge, events, answer, tracks))
    }

    /// Sends the least-loaded worker the command `command` makes, and waits for its connection.
    async fn publisher<T>(
        &self,
        command: impl FnOnce(mpsc::UnboundedSender<EdgeEvent>, oneshot::Sender<anyhow::Result<(ConnKey, T)>>) -> Command,
    ) -> Result<(EdgeConnection, mpsc::UnboundedReceiver<EdgeEvent>, T), EdgeError> {
        let worker = self.workers.iter().min_by_key(|w| w.load.load(Ordering::Relaxed)).ok_or(EdgeError::Gone)?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        worker.commands.send(command(events_tx, reply)).await.map_err(|_| EdgeError::Gone)?;
        let (key, negotiated) = answer.await.map_err(|_| EdgeError::Gone)??;
        Ok((EdgeConnection { worker: worker.commands.clone(), key }, events, negotiated))
    }
}

/// A session's edge connection; dropping it closes the connection.
pub struct EdgeConnection {
    worker: mpsc::Sender<Command>,
    key: ConnKey,
}

impl EdgeConnection {
    /// Applies the player's answer.
    pub async fn accept_answer(&self, sdp: String) -> Result<(), EdgeError> {
        let (reply, result) = oneshot::channel();
        self.worker.send(Command::Answer { key: self.key, sdp, reply }).await.map_err(|_| EdgeError::Gone)?;
        Ok(result.await.map_err(|_| EdgeError::Gone)??)
    }
}

impl EdgeConnection {
    /// Applies a publisher's answer to the edge's offer: what it will send.
    pub async fn accept_publisher_answer(&self, sdp: String) -> Result<ingest::Tracks, EdgeError> {
        let (reply, result) = oneshot::channel();
        self.worker.send(Command::PublisherAnswer { key: self.key, sdp, reply }).await.map_err(|_| EdgeError::Gone)?;
        Ok(result.await.map_err(|_| EdgeError::Gone)??)
    }

    /// The connection is `feed`'s source from now on: its media feeds the stream, the stream's
    /// keyframe requests go to it.
    pub async fn publish_to(&self, feed: &Feed) -> Result<(), EdgeError> {
        self.worker.send(Command::PublishTo { key: self.key, feed: feed.clone() }).await.map_err(|_| EdgeError::Gone)?;
        let (worker, key) = (self.worker.clone(), self.key);
        feed.take_keyframe_requests(Some(Box::new(move || worker.try_send(Command::RequestKeyframe { key }).is_ok())));
        Ok(())
    }
}

impl Drop for EdgeConnection {
    fn drop(&mut self) {
        // A full queue only delays the close; the worker would otherwise hold a dead connection
        // until ICE times it out, so wait for room off the session's path.
        let command = Command::Close { key: self.key };
        if let Err(mpsc::error::TrySendError::Full(command)) = self.worker.try_send(command) {
            let worker = self.worker.clone();
            tokio::spawn(async move {
                let _ = worker.send(command).await;
            });
        }
    }
}
