//! The registry of live signalling sessions: how anything (a plugin, a source) reaches a session.

use crate::media::StreamHub;
use plugin_api::{Delivery, SessionId, SessionInfo};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// A request to a session's task.
#[derive(Debug)]
pub enum SessionCommand {
    /// Send this JSON text to the player.
    Send(String),
    /// Answer the pending `request_offer` from the edge.
    ServeFromEdge,
    /// Send the protocol's error `{code, error}` and close.
    Close {
        /// The error code (400, 403, 404, 500).
        code: u16,
        /// The error text.
        reason: String,
    },
    /// A plugin was disabled: a session waiting for it is served from the edge.
    PluginDisabled,
    /// The host is stopping: close with "going away".
    Shutdown,
    /// Look at the session's state (its outgoing queue overflowed).
    Wake,
}

/// What the registry holds for one session.
pub struct SessionEntry {
    /// The session's description, as given to plugins.
    pub info: SessionInfo,
    /// The session task's inbox.
    pub commands: mpsc::UnboundedSender<SessionCommand>,
    /// RTP bytes the edge has sent to this session.
    pub egress_bytes: Arc<AtomicU64>,
    /// What its outgoing queue may still take.
    pub outgoing: Arc<OutgoingBudget>,
    /// The stream it plays.
    pub hub: Arc<StreamHub>,
    /// An edge pulling the stream (`?edge=NAME`), counted apart from viewers.
    pub pulling_edge: bool,
    /// How it gets the stream.
    pub view: ViewerState,
}

/// How a viewer gets the stream: its edge connection, and what a plugin reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct ViewerState {
    /// Its edge connection is up (media flows from the edge).
    pub edge_up: bool,
    /// The latest delivery a plugin reported (default: the edge, relaying to nobody).
    pub delivery: Delivery,
    /// While it plays from a peer: the stream's ingest bytes when that began (for the estimate
    /// of what peers carried).
    peer_since: Option<u64>,
}

impl ViewerState {
    /// Plays from a peer (as far as the plugin knows).
    pub fn plays_from_peer(&self) -> bool {
        self.delivery.upstream != 0 && self.delivery.connected
    }
}

/// The bytes of messages queued for one session's socket, bounded: a reader that falls behind by
/// more than the limit is closed, not buffered for.
#[derive(Debug)]
pub struct OutgoingBudget {
    queued: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
}

impl OutgoingBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { queued: AtomicUsize::new(0), limit, overflowed: AtomicBool::new(false) }
    }

    /// Takes `bytes` from the budget; if over, marks the session as overflowed and says whether
    /// this was the first refusal (`Err(true)`).
    fn reserve(&self, bytes: usize) -> Result<(), bool> {
        let before = self.queued.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.limit {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            return Err(!self.overflowed.swap(true, Ordering::Relaxed));
        }
        Ok(())
    }

    /// Gives back the bytes of a message that was written (or dropped).
    pub fn release(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Whether a message was refused for lack of room.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// Takes `bytes` from `session`'s budget; on the first refusal, wakes it to close itself.
fn reserve_in(session: &SessionEntry, bytes: usize) -> Reserved {
    match session.outgoing.reserve(bytes) {
        Ok(()) => Reserved::Yes,
        Err(first) => {
            if first {
                let _ = session.commands.send(SessionCommand::Wake);
            }
            Reserved::Refused
        }
    }
}

/// What [`Sessions::reserve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The bytes are the message's.
    Yes,
    /// Over the session's budget: dropped (the session closes itself as a slow reader).
    Refused,
    /// No such session.
    NoSession,
}

/// Live sessions by id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<SessionId, SessionEntry>>,
    /// The host is stopping: a session registered from now on is told at once.
    shutting_down: AtomicBool,
    /// Bumped whenever a session comes, goes or changes how it gets the stream.
    changes: Changes,
}

/// A counter of changes that watchers (the P2P page) wait on.
pub struct Changes(tokio::sync::watch::Sender<u64>);

impl Default for Changes {
    fn default() -> Self {
        Self(tokio::sync::watch::channel(0).0)
    }
}

/// One stream's live sessions, summed (for metrics and the stats API).
#[derive(Debug, Clone, Default)]
pub struct StreamLive {
    /// Sessions open.
    pub sessions: u64,
    /// Viewers whose edge connection is up (edges pulling the stream not counted).
    pub edge_viewers: u64,
    /// Other hosts pulling the stream as edges (their query says `edge=NAME`).
    pub pulling_edges: u64,
    /// Viewers playing from a peer.
    pub peer_viewers: u64,
    /// Viewers relaying to at least one other.
    pub relaying: u64,
    /// Free relay slots of the viewers that may relay.
    pub free_relay_slots: u64,
    /// Edge RTP bytes sent to the open sessions.
    pub egress_bytes: u64,
    /// Estimated bytes the open sessions got from peers so far.
    pub peer_bytes: u64,
}

