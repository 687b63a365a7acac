//! A worker: one task that owns some of the edge's shared sockets and every connection on them,
//! viewers' and publishers'. It routes datagrams ([`Demux`]), answers plain STUN on its sockets
//! ([`StunServer`]), drives each connection's clock from one timer heap, and fans the streams'
//! packets out to its viewers (a publisher's packets go to its stream's hub, and from there to
//! every worker's viewers). No task and no socket per connection.
//!
//! Every connection is driven the same way, through [`Connection`]: a datagram or a deadline
//! in, then its outputs until it has none ([`Worker::service`]): datagrams go to the sockets (or
//! a TCP stream), events become its session's [`EdgeEvent`]s, the hub's packets and keyframe
//! requests, and counts.

use super::batch::{Outbox, Sent};
use super::net::{EdgeSocket, Received, MAX_DATAGRAM, RECV_BATCH};
use super::tcp::{Routes, StreamId, TcpEvent};
use edge_transport::conn::{EdgeIdentity, NewConn, Offer, ViewerConn};
use edge_transport::demux::{Demux, Route};
use edge_transport::ingest::{NewPublisher, PublisherConn, Tracks};
use edge_transport::stun_server::StunServer;
use edge_transport::track::Plaintext;
use edge_transport::{Arrival, ConnEvent, Connection, EdgeCounts, Output, Source, Transmit};
use super::{EdgeEvent, Transports};
use crate::media::{Feed, MediaPacket, StreamHub};
use crate::metrics::Metrics;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{broadcast, mpsc, oneshot};

/// A connection's key within its worker.
pub type ConnKey = u64;
/// Remote addresses remembered per connection (a browser uses one; two after a network change).
const ADDRS_PER_CONN: usize = 4;
/// Packets from the streams queued for a worker before its feeders fall behind (and lag).
const MEDIA_QUEUE: usize = 1024;
/// `recvmmsg` batches one socket gets per turn of the worker's loop.
const READ_BATCHES_PER_TURN: usize = 8;
/// Commands queued for a worker.
pub const COMMAND_QUEUE: usize = 256;
/// Events of TCP streams queued for a worker before their tasks wait (and stop reading).
pub const TCP_EVENT_QUEUE: usize = 1024;
/// TCP streams one connection may hold: a browser opens one per TCP pair it checks (one per
/// address family and interface); more is a peer filling the table.
const TCP_STREAMS_PER_CONN: usize = 4;

/// What a session asks of the worker that holds its connection.
pub enum Command {
    /// Create a connection for a viewer of `hub` and reply with its offer.
    Offer {
        hub: Arc<StreamHub>,
        events: mpsc::UnboundedSender<EdgeEvent>,
        egress_bytes: Arc<AtomicU64>,
        transports: Transports,
        reply: oneshot::Sender<anyhow::Result<(ConnKey, Offer)>>,
    },
    /// Apply the player's answer.
    Answer { key: ConnKey, sdp: String, reply: oneshot::Sender<anyhow::Result<()>> },
    /// Create a connection for a publisher of OME's signalling: the edge offers; the publisher's
    /// answer will say what it sends ([`Command::PublisherAnswer`]).
    PublishOffer {
        events: mpsc::UnboundedSender<EdgeEvent>,
        reply: oneshot::Sender<anyhow::Result<(ConnKey, Offer)>>,
    },
    /// Create a connection answering `offer` (WHIP, or an origin's when pulling): the answer, and
    /// what the offer says comes.
    PublishAnswer {
        offer: String,
        /// Pulling from an origin: its candidates (the edge checks them as a full ICE agent).
        origin_candidates: Option<Vec<String>>,
        events: mpsc::UnboundedSender<EdgeEvent>,
        reply: oneshot::Sender<anyhow::Result<(ConnKey, (String, Tracks))>>,
    },
    /// Apply a publisher's answer (OME's signalling).
    PublisherAnswer { key: ConnKey, sdp: String, reply: oneshot::Sender<anyhow::Result<Tracks>> },
    /// From now on the publisher is `feed`'s source.
    PublishTo { key: ConnKey, feed: crate::media::Feed },
    /// Ask the publisher for a keyframe.
    RequestKeyframe { key: ConnKey },
    /// Close and forget the connection.
    Close { key: ConnKey },
}

/// A stream packet (or a gap) handed to the worker by a feeder.
enum Fed {
    Packet(u32, Arc<MediaPacket>),
    Lagged(u32),
}

