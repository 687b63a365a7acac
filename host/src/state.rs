//! What every task of the host shares.

use crate::config::Config;
use crate::edge::Edge;
use crate::metrics::Metrics;
use crate::plugins::PluginSet;
use crate::sessions::Sessions;
use crate::streams::Streams;
use std::sync::Arc;

/// The host's shared state.
pub struct HostState {
    /// The configuration it runs with.
    pub config: Config,
    /// The streams: configured, and published.
    pub streams: Streams,
    /// Live signalling sessions.
    pub sessions: Arc<Sessions>,
    /// Loaded plugins.
    pub plugins: PluginSet,
    /// Named metrics.
    pub metrics: Arc<Metrics>,
    /// The WebRTC edge: every viewer's connection.
    pub edge: Edge,
    /// The pulls from origins being started.
    pub pulls: crate::pull::Pulls,
    /// The publishers publishing now.
    pub publishers: crate::publish::Publishers,
    /// The live P2P page's snapshot, shared by every page watching.
    pub tree: crate::api::tree::TreeFeed,
    /// OME's statistics, sampled once a second.
    pub book: crate::api::book::StatsBook,
}
