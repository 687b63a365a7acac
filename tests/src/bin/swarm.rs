//! Swarm simulator: the real P2P plugin (the cdylib, loaded through `plugin-api` as the host loads
//! it) under viewer churn, on a virtual clock. The simulator plays the host (it answers the
//! plugin's calls: messages, edge service, timers) and every player (it answers the plugin's
//! messages as OvenPlayer does); the plugin decides everything.
//!
//! It reports, over virtual time: the offload ratio (share of present viewers fed by a host peer),
//! the offline optimum for the same population (the best any depth-1 assignment with the same
//! classification, browser-kind and k rules could reach at that instant), stranded clients (fed
//! by a host that is gone, not yet told), viewers left unserved past every deadline, and the
//! plugin's decisions per second of wall-clock time.
//!
//!   swarm --viewers 10000 --csv swarm-10k.csv
//!
//! The User-Agent mix is in [`UA_MIX`]; the shares are rounded from StatCounter Global Stats'
//! 2025 platform and browser shares (desktop/mobile/tablet, then browser and OS within each).

use anyhow::Context;
use clap::Parser;
use plugin_api::{CloseReason, HostServices, LoadedPlugin, LogLevel, OfferDecision, PluginLibrary, SessionId, SessionInfo, SessionKind};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Swarm simulation of the P2P plugin under churn, on a virtual clock.
#[derive(Parser)]
#[command(verbatim_doc_comment)]
struct Cli {
    /// Target concurrent viewers (arrival rate = viewers / mean watch time).
    #[arg(long, default_value_t = 10_000)]
    viewers: usize,
    /// Streams the viewers spread over (Zipf-like: stream i gets weight 1/(i+1)).
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// MaxClientPeersPerHostPeer.
    #[arg(long, default_value_t = 2)]
    k: u16,
    /// The plugin's `<Matching>`: balanced (default) or greedy (OME's rule).
    #[arg(long, default_value = "balanced")]
    matching: String,
    /// Median watch time, seconds (log-normal, sigma 1: heavy-tailed, mean = median * 1.65).
    #[arg(long, default_value_t = 300.0)]
    median_watch_s: f64,
    /// Exponential watch times with the same mean instead of log-normal.
    #[arg(long)]
    exponential: bool,
    /// Host deaths per host peer per hour (crash: its socket drops, on top of normal departures).
    #[arg(long, default_value_t = 2.0)]
    host_deaths_per_hour: f64,
    /// Share of host-eligible players whose relay works (OvenPlayer <= 0.10.38); the rest never
    /// send `offer_p2p` (>= 0.10.39) and must be rescued by the offer deadline.
    #[arg(long, default_value_t = 0.9)]
    relaying_share: f64,
    /// Virtual duration, seconds.
    #[arg(long, default_value_t = 3600)]
    duration_s: u64,
    /// Sample interval of the time series, seconds.
    #[arg(long, default_value_t = 10)]
    sample_s: u64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the time series here.
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
    /// The plugin library (default: the one built beside this binary).
    #[arg(long)]
    plugin: Option<std::path::PathBuf>,
}

/// (User-Agent, share in percent).
const UA_MIX: &[(&str, f64)] = &[
    // Desktop, 40 %.
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 20.0),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", 5.5),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", 2.5),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0", 1.0),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 3.5),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", 3.0),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0", 0.5),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 1.5),
    ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 1.0),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", 0.5),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36", 0.5),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Vivaldi/7.0", 0.5),
    // Mobile, 58 %.
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", 36.0),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", 15.0),
    ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36", 3.5),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1", 2.0),
    ("Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0", 1.5),
    // Tablet, 2 %: iPadOS asks for desktop pages by default (it looks like a Mac).
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", 1.5),
    ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", 0.5),
];

/// Player-side latencies (virtual ms): signalling round trips and connection set-up.
const OPEN_TO_REQUEST_MS: u64 = 50;
const EDGE_SETUP_MS: u64 = 400;
const HOST_OFFER_MS: u64 = 150;
const CLIENT_ANSWER_MS: u64 = 100;
const P2P_SETUP_MS: u64 = 500;
const STOP_TO_REQUEST_MS: u64 = 50;

