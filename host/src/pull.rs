//! Edges: a stream this host does not have but an origin does (`<Origins>`) is pulled from the
//! origin over WebRTC, as a player of its OME signalling (`?p2p=0`, so the origin never makes an
//! edge a P2P peer; `edge=NAME`, so it counts edges apart), on the first viewer's request. The
//! pull feeds the stream's hub like any source; while it is being made again (the origin
//! restarted, or sent nothing for `NoInputFailoverTimeout`) the hub stays and so do its viewers,
//! who resume at the next keyframe. A stream nobody has watched for `UnusedStreamDeletionTimeout`
//! is released. The origin can be this host or OvenMediaEngine.

use crate::config::Origins;
use crate::edge::{Edge, EdgeEvent};
use crate::media::gop::GopLimits;
use crate::media::{Feed, SourceKind, StreamHub};
use crate::metrics::Metrics;
use crate::shares::{Caps, Refused, Shares};
use crate::streams::Streams;
use futures_util::{SinkExt, StreamExt};
use ome_signalling::messages::{Answer, CandidateInit, Offer, PlayerMessage, ServerMessage, SessionDescription};
use ome_signalling::StreamName;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// How long a viewer waits for a pull to start before it is told the stream is not there.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long the origin may take to connect and to offer.
const ORIGIN_DEADLINE: Duration = Duration::from_secs(5);
/// Between two rounds over the origins' addresses: doubling from the first, up to the last; back
/// to the first once a pull has delivered media.
const RETRY: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(4));
/// Pulls at once (starting or running): requests for names the origin may not have cannot make
/// an edge open connections to it without bound.
pub const MAX_PULLS: usize = 256;
/// Pulls one client address may have started and still running: a share of [`MAX_PULLS`], so
/// that one client cannot take them all.
pub const MAX_PULLS_PER_ADDRESS: usize = MAX_PULLS / 16;
/// How long `hub` has gone without a viewer's answer: since the pull began, or since the hub was
/// made if later (a new codec after an origin restart is a new hub, whose viewers start over).
fn unanswered_for(hub: &StreamHub, begun: Instant) -> Duration {
    let hub_age = Duration::from_millis(crate::media::counters::unix_ms().saturating_sub(hub.counters.created_ms));
    begun.elapsed().min(hub_age)
}

/// A pull whose stream no viewer has answered an edge offer for this long after it started is
/// released, whatever `UnusedStreamDeletionTimeout` says: sockets that ask for a stream and never
/// play it cannot keep media flowing from the origin.
const UNANSWERED_RELEASE: Duration = Duration::from_secs(12);

/// The pulls running, one per stream of an origin (keyed by its first URL), from the first
/// viewer's request until the pull ends: a viewer arriving meanwhile waits for the same one; and
/// what a pull needs (the origins, the edge it pulls through, the streams its hub joins).
pub struct Pulls {
    running: Mutex<Running>,
    origins: Origins,
    /// This server's `<Name>`: an origin URL naming it is not pulled from.
    server_name: String,
    streams: Arc<Streams>,
    edge: Arc<Edge>,
    metrics: Arc<Metrics>,
    /// The keyframe cache of a pulled stream's hub.
    gop: GopLimits,
}

#[derive(Default)]
struct Running {
    by_origin: HashMap<String, Pull>,
    /// Who started the pulls running: [`MAX_PULLS`] in all, [`MAX_PULLS_PER_ADDRESS`] each.
    shares: Shares,
}

struct Pull {
    /// The local name its hub has.
    name: String,
    started: watch::Receiver<bool>,
}

/// The caps on pulls.
const CAPS: Caps = Caps { total: MAX_PULLS, per_address: MAX_PULLS_PER_ADDRESS };

impl Running {
    /// Counts a new pull of `origin` started by `address`, if the caps allow it.
    fn start(&mut self, origin: &str, pull: Pull, address: IpAddr) -> Result<(), Refused> {
        self.shares.take(address, CAPS)?;
        self.by_origin.insert(origin.to_string(), pull);
        Ok(())
    }

    /// The pull of `origin` started by `address` ended.
    fn end(&mut self, origin: &str, address: IpAddr) {
        self.by_origin.remove(origin);
        self.shares.give_back(address);
    }
}

impl Pulls {
    /// No pull yet: streams of `origins` are pulled through `edge` into hubs of `streams`.
    pub fn new(origins: Origins, server_name: String, streams: Arc<Streams>, edge: Arc<Edge>, metrics: Arc<Metrics>, gop: GopLimits) -> Self {
        Self { running: Mutex::default(), origins, server_name, streams, edge, metrics, gop }
    }