/// A node of the delivery tree of one stream (the P2P page).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TreeNode {
    /// The session.
    pub id: SessionId,
    /// The viewer it plays from (0: the edge).
    pub upstream: SessionId,
    /// Media flows from `upstream` (for the edge: its connection is up).
    pub connected: bool,
    /// More viewers it may relay to.
    pub free_relay_slots: u16,
}

/// A row of `/stats`: one live session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionStats {
    /// The session id.
    pub id: SessionId,
    /// `app/stream`.
    pub stream: String,
    /// The session's User-Agent.
    pub user_agent: String,
    /// RTP bytes the edge has sent to it.
    pub egress_bytes: u64,
}

impl Sessions {
    /// Registers a new session under a fresh random id in `1..2^31` and returns that id.
    pub fn register(&self, make: impl FnOnce(SessionId) -> SessionEntry) -> SessionId {
        let mut map = self.map.lock().expect("sessions lock");
        self.changes.0.send_modify(|n| *n += 1);
        loop {
            let id = rand::random_range(1..=i32::MAX as u32);
            if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(id) {
                let entry = slot.insert(make(id));
                if self.shutting_down.load(Ordering::Relaxed) {
                    let _ = entry.commands.send(SessionCommand::Shutdown);
                }
                return id;
            }
        }
    }

    /// Removes a session (ending its P2P link's estimate).
    pub fn remove(&self, id: SessionId) {
        if let Some(mut entry) = self.map.lock().expect("sessions lock").remove(&id) {
            end_peer_link(&mut entry);
            self.changes.0.send_modify(|n| *n += 1);
        }
    }

    /// A plugin reported how session `id` gets the stream; nothing if it is gone.
    pub fn set_delivery(&self, id: SessionId, delivery: Delivery) {
        let mut map = self.map.lock().expect("sessions lock");
        let Some(entry) = map.get_mut(&id) else { return };
        let was_peer = entry.view.plays_from_peer();
        entry.view.delivery = delivery;
        if was_peer && !entry.view.plays_from_peer() {
            end_peer_link(entry);
        } else if !was_peer && entry.view.plays_from_peer() {
            entry.view.peer_since = Some(entry.hub.counters.ingest_bytes.load(Ordering::Relaxed));
        }
        self.changes.0.send_modify(|n| *n += 1);
    }

    /// Session `id`'s edge connection came up or went.
    pub fn set_edge_up(&self, id: SessionId, up: bool) {
        let mut map = self.map.lock().expect("sessions lock");
        if let Some(entry) = map.get_mut(&id).filter(|e| e.view.edge_up != up) {
            entry.view.edge_up = up;
            self.changes.0.send_modify(|n| *n += 1);
        }
    }