/// The plugin's calls into the host, queued while a hook runs and carried out after it returns.
enum Call {
    Send(SessionId, String),
    ServeFromEdge(SessionId),
    Close(SessionId),
    Timer(u64, u64),
}

/// The simulated host's side of the ABI: a virtual clock and a queue.
struct SimHost {
    now: Arc<AtomicU64>,
    calls: Arc<Mutex<Vec<Call>>>,
    errors: Arc<AtomicU64>,
}

impl HostServices for SimHost {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
    fn send(&self, id: SessionId, json: &str) {
        self.calls.lock().unwrap().push(Call::Send(id, json.to_string()));
    }
    fn serve_from_edge(&self, id: SessionId) {
        self.calls.lock().unwrap().push(Call::ServeFromEdge(id));
    }
    fn close(&self, id: SessionId, _code: u16, _reason: &str) {
        self.calls.lock().unwrap().push(Call::Close(id));
    }
    fn set_timer(&self, token: u64, after_ms: u64) {
        self.calls.lock().unwrap().push(Call::Timer(token, after_ms));
    }
    fn log(&self, level: LogLevel, message: &str) {
        if matches!(level, LogLevel::Error) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("plugin error: {message}");
        }
    }
    fn count(&self, _name: &str, _delta: i64) {}
}

/// Something due at a virtual instant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrive,
    RequestOffer(SessionId),
    EdgeUp { id: SessionId, generation: u64 },
    Deliver(SessionId, String),
    PeerUp { client: SessionId, host: SessionId, generation: u64 },
    Timer(u64),
    Leave(SessionId),
    HostDeath,
    Sample,
}

/// What feeds a viewer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    Nothing,
    Edge,
    Peer(SessionId),
}

struct Viewer {
    /// Pool of the optimum: (stream, browser kind), or None if it can never take part.
    group: Option<(usize, String)>,
    host_eligible: bool,
    relays: bool,
    feed: Feed,
    /// Since when it has had no feed (virtual ms).
    unfed_since: u64,
    /// Bumped whenever the player starts over: a set-up scheduled before that is void.
    generation: u64,
    /// The plugin matched it to a host once: by the rules it may not be a client again.
    matched: bool,
}

struct Sim {
    rng: SmallRng,
    now: Arc<AtomicU64>,
    calls: Arc<Mutex<Vec<Call>>>,
    plugin: LoadedPlugin,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    viewers: HashMap<SessionId, Viewer>,
    next_id: SessionId,
    hook_calls: u64,
    hook_time: std::time::Duration,
    ua_weights: Vec<f64>,
    stream_weights: Vec<f64>,
    stranded_max: usize,
    /// The longest a viewer went without feed, and how many went longer than the deadlines allow.
    unfed_max_ms: u64,
    unfed_past_deadline: u64,
    host_deaths: u64,
    arrivals: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    t_s: u64,
    viewers: usize,
    from_peers: usize,
    optimum: usize,
    /// The optimum without the rule that a viewer once matched is never a client again.
    optimum_unrestricted: usize,
    stranded: usize,
    unfed: usize,
    /// Viewers who could be clients (never matched) but play from the edge: they found no vacancy
    /// when they arrived, and nothing moves a playing viewer.
    passed_over: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let path = cli.plugin.clone().unwrap_or_else(|| tests::harness::library("plugin_p2p"));
    if cli.plugin.is_none() {
        tests::harness::build_artifacts();
    }
    let library = PluginLibrary::open(&path).with_context(|| format!("loading {}", path.display()))?;
    let now = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let config = format!(
        "<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>{}</MaxClientPeersPerHostPeer><OfferTimeoutMs>{}</OfferTimeoutMs><AnswerTimeoutMs>{}</AnswerTimeoutMs><Matching>{}</Matching></P2P>",
        cli.k, DEADLINE_MS, DEADLINE_MS, cli.matching
    );
    let plugin = library
        .instantiate(SimHost { now: now.clone(), calls: calls.clone(), errors: errors.clone() }, Some(&config))
        .context("instantiating the plugin")?;
    let mut sim = Sim {
        rng: SmallRng::seed_from_u64(cli.seed),
        now,
        calls,
        plugin,
        queue: BinaryHeap::new(),
        seq: 0,
        viewers: HashMap::new(),
        next_id: 1,
        hook_calls: 0,
        hook_time: Default::default(),
        ua_weights: UA_MIX.iter().map(|(_, w)| *w).collect(),
        stream_weights: (0..cli.streams).map(|i| 1.0 / (i + 1) as f64).collect(),
        stranded_max: 0,
        unfed_max_ms: 0,
        unfed_past_deadline: 0,
        host_deaths: 0,
        arrivals: 0,
    };
    // Exponential watch times get the log-normal's mean, so both runs hold the same population.
    let mean_watch_s = cli.median_watch_s * LOGNORMAL_MEAN_OVER_MEDIAN;
    let arrival_rate_per_ms = cli.viewers as f64 / (mean_watch_s * 1000.0);
    let death_rate_per_ms = cli.host_deaths_per_hour / 3_600_000.0;

