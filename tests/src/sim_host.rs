//! A host for plugins outside the real one (the swarm driver, benches): a virtual clock, and the
//! plugin's host calls queued as [`HostCall`]s, the host's own effect type, for the caller to
//! carry out after each hook returns, as the real host does.

use plugin_api::{HostCall, HostServices, LogLevel, SessionId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The host side of a simulated plugin: cheap to clone, shared with the plugin it was given to.
#[derive(Clone, Default)]
pub struct SimHost {
    now: Arc<AtomicU64>,
    calls: Arc<Mutex<Vec<HostCall>>>,
    errors: Arc<AtomicU64>,
}

impl SimHost {
    /// Sets the virtual clock (ms).
    pub fn set_now(&self, ms: u64) {
        self.now.store(ms, Ordering::Relaxed);
    }
    /// The virtual clock (ms).
    pub fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
    /// Takes the calls queued since the last time, in order.
    pub fn take_calls(&self) -> Vec<HostCall> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
    /// Errors the plugin logged.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    fn queue(&self, call: HostCall) {
        self.calls.lock().unwrap().push(call);
    }
}

impl HostServices for SimHost {
    fn now_ms(&self) -> u64 {
        self.now()
    }
    fn send(&self, id: SessionId, json: &str) {
        self.queue(HostCall::Send(id, json.to_string()));
    }
    fn serve_from_edge(&self, id: SessionId) {
        self.queue(HostCall::ServeFromEdge(id));
    }
    fn close(&self, id: SessionId, code: u16, reason: &str) {
        self.queue(HostCall::Close(id, code, reason.to_string()));
    }
    fn set_timer(&self, token: u64, after_ms: u64) {
        self.queue(HostCall::SetTimer { token, after_ms });
    }
    fn log(&self, level: LogLevel, message: &str) {
        if matches!(level, LogLevel::Error) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("plugin error: {message}");
        }
    }
    fn count(&self, name: &str, delta: i64) {
        self.queue(HostCall::Count(name.to_string(), delta));
    }
}