    /// A receiver that sees every change of sessions or deliveries.
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.0.subscribe()
    }

    /// The live sessions of each stream (by `app/stream`), summed.
    pub fn per_stream(&self) -> BTreeMap<String, StreamLive> {
        let map = self.map.lock().expect("sessions lock");
        let relaying: std::collections::HashSet<SessionId> =
            map.values().filter(|e| e.view.plays_from_peer()).map(|e| e.view.delivery.upstream).collect();
        let mut streams: BTreeMap<String, StreamLive> = BTreeMap::new();
        for (id, e) in map.iter() {
            if !streams.contains_key(e.hub.name.as_str()) {
                streams.insert(e.hub.name.clone(), StreamLive::default());
            }
            let live = streams.get_mut(e.hub.name.as_str()).expect("just ensured");
            live.sessions += 1;
            if e.pulling_edge {
                live.pulling_edges += 1;
            } else {
                live.edge_viewers += u64::from(e.view.edge_up);
            }
            live.peer_viewers += u64::from(e.view.plays_from_peer());
            live.relaying += u64::from(relaying.contains(id));
            live.free_relay_slots += u64::from(e.view.delivery.free_relay_slots);
            live.egress_bytes += e.egress_bytes.load(Ordering::Relaxed);
            if let Some(since) = e.view.peer_since {
                live.peer_bytes += e.hub.counters.ingest_bytes.load(Ordering::Relaxed).saturating_sub(since);
            }
        }
        streams
    }

    /// Each stream's sessions (by `app/stream`) as tree nodes, at most `limit` per stream, by id;
    /// one walk of the sessions for all streams.
    pub fn trees(&self, limit: usize) -> HashMap<String, Vec<TreeNode>> {
        let map = self.map.lock().expect("sessions lock");
        let mut trees: HashMap<String, Vec<TreeNode>> = HashMap::new();
        for (&id, e) in map.iter() {
            let d = e.view.delivery;
            let connected = if d.upstream == 0 { e.view.edge_up } else { d.connected };
            let node = TreeNode { id, upstream: d.upstream, connected, free_relay_slots: d.free_relay_slots };
            match trees.get_mut(e.hub.name.as_str()) {
                Some(nodes) => nodes.push(node),
                None => {
                    trees.insert(e.hub.name.clone(), vec![node]);
                }
            }
        }
        for nodes in trees.values_mut() {
            nodes.sort_unstable_by_key(|n| n.id);
            nodes.truncate(limit);
        }
        trees
    }

    /// Queues `command` for session `id`; false if there is no such session. A message is
    /// counted against the session's outgoing budget (see [`Sessions::reserve`]).
    pub fn command(&self, id: SessionId, command: SessionCommand) -> bool {
        let map = self.map.lock().expect("sessions lock");
        let Some(session) = map.get(&id) else { return false };
        if let SessionCommand::Send(json) = &command {
            if reserve_in(session, json.len()) == Reserved::Refused {
                return true;
            }
        }
        session.commands.send(command).is_ok()
    }

    /// Takes `bytes` from session `id`'s outgoing budget, the one bound of what may wait for its
    /// socket: messages queued for it, and plugin messages not yet handed to it (a plugin's are
    /// reserved when it sends them). Refused, the session closes itself at its next turn as a
    /// slow reader: one wake-up is enough, however many messages are refused before that turn.
    pub fn reserve(&self, id: SessionId, bytes: usize) -> Reserved {
        let map = self.map.lock().expect("sessions lock");
        map.get(&id).map_or(Reserved::NoSession, |session| reserve_in(session, bytes))
    }

    /// Queues `command` for session `id`, its bytes (if a message) already reserved; false if
    /// there is no such session (the reservation went with it).
    pub fn send_reserved(&self, id: SessionId, command: SessionCommand) -> bool {
        let map = self.map.lock().expect("sessions lock");
        map.get(&id).is_some_and(|session| session.commands.send(command).is_ok())
    }

    /// The host is stopping: every session, and any registered from now on (a WebSocket upgrade
    /// in flight at the signal), is told once.
    pub fn shut_down_all(&self) {
        let map = self.map.lock().expect("sessions lock");
        self.shutting_down.store(true, Ordering::Relaxed);
        for s in map.values() {
            let _ = s.commands.send(SessionCommand::Shutdown);
        }
    }

    /// Queues a command, made per session, for every session.
    pub fn command_all(&self, make: impl Fn() -> SessionCommand) {
        for s in self.map.lock().expect("sessions lock").values() {
            let _ = s.commands.send(make());
        }
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.map.lock().expect("sessions lock").len()
    }

    /// One row per live session, for `/stats`.
    /// How many sessions are live, and a row for each of the first `limit` of them by id (rows
    /// are built for those only).
    pub fn stats(&self, limit: usize) -> (usize, Vec<SessionStats>) {
        let map = self.map.lock().expect("sessions lock");
        let mut ids: Vec<SessionId> = map.keys().copied().collect();
        ids.sort_unstable();
        let rows = ids
            .iter()
            .take(limit)
            .map(|id| {
                let s = &map[id];
                SessionStats {
                    id: *id,
                    stream: format!("{}/{}", s.info.app(), s.info.stream()),
                    user_agent: s.info.user_agent().to_string(),
                    egress_bytes: s.egress_bytes.load(Ordering::Relaxed),
                }
            })
            .collect();
        (ids.len(), rows)
    }
}

