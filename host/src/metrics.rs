//! The host's metrics: its own counts (typed: one field of [`HostCounts`] each, so a misspelt
//! count does not compile), its plugins' named counts, plugin hook latency; `/metrics` builds the
//! Prometheus text from these and the live state at each scrape (`api::prometheus`), `/stats`
//! shows the same counts under the same names.
//!
//! Cardinality stays low: labels are the application, the stream, and a reason, delivery or hook
//! from a fixed set; never a session. A plugin names its own metrics (`Host::count`), in
//! Prometheus's syntax (`name` or `name{key="value",...}`; `_total` at the end makes it a counter,
//! else it is a gauge); they appear as `{plugin}_{name}`, at most [`MAX_PLUGIN_SERIES`] series in
//! all (more, or a malformed name, are dropped and counted in `plugin_metrics_refused_total`).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Distinct plugin metric series kept, over all plugins.
pub const MAX_PLUGIN_SERIES: usize = 256;

/// Labels of a hook-latency series.
type HookLabels = [(&'static str, &'static str); 2];

/// A count of the host's that only grows.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    /// One more.
    pub fn inc(&self) {
        self.add(1);
    }

    /// `n` more.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One of [`HostCounts`], as `/stats` and `/metrics` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountValue {
    /// The field's name: the key in `/stats`, the family in `/metrics` (with `_total`).
    pub name: &'static str,
    /// Its documentation: the family's help.
    pub help: &'static str,
    pub value: u64,
    /// `/metrics` shows it as a family of its own name; else [`crate::api::prometheus`] shows it
    /// in a family of its own making (with labels, or under another name).
    pub own_family: bool,
}

