//! The host's metrics: named event counts (the host's and its plugins'), plugin hook latency, and
//! the Prometheus text of `/metrics`, built at each scrape from these and the live state.
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
use std::sync::Mutex;
use std::time::Duration;

/// Distinct plugin metric series kept, over all plugins.
pub const MAX_PLUGIN_SERIES: usize = 256;

/// Labels of a hook-latency series.
type HookLabels = [(&'static str, &'static str); 2];

/// A set of named integer metrics, and the plugin hooks' latency.
pub struct Metrics {
    values: Mutex<BTreeMap<String, i64>>,
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
        Self { values: Mutex::default(), plugin: Mutex::default(), hook_seconds: Family::new_with_constructor(buckets) }
    }
}

impl Metrics {
    /// Adds `delta` to the host's `name` (created at 0).
    pub fn add(&self, name: &str, delta: i64) {
        let mut values = self.values.lock().expect("metrics lock");
        match values.get_mut(name) {
            Some(v) => *v += delta,
            None => {
                values.insert(name.to_string(), delta);
            }
        }
    }

    /// The host's value of `name` (0 if never counted).
    pub fn get(&self, name: &str) -> i64 {
        self.values.lock().expect("metrics lock").get(name).copied().unwrap_or(0)
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
            self.add("plugin_metrics_refused", 1);
        }
    }

    /// Records how long a plugin's hook took.
    pub fn hook_took(&self, plugin: &'static str, hook: &'static str, took: Duration) {
        self.hook_seconds.get_or_create(&[("plugin", plugin), ("hook", hook)]).observe(took.as_secs_f64());
    }

    /// A copy of every metric, the plugins' as `plugin.name` (for `/stats`).
    pub fn snapshot(&self) -> BTreeMap<String, i64> {
        let mut all = self.values.lock().expect("metrics lock").clone();
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
        assert_eq!(metrics.get("plugin_metrics_refused"), 4);
        assert_eq!(metrics.plugin_families()[0].series.len(), MAX_PLUGIN_SERIES);
    }
}
