//! The live P2P page (`/p2p` on the signalling port): per stream, the edge, each viewer it feeds,
//! and under each viewer that relays, the viewers it feeds; the offload. The page gets the tree by
//! server push (`/p2p/events`, Server-Sent Events): a snapshot at once, then one after each change
//! (changes within [`COALESCE`] make one), and every [`REFRESH`] for the byte counts. Behind the
//! same access rule as the API.
//!
//! One task ([`feed`]) builds the snapshot, only while a page watches, and every page is sent that
//! same text: the cost is one walk of the sessions per update, however many pages watch.

use super::book::stream_totals;
use crate::state::HostState;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const PAGE: &str = include_str!("../../assets/p2p.html");

/// Changes closer together than this make one update.
pub const COALESCE: Duration = Duration::from_millis(200);
/// An update at least this often, for the byte counts.
pub const REFRESH: Duration = Duration::from_secs(2);
/// Viewers listed per stream (the counts above the tree cover everyone).
pub const MAX_NODES: usize = 1000;
/// Pages watching at once; more are refused with 503.
pub const MAX_WATCHERS: usize = 32;

/// The latest snapshot, as every page is sent it.
pub struct TreeFeed(watch::Sender<Arc<str>>);

impl Default for TreeFeed {
    fn default() -> Self {
        Self(watch::channel(Arc::from("")).0)
    }
}

/// Keeps the feed's snapshot current while any page watches, until the host stops.
pub async fn feed(state: Arc<HostState>) {
    let mut changes = state.sessions.watch_changes();
    loop {
        // The next change (or the refresh), then whatever else changes right after it.
        let _ = tokio::time::timeout(REFRESH, changes.changed()).await;
        tokio::time::sleep(COALESCE).await;
        changes.borrow_and_update();
        if state.tree.0.receiver_count() > 0 {
            state.tree.0.send_replace(snapshot(&state).to_string().into());
        }
    }
}

/// `/p2p`: the page.
pub async fn page(State(state): State<Arc<HostState>>, headers: HeaderMap, ConnectInfo(remote): ConnectInfo<SocketAddr>) -> Response {
    match super::page_access(&state, &headers, remote) {
        Ok(()) => Html(PAGE).into_response(),
        Err(refusal) => super::refused(&refusal),
    }
}

/// `/p2p/events`: the tree, pushed: a snapshot made now, then the feed's.
pub async fn events(State(state): State<Arc<HostState>>, headers: HeaderMap, ConnectInfo(remote): ConnectInfo<SocketAddr>) -> Response {
    if let Err(refusal) = super::page_access(&state, &headers, remote) {
        return super::refused(&refusal);
    }
    if state.tree.0.receiver_count() >= MAX_WATCHERS {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "too many P2P pages open\n").into_response();
    }
    let updates = state.tree.0.subscribe();
    let first: Arc<str> = snapshot(&state).to_string().into();
    let events = futures_util::stream::unfold((updates, Some(first)), |(mut updates, first)| async move {
        let data = match first {
            Some(data) => data,
            None => {
                updates.changed().await.ok()?;
                updates.borrow_and_update().clone()
            }
        };
        Some((Ok::<_, Infallible>(Event::default().data(&*data)), (updates, None)))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// Every stream's tree: `{streams: [{name, totals..., viewers: [TreeNode], listed_all}]}`.
pub fn snapshot(state: &HostState) -> serde_json::Value {
    let mut trees = state.sessions.trees(MAX_NODES);
    let streams: Vec<serde_json::Value> = stream_totals(state)
        .into_iter()
        .map(|(hub, totals)| {
            let nodes = trees.remove(&hub.name).unwrap_or_default();
            serde_json::json!({
                "name": hub.name,
                "sessions": totals.connections,
                "offload": totals.offload(),
                "peer_bytes": totals.peer_bytes,
                "edge_bytes": totals.bytes_out,
                "listed_all": totals.connections as usize <= MAX_NODES,
                "viewers": nodes,
            })
        })
        .collect();
    serde_json::json!({ "streams": streams })
}
