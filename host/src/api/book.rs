//! The stats book: OME's statistics for the server, the virtual host, each application and each
//! stream, taken once a second (OME updates its throughputs at most once a second too).
//!
//! Throughputs follow OME's definitions (`monitoring/common_metrics.cpp`), so dashboards read
//! the same numbers: `lastThroughput*` is the bytes moved in the last interval (about a second),
//! `avgThroughput*` the same in bits per second, `maxThroughput*` the highest `avgThroughput*`.

use crate::media::counters::unix_ms;
use crate::media::StreamHub;
use std::sync::Arc;
use crate::config::Application;
use crate::sessions::Sessions;
use crate::streams::Streams;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// The virtual host every session belongs to.
pub const VHOST: &str = "default";

/// What one level (server, vhost, app or stream) carries now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Bytes from the sources.
    pub bytes_in: u64,
    /// Bytes the edge sent.
    pub bytes_out: u64,
    /// Sessions open.
    pub connections: u64,
    /// The last packet from a source, ms since the Unix epoch.
    pub last_recv_ms: u64,
    /// Viewers whose edge connection is up.
    pub edge_viewers: u64,
    /// Edges pulling the stream.
    pub pulling_edges: u64,
    /// Viewers playing from a peer.
    pub peer_viewers: u64,
    /// Viewers relaying to others.
    pub relaying: u64,
    /// Free relay slots.
    pub free_relay_slots: u64,
    /// Bytes viewers got from peers (estimated).
    pub peer_bytes: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.connections += o.connections;
        self.last_recv_ms = self.last_recv_ms.max(o.last_recv_ms);
        self.edge_viewers += o.edge_viewers;
        self.pulling_edges += o.pulling_edges;
        self.peer_viewers += o.peer_viewers;
        self.relaying += o.relaying;
        self.free_relay_slots += o.free_relay_slots;
        self.peer_bytes += o.peer_bytes;
    }

    /// Share of the bytes viewers got that peers carried.
    pub fn offload(&self) -> f64 {
        let all = self.peer_bytes + self.bytes_out;
        if all == 0 { 0.0 } else { self.peer_bytes as f64 / all as f64 }
    }
}

/// One level's record.
#[derive(Debug, Clone, Default)]
pub struct Level {
    /// When the level appeared.
    pub created_ms: u64,
    /// The latest sample.
    pub updated_ms: u64,
    /// Its totals at the latest sample.
    pub now: Totals,
    /// Bytes in and out during the last interval.
    pub last_in: u64,
    /// See `last_in`.
    pub last_out: u64,
    /// The highest rates seen, bits per second.
    pub max_in_bps: u64,
    /// See `max_in_bps`.
    pub max_out_bps: u64,
    /// The most connections at once, and when.
    pub max_connections: u64,
    /// See `max_connections`.
    pub max_connections_ms: u64,
    /// When the edge last sent anything.
    pub last_sent_ms: u64,
}

impl Level {
    fn sample(&mut self, now_ms: u64, totals: Totals) {
        if self.created_ms == 0 {
            self.created_ms = now_ms;
            self.max_connections_ms = now_ms;
            self.last_sent_ms = now_ms;
        }
        let seconds = (now_ms.saturating_sub(self.updated_ms) as f64 / 1000.0).max(1.0);
        self.last_in = totals.bytes_in.saturating_sub(self.now.bytes_in);
        self.last_out = totals.bytes_out.saturating_sub(self.now.bytes_out);
        if self.updated_ms == 0 {
            (self.last_in, self.last_out) = (0, 0);
        }
        self.max_in_bps = self.max_in_bps.max((self.last_in as f64 * 8.0 / seconds) as u64);
        self.max_out_bps = self.max_out_bps.max((self.last_out as f64 * 8.0 / seconds) as u64);
        if totals.connections > self.max_connections {
            (self.max_connections, self.max_connections_ms) = (totals.connections, now_ms);
        }
        if self.last_out > 0 {
            self.last_sent_ms = now_ms;
        }
        self.updated_ms = now_ms;
        self.now = totals;
    }
}

/// Every level's record, by key: `""` (server), `default`, `default/app`, `default/app/stream`.
#[derive(Debug, Default)]
pub struct StatsBook {
    levels: Mutex<BTreeMap<String, Level>>,
}