/// A stream with viewers on this worker.
struct StreamSlot {
    hub: Arc<StreamHub>,
    viewers: Vec<ConnKey>,
    feeder: tokio::task::JoinHandle<()>,
}

/// One connection and what the worker keeps beside it.
struct Entry {
    link: Link,
    socket: usize,
    /// The TCP streams it holds.
    tcp_streams: Vec<StreamId>,
    /// Remote addresses it has reached (routed to it).
    addrs: Vec<SocketAddr>,
    /// The next time it wants `handle_timeout`, as last scheduled.
    scheduled: Option<Instant>,
    /// Its session's event inbox.
    events: mpsc::UnboundedSender<EdgeEvent>,
}

/// A worker's part in ICE over TCP ([`super::tcp`]).
pub struct TcpSide {
    /// The worker's index, as [`Routes`] names it.
    pub index: usize,
    /// Where each viewer connection's ufrag is, for new streams' first checks.
    pub routes: Arc<Routes>,
    /// Each TCP candidate's ports, each port's announced addresses.
    pub candidates: Vec<Vec<Vec<SocketAddr>>>,
    /// Its streams' events.
    pub events: mpsc::Receiver<TcpEvent>,
}

/// A TCP stream that belongs to a connection: its packets go down it, framed by its task.
struct TcpPath {
    key: ConnKey,
    local: SocketAddr,
    remote: SocketAddr,
    outgoing: mpsc::Sender<bytes::BytesMut>,
}

/// The worker's TCP streams, by id and by address pair (a connection's path names the pair). A
/// pair names one stream: TCP's four-tuple is unique, and a UDP path never has one of the edge's
/// TCP streams' local addresses with the same remote address.
#[derive(Default)]
struct TcpPaths {
    streams: HashMap<StreamId, TcpPath>,
    by_pair: HashMap<(SocketAddr, SocketAddr), StreamId>,
}

impl TcpPaths {
    fn open(&mut self, id: StreamId, path: TcpPath) {
        self.by_pair.insert((path.local, path.remote), id);
        self.streams.insert(id, path);
    }

    /// Forgets stream `id` (its task ends once the sender is dropped); the connection it was for.
    fn close(&mut self, id: StreamId) -> Option<ConnKey> {
        let path = self.streams.remove(&id)?;
        if self.by_pair.get(&(path.local, path.remote)) == Some(&id) {
            self.by_pair.remove(&(path.local, path.remote));
        }
        Some(path.key)
    }

    fn on_pair(&self, local: SocketAddr, remote: SocketAddr) -> Option<&TcpPath> {
        // Every packet sent asks: without a TCP stream open, no lookup at all.
        if self.by_pair.is_empty() {
            return None;
        }
        self.streams.get(self.by_pair.get(&(local, remote))?)
    }
}

/// A viewer's connection or a publisher's (or a pull's), and what the worker keeps for its kind.
// Viewers are the many and hold their state inline; the few publishers are boxed.
#[allow(clippy::large_enum_variant)]
enum Link {
    /// A viewer's: the slot of the stream it plays, and its session's count of bytes sent to it.
    Viewer { conn: ViewerConn, slot: u32, egress_bytes: Arc<AtomicU64> },
    /// A publisher's: the stream its media feeds, once its session says.
    Publisher { conn: Box<PublisherConn>, feed: Option<Feed> },
}

impl Link {
    /// The connection, whichever kind.
    fn conn(&mut self) -> &mut dyn Connection {
        match self {
            Link::Viewer { conn, .. } => conn,
            Link::Publisher { conn, .. } => &mut **conn,
        }
    }
    fn viewer(&mut self) -> Option<&mut ViewerConn> {
        match self {
            Link::Viewer { conn, .. } => Some(conn),
            Link::Publisher { .. } => None,
        }
    }
    fn slot(&self) -> Option<u32> {
        match self {
            Link::Viewer { slot, .. } => Some(*slot),
            Link::Publisher { .. } => None,
        }
    }
}

/// The worker's sockets and routing: what sending and receiving need, apart from the connections.
struct Io {
    sockets: Vec<EdgeSocket>,
    /// What each socket sends at the end of this turn of the loop.
    outboxes: Vec<Outbox>,
    /// Bound address -> socket.
    by_bound: HashMap<SocketAddr, usize>,
    demux: Demux<ConnKey>,
    stun: StunServer,
    metrics: Arc<Metrics>,
    /// Datagrams sent and system calls made so far (reported now and then).
    sent: Sent,
    tcp: TcpPaths,
    /// What this turn counted, handed on at its end ([`Worker::report_counts`]).
    counts: EdgeCounts,
}