    /// The hub of `name`: the host's own, or one pulled from its origin (started now if need be,
    /// counted against `client`'s share); `None` if neither has it.
    pub async fn hub(self: &Arc<Self>, name: &StreamName, client: IpAddr) -> Option<Arc<StreamHub>> {
        if let Some(hub) = self.streams.get(&name.to_string()) {
            return Some(hub);
        }
        let (mut started, pulled_as) = self.join_or_start(name, client)?;
        let _ = tokio::time::timeout(START_DEADLINE, started.wait_for(|s| *s)).await;
        self.streams.get(&pulled_as)
    }

    /// The pull of `name` from its origin: the one running, or one started now for `client`
    /// (`None` if no origin has it or the caps refuse); when it has started, and its hub's name.
    fn join_or_start(self: &Arc<Self>, name: &StreamName, client: IpAddr) -> Option<(watch::Receiver<bool>, String)> {
        let urls = self.origins.urls_for(name, &self.server_name);
        let origin = urls.first()?.clone();
        let mut running = self.running.lock().expect("pulls lock");
        if let Some(pull) = running.by_origin.get(&origin) {
            return Some((pull.started.clone(), pull.name.clone()));
        }
        let key = name.to_string();
        let (tx, rx) = watch::channel(false);
        if let Err(refused) = running.start(&origin, Pull { name: key.clone(), started: rx.clone() }, client) {
            tracing::warn!(stream = %key, %client, ?refused, "not pulled: {} pulls, {MAX_PULLS_PER_ADDRESS} per address at most", running.by_origin.len());
            self.metrics.counts.pulls_refused_over_cap.inc();
            return None;
        }
        let pull = PullTask { pulls: self.clone(), name: key.clone(), origin, client, urls };
        tokio::spawn(pull.run(tx));
        Some((rx, key))
    }
}

/// What the origin sends, as a pull reads it: its ICE servers are not read (an edge answers from
/// its own addresses; OME's may carry fields a browser's `RTCIceServer` has not).
type FromOrigin = ServerMessage<SessionDescription, Vec<CandidateInit>, IgnoredAny>;

/// The signalling connection to an origin.
type OriginSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How one pull ended.
enum Ended {
    /// Nobody watched for `UnusedStreamDeletionTimeout`, or nobody answered for
    /// [`UNANSWERED_RELEASE`]: the stream is released.
    Unused,
    /// The origin went, failed or fell silent: pull again (at once if media had come).
    Lost {
        why: String,
        delivered: bool,
    },
}

impl Ended {
    fn lost(why: impl Into<String>) -> Self {
        Self::Lost { why: why.into(), delivered: false }
    }
}

/// One stream pulled, from its first request until it is released.
struct PullTask {
    pulls: Arc<Pulls>,
    /// The local name.
    name: String,
    /// The key in [`Running`]: its first URL.
    origin: String,
    /// Who started it.
    client: IpAddr,
    urls: Vec<String>,
}

impl PullTask {
    /// Pulls from the URLs (in turn) until nobody watches, or until no origin gives the stream.
    async fn run(self, started: watch::Sender<bool>) {
        let mut pulling = Pulling { task: &self, hub: None, started: &started, begun: Instant::now() };
        pull_rounds(&self.urls, &mut pulling).await;
        let (pulls, name, hub) = (&self.pulls, &self.name, pulling.hub);
        pulls.running.lock().expect("pulls lock").end(&self.origin, self.client);
        pulls.streams.set_pulled(name, None);
        if let Some(feed) = hub {
            feed.stopped();
            tracing::info!(stream = %name, "pulled stream released");
        }
        started.send_replace(true);
    }
}

/// What [`pull_rounds`] pulls with: one pull from a URL, and whether to go on after a round in
/// which every URL's pull ended.
trait Origin {
    /// One pull from `url`, until it ends.
    async fn pull(&mut self, url: &str) -> Ended;
    /// Whether anyone still waits for the stream to come back.
    fn wanted(&self) -> bool;
}

/// The delay before the next round over the origins' addresses: [`RETRY`]'s first step, doubling
/// up to its last while the origin stays away, back to the first once a pull has delivered media
/// (an origin that served and went, e.g. restarted, is most likely back soon; without the reset,
/// after a few outages every reconnect waited the longest step).
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: RETRY.0 }
    }
}

impl Backoff {
    /// A pull delivered media.
    fn delivered(&mut self) {
        self.next = RETRY.0;
    }

    /// The delay to wait now; the next one doubles.
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(RETRY.1);
        delay
    }
}

