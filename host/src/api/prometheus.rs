//! `/metrics`: the Prometheus text, built at each scrape from the live state, the streams'
//! counters and the host's metrics (see [`crate::metrics`] for the rules on names and labels).

use crate::media::counters::{close_reason_label, CLOSE_REASONS};
use crate::metrics::{Series, Snapshot};
use super::Api;
use prometheus_client::metrics::MetricType::{Counter, Gauge};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;

/// The exposition, in the Prometheus text format (version 0.0.4).
pub fn render(state: &Api) -> String {
    let mut registry = Registry::default();
    let mut families = per_stream(state);
    families.extend(host_wide(state));
    families.extend(state.metrics.plugin_families());
    registry.register_collector(Box::new(Snapshot(families)));
    registry.register("plugin_hook_duration_seconds", "How long plugin hooks took", state.metrics.hook_latency());
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).expect("writing to a String");
    text
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Families labelled by application and stream.
fn per_stream(state: &Api) -> Vec<Series> {
    let mut viewers = Series::new("viewers", "Viewers playing, by where the stream comes from (the edge, or a peer)", Gauge);
    let mut sessions = Series::new("sessions", "Signalling sessions open", Gauge);
    let mut edges = Series::new("pulling_edges", "Other hosts pulling the stream as edges (counted apart from viewers)", Gauge);
    let mut relaying = Series::new("relaying_viewers", "Viewers relaying the stream to at least one other (host peers)", Gauge);
    let mut slots = Series::new("free_relay_slots", "More viewers the relaying-capable viewers may take", Gauge);
    let mut egress = Series::new("edge_egress_bytes", "RTP bytes the edge queued for viewers (send failures are counted apart)", Counter);
    let mut peer = Series::new("peer_bytes_estimated", "Bytes viewers got from peers: the stream's RTP bytes while each P2P link was up", Counter);
    let mut offload = Series::new("offload_ratio", "Share of the bytes viewers got that peers carried (since start)", Gauge);
    let mut opened = Series::new("sessions_opened", "Signalling sessions opened", Counter);
    let mut closed = Series::new("sessions_closed", "Signalling sessions closed, by reason", Counter);
    let mut ingest = Series::new("ingest_bytes", "RTP bytes from the stream's source", Counter);
    let mut packets = Series::new("ingest_packets", "RTP packets from the stream's source", Counter);
    let mut lost = Series::new("ingest_packets_lost", "RTP packets the source sent that never arrived (sequence gaps)", Counter);
    for (hub, t) in super::book::stream_totals(&state.sessions, &state.streams) {
        let c = &hub.counters;
        let (app, stream) = hub.name.split_once('/').unwrap_or((&hub.name, ""));
        let at = |extra: &[(&str, &str)]| {
            let mut l = labels(&[("app", app), ("stream", stream)]);
            l.extend(labels(extra));
            l
        };
        viewers.push(at(&[("delivery", "edge")]), t.edge_viewers as f64);
        viewers.push(at(&[("delivery", "p2p")]), t.peer_viewers as f64);
        sessions.push(at(&[]), t.connections as f64);
        edges.push(at(&[]), t.pulling_edges as f64);
        relaying.push(at(&[]), t.relaying as f64);
        slots.push(at(&[]), t.free_relay_slots as f64);
        egress.push(at(&[]), t.bytes_out as f64);
        peer.push(at(&[]), t.peer_bytes as f64);
        offload.push(at(&[]), t.offload());
        opened.push(at(&[]), c.opened.load(Ordering::Relaxed) as f64);
        for (i, reason) in CLOSE_REASONS.iter().enumerate() {
            closed.push(at(&[("reason", close_reason_label(*reason))]), c.closed[i].load(Ordering::Relaxed) as f64);
        }
        ingest.push(at(&[]), t.bytes_in as f64);
        packets.push(at(&[]), c.ingest_packets.load(Ordering::Relaxed) as f64);
        lost.push(at(&[]), c.ingest_lost.load(Ordering::Relaxed) as f64);
    }
    vec![viewers, sessions, edges, relaying, slots, egress, peer, offload, opened, closed, ingest, packets, lost]
}

/// Families of the whole host: every one of the host's counts, some in families with labels.
fn host_wide(state: &Api) -> Vec<Series> {
    let m = &state.metrics;
    let c = &m.counts;
    let mut ice = Series::new("edge_ice_failures", "Edge WebRTC connections that failed (ICE or DTLS) or did not come up in time", Counter);
    ice.push(labels(&[("reason", "failed")]), c.edge_ice_failures.get() as f64);
    ice.push(labels(&[("reason", "timeout")]), c.edge_ice_timeouts.get() as f64);
    let mut panics = Series::new("plugin_panics", "Plugin hooks that panicked (the plugin is then disabled)", Counter);
    for name in state.plugins.names() {
        panics.push(labels(&[("plugin", name)]), m.plugin_panics(name) as f64);
    }
    let mut refused = Series::new("connections_refused", "TCP connections closed at once, over a connection cap", Counter);
    refused.push(vec![], c.connections_refused_over_cap.get() as f64);
    let mut families = vec![ice, panics, refused];
    for count in c.all().into_iter().filter(|count| count.own_family) {
        let mut family = Series::new(count.name, count.help, Counter);
        family.push(vec![], count.value as f64);
        families.push(family);
    }
    families
}
