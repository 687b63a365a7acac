//! The live P2P page (`/p2p` on the signalling port): per stream, the edge, each viewer it feeds,
//! and under each viewer that relays, the viewers it feeds; the offload. The page gets the tree by
//! server push (`/p2p/events`, Server-Sent Events): a snapshot at once, then one after each change
//! (changes within [`COALESCE`] make one), and every [`REFRESH`] for the byte counts. Behind the
//! same access rule as the API.
//!
//! One task ([`feed`]) builds the snapshot, only while a page watches, and every page is sent that
//! same text: the cost is one walk of the sessions per update, however many pages watch.
//!
//! Watching pages ([`Watchers`]) are bounded so that nobody locks an operator out: at most
//! [`MAX_WATCHERS`] in all and [`MAX_WATCHERS_PER_ADDRESS`] per client address, a new page is always
//! let in (in place of its own address's oldest page, or, the cap being full, of the oldest page
//! of the address holding the most), and a page that takes no update for [`WRITE_DEADLINE`] is
//! not reading: it is dropped and its connection closed.

use super::book::stream_totals;
use crate::metrics::Metrics;
use crate::server::Closer;
use crate::sessions::Sessions;
use crate::streams::Streams;
use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use axum::Router;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const PAGE: &str = include_str!("../../assets/p2p.html");

/// Changes closer together than this make one update.
pub const COALESCE: Duration = Duration::from_millis(200);
/// An update at least this often, for the byte counts.
pub const REFRESH: Duration = Duration::from_secs(2);
/// Viewers listed per stream (the counts above the tree cover everyone).
pub const MAX_NODES: usize = 1000;
/// Pages watching at once; past it a new page takes an older one's place.
pub const MAX_WATCHERS: usize = 32;
/// Pages one client address watches at once; past it its new page takes its oldest's place. An
/// operator's tabs fit, and four addresses are needed to fill [`MAX_WATCHERS`].
pub const MAX_WATCHERS_PER_ADDRESS: usize = 8;
/// A page that has taken no update for this long is not reading (the feed offers one at least
/// every [`REFRESH`] + [`COALESCE`]; hyper takes one only while the socket and its own short write
/// queue have room): it is dropped and its connection closed. Its browser's EventSource reconnects
/// if it is still there.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// The latest snapshot, as every page is sent it, the pages watching it, and what it is made
/// of (the streams and their sessions).
pub struct TreeFeed {
    snapshot: watch::Sender<Arc<str>>,
    watchers: Mutex<Watchers>,
    sessions: Arc<Sessions>,
    streams: Arc<Streams>,
    metrics: Arc<Metrics>,
    /// The API's `<AccessToken>`: the page is behind the same rule.
    access_token: Option<String>,
}

impl TreeFeed {
    /// No page watching yet.
    pub fn new(sessions: Arc<Sessions>, streams: Arc<Streams>, metrics: Arc<Metrics>, access_token: Option<String>) -> Self {
        let snapshot = watch::channel(Arc::from("")).0;
        Self { snapshot, watchers: Mutex::default(), sessions, streams, metrics, access_token }
    }

    /// `/p2p` and `/p2p/events`, for the signalling port's router.
    pub fn routes<S: Clone + Send + Sync + 'static>(self: Arc<Self>) -> Router<S> {
        Router::new().route("/p2p", get(page)).route("/p2p/events", get(events)).with_state(self)
    }

    /// Whether `headers` and `remote` may see the page (the same rule as the API).
    fn access(&self, headers: &HeaderMap, remote: SocketAddr) -> Result<(), super::access::Refusal> {
        super::access::check(self.access_token.as_deref(), headers, remote.ip())
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, Watchers> {
        self.watchers.lock().expect("watchers lock")
    }

    /// Drops (and closes) the pages past their write deadline.
    fn drop_stale(&self) {
        let stale = self.watchers().stale(Instant::now());
        self.metrics.counts.p2p_watchers_dropped_not_reading.add(stale.len() as u64);
        stale.iter().for_each(|w| w.closer.close());
    }
}

/// One watching page.
#[derive(Debug)]
struct Watcher {
    id: u64,
    address: IpAddr,
    /// When it last took an update (or opened).
    took: Instant,
    /// Closes its connection.
    closer: Closer,
}

/// The watching pages, oldest first.
#[derive(Debug, Default)]
struct Watchers {
    list: Vec<Watcher>,
    next_id: u64,
}

impl Watchers {
    /// Lets a page from `address` in: its id, and the page whose place it takes, if any (its
    /// address's oldest when the address has its share, else, the cap being full, the oldest of
    /// the address holding the most).
    fn admit(&mut self, address: IpAddr, closer: Closer, now: Instant) -> (u64, Option<Watcher>) {
        let displaced = self.place_for(address).map(|at| self.list.remove(at));
        self.next_id += 1;
        self.list.push(Watcher { id: self.next_id, address, took: now, closer });
        (self.next_id, displaced)
    }

    /// The index of the page a new one from `address` replaces, if there is no room for it.
    fn place_for(&self, address: IpAddr) -> Option<usize> {
        let held = |a: IpAddr| self.list.iter().filter(|w| w.address == a).count();
        if held(address) >= MAX_WATCHERS_PER_ADDRESS {
            return self.list.iter().position(|w| w.address == address);
        }
        if self.list.len() < MAX_WATCHERS {
            return None;
        }
        let most = self.list.iter().map(|w| held(w.address)).max()?;
        self.list.iter().position(|w| held(w.address) == most)
    }