/// Ends `entry`'s P2P link, if it had one: what it got from its peer joins the stream's total.
fn end_peer_link(entry: &mut SessionEntry) {
    if let Some(since) = entry.view.peer_since.take() {
        let counters = &entry.hub.counters;
        let carried = counters.ingest_bytes.load(Ordering::Relaxed).saturating_sub(since);
        counters.peer_bytes_ended.fetch_add(carried, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Feed;

    fn stream() -> Feed {
        Feed::new("app/s".into(), crate::media::SourceKind::TestPattern, crate::config::VideoCodec::Vp8, false, Default::default())
    }

    fn hub() -> Arc<StreamHub> {
        stream().hub().clone()
    }

    fn entry(id: SessionId, commands: mpsc::UnboundedSender<SessionCommand>, hub: Arc<StreamHub>) -> SessionEntry {
        SessionEntry {
            info: SessionInfo::new(id, plugin_api::SessionKind::Play, "default", "app", "s", "ua", "192.0.2.1:1", ""),
            commands,
            egress_bytes: Arc::default(),
            outgoing: Arc::new(OutgoingBudget::new(1)),
            hub,
            pulling_edge: false,
            view: ViewerState::default(),
        }
    }

    fn publish(feed: &Feed, payload_bytes: usize) {
        let packet = rtc::rtp::Packet { payload: vec![0u8; payload_bytes].into(), ..Default::default() };
        feed.packet(crate::media::MediaKind::Audio, packet);
    }

    #[test]
    fn what_peers_carried_is_the_streams_bytes_while_each_peer_link_was_up() {
        let (sessions, feed) = (Sessions::default(), stream());
        let hub = feed.hub();
        let host = sessions.register(|id| entry(id, mpsc::unbounded_channel().0, hub.clone()));
        let client = sessions.register(|id| entry(id, mpsc::unbounded_channel().0, hub.clone()));
        sessions.set_edge_up(host, true);
        sessions.set_delivery(host, Delivery { free_relay_slots: 1, ..Delivery::default() });
        publish(&feed, 88); // 100 bytes before the link: not carried by the peer
        sessions.set_delivery(client, Delivery { upstream: host, connected: false, free_relay_slots: 0 });
        publish(&feed, 88); // connecting: not yet
        sessions.set_delivery(client, Delivery { upstream: host, connected: true, free_relay_slots: 0 });
        publish(&feed, 188);
        let live = &sessions.per_stream()["app/s"];
        assert_eq!((live.sessions, live.edge_viewers, live.peer_viewers, live.relaying, live.free_relay_slots), (2, 1, 1, 1, 1));
        assert_eq!(live.peer_bytes, 200);
        sessions.set_delivery(client, Delivery::default()); // back on the edge
        publish(&feed, 88);
        assert_eq!(hub.counters.peer_bytes_ended.load(Ordering::Relaxed), 200);
        assert_eq!(sessions.per_stream()["app/s"].peer_bytes, 0, "ended links are counted once, in the stream's total");
        sessions.set_delivery(client, Delivery { upstream: host, connected: true, free_relay_slots: 0 });
        publish(&feed, 88);
        sessions.remove(client);
        assert_eq!(hub.counters.peer_bytes_ended.load(Ordering::Relaxed), 300, "a link ends with its session");
        sessions.set_delivery(client, Delivery { upstream: host, connected: true, free_relay_slots: 0 });
        assert_eq!(sessions.per_stream()["app/s"].sessions, 1, "a report for a session that is gone is dropped");
    }

    #[test]
    fn the_outgoing_budget_refuses_past_its_limit_and_reports_the_first_refusal_once() {
        let budget = OutgoingBudget::new(100);
        assert_eq!(budget.reserve(60), Ok(()));
        assert_eq!(budget.reserve(60), Err(true), "over the limit: the first refusal");
        assert_eq!(budget.reserve(60), Err(false), "and not again");
        assert!(budget.overflowed());
        budget.release(60);
        assert_eq!(budget.reserve(100), Ok(()), "what was written is given back");
    }

    #[test]
    fn a_session_registered_while_the_host_stops_is_told_at_once() {
        let sessions = Sessions::default();
        let entry = |id, tx| entry(id, tx, hub());
        let (early_tx, mut early) = mpsc::unbounded_channel();
        sessions.register(|id| entry(id, early_tx));
        sessions.shut_down_all();
        let (late_tx, mut late) = mpsc::unbounded_channel();
        sessions.register(|id| entry(id, late_tx));
        for rx in [&mut early, &mut late] {
            assert!(matches!(rx.try_recv(), Ok(SessionCommand::Shutdown)));
            assert!(rx.try_recv().is_err(), "told once");
        }
    }

    #[test]
    fn stats_rows_are_bounded_and_the_total_still_counts_everyone() {
        let sessions = Sessions::default();
        for _ in 0..5 {
            sessions.register(|id| entry(id, mpsc::unbounded_channel().0, hub()));
        }
        let (total, rows) = sessions.stats(2);
        assert_eq!((total, rows.len()), (5, 2));
        assert!(rows[0].id < rows[1].id, "the first by id");
        assert_eq!(rows[0].stream, "app/s");
    }
}
