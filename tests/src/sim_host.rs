//! A host for plugins outside the real one (the swarm driver, benches): a virtual clock, and the
//! plugin's host calls queued as [`HostCall`]s, the host's own effect type, for the caller to
//! carry out after each hook returns, as the real host does.

use plugin_api::{HostCall, HostServices, LogLevel};
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
}

impl HostServices for SimHost {
    fn now_ms(&self) -> u64 {
        self.now()
    }
    fn log(&self, level: LogLevel, message: &str) {
        if matches!(level, LogLevel::Error) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("plugin error: {message}");
        }
    }
    fn queue(&self, call: HostCall) {
        self.calls.lock().unwrap().push(call);
    }
}