    sim.at(0, Event::Arrive);
    sim.at(0, Event::HostDeath);
    sim.at(0, Event::Sample);
    let end = cli.duration_s * 1000;
    let wall = Instant::now();
    let mut samples = Vec::new();
    while let Some(Reverse((t, _, event))) = sim.queue.pop() {
        if t > end {
            break;
        }
        sim.now.store(t, Ordering::Relaxed);
        match event {
            Event::Arrive => {
                sim.arrive(&cli, mean_watch_s);
                let gap = exponential(&mut sim.rng, 1.0 / arrival_rate_per_ms);
                sim.at(t + gap as u64, Event::Arrive);
            }
            Event::RequestOffer(id) => sim.request_offer(id),
            Event::EdgeUp { id, generation } => sim.edge_up(id, generation),
            Event::Deliver(id, json) => sim.deliver(id, &json),
            Event::PeerUp { client, host, generation } => sim.peer_up(client, host, generation),
            Event::Timer(token) => sim.hook(|p| p.timer_fired(token).map(drop)),
            Event::Leave(id) => sim.leave(id, CloseReason::Disconnected),
            Event::HostDeath => {
                // Each host peer dies at `death_rate`: every second, a Poisson draw over them all.
                let hosts: Vec<SessionId> = sim.hosts();
                let mut elapsed = exponential(&mut sim.rng, 1.0 / (death_rate_per_ms * hosts.len().max(1) as f64));
                while elapsed < 1000.0 && !hosts.is_empty() {
                    let victim = hosts[sim.rng.random_range(0..hosts.len())];
                    if sim.viewers.contains_key(&victim) {
                        sim.host_deaths += 1;
                        sim.leave(victim, CloseReason::EdgeFailed);
                    }
                    elapsed += exponential(&mut sim.rng, 1.0 / (death_rate_per_ms * hosts.len() as f64));
                }
                sim.at(t + 1000, Event::HostDeath);
            }
            Event::Sample => {
                samples.push(sim.sample(cli.k));
                sim.at(t + cli.sample_s * 1000, Event::Sample);
            }
        }
    }
    let wall = wall.elapsed();
    report(&cli, &sim, &samples, wall, errors.load(Ordering::Relaxed))?;
    Ok(())
}

/// Offer and answer deadlines given to the plugin (its defaults).
const DEADLINE_MS: u64 = 4000;
/// A viewer without feed for longer than this waited past every deadline the plugin has (offer,
/// then answer) plus the edge's set-up: the plugin failed it.
const UNFED_LIMIT_MS: u64 = 2 * DEADLINE_MS + EDGE_SETUP_MS + P2P_SETUP_MS + 2 * STOP_TO_REQUEST_MS;
/// exp(sigma^2 / 2) for sigma = 1.
const LOGNORMAL_MEAN_OVER_MEDIAN: f64 = 1.648_721_270_700_128;