impl Io {
    /// Queues what `entry` has to send until it has an event for the worker (`Ok`) or nothing
    /// more (`Err`: its next deadline).
    fn next_event(&mut self, key: ConnKey, entry: &mut Entry) -> Result<ConnEvent, Option<Instant>> {
        match &mut entry.link {
            Link::Viewer { conn, .. } => self.next_of(key, conn, entry.socket, &mut entry.addrs),
            Link::Publisher { conn, .. } => self.next_of(key, &mut **conn, entry.socket, &mut entry.addrs),
        }
    }

    /// [`Self::next_event`] of connection `conn` (whose first socket is `socket`), learning the
    /// addresses it reached ([`ConnEvent::Reached`]: it sent STUN there, and nothing else is
    /// sent to an address that was not checked). A pair of a TCP stream is its stream's, not an
    /// address of the UDP sockets.
    fn next_of<C: Connection + ?Sized>(&mut self, key: ConnKey, conn: &mut C, socket: usize, addrs: &mut Vec<SocketAddr>) -> Result<ConnEvent, Option<Instant>> {
        loop {
            match conn.poll_output() {
                Output::Transmit(transmit) => self.send(socket, transmit),
                Output::Event(ConnEvent::Reached { local, remote }) => {
                    if !matches!(local, Source::Local(local) if self.tcp.on_pair(local, remote).is_some()) {
                        self.demux.learn(key, remote, addrs);
                    }
                }
                Output::Event(event) => return Ok(event),
                Output::Timeout(deadline) => return Err(deadline),
            }
        }
    }

    /// Queues a datagram: down its TCP stream if its pair is one, else on the socket of its
    /// source (`socket` if none is bound there).
    fn send(&mut self, socket: usize, Transmit { source, to, bytes }: Transmit) {
        if let Source::Local(local) = source {
            if let Some(path) = self.tcp.on_pair(local, to) {
                // A full queue is a full TCP window: the packet is lost, as on a full UDP buffer.
                if let Err(mpsc::error::TrySendError::Full(_)) = path.outgoing.try_send(bytes) {
                    self.counts.tcp_frames_dropped += 1;
                }
                return;
            }
        }
        let (Source::Local(at) | Source::Announced(at)) = source;
        let socket = self.socket_for(at).unwrap_or(socket);
        let s = &self.sockets[socket];
        let from = match source {
            Source::Local(local) => s.source_for(local),
            Source::Announced(_) => None,
        };
        self.outboxes[socket].push(to, from, bytes, s.is_ipv6());
    }