impl StatsBook {
    /// Takes a sample of every level: each stream's totals (its counters and its live
    /// `sessions`), summed up to each configured application, the vhost and the server.
    pub fn sample(&self, applications: &[Application], sessions: &Sessions, streams: &Streams) {
        let now_ms = unix_ms();
        let mut sums: BTreeMap<String, Totals> = BTreeMap::new();
        for (hub, stream) in stream_totals(sessions, streams) {
            let name = &hub.name;
            let app = name.split('/').next().unwrap_or_default();
            for key in [String::new(), VHOST.to_string(), format!("{VHOST}/{app}"), format!("{VHOST}/{name}")] {
                sums.entry(key).or_default().add(&stream);
            }
        }
        for app in applications {
            sums.entry(format!("{VHOST}/{}", app.name)).or_default();
        }
        let mut levels = self.levels.lock().expect("book lock");
        for (key, totals) in sums {
            levels.entry(key).or_default().sample(now_ms, totals);
        }
    }

    /// The record of `key`, if it has one.
    pub fn level(&self, key: &str) -> Option<Level> {
        self.levels.lock().expect("book lock").get(key).cloned()
    }
}

/// Each stream's hub and totals now: its counters plus its live sessions.
pub fn stream_totals(sessions: &Sessions, streams: &Streams) -> Vec<(Arc<StreamHub>, Totals)> {
    let live = sessions.per_stream();
    let totals = streams.all().into_iter().map(|hub| {
        let c = &hub.counters;
        let l = live.get(&hub.name).cloned().unwrap_or_default();
        let totals = Totals {
            bytes_in: c.ingest_bytes.load(Ordering::Relaxed),
            bytes_out: c.egress_bytes_ended.load(Ordering::Relaxed) + l.egress_bytes,
            connections: l.sessions,
            last_recv_ms: c.last_received_ms.load(Ordering::Relaxed),
            edge_viewers: l.edge_viewers,
            pulling_edges: l.pulling_edges,
            peer_viewers: l.peer_viewers,
            relaying: l.relaying,
            free_relay_slots: l.free_relay_slots,
            peer_bytes: c.peer_bytes_ended.load(Ordering::Relaxed) + l.peer_bytes,
        };
        (hub, totals)
    });
    totals.collect()
}

/// A level's stats object with OME's field names (and a `p2p` object OME does not have).
pub fn ome_stats(level: &Level) -> serde_json::Value {
    use super::time::iso8601;
    let t = &level.now;
    serde_json::json!({
        "createdTime": iso8601(level.created_ms),
        "lastUpdatedTime": iso8601(level.updated_ms),
        "lastRecvTime": iso8601(if t.last_recv_ms == 0 { level.created_ms } else { t.last_recv_ms }),
        "lastSentTime": iso8601(level.last_sent_ms),
        "maxTotalConnectionTime": iso8601(level.max_connections_ms),
        "totalBytesIn": t.bytes_in,
        "totalBytesOut": t.bytes_out,
        "totalConnections": t.connections,
        "maxTotalConnections": level.max_connections,
        "lastThroughputIn": level.last_in,
        "lastThroughputOut": level.last_out,
        "avgThroughputIn": level.last_in * 8,
        "avgThroughputOut": level.last_out * 8,
        "maxThroughputIn": level.max_in_bps,
        "maxThroughputOut": level.max_out_bps,
        "connections": {
            // OME's edges pull over OVT and are counted there; this host's pull over WebRTC,
            // and are counted there too, apart from the players.
            "webrtc": t.connections - t.pulling_edges, "llhls": 0, "ovt": t.pulling_edges, "file": 0, "push": 0, "thumbnail": 0, "hlsv3": 0, "srt": 0,
        },
        "p2p": {
            "edgeViewers": t.edge_viewers,
            "peerViewers": t.peer_viewers,
            "hostPeers": t.relaying,
            "freeRelaySlots": t.free_relay_slots,
            "peerBytesEstimated": t.peer_bytes,
            "offloadRatio": t.offload(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughputs_follow_omes_definitions() {
        let mut level = Level::default();
        level.sample(10_000, Totals { bytes_out: 500, connections: 2, ..Totals::default() });
        assert_eq!((level.last_out, level.max_out_bps, level.max_connections), (0, 0, 2), "the first sample has no interval");
        level.sample(11_000, Totals { bytes_out: 125_500, connections: 1, ..Totals::default() });
        assert_eq!((level.last_out, level.max_out_bps), (125_000, 1_000_000));
        level.sample(12_000, Totals { bytes_out: 135_500, connections: 1, ..Totals::default() });
        assert_eq!((level.last_out, level.max_out_bps, level.max_connections, level.max_connections_ms), (10_000, 1_000_000, 2, 10_000));
        let json = ome_stats(&level);
        assert_eq!(json["avgThroughputOut"], 80_000);
        assert_eq!(json["lastSentTime"], super::super::time::iso8601(12_000));
    }
}
