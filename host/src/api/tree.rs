//! The live P2P page (`/p2p` on the signalling port): per stream, the edge, each viewer it feeds,
//! and under each viewer that relays, the viewers it feeds; the offload. The page gets the tree by
//! server push (`/p2p/events`, Server-Sent Events): a snapshot at once, then one after each change
//! (changes within [`COALESCE`] make one), and every [`REFRESH`] for the byte counts. Behind the
//! same access rule as the API.

use super::book::stream_totals;
use crate::sessions::TreeNode;
use crate::state::HostState;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PAGE: &str = include_str!("../../assets/p2p.html");

/// Changes closer together than this make one update.
pub const COALESCE: Duration = Duration::from_millis(200);
/// An update at least this often, for the byte counts.
pub const REFRESH: Duration = Duration::from_secs(2);
/// Viewers listed per stream (the counts above the tree cover everyone).
pub const MAX_NODES: usize = 1000;
/// Pages watching at once; more are refused with 503.
pub const MAX_WATCHERS: usize = 32;

/// Pages watching now.
static WATCHERS: AtomicUsize = AtomicUsize::new(0);

/// `/p2p`: the page.
pub async fn page(State(state): State<Arc<HostState>>, headers: HeaderMap, ConnectInfo(remote): ConnectInfo<SocketAddr>) -> Response {
    match super::page_access(&state, &headers, remote) {
        Ok(()) => Html(PAGE).into_response(),
        Err(refusal) => super::refused(&refusal),
    }
}

/// `/p2p/events`: the tree, pushed.
pub async fn events(State(state): State<Arc<HostState>>, headers: HeaderMap, ConnectInfo(remote): ConnectInfo<SocketAddr>) -> Response {
    if let Err(refusal) = super::page_access(&state, &headers, remote) {
        return super::refused(&refusal);
    }
    if WATCHERS.fetch_add(1, Ordering::Relaxed) >= MAX_WATCHERS {
        WATCHERS.fetch_sub(1, Ordering::Relaxed);
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "too many P2P pages open\n").into_response();
    }
    let watcher = Watcher;
    let mut changes = state.sessions.watch_changes();
    let stream = async_stream(move |tx| async move {
        let _watcher = watcher;
        loop {
            if tx.send(Ok(Event::default().data(snapshot(&state).to_string()))).await.is_err() {
                return;
            }
            // The next change (or the refresh), then whatever else changes right after it.
            let _ = tokio::time::timeout(REFRESH, changes.changed()).await;
            tokio::time::sleep(COALESCE).await;
            changes.borrow_and_update();
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// Frees its place among the watchers when the page goes.
struct Watcher;

impl Drop for Watcher {
    fn drop(&mut self) {
        WATCHERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream of the items a task sends (the task ends when the receiver is dropped).
fn async_stream<F, Fut>(run: F) -> impl futures_core::Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(run(tx));
    ReceiverStream(rx)
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// Every stream's tree: `{streams: [{name, totals..., viewers: [TreeNode], listed_all}]}`.
pub fn snapshot(state: &HostState) -> serde_json::Value {
    let streams: Vec<serde_json::Value> = stream_totals(state)
        .into_iter()
        .map(|(hub, totals)| {
            let nodes: Vec<TreeNode> = state.sessions.tree(&hub.name, MAX_NODES + 1);
            serde_json::json!({
                "name": hub.name,
                "sessions": totals.connections,
                "offload": totals.offload(),
                "peer_bytes": totals.peer_bytes,
                "edge_bytes": totals.bytes_out,
                "listed_all": nodes.len() <= MAX_NODES,
                "viewers": &nodes[..nodes.len().min(MAX_NODES)],
            })
        })
        .collect();
    serde_json::json!({ "streams": streams })
}