    /// Page `id` took an update at `now`; false if it has been dropped.
    fn took(&mut self, id: u64, now: Instant) -> bool {
        self.list.iter_mut().find(|w| w.id == id).map(|w| w.took = now).is_some()
    }

    fn remove(&mut self, id: u64) {
        self.list.retain(|w| w.id != id);
    }

    /// Removes and returns the pages that have taken no update for [`WRITE_DEADLINE`].
    fn stale(&mut self, now: Instant) -> Vec<Watcher> {
        let (stale, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.list).into_iter().partition(|w| now.duration_since(w.took) > WRITE_DEADLINE);
        self.list = live;
        stale
    }
}

/// A page's place among the watchers, for as long as its stream lives.
struct Ticket {
    tree: Arc<TreeFeed>,
    id: u64,
}

impl Ticket {
    /// Records an update taken; false once the page has been dropped (its stream then ends).
    fn took(&self) -> bool {
        self.tree.watchers().took(self.id, Instant::now())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.tree.watchers().remove(self.id);
    }
}

/// Keeps the feed's snapshot current while any page watches, until the host stops.
pub async fn feed(tree: Arc<TreeFeed>) {
    let mut changes = tree.sessions.watch_changes();
    loop {
        // The next change (or the refresh), then whatever else changes right after it.
        let _ = tokio::time::timeout(REFRESH, changes.changed()).await;
        tokio::time::sleep(COALESCE).await;
        changes.borrow_and_update();
        if tree.snapshot.receiver_count() > 0 {
            tree.snapshot.send_replace(snapshot(&tree).to_string().into());
        }
        tree.drop_stale();
    }
}

/// `/p2p`: the page.
async fn page(State(tree): State<Arc<TreeFeed>>, headers: HeaderMap, ConnectInfo(remote): ConnectInfo<SocketAddr>) -> Response {
    match tree.access(&headers, remote) {
        Ok(()) => Html(PAGE).into_response(),
        Err(refusal) => super::refused(&refusal),
    }
}

/// `/p2p/events`: the tree, pushed: a snapshot made now, then the feed's. The page is let in at
/// once, in place of another if there is no room (see [`Watchers::admit`]).
async fn events(
    State(tree): State<Arc<TreeFeed>>,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    closer: Option<Extension<Closer>>,
) -> Response {
    if let Err(refusal) = tree.access(&headers, remote) {
        return super::refused(&refusal);
    }
    tree.drop_stale();
    let closer = closer.map(|Extension(c)| c).unwrap_or_default();
    let (id, displaced) = tree.watchers().admit(remote.ip(), closer, Instant::now());
    if let Some(displaced) = displaced {
        tree.metrics.counts.p2p_watchers_dropped_for_room.inc();
        displaced.closer.close();
    }
    let updates = tree.snapshot.subscribe();
    let first: Arc<str> = snapshot(&tree).to_string().into();
    let ticket = Ticket { tree, id };
    let events = futures_util::stream::unfold((updates, Some(first), ticket), |(mut updates, first, ticket)| async move {
        let data = match first {
            Some(data) => data,
            None => {
                updates.changed().await.ok()?;
                updates.borrow_and_update().clone()
            }
        };
        ticket.took().then_some((Ok::<_, Infallible>(Event::default().data(&*data)), (updates, None, ticket)))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// Every stream's tree: `{streams: [{name, totals..., viewers: [TreeNode], listed_all}]}`.
fn snapshot(tree: &TreeFeed) -> serde_json::Value {
    let mut trees = tree.sessions.trees(MAX_NODES);
    let streams: Vec<serde_json::Value> = stream_totals(&tree.sessions, &tree.streams)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn address(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_new_page_takes_its_own_addresss_oldest_place_past_its_share() {
        let (mut watchers, now) = (Watchers::default(), Instant::now());
        let first = watchers.admit(address(1), Closer::default(), now).0;
        for _ in 1..MAX_WATCHERS_PER_ADDRESS {
            assert!(watchers.admit(address(1), Closer::default(), now).1.is_none());
        }
        let (_, displaced) = watchers.admit(address(1), Closer::default(), now);
        assert_eq!(displaced.map(|w| w.id), Some(first));
        assert!(watchers.admit(address(2), Closer::default(), now).1.is_none(), "another address has room");
        assert!(!watchers.took(first, now), "a displaced page's stream ends");
    }

    #[test]
    fn a_full_cap_makes_room_from_the_address_holding_the_most() {
        let (mut watchers, now) = (Watchers::default(), Instant::now());
        for i in 0..MAX_WATCHERS {
            // Three addresses with 8 pages, four with 2.
            let a = if i < 24 { i / 8 } else { 3 + (i - 24) / 2 };
            assert!(watchers.admit(address(a as u8), Closer::default(), now).1.is_none());
        }
        let (_, displaced) = watchers.admit(address(100), Closer::default(), now);
        assert_eq!(displaced.map(|w| (w.id, w.address)), Some((1, address(0))), "the oldest of the largest holders");
        assert_eq!(watchers.list.len(), MAX_WATCHERS);
    }

    #[test]
    fn a_page_that_takes_no_update_within_the_write_deadline_is_stale() {
        let (mut watchers, now) = (Watchers::default(), Instant::now());
        let (reading, _) = watchers.admit(address(1), Closer::default(), now);
        let (idle, _) = watchers.admit(address(2), Closer::default(), now);
        assert!(watchers.took(reading, now + WRITE_DEADLINE));
        let stale = watchers.stale(now + WRITE_DEADLINE + Duration::from_millis(1));
        assert_eq!(stale.iter().map(|w| w.id).collect::<Vec<_>>(), [idle]);
        watchers.remove(reading);
        assert!(watchers.list.is_empty());
    }
}
