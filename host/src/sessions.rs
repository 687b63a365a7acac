//! The registry of live signalling sessions: how anything (a plugin, a source) reaches a session.

use plugin_api::{SessionId, SessionInfo};
use std::collections::HashMap;
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

    /// Takes `bytes` from the budget; false (and the session marked as overflowed) if over.
    fn reserve(&self, bytes: usize) -> bool {
        let before = self.queued.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.limit {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            self.overflowed.store(true, Ordering::Relaxed);
            return false;
        }
        true
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

/// Live sessions by id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<SessionId, SessionEntry>>,
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
        loop {
            let id = rand::random_range(1..=i32::MAX as u32);
            if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(id) {
                slot.insert(make(id));
                return id;
            }
        }
    }

    /// Removes a session.
    pub fn remove(&self, id: SessionId) {
        self.map.lock().expect("sessions lock").remove(&id);
    }

    /// Queues `command` for session `id`; false if there is no such session.
    pub fn command(&self, id: SessionId, command: SessionCommand) -> bool {
        let map = self.map.lock().expect("sessions lock");
        let Some(session) = map.get(&id) else { return false };
        if let SessionCommand::Send(json) = &command {
            if !session.outgoing.reserve(json.len()) {
                // Refused, and the session closes itself at its next turn: a slow reader.
                let _ = session.commands.send(SessionCommand::Wake);
                return true;
            }
        }
        session.commands.send(command).is_ok()
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
    pub fn stats(&self) -> Vec<SessionStats> {
        let map = self.map.lock().expect("sessions lock");
        let mut rows: Vec<SessionStats> = map
            .values()
            .map(|s| SessionStats {
                id: s.info.id(),
                stream: format!("{}/{}", s.info.app(), s.info.stream()),
                user_agent: s.info.user_agent().to_string(),
                egress_bytes: s.egress_bytes.load(Ordering::Relaxed),
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }
}