fn exponential(rng: &mut SmallRng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

fn weighted(rng: &mut SmallRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

impl Sim {
    fn at(&mut self, t: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, event)));
    }

    fn t(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    /// Calls a hook, times it, then carries out what the plugin asked for.
    fn hook<R>(&mut self, call: impl FnOnce(&mut LoadedPlugin) -> Result<R, plugin_api::PluginFailure>) -> R {
        let started = Instant::now();
        let result = call(&mut self.plugin).unwrap_or_else(|failure| panic!("the plugin failed: {failure:?}"));
        self.hook_time += started.elapsed();
        self.hook_calls += 1;
        let calls = std::mem::take(&mut *self.calls.lock().unwrap());
        for call in calls {
            self.carry_out(call);
        }
        result
    }

    fn carry_out(&mut self, call: Call) {
        let t = self.t();
        match call {
            Call::Send(id, json) => self.message_to_player(id, &json),
            Call::ServeFromEdge(id) => self.edge_offer(id),
            Call::Close(id) => panic!("the plugin closed session {id}: the simulated players never misbehave"),
            Call::Timer(token, after) => self.at(t + after, Event::Timer(token)),
        }
    }

    fn arrive(&mut self, cli: &Cli, mean_watch_s: f64) {
        self.arrivals += 1;
        let id = self.next_id;
        self.next_id += 1;
        let ua = UA_MIX[weighted(&mut self.rng, &self.ua_weights)].0;
        let stream = weighted(&mut self.rng, &self.stream_weights);
        let class = plugin_p2p::classify::classify(ua);
        let group = (class.browser != "UNKNOWN").then(|| (stream, class.browser.clone()));
        let relays = self.rng.random::<f64>() < cli.relaying_share;
        let t = self.t();
        self.viewers.insert(
            id,
            Viewer { group, host_eligible: class.host_eligible, relays, feed: Feed::Nothing, unfed_since: t, generation: 0, matched: false },
        );
        let watch_s = if cli.exponential {
            exponential(&mut self.rng, mean_watch_s)
        } else {
            // Log-normal, sigma 1 (Box-Muller).
            let (u1, u2): (f64, f64) = (1.0 - self.rng.random::<f64>(), self.rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            cli.median_watch_s * z.exp()
        };
        self.at(t + (watch_s * 1000.0) as u64, Event::Leave(id));
        let info = SessionInfo::new(id, SessionKind::Play, "default", "app", &format!("s{stream}"), ua, "192.0.2.1:50000", "");
        self.hook(|p| p.session_opened(&info));
        self.at(t + OPEN_TO_REQUEST_MS, Event::RequestOffer(id));
    }

    fn request_offer(&mut self, id: SessionId) {
        if !self.viewers.contains_key(&id) {
            return;
        }
        if self.hook(|p| p.offer_requested(id)) == OfferDecision::ServeFromEdge {
            self.edge_offer(id);
        }
    }

    /// The edge answers the player's request: its connection is up after the set-up time.
    fn edge_offer(&mut self, id: SessionId) {
        let t = self.t();
        let Some(v) = self.viewers.get_mut(&id) else { return };
        v.generation += 1;
        let generation = v.generation;
        self.at(t + EDGE_SETUP_MS, Event::EdgeUp { id, generation });
    }

    fn edge_up(&mut self, id: SessionId, generation: u64) {
        if self.viewers.get(&id).is_none_or(|v| v.generation != generation) {
            return;
        }
        self.fed(id, Feed::Edge);
        self.hook(|p| p.session_playing(id));
    }

    fn peer_up(&mut self, client: SessionId, host: SessionId, generation: u64) {
        // The pair connects only if neither started over since the answer (a `stop` voids it).
        let host_there = self.viewers.get(&host).is_some_and(|h| h.feed == Feed::Edge);
        if host_there && self.viewers.get(&client).is_some_and(|v| v.generation == generation) {
            self.fed(client, Feed::Peer(host));
        }
    }

    /// `id` is now fed by `feed`; records how long it went without.
    fn fed(&mut self, id: SessionId, feed: Feed) {
        let t = self.t();
        let v = self.viewers.get_mut(&id).expect("checked by the caller");
        if v.feed == Feed::Nothing {
            let waited = t - v.unfed_since;
            self.unfed_max_ms = self.unfed_max_ms.max(waited);
            if waited > UNFED_LIMIT_MS {
                self.unfed_past_deadline += 1;
            }
        }
        v.feed = feed;
    }

    /// A message from the plugin reaches a player, who answers as OvenPlayer does.
    fn message_to_player(&mut self, id: SessionId, json: &str) {
        let Some(v) = self.viewers.get(&id) else { return };
        let (relays, feed, generation) = (v.relays, v.feed, v.generation);
        let m: Value = serde_json::from_str(json).expect("the plugin sends JSON");
        let peer = m["peer_id"].as_u64().unwrap_or(0) as SessionId;
        let t = self.t();
        match m["command"].as_str().unwrap_or("") {
            "request_offer_p2p" => {
                if let Some(client) = self.viewers.get_mut(&peer) {
                    client.matched = true;
                }
                if !relays {
                    return;
                }
                let offer = json!({"command": "offer_p2p", "id": id, "peer_id": peer, "sdp": {"type": "offer", "sdp": "v=0"}, "candidates": []});
                self.at(t + HOST_OFFER_MS, Event::Deliver(id, offer.to_string()));
            }
            "offer" if peer != 0 => {
                let answer = json!({"command": "answer", "id": id, "peer_id": peer, "sdp": {"type": "answer", "sdp": "v=0"}});
                self.at(t + CLIENT_ANSWER_MS, Event::Deliver(id, answer.to_string()));
                self.at(t + CLIENT_ANSWER_MS + P2P_SETUP_MS, Event::PeerUp { client: id, host: peer, generation });
            }
            // To a client (fed by that host, or still connecting to it): the host is gone; the
            // player starts over and asks again. To a host (fed by the edge): a client left.
            "stop" if peer != 0 && feed != Feed::Edge => {
                let v = self.viewers.get_mut(&id).expect("checked");
                if feed == Feed::Peer(peer) {
                    v.feed = Feed::Nothing;
                    v.unfed_since = t;
                }
                v.generation += 1;
                self.at(t + STOP_TO_REQUEST_MS, Event::RequestOffer(id));
            }
            _ => {}
        }
    }

    fn deliver(&mut self, id: SessionId, json: &str) {
        if self.viewers.contains_key(&id) {
            self.hook(|p| p.message_received(id, json).map(drop));
        }
    }

    fn leave(&mut self, id: SessionId, reason: CloseReason) {
        if self.viewers.remove(&id).is_none() {
            return;
        }
        self.hook(|p| p.session_closed(id, reason));
    }

    fn hosts(&self) -> Vec<SessionId> {
        let mut hosts: Vec<SessionId> =
            self.viewers.iter().filter(|(_, v)| v.host_eligible && v.feed == Feed::Edge).map(|(&id, _)| id).collect();
        hosts.sort_unstable();
        hosts
    }

    fn sample(&mut self, k: u16) -> Sample {
        let t = self.t();
        // Per group: [free eligible, free not eligible, once-matched eligible] (once-matched
        // viewers who cannot host can only be served by the edge).
        let mut groups: HashMap<&(usize, String), [usize; 3]> = HashMap::new();
        let (mut from_peers, mut stranded, mut unfed, mut passed_over) = (0, 0, 0, 0);
        for v in self.viewers.values() {
            match v.feed {
                Feed::Peer(h) if !self.viewers.contains_key(&h) => stranded += 1,
                Feed::Peer(_) => from_peers += 1,
                Feed::Nothing => unfed += 1,
                Feed::Edge => passed_over += (v.group.is_some() && !v.matched && !v.host_eligible) as usize,
            }
            if let Some(g) = &v.group {
                let counts = groups.entry(g).or_default();
                let blocked = v.matched && !matches!(v.feed, Feed::Peer(_));
                match (blocked, v.host_eligible) {
                    (false, true) => counts[0] += 1,
                    (false, false) => counts[1] += 1,
                    (true, true) => counts[2] += 1,
                    (true, false) => {}
                }
            }
        }
        self.stranded_max = self.stranded_max.max(stranded);
        let k = k as usize;
        let optimum = groups.values().map(|&[free_e, free_n, blocked_e]| optimum_clients(free_e, free_n, blocked_e, k)).sum();
        let optimum_unrestricted =
            groups.values().map(|&[free_e, free_n, blocked_e]| optimum_clients(free_e + blocked_e, free_n, 0, k)).sum();
        Sample { t_s: t / 1000, viewers: self.viewers.len(), from_peers, optimum, optimum_unrestricted, stranded, unfed, passed_over }
    }
}

/// The most clients one pool can have at depth 1 with k clients per host, given `free_e`
/// viewers who may host or be clients, `free_n` who may only be clients, and `blocked_e` who may
/// only host (matched once already). Blocked ones host first (they cost no client); then `h` of
/// the free eligible: clients = min(free_e - h + free_n, k (blocked_e + h)), best at the balance.
fn optimum_clients(free_e: usize, free_n: usize, blocked_e: usize, k: usize) -> usize {
    let clients = |h: usize| (free_e - h + free_n).min(k * (blocked_e + h));
    let candidates = free_e + free_n;
    let balance = candidates.saturating_sub(k * blocked_e).div_ceil(k + 1).min(free_e);
    [balance.saturating_sub(1), balance].into_iter().map(clients).max().unwrap_or(0)
}

fn report(cli: &Cli, sim: &Sim, samples: &[Sample], wall: std::time::Duration, errors: u64) -> anyhow::Result<()> {
    if let Some(path) = &cli.csv {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
        writeln!(f, "t_s,viewers,from_peers,optimum,optimum_unrestricted,offload,optimum_offload,optimum_unrestricted_offload,stranded,unfed,passed_over")?;
        for s in samples {
            let share = |x: usize| if s.viewers == 0 { 0.0 } else { x as f64 / s.viewers as f64 };
            writeln!(
                f,
                "{},{},{},{},{},{:.4},{:.4},{:.4},{},{},{}",
                s.t_s,
                s.viewers,
                s.from_peers,
                s.optimum,
                s.optimum_unrestricted,
                share(s.from_peers),
                share(s.optimum),
                share(s.optimum_unrestricted),
                s.stranded,
                s.unfed,
                s.passed_over
            )?;
        }
    }
    // Steady state: the second half of the run (the population has grown to its target).
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.t_s * 2 >= cli.duration_s).collect();
    let sum = |f: fn(&Sample) -> usize| steady.iter().map(|s| f(s)).sum::<usize>() as f64;
    let (viewers, peers, optimum) = (sum(|s| s.viewers), sum(|s| s.from_peers), sum(|s| s.optimum));
    let unrestricted = sum(|s| s.optimum_unrestricted);
    let min_ratio = steady.iter().filter(|s| s.optimum > 0).map(|s| s.from_peers as f64 / s.optimum as f64).fold(f64::INFINITY, f64::min);
    println!("| target viewers | mean present | offload | optimum (same rules) | offload / optimum (mean, min) | optimum, no once-a-client rule | stranded max | unfed past deadlines | longest unfed | host deaths | arrivals | decisions/s (wall) | µs per hook |");
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    println!(
        "| {} | {:.0} | {:.1} % | {:.1} % | {:.1} %, {:.1} % | {:.1} % | {} | {} | {:.1} s | {} | {} | {:.0} | {:.2} |",
        cli.viewers,
        viewers / steady.len() as f64,
        100.0 * peers / viewers,
        100.0 * optimum / viewers,
        100.0 * peers / optimum,
        100.0 * min_ratio,
        100.0 * unrestricted / viewers,
        sim.stranded_max,
        sim.unfed_past_deadline,
        sim.unfed_max_ms as f64 / 1000.0,
        sim.host_deaths,
        sim.arrivals,
        sim.hook_calls as f64 / sim.hook_time.as_secs_f64(),
        sim.hook_time.as_secs_f64() * 1e6 / sim.hook_calls as f64,
    );
    eprintln!("(steady state: {:.1} % of viewers could only be clients yet play from the edge: no vacancy when they came)", 100.0 * sum(|s| s.passed_over) / viewers);
    eprintln!("({} hook calls in {:.1} s of hook time, {:.1} s wall; plugin errors logged: {errors})", sim.hook_calls, sim.hook_time.as_secs_f64(), wall.as_secs_f64());
    Ok(())
}