    /// The socket that receives at local address `local`: the one bound to it, else the one
    /// bound to every interface of its family at its port (`*` and `[::]` may share a port, each
    /// family on its own socket: an IPv6 address is never sent to from the IPv4 one).
    fn socket_for(&self, local: SocketAddr) -> Option<usize> {
        let wildcard: IpAddr = if local.is_ipv6() { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
        [local, SocketAddr::new(wildcard, local.port())].iter().find_map(|a| self.by_bound.get(a).copied())
    }

    /// Answers a plain STUN Binding request that came to `socket`, or drops it; counts either.
    fn serve_stun(&mut self, now: Instant, socket: usize, received: &Received, request: &[u8]) {
        match self.stun.answer(now, received.from, request) {
            Ok(response) => {
                let s = &self.sockets[socket];
                self.outboxes[socket].push(received.from, s.source_for(received.local), response, s.is_ipv6());
                self.counts.stun_binding_answered += 1;
            }
            Err(_) => {
                self.counts.stun_binding_dropped += 1;
            }
        }
    }

    /// Sends what this turn queued, in batches.
    fn send_all(&mut self) {
        for (socket, outbox) in self.sockets.iter().zip(&mut self.outboxes) {
            if outbox.is_empty() {
                continue;
            }
            let sent = outbox.send(socket);
            self.sent.datagrams += sent.datagrams;
            self.sent.calls += sent.calls;
            if sent.dropped > 0 {
                self.metrics.counts.edge_datagrams_send_failed.add(sent.dropped);
            }
        }
    }
}

/// The worker's state, owned by its task.
pub struct Worker {
    io: Io,
    conns: HashMap<ConnKey, Entry>,
    next_key: ConnKey,
    next_socket: usize,
    timers: BinaryHeap<Reverse<(Instant, ConnKey)>>,
    streams: HashMap<u32, StreamSlot>,
    slot_of: HashMap<usize, u32>,
    next_slot: u32,
    media_tx: mpsc::Sender<Fed>,
    media_rx: mpsc::Receiver<Fed>,
    load: Arc<AtomicUsize>,
    identity: Arc<EdgeIdentity>,
    /// The packet being sent to viewers (its payload copied once for all of them).
    plaintext: Plaintext,
    buffers: Box<[[u8; MAX_DATAGRAM]; RECV_BATCH]>,
    /// Its part in ICE over TCP.
    tcp: TcpSide,
}

impl Worker {
    /// A worker owning `sockets` (at least one); `load` counts its connections for placement.
    pub fn new(
        sockets: Vec<EdgeSocket>,
        tcp: TcpSide,
        metrics: Arc<Metrics>,
        load: Arc<AtomicUsize>,
        identity: Arc<EdgeIdentity>,
    ) -> Self {
        let by_bound = sockets.iter().enumerate().map(|(i, s)| (s.bound, i)).collect();
        let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
        Self {
            io: Io {
                outboxes: sockets.iter().map(|_| Outbox::default()).collect(),
                sockets,
                by_bound,
                demux: Demux::new(ADDRS_PER_CONN),
                stun: StunServer::default(),
                metrics,
                sent: Sent::default(),
                tcp: TcpPaths::default(),
                counts: EdgeCounts::default(),
            },
            conns: HashMap::new(),
            next_key: 1,
            next_socket: 0,
            timers: BinaryHeap::new(),
            streams: HashMap::new(),
            slot_of: HashMap::new(),
            next_slot: 0,
            media_tx,
            media_rx,
            load,
            identity,
            plaintext: Plaintext::default(),
            buffers: Box::new([[0; MAX_DATAGRAM]; RECV_BATCH]),
            tcp,
        }
    }

    /// Runs until every command sender is gone.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut received = Vec::with_capacity(RECV_BATCH);
        loop {
            let deadline = self.timers.peek().map(|Reverse((t, _))| tokio::time::Instant::from_std(*t));
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                ready = readable(&self.io.sockets) => match ready {
                    Ok(socket) => self.read(socket, &mut received),
                    Err(e) => {
                        tracing::error!("edge socket: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
                Some(fed) = self.media_rx.recv() => {
                    let now = Instant::now();
                    self.on_media(now, fed);
                    // Drain what else is queued in one go: one clock read per batch.
                    for _ in 0..64 {
                        match self.media_rx.try_recv() {
                            Ok(fed) => self.on_media(now, fed),
                            Err(_) => break,
                        }
                    }
                }
                Some(event) = self.tcp.events.recv() => self.on_tcp(Instant::now(), event),
                _ = crate::deadline::sleep_until(deadline) => self.on_timers(Instant::now()),
            }
            // Counted before sent: whoever gets a datagram of this turn finds it counted.
            self.report_counts();
            self.io.send_all();
            self.report_sends();
        }
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.close(key);
        }
        self.report_counts();
        self.io.send_all();
    }

    /// Hands the turn's counts to the host's metrics and the edge's totals: one update per turn,
    /// not per datagram (a flood of junk must not touch the host-wide counts thousands of times
    /// a second).
    fn report_counts(&mut self) {
        let counts = self.io.counts.take();
        if counts == EdgeCounts::default() {
            return;
        }
        // Every field named (no `..`): a count the edge adds is reported, or this does not compile.
        let EdgeCounts {
            dropped_unknown_ufrag,
            dropped_unknown_address,
            dropped_not_webrtc,
            stun_binding_answered,
            stun_binding_dropped,
            packets_resent,
            media_bytes_sent,
            keyframe_cache_joins,
            lagged,
            tcp_frames_dropped,
            keyframe_requests,
        } = counts;
        let host = &self.io.metrics.counts;
        for (count, n) in [
            (&host.edge_datagrams_dropped_unknown_ufrag, dropped_unknown_ufrag),
            (&host.edge_datagrams_dropped_unknown_address, dropped_unknown_address),
            (&host.edge_datagrams_dropped_not_webrtc, dropped_not_webrtc),
            (&host.edge_packets_resent, packets_resent),
            (&host.edge_keyframe_cache_joins, keyframe_cache_joins),
            (&host.edge_tcp_frames_dropped, tcp_frames_dropped),
            (&host.ingest_keyframe_requests, keyframe_requests),
            (&host.edge_egress_bytes, media_bytes_sent),
            (&host.edge_lagged, lagged),
            (&host.stun_binding_answered, stun_binding_answered),
            (&host.stun_binding_dropped, stun_binding_dropped),
        ] {
            count.add(n);
        }
    }

