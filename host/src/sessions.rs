//! The registry of live signalling sessions: how anything (a plugin, a source) reaches a session.

use plugin_api::{SessionId, SessionInfo};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

/// What the registry holds for one session.
pub struct SessionEntry {
    /// The session's description, as given to plugins.
    pub info: SessionInfo,
    /// The session task's inbox.
    pub commands: mpsc::UnboundedSender<SessionCommand>,
    /// RTP bytes the edge has sent to this session.
    pub egress_bytes: Arc<AtomicU64>,
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
        map.get(&id).is_some_and(|s| s.commands.send(command).is_ok())
    }

    /// Queues a command, made per session, for every session.
    pub fn command_all(&self, make: impl Fn() -> SessionCommand) {
        for s in self.map.lock().expect("sessions lock").values() {
            let _ = s.commands.send(make());
        }
    }

    /// A row per live session.
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