/// Defines [`HostCounts`]: each field's doc is its help; `: labelled` marks one that `/metrics`
/// shows inside another family.
macro_rules! host_counts {
    ($($(#[doc = $doc:expr])+ $name:ident $(: $labelled:ident)?,)*) => {
        /// The host's own counts: one field per thing counted, so a misspelt one does not compile.
        /// `/stats` shows each under its field's name, `/metrics` as a counter family.
        #[derive(Debug, Default)]
        pub struct HostCounts {
            $($(#[doc = $doc])+ pub $name: Count,)*
        }

        impl HostCounts {
            /// Every count, in the order they are defined.
            pub fn all(&self) -> Vec<CountValue> {
                vec![$(CountValue {
                    name: stringify!($name),
                    help: concat!($($doc),+).trim_ascii(),
                    value: self.$name.get(),
                    own_family: stringify!($($labelled)?).is_empty(),
                },)*]
            }
        }
    };
}

host_counts! {
    /// Signalling sessions opened.
    sessions_opened: labelled,
    /// Signalling sessions closed.
    sessions_closed: labelled,
    /// Viewers refused: no such stream here or at an origin.
    sessions_refused,
    /// Sessions closed as slow readers (their queued messages over MaxOutgoingBytes).
    sessions_closed_slow_reader,
    /// Sessions closed because their socket took a write longer than WriteTimeoutMs.
    sessions_closed_write_timeout,
    /// Requests refused for a name that is not one path segment.
    names_refused,
    /// Edge offers made to viewers.
    edge_offers,
    /// Edge offers withdrawn: no answer in time.
    edge_offers_unanswered,
    /// Viewers' edge connections that came up.
    edge_connections_up,
    /// Edge connections that failed (ICE or DTLS).
    edge_ice_failures: labelled,
    /// Edge connections that did not come up in time.
    edge_ice_timeouts: labelled,
    /// Edge WebRTC connections the player closed (DTLS close_notify) while its session went on.
    edge_connections_closed_by_player,
    /// Video packets the edge sent again for viewers' NACKs.
    edge_packets_resent,
    /// Datagrams the edge sent.
    edge_datagrams_sent,
    /// Send calls the edge made (a call sends a batch).
    edge_send_calls,
    /// Datagrams the edge failed to send.
    edge_datagrams_send_failed,
    /// Datagrams dropped: a STUN username naming no connection.
    edge_datagrams_dropped_unknown_ufrag,
    /// Datagrams dropped: from an address no connection answered.
    edge_datagrams_dropped_unknown_address,
    /// Datagrams dropped: not STUN, DTLS or RTP/RTCP.
    edge_datagrams_dropped_not_webrtc,
    /// Viewers started from the stream's keyframe cache.
    edge_keyframe_cache_joins,
    /// Frames dropped for a viewer over ICE-TCP whose write queue was full.
    edge_tcp_frames_dropped,
    /// ICE-TCP streams that never carried a connection: over a cap, closed or no check in time,
    /// a first frame that is no check naming a connection.
    edge_tcp_streams_refused,
    /// RTP bytes the edge queued for viewers (by stream in `/metrics`'s `edge_egress_bytes`; what
    /// the kernel then dropped is in `edge_datagrams_send_failed` and `edge_tcp_frames_dropped`).
    edge_egress_bytes: labelled,
    /// Times the edge fell behind a stream (its viewers resumed at the next keyframe).
    edge_lagged,
    /// Plain STUN Binding requests the edge ports answered (answers queued to send).
    stun_binding_answered,
    /// Plain STUN Binding requests dropped: malformed, not understood, or over their source's rate.
    stun_binding_dropped,
    /// Keyframe requests sent to a stream's source.
    ingest_keyframe_requests,
    /// WebRTC publishers that started.
    publishers_started,
    /// Publishers refused: MaxPublishers, or their address's share, reached.
    publishers_refused_over_cap,
    /// Pulls refused: the pull cap, or the starting address's share, reached.
    pulls_refused_over_cap,
    /// TCP connections closed at once, over a connection cap.
    connections_refused_over_cap: labelled,
    /// Connections from a trusted proxy whose PROXY header was refused or late.
    proxy_headers_refused,
    /// TLS handshakes that failed or did not finish in time.
    tls_handshakes_failed,
    /// Live-tree watchers dropped for not reading within the write deadline.
    p2p_watchers_dropped_not_reading,
    /// Live-tree watchers dropped to make room for a new one.
    p2p_watchers_dropped_for_room,
    /// Plugin messages dropped: a session's bound of queued plugin messages reached.
    plugin_messages_dropped_over_bound,
    /// Plugin hooks that failed (a panic, contained).
    plugin_failures,
    /// Plugin counts dropped: a malformed name, or past the series bound.
    plugin_metrics_refused,
}

/// The host's counts, plugin panics by plugin, the plugins' own series, and the hooks' latency.
pub struct Metrics {
    /// The host's counts.
    pub counts: HostCounts,
    /// Panicked hooks by plugin.
    panics: Mutex<BTreeMap<&'static str, u64>>,
    /// Each plugin's series: name as the plugin gave it -> value.
    plugin: Mutex<BTreeMap<&'static str, BTreeMap<String, i64>>>,
    hook_seconds: Family<HookLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        fn buckets() -> Histogram {
            // 1 us .. 16 ms, x4: a hook is a few microseconds; a slow one shows.
            Histogram::new(exponential_buckets(1e-6, 4.0, 8))
        }
        Self { counts: HostCounts::default(), panics: Mutex::default(), plugin: Mutex::default(), hook_seconds: Family::new_with_constructor(buckets) }
    }
}

impl Metrics {
    /// A hook of `plugin` panicked.
    pub fn plugin_panicked(&self, plugin: &'static str) {
        self.counts.plugin_failures.inc();
        *self.panics.lock().expect("metrics lock").entry(plugin).or_default() += 1;
    }

    /// Hooks of `plugin` that panicked.
    pub fn plugin_panics(&self, plugin: &str) -> u64 {
        self.panics.lock().expect("metrics lock").get(plugin).copied().unwrap_or(0)
    }

    /// Adds `delta` to `plugin`'s metric `name` (see the module's documentation for the rules).
    /// A series seen before costs a lookup; only a new one is checked and stored.
    pub fn add_plugin_count(&self, plugin: &'static str, name: String, delta: i64) {
        let mut plugins = self.plugin.lock().expect("metrics lock");
        if let Some(v) = plugins.get_mut(plugin).and_then(|series| series.get_mut(&name)) {
            *v += delta;
            return;
        }
        let stored: usize = plugins.values().map(BTreeMap::len).sum();
        if stored < MAX_PLUGIN_SERIES && parse_series(&name).is_some() {
            plugins.entry(plugin).or_default().insert(name, delta);
        } else {
            drop(plugins);
            self.counts.plugin_metrics_refused.inc();
        }
    }

    /// Records how long a plugin's hook took.
    pub fn hook_took(&self, plugin: &'static str, hook: &'static str, took: Duration) {
        self.hook_seconds.get_or_create(&[("plugin", plugin), ("hook", hook)]).observe(took.as_secs_f64());
    }

    /// A copy of every metric, the plugins' as `plugin.name` (for `/stats`).
    pub fn snapshot(&self) -> BTreeMap<String, i64> {
        let mut all: BTreeMap<String, i64> = self.counts.all().into_iter().map(|c| (c.name.to_string(), c.value as i64)).collect();
        for (plugin, n) in self.panics.lock().expect("metrics lock").iter() {
            all.insert(format!("plugin_panics.{plugin}"), *n as i64);
        }
        for (plugin, series) in self.plugin.lock().expect("metrics lock").iter() {
            for (name, v) in series {
                all.insert(format!("{plugin}.{name}"), *v);
            }
        }
        all
    }

    /// The hook-latency family, to register in a scrape's registry.
    pub fn hook_latency(&self) -> Family<HookLabels, Histogram, fn() -> Histogram> {
        self.hook_seconds.clone()
    }

    /// The plugins' metrics as families.
    pub fn plugin_families(&self) -> Vec<Series> {
        let mut families: BTreeMap<String, Series> = BTreeMap::new();
        let plugins = self.plugin.lock().expect("metrics lock");
        for (plugin, name, v) in plugins.iter().flat_map(|(p, series)| series.iter().map(move |(n, v)| (p, n, v))) {
            let Some((base, labels)) = parse_series(name) else { continue };
            let (base, kind) = match base.strip_suffix("_total") {
                Some(counter) => (counter, MetricType::Counter),
                None => (base, MetricType::Gauge),
            };
            let family = format!("{plugin}_{base}").replace('-', "_");
            let help = format!("counted by plugin {plugin}");
            let series = families.entry(family.clone()).or_insert_with(|| Series::new(family, help, kind));
            series.push(labels.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), *v as f64);
        }
        families.into_values().collect()
    }
}

/// Splits `name{k="v",...}` into the name and its labels; `None` unless it is a valid metric name
/// (at most 64 bytes) with at most 4 labels, keys valid names, values of `[A-Za-z0-9_.-]`, at
/// most 64 bytes.
pub fn parse_series(text: &str) -> Option<(&str, Vec<(&str, &str)>)> {
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let (name, rest) = match text.split_once('{') {
        Some((name, rest)) => (name, Some(rest.strip_suffix('}')?)),
        None => (text, None),
    };
    if !valid_name(name) {
        return None;
    }
    let mut labels = Vec::new();
    for pair in rest.into_iter().flat_map(|r| r.split(',')) {
        let (key, value) = pair.split_once('=')?;
        let value = value.strip_prefix('"')?.strip_suffix('"')?;
        let value_ok = value.len() <= 64 && value.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid_name(key) || !value_ok || labels.len() == 4 {
            return None;
        }
        labels.push((key, value));
    }
    Some((name, labels))
}

/// One metric family, built at a scrape: a name, its help, its type and its series.
#[derive(Debug, Clone)]
pub struct Series {
    name: String,
    help: String,
    kind: MetricType,
    series: Vec<(Vec<(String, String)>, f64)>,
}

impl Series {
    /// An empty family (`kind`: counter or gauge; a counter's name is given without `_total`).
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: MetricType) -> Self {
        Self { name: name.into(), help: help.into(), kind, series: Vec::new() }
    }
    /// Adds a series.
    pub fn push(&mut self, labels: Vec<(String, String)>, value: f64) {
        self.series.push((labels, value));
    }
}

/// Families built at one scrape, encoded as they are.
#[derive(Debug)]
pub struct Snapshot(pub Vec<Series>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let mut metric = encoder.encode_descriptor(&family.name, &family.help, None, family.kind)?;
            for (labels, value) in &family.series {
                let series = metric.encode_family(labels)?;
                match family.kind {
                    MetricType::Counter => ConstCounter::new(*value).encode(series)?,
                    _ => ConstGauge::new(*value).encode(series)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_metric_names_follow_prometheus_syntax_and_are_bounded() {
        assert_eq!(parse_series("clients"), Some(("clients", vec![])));
        assert_eq!(parse_series(r#"fallbacks_total{reason="host_left"}"#), Some(("fallbacks_total", vec![("reason", "host_left")])));
        for bad in ["", "9lives", "a b", r#"x{reason=host_left}"#, r#"x{reason="a\"b"}"#, r#"x{a="1",b="2",c="3",d="4",e="5"}"#, "x{", "x{}}"] {
            assert_eq!(parse_series(bad), None, "{bad}");
        }
        let metrics = Metrics::default();
        for i in 0..MAX_PLUGIN_SERIES + 3 {
            metrics.add_plugin_count("p", format!(r#"n_total{{i="{i}"}}"#), 1);
        }
        metrics.add_plugin_count("p", "bad name".into(), 1);
        assert_eq!(metrics.counts.plugin_metrics_refused.get(), 4);
        assert_eq!(metrics.plugin_families()[0].series.len(), MAX_PLUGIN_SERIES);
    }
}