/// Pulls from `urls` in turn, round after round ([`Backoff`] apart), until a pull ends unused
/// or nobody waits for the stream any more.
async fn pull_rounds(urls: &[String], origin: &mut impl Origin) {
    let mut backoff = Backoff::default();
    loop {
        for url in urls {
            match origin.pull(url).await {
                Ended::Unused => return,
                Ended::Lost { delivered, .. } => {
                    if delivered {
                        backoff.delivered();
                    }
                }
            }
        }
        if !origin.wanted() {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// A [`PullTask`]'s pulls: the stream they feed (kept across pulls, so viewers stay).
struct Pulling<'a> {
    task: &'a PullTask,
    hub: Option<Feed>,
    started: &'a watch::Sender<bool>,
    begun: Instant,
}

impl Origin for Pulling<'_> {
    async fn pull(&mut self, url: &str) -> Ended {
        let ended = pull_once(&self.task.pulls, &self.task.name, url, &mut self.hub, self.started, self.begun).await;
        if let Ended::Lost { why, .. } = &ended {
            tracing::warn!(stream = %self.task.name, %url, "pull from the origin ended: {why}");
        }
        ended
    }

    fn wanted(&self) -> bool {
        match &self.hub {
            None => {
                tracing::warn!(stream = %self.task.name, "no origin gives the stream");
                false
            }
            Some(feed) => feed.hub().counters.open.load(Ordering::Relaxed) > 0,
        }
    }
}

/// One pull from `url`: connect, be offered, answer, feed the hub until it ends.
async fn pull_once(pulls: &Pulls, name: &str, url: &str, hub: &mut Option<Feed>, started: &watch::Sender<bool>, begun: Instant) -> Ended {
    let connected = tokio::time::timeout(ORIGIN_DEADLINE, tokio_tungstenite::connect_async(url)).await;
    let mut socket = match connected {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(e)) => return Ended::lost(format!("cannot connect: {e}")),
        Err(_) => return Ended::lost("cannot connect in time"),
    };
    if socket.send(Message::Text(PlayerMessage::RequestOffer.to_json().into())).await.is_err() {
        return Ended::lost("the origin closed");
    }
    let offer = match tokio::time::timeout(ORIGIN_DEADLINE, next_json(&mut socket)).await {
        Ok(Some(m)) => match FromOrigin::deserialize(&m) {
            Ok(ServerMessage::Offer(offer)) => offer,
            _ => return Ended::lost(format!("the origin answered {m}")),
        },
        Ok(None) => return Ended::lost("the origin closed"),
        Err(_) => return Ended::lost("no offer in time"),
    };
    let Offer { id, sdp, candidates, .. } = offer;
    let candidates = candidates.into_iter().flatten().map(|c| c.candidate).collect();
    let (edge, mut events, answer, tracks) = match pulls.edge.pull(sdp.sdp, candidates).await {
        Ok(pulled) => pulled,
        Err(e) => return Ended::lost(format!("cannot answer the origin's offer: {e}")),
    };
    let message = PlayerMessage::Answer(Answer { id, peer_id: 0, sdp: SessionDescription::answer(answer), link_reports: false });
    if socket.send(Message::Text(message.to_json().into())).await.is_err() {
        return Ended::lost("the origin closed");
    }
    let current = match hub.take() {
        Some(f) if f.hub().video_codec == tracks.video && f.hub().has_audio == tracks.audio => f,
        old => {
            if let Some(old) = old {
                old.stopped(); // another codec: its viewers start over
            }
            let fresh = Feed::new(name.to_string(), SourceKind::Origin, tracks.video, tracks.audio, pulls.gop);
            pulls.streams.set_pulled(name, Some(fresh.hub().clone()));
            fresh
        }
    };
    *hub = Some(current.clone());
    if edge.publish_to(&current).await.is_err() {
        return Ended::lost("the edge is stopping");
    }
    started.send_replace(true);
    tracing::info!(stream = %name, %url, video = ?tracks.video, "pulling from the origin");
    follow(&pulls.origins, current.hub(), &mut socket, &mut events, begun).await
}