    /// Adds the datagrams sent and system calls made to the metrics, every 4096 datagrams.
    fn report_sends(&mut self) {
        if self.io.sent.datagrams >= 4096 {
            let Sent { datagrams, calls, .. } = std::mem::take(&mut self.io.sent);
            self.io.metrics.counts.edge_datagrams_sent.add(datagrams);
            self.io.metrics.counts.edge_send_calls.add(calls);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Offer { hub, events, egress_bytes, transports, reply } => {
                let created = self.create(hub, events, egress_bytes, transports);
                self.reply_or_close(reply, created);
            }
            Command::Answer { key, sdp, reply } => {
                let now = Instant::now();
                let result = match self.conns.get_mut(&key).and_then(|e| e.link.viewer()) {
                    Some(conn) => conn.answer(now, sdp).map_err(anyhow::Error::from),
                    None => Err(anyhow::anyhow!("the connection is gone")),
                };
                if result.is_ok() {
                    self.service(now, key);
                }
                let _ = reply.send(result);
            }
            Command::Close { key } => self.close(key),
            Command::PublishOffer { events, reply } => {
                let created = self.create_publisher(None, events, PublisherConn::offer);
                self.reply_or_close(reply, created);
            }
            Command::PublishAnswer { offer, origin_candidates, events, reply } => {
                let answer = |now, new: NewPublisher<'_>| PublisherConn::answer_offer(now, new, offer).map(|(conn, sdp, tracks)| (conn, (sdp, tracks)));
                let created = self.create_publisher(origin_candidates, events, answer);
                self.reply_or_close(reply, created);
            }
            Command::PublisherAnswer { key, sdp, reply } => {
                let now = Instant::now();
                let result = match self.conns.get_mut(&key).map(|e| &mut e.link) {
                    Some(Link::Publisher { conn, .. }) => conn.answer(now, sdp).map_err(anyhow::Error::from),
                    _ => Err(anyhow::anyhow!("the connection is gone")),
                };
                if result.is_ok() {
                    self.service(now, key);
                }
                let _ = reply.send(result);
            }
            Command::PublishTo { key, feed } => {
                if let Some(Link::Publisher { feed: to, .. }) = self.conns.get_mut(&key).map(|e| &mut e.link) {
                    *to = Some(feed);
                }
            }
            Command::RequestKeyframe { key } => {
                let now = Instant::now();
                if let Some(Link::Publisher { conn, .. }) = self.conns.get_mut(&key).map(|e| &mut e.link) {
                    if conn.request_keyframe(now) {
                        self.io.counts.keyframe_requests += 1;
                    }
                    self.service(now, key);
                }
            }
        }
    }

    fn create(
        &mut self,
        hub: Arc<StreamHub>,
        events: mpsc::UnboundedSender<EdgeEvent>,
        egress_bytes: Arc<AtomicU64>,
        transports: Transports,
    ) -> anyhow::Result<(ConnKey, Offer)> {
        let now = Instant::now();
        let (socket, mut candidates) = self.pick_sockets();
        let mut tcp_candidates = self.pick_tcp_ports();
        candidates.retain(|_| transports.udp);
        tcp_candidates.retain(|_| transports.tcp);
        anyhow::ensure!(!candidates.is_empty() || !tcp_candidates.is_empty(), "no ICE candidate of the transport the viewer asked for");
        let stream_id = hub.name.replace('/', "-");
        let new = NewConn {
            stream_id: &stream_id,
            video_codec: hub.video_codec,
            has_audio: hub.has_audio,
            candidates: &candidates,
            tcp_candidates: &tcp_candidates,
            identity: &self.identity,
            wall: std::time::SystemTime::now(),
        };
        let (conn, offer) = ViewerConn::offer(now, new)?;
        let key = self.next_key;
        self.next_key += 1;
        anyhow::ensure!(self.io.demux.add(&conn.state.ufrag, key), "ICE ufrag collision");
        let slot = self.subscribe(&hub);
        self.streams.get_mut(&slot).expect("subscribed").viewers.push(key);
        if !tcp_candidates.is_empty() {
            // Offered TCP: a stream whose first check names it is routed here.
            self.tcp.routes.insert(&conn.state.ufrag, self.tcp.index);
        }
        let link = Link::Viewer { conn, slot, egress_bytes };
        self.conns.insert(key, Entry { link, socket, tcp_streams: Vec::new(), addrs: Vec::new(), scheduled: None, events });
        self.load.fetch_add(1, Ordering::Relaxed);
        self.service(now, key);
        Ok((key, offer))
    }

