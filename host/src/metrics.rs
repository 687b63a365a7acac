//! Named metrics (counters and gauges) the host and its plugins add to, reported at `/stats`.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A set of named integer metrics.
#[derive(Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<String, i64>>,
}

impl Metrics {
    /// Adds `delta` to `name` (created at 0).
    pub fn add(&self, name: &str, delta: i64) {
        let mut values = self.values.lock().expect("metrics lock");
        match values.get_mut(name) {
            Some(v) => *v += delta,
            None => {
                values.insert(name.to_string(), delta);
            }
        }
    }

    /// A copy of every metric.
    pub fn snapshot(&self) -> BTreeMap<String, i64> {
        self.values.lock().expect("metrics lock").clone()
    }
}