/// Follows a pull: the origin's socket, the connection, the input and the viewers.
async fn follow(
    origins: &Origins,
    hub: &StreamHub,
    socket: &mut OriginSocket,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<EdgeEvent>,
    begun: Instant,
) -> Ended {
    let properties = &origins.properties;
    let (no_input, unused_limit) = (Duration::from_millis(properties.no_input_failover_timeout), Duration::from_millis(properties.unused_stream_deletion_timeout));
    let started = crate::media::counters::unix_ms();
    let mut unused_since: Option<Instant> = None;
    let mut check = tokio::time::interval(Duration::from_millis(250));
    let ended = |why: String| Ended::Lost { why, delivered: hub.counters.last_received_ms.load(Ordering::Relaxed) >= started };
    loop {
        tokio::select! {
            message = next_json(socket) => match message {
                Some(m) if m.get("error").is_some() => return ended(format!("the origin: {m}")),
                Some(_) => {}
                None => return ended("the origin closed the signalling".into()),
            },
            event = events.recv() => match event {
                Some(EdgeEvent::Connected) => {}
                _ => return ended("the connection failed".into()),
            },
            _ = check.tick() => {
                let now = Instant::now();
                let silent = hub.counters.silent_for(started);
                if silent >= no_input {
                    return ended(format!("no input for {} ms", silent.as_millis()));
                }
                if hub.counters.answers.load(Ordering::Relaxed) == 0 && unanswered_for(hub, begun) >= UNANSWERED_RELEASE {
                    tracing::info!(stream = %hub.name, "no viewer answered in {} s: released", UNANSWERED_RELEASE.as_secs());
                    return Ended::Unused;
                }
                if hub.counters.open.load(Ordering::Relaxed) > 0 {
                    unused_since = None;
                } else if now.duration_since(*unused_since.get_or_insert(now)) >= unused_limit {
                    return Ended::Unused;
                }
            }
        }
    }
}

/// The next JSON text message (pings are answered by tungstenite); `None` when the socket ends.
async fn next_json(socket: &mut OriginSocket) -> Option<Value> {
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap_or(Value::Null)),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An origin that restarts: each outage refuses `down` pulls, then a pull plays for a second
    /// and is lost having delivered media. Records when each pull began (tokio's paused clock).
    struct Restarting {
        down: usize,
        refused: usize,
        outages: usize,
        attempts: Vec<Instant>,
    }

    /// How long the fake origin serves before it restarts.
    const SERVES_FOR: Duration = Duration::from_secs(1);

    impl Origin for Restarting {
        async fn pull(&mut self, _url: &str) -> Ended {
            self.attempts.push(Instant::now());
            if self.refused < self.down {
                self.refused += 1;
                return Ended::lost("cannot connect");
            }
            if self.outages == 0 {
                return Ended::Unused;
            }
            tokio::time::sleep(SERVES_FOR).await;
            (self.refused, self.outages) = (0, self.outages - 1);
            Ended::Lost { why: "the origin closed the signalling".into(), delivered: true }
        }

        fn wanted(&self) -> bool {
            true
        }
    }

    /// Issue 24, item 6: an origin restarted four times, each time refusing five pulls (the
    /// delay doubling 250 ms, 500 ms, 1 s, 2 s, 4 s, 4 s) before it serves again: the first pull
    /// after each outage comes 250 ms after the origin went, not the 4 s the delay had grown to
    /// (as it did before the reset).
    #[tokio::test(start_paused = true)]
    async fn the_retry_delay_starts_over_once_a_pull_delivered_media() {
        let mut origin = Restarting { down: 5, refused: 5, outages: 4, attempts: Vec::new() };
        pull_rounds(&["ws://origin/app/stream".into()], &mut origin).await;
        let gaps: Vec<Duration> = origin.attempts.windows(2).map(|w| w[1] - w[0]).collect();
        let ms = Duration::from_millis;
        let outage = [SERVES_FOR + RETRY.0, ms(500), ms(1000), ms(2000), ms(4000), ms(4000)];
        assert_eq!(gaps, outage.repeat(4), "each outage's pulls, from the one that served");
    }

    fn pull() -> Pull {
        Pull { name: "app/s".into(), started: watch::channel(false).1 }
    }

    #[test]
    fn an_address_starts_only_its_share_of_the_pulls_and_gets_it_back_when_they_end() {
        let mut running = Running::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for i in 0..MAX_PULLS_PER_ADDRESS {
            running.start(&format!("ws://o/app/{i}"), pull(), a).unwrap();
        }
        assert_eq!(running.start("ws://o/app/more", pull(), a), Err(Refused::AddressShare));
        running.start("ws://o/app/more", pull(), b).expect("another address has its own share");
        running.end("ws://o/app/0", a);
        running.start("ws://o/app/again", pull(), a).expect("an ended pull frees its place");
        for (i, address) in (0..MAX_PULLS).map(|i| (i, IpAddr::from([198, 51, 100, (i / MAX_PULLS_PER_ADDRESS) as u8]))) {
            let _ = running.start(&format!("ws://o/fill/{i}"), pull(), address);
        }
        assert_eq!(running.by_origin.len(), MAX_PULLS);
        assert_eq!(running.start("ws://o/app/over", pull(), "203.0.113.1".parse().unwrap()), Err(Refused::Full));
    }
}