    /// Replies to a command that created a connection; if the session is gone already, nobody
    /// will close the connection but the worker.
    fn reply_or_close<T>(&mut self, reply: oneshot::Sender<anyhow::Result<(ConnKey, T)>>, created: anyhow::Result<(ConnKey, T)>) {
        let key = created.as_ref().ok().map(|(key, _)| *key);
        if reply.send(created).is_err() {
            if let Some(key) = key {
                self.close(key);
            }
        }
    }

    /// A publisher's (or a pull's) connection, made by `make` (the edge's offer, or its answer),
    /// and what `make` gives its session.
    fn create_publisher<T>(
        &mut self,
        origin_candidates: Option<Vec<String>>,
        events: mpsc::UnboundedSender<EdgeEvent>,
        make: impl FnOnce(Instant, NewPublisher<'_>) -> Result<(PublisherConn, T), edge_transport::Error>,
    ) -> anyhow::Result<(ConnKey, T)> {
        let now = Instant::now();
        let (socket, candidates) = self.pick_sockets();
        let new = NewPublisher { origin_candidates, candidates: &candidates, certificate: self.identity.certificate.clone() };
        let (conn, negotiated) = make(now, new)?;
        let key = self.next_key;
        self.next_key += 1;
        anyhow::ensure!(self.io.demux.add(&conn.link.state.ufrag, key), "ICE ufrag collision");
        let link = Link::Publisher { conn: Box::new(conn), feed: None };
        self.conns.insert(key, Entry { link, socket, tcp_streams: Vec::new(), addrs: Vec::new(), scheduled: None, events });
        self.load.fetch_add(1, Ordering::Relaxed);
        self.service(now, key);
        Ok((key, negotiated))
    }

    /// For a new connection: one socket of each configured candidate, in turn, and the addresses
    /// they are announced at (the connection's candidates). Returns the first socket too. A
    /// worker's sockets are grouped by candidate (`Edge::start` hands them out candidate by
    /// candidate).
    fn pick_sockets(&mut self) -> (usize, Vec<SocketAddr>) {
        let turn = self.next_socket;
        self.next_socket = self.next_socket.wrapping_add(1);
        let sockets = &self.io.sockets;
        let (mut first, mut offset, mut candidates) = (None, 0, Vec::new());
        for group in sockets.chunk_by(|a, b| a.candidate == b.candidate) {
            let chosen = offset + turn % group.len();
            first.get_or_insert(chosen);
            candidates.extend_from_slice(&sockets[chosen].announced);
            offset += group.len();
        }
        (first.unwrap_or(0), candidates)
    }

    /// For a new viewer connection: one port of each TCP candidate, in turn, and the addresses
    /// they are announced at.
    fn pick_tcp_ports(&self) -> Vec<SocketAddr> {
        let turn = self.next_socket;
        self.tcp.candidates.iter().filter(|ports| !ports.is_empty()).flat_map(|ports| ports[turn % ports.len()].iter().copied()).collect()
    }

    /// An event of a TCP stream: a new stream goes to the connection its first check names (or
    /// is closed, by dropping its sender); a frame to its stream's connection.
    fn on_tcp(&mut self, now: Instant, event: TcpEvent) {
        let (key, local, remote, data) = match event {
            TcpEvent::Opened { id, local, remote, first, outgoing } => {
                let Some(key) = self.io.demux.route_check(&first) else { return };
                let Some(entry) = self.conns.get_mut(&key) else { return };
                if entry.link.viewer().is_none() || entry.tcp_streams.len() >= TCP_STREAMS_PER_CONN {
                    return;
                }
                entry.tcp_streams.push(id);
                self.io.tcp.open(id, TcpPath { key, local, remote, outgoing });
                (key, local, remote, first)
            }
            TcpEvent::Frame { id, data } => {
                let Some(path) = self.io.tcp.streams.get(&id) else { return };
                (path.key, path.local, path.remote, data)
            }
            TcpEvent::Closed { id } => {
                if let Some(entry) = self.io.tcp.close(id).and_then(|key| self.conns.get_mut(&key)) {
                    entry.tcp_streams.retain(|s| *s != id);
                }
                return;
            }
        };
        let Some(entry) = self.conns.get_mut(&key) else { return };
        entry.link.conn().handle_datagram(now, Arrival::at(local), remote, &data, &mut self.plaintext);
        self.service(now, key);
    }

    /// The slot of `hub` on this worker, starting its feeder on the first viewer. Hubs are told
    /// apart by identity: a stream published again under its name is another hub.
    fn subscribe(&mut self, hub: &Arc<StreamHub>) -> u32 {
        if let Some(slot) = self.slot_of.get(&hub_id(hub)) {
            return *slot;
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        let feeder = tokio::spawn(feed(hub.subscribe(), slot, self.media_tx.clone()));
        self.streams.insert(slot, StreamSlot { hub: hub.clone(), viewers: Vec::new(), feeder });
        self.slot_of.insert(hub_id(hub), slot);
        slot
    }

    fn close(&mut self, key: ConnKey) {
        let Some(mut entry) = self.conns.remove(&key) else { return };
        entry.link.conn().close(Instant::now());
        // What the close sends (DTLS close_notify) goes out; what it tells, nobody hears.
        while self.io.next_event(key, &mut entry).is_ok() {}
        for id in entry.tcp_streams.drain(..) {
            self.io.tcp.close(id);
        }
        let ufrag = entry.link.conn().ufrag();
        self.io.demux.remove(ufrag, key, &entry.addrs);
        if !self.tcp.candidates.is_empty() {
            self.tcp.routes.remove(ufrag);
        }
        self.load.fetch_sub(1, Ordering::Relaxed);
        let Some(slot) = entry.link.slot() else { return };
        if let Some(stream) = self.streams.get_mut(&slot) {
            stream.viewers.retain(|k| *k != key);
            if stream.viewers.is_empty() {
                let stream = self.streams.remove(&slot).expect("present");
                stream.feeder.abort();
                self.slot_of.remove(&hub_id(&stream.hub));
            }
        }
    }

    fn read(&mut self, socket: usize, received: &mut Vec<Received>) {
        // At most this many batches per turn: a flood must not keep timers, media and commands
        // waiting (the socket stays readable; the next turn reads on).
        for _ in 0..READ_BATCHES_PER_TURN {
            let n = match self.io.sockets[socket].try_recv(&mut self.buffers[..], received) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!("edge socket read: {e}");
                    return;
                }
            };
            let now = Instant::now();
            for r in received.iter() {
                let data = &self.buffers[r.buffer][r.offset..r.offset + r.len];
                match self.io.demux.route(data, r.from) {
                    Ok(Route::StunServer) => self.io.serve_stun(now, socket, r, data),
                    Ok(Route::Conn(key)) => {
                        let Some(entry) = self.conns.get_mut(&key) else { continue };
                        let arrival = Arrival { local: r.local, announced: r.announced };
                        entry.link.conn().handle_datagram(now, arrival, r.from, data, &mut self.plaintext);
                        self.service(now, key);
                    }
                    Err(dropped) => self.io.counts.dropped(dropped),
                }
            }
            if n < RECV_BATCH {
                return;
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, key))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.conns.get_mut(&key) else { continue };
            if entry.scheduled != Some(t) {
                continue; // superseded
            }
            entry.scheduled = None;
            entry.link.conn().handle_timeout(now);
            self.service(now, key);
        }
        // Stale entries accumulate when deadlines move; rebuild now and then.
        if self.timers.len() > 4 * self.conns.len() + 64 {
            self.timers = self.conns.iter().filter_map(|(k, e)| e.scheduled.map(|t| Reverse((t, *k)))).collect();
        }
    }

