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

/// Live sessions by id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<SessionId, SessionEntry>>,
    /// The host is stopping: a session registered from now on is told at once.
    shutting_down: AtomicBool,
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
                let entry = slot.insert(make(id));
                if self.shutting_down.load(Ordering::Relaxed) {
                    let _ = entry.commands.send(SessionCommand::Shutdown);
                }
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
            if let Err(first) = session.outgoing.reserve(json.len()) {
                // Refused, and the session closes itself at its next turn (a slow reader): one
                // wake-up is enough, however many messages are refused before that turn.
                if first {
                    let _ = session.commands.send(SessionCommand::Wake);
                }
                return true;
            }
        }
        session.commands.send(command).is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let entry = |id, tx| SessionEntry {
            info: SessionInfo::new(id, plugin_api::SessionKind::Play, "default", "app", "s", "ua", "192.0.2.1:1", ""),
            commands: tx,
            egress_bytes: Arc::default(),
            outgoing: Arc::new(OutgoingBudget::new(1)),
        };
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
            sessions.register(|id| SessionEntry {
                info: SessionInfo::new(id, plugin_api::SessionKind::Play, "default", "app", "s", "ua", "192.0.2.1:1", ""),
                commands: mpsc::unbounded_channel().0,
                egress_bytes: Arc::default(),
                outgoing: Arc::new(OutgoingBudget::new(1)),
            });
        }
        let (total, rows) = sessions.stats(2);
        assert_eq!((total, rows.len()), (5, 2));
        assert!(rows[0].id < rows[1].id, "the first by id");
        assert_eq!(rows[0].stream, "app/s");
    }
}
