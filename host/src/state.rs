//! What every task of the host shares.

use crate::config::Config;
use crate::edge::Edge;
use crate::media::StreamHub;
use crate::metrics::Metrics;
use crate::plugins::PluginSet;
use crate::sessions::Sessions;
use std::collections::HashMap;
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
    /// The WebRTC edge: every viewer's connection.
    pub edge: Edge,
    /// OME's statistics, sampled once a second.
    pub book: crate::api::book::StatsBook,
}