    fn on_media(&mut self, now: Instant, fed: Fed) {
        let (slot, packet) = match fed {
            Fed::Packet(slot, packet) => (slot, packet),
            Fed::Lagged(slot) => {
                self.io.counts.lagged += 1;
                for key in self.streams.get(&slot).map(|s| s.viewers.clone()).unwrap_or_default() {
                    if let Some(conn) = self.conns.get_mut(&key).and_then(|e| e.link.viewer()) {
                        conn.lagged();
                    }
                }
                return;
            }
        };
        let Some(stream) = self.streams.get(&slot) else { return };
        for key in &stream.viewers {
            let Some(entry) = self.conns.get_mut(key) else { continue };
            let Link::Viewer { conn, egress_bytes, .. } = &mut entry.link else { continue };
            conn.send_media(now, &packet, &mut self.plaintext);
            // Sending makes datagrams on the path and the bytes they carry, nothing else: no
            // event, no deadline to ask for.
            while let Some(transmit) = conn.next_transmit() {
                self.io.send(entry.socket, transmit);
            }
            let sent = conn.take_media_sent();
            if sent > 0 {
                egress_bytes.fetch_add(sent, Ordering::Relaxed);
                self.io.counts.event(&ConnEvent::MediaSent(sent));
            }
        }
    }

