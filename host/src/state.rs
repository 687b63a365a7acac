//! What every task of the host shares.

use crate::config::Config;
use crate::egress::EgressSettings;
use crate::media::StreamHub;
use crate::metrics::Metrics;
use crate::plugins::PluginSet;
use crate::sessions::Sessions;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The host's shared state.
pub struct HostState {
    /// The configuration it runs with.
    pub config: Config,
    /// Stream hubs by `app/stream`.
    pub streams: HashMap<String, Arc<StreamHub>>,
    /// Live signalling sessions.
    pub sessions: Sessions,
    /// Loaded plugins.
    pub plugins: PluginSet,
    /// Named metrics.
    pub metrics: Arc<Metrics>,
    /// Where edge connections bind.
    pub egress: EgressSettings,
    /// RTP bytes sent by the edge to all viewers since start.
    pub egress_total: Arc<AtomicU64>,
    /// Packets viewers skipped because they fell behind their stream.
    pub lagged_packets: Arc<AtomicU64>,
}