    /// After an input to `key`: sends what it queued and acts on what it tells until it has
    /// nothing more, then schedules its next timeout, or forgets it if it is done.
    fn service(&mut self, now: Instant, key: ConnKey) {
        loop {
            let Some(entry) = self.conns.get_mut(&key) else { return };
            match self.io.next_event(key, entry) {
                Ok(event) => self.on_event(now, key, event),
                Err(deadline) => {
                    if entry.link.conn().is_done() {
                        self.close(key);
                    } else if deadline != entry.scheduled {
                        entry.scheduled = deadline;
                        if let Some(t) = deadline {
                            self.timers.push(Reverse((t, key)));
                        }
                    }
                    return;
                }
            }
        }
    }

    /// What connection `key` told: its session hears of its state; a viewer that came up starts
    /// from its stream's keyframe cache; keyframe requests go to the stream's hub, a publisher's
    /// packets into it; the rest is counted.
    fn on_event(&mut self, now: Instant, key: ConnKey, event: ConnEvent) {
        let Some(entry) = self.conns.get_mut(&key) else { return };
        match event {
            ConnEvent::Connected => {
                let _ = entry.events.send(EdgeEvent::Connected);
                let Some(slot) = entry.link.slot() else { return };
                let hub = self.streams[&slot].hub.clone();
                let cache = hub.keyframe_cache();
                if cache.is_empty() {
                    hub.request_keyframe(now);
                } else {
                    self.io.counts.keyframe_cache_joins += 1;
                }
                let conn = entry.link.viewer().expect("a viewer");
                conn.start_from(now, cache, &mut self.plaintext);
            }
            ConnEvent::Failed => {
                let _ = entry.events.send(EdgeEvent::Failed);
            }
            ConnEvent::ClosedByPlayer => {
                let _ = entry.events.send(EdgeEvent::ClosedByPlayer);
            }
            ConnEvent::KeyframeRequested => {
                if let Some(slot) = entry.link.slot() {
                    self.streams[&slot].hub.request_keyframe(now);
                }
            }
            ConnEvent::Resent(_) => self.io.counts.event(&event),
            ConnEvent::MediaSent(n) => {
                if let Link::Viewer { egress_bytes, .. } = &entry.link {
                    egress_bytes.fetch_add(n, Ordering::Relaxed);
                }
                self.io.counts.event(&event);
            }
            ConnEvent::Media(kind, packet) => {
                if let Link::Publisher { feed: Some(feed), .. } = &entry.link {
                    feed.packet(kind, packet);
                }
            }
            ConnEvent::Reached { .. } => {} // the I/O layer's ([`Io::next_of`])
        }
    }
}

/// A hub's identity on this worker.
fn hub_id(hub: &Arc<StreamHub>) -> usize {
    Arc::as_ptr(hub) as usize
}

async fn feed(mut packets: broadcast::Receiver<Arc<MediaPacket>>, slot: u32, to: mpsc::Sender<Fed>) {
    loop {
        let fed = match packets.recv().await {
            Ok(p) => Fed::Packet(slot, p),
            Err(broadcast::error::RecvError::Lagged(_)) => Fed::Lagged(slot),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if to.send(fed).await.is_err() {
            return;
        }
    }
}

/// The index of a socket that may be readable.
async fn readable(sockets: &[EdgeSocket]) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        for (i, s) in sockets.iter().enumerate() {
            match s.poll_readable(cx) {
                std::task::Poll::Ready(Ok(())) => return std::task::Poll::Ready(Ok(i)),
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => {}
            }
        }
        std::task::Poll::Pending
    })
    .await
}

