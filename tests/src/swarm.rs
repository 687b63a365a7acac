//! The swarm driver: the real P2P plugin (the cdylib, loaded through `plugin-api` as the host loads
//! it) under viewer churn, on a virtual clock. The driver plays the host (it answers the plugin's
//! calls: messages, edge service, timers) and every player (it answers the plugin's messages as
//! OvenPlayer does: a host offers when asked, a client answers, a player told `stop` by the peer it
//! plays from asks again); the plugin decides everything.
//!
//! Like str0m's `poll`/`handle_input` loop, nothing here reads a clock: [`Swarm::progress`] takes
//! the next due event, sets the virtual time to it, and runs it; [`Swarm::run`] repeats that to the
//! end. So `cargo test` runs small swarms in milliseconds (`tests/tests/swarm.rs`) and the `swarm`
//! tool runs 100k viewers for a virtual hour.
//!
//! What is watched at every sample: the offload ratio (share of present viewers fed by a host peer)
//! against the offline optimum for the same population (the most clients any depth-1 assignment
//! with the same classification, browser-kind, k and once-a-client rules could feed at that
//! instant; a player whose relay does not work, OvenPlayer >= 0.10.39, feeds nobody as a host, so
//! the optimum makes it a client), and, with `max_depth` > 1, against the same optimum for trees
//! up to that depth ([`optimum_clients_at_depth`]); stranded clients (fed
//! by a host that is gone); viewers unfed past every deadline; hosts feeding more than k clients;
//! moves (`stop {peer_id: 0}`) per viewer and their playback gaps; how many pairs are within one
//! network.
//!
//! With a [`NetworkModel`], viewers sit behind home routers as on the internet: some share a home
//! (one public address, one LAN), a router is port-restricted (hole punching works when both
//! peers know their public address) or symmetric (it never does), and a player's relay has STUN
//! (the project's player, which also reports its link) or not (OvenPlayer 0.10.38). A host's relay
//! shows its LAN candidate and, with STUN, its server-reflexive one, trickled as players do; a P2P
//! link forms only where it would: within a home, or across homes when both ends have STUN and
//! neither router is symmetric. Without the model every link forms, as before.
//!
//! With `edges` > 1 the audience is spread over that many edges, as behind a load balancer: one
//! instance of the plugin per edge, each with its own host, each arriving viewer sent to an edge
//! drawn uniformly at random. A viewer's hosts and clients are always on its edge (asserted), and
//! every check above holds per edge ([`Swarm::edge_summaries`]); the optimum stays the
//! cluster-wide one, one pool over the whole audience, so what per-edge pools cost shows.

use crate::sim_host::SimHost;
use plugin_api::{CloseReason, Delivery, HostCall, LoadedPlugin, OfferDecision, PluginLibrary, SessionId, SessionInfo, SessionKind};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// A swarm's population and the plugin's settings.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Target concurrent viewers (arrival rate = viewers / mean watch time).
    pub viewers: usize,
    /// Streams the viewers spread over (Zipf: stream i gets weight 1/(i+1)).
    pub streams: usize,
    /// MaxClientPeersPerHostPeer.
    pub k: u16,
    /// The plugin's `<Matching>`: balanced or greedy.
    pub matching: String,
    /// The plugin's `<PairNewViewers>`: proven or any.
    pub pair_new_viewers: String,
    /// The plugin's `<MaxDepth>`: 1 (OME's rule) or more.
    pub max_depth: u8,
    /// Median watch time, seconds (log-normal, sigma 1).
    pub median_watch_s: f64,
    /// Exponential watch times with the same mean instead of log-normal.
    pub exponential: bool,
    /// Host deaths per host peer per hour (its socket drops, on top of normal departures).
    pub host_deaths_per_hour: f64,
    /// Share of host-eligible players whose relay works (OvenPlayer <= 0.10.38); the others never
    /// send `offer_p2p` (>= 0.10.39).
    pub relaying_share: f64,
    /// Virtual duration, seconds.
    pub duration_s: u64,
    /// Sample interval, seconds.
    pub sample_s: u64,
    /// Random seed.
    pub seed: u64,
    /// Networks the viewers come from (Zipf: network i gets weight 1/(i+1)); each is one /24.
    /// 0: everyone at one address.
    pub sites: usize,
    /// The plugin's `<PreferSameNetwork>`.
    pub prefer_same_network: bool,
    /// The plugin's `<MoveEdgeViewers>`.
    pub move_edge_viewers: bool,
    /// The plugin's `<MoveAfterMs>`.
    pub move_after_ms: u64,
    /// The plugin's `<MoveFormerClients>`.
    pub move_former_clients: bool,
    /// Edges the audience is spread over: one instance of the plugin each, a load balancer
    /// sending each arriving viewer to one of them at random; pairs stay within an edge.
    pub edges: usize,
    /// Homes, routers and players (None: every link forms, everyone on its own /24 network).
    pub networks: Option<NetworkModel>,
}

/// Where viewers sit on the internet, and which players they use (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkModel {
    /// Share of arriving viewers who join a home with a viewer already in it (a household, an
    /// office): one public address, one LAN.
    pub same_home_share: f64,
    /// Share of homes behind a symmetric NAT (a new mapping per destination: no hole punching).
    pub symmetric_share: f64,
    /// Share of players with STUN on both their connections that report their links (the
    /// project's player); the others have none (OvenPlayer 0.10.38, 0.10.54).
    pub stun_share: f64,
}

impl Default for NetworkModel {
    fn default() -> Self {
        Self { same_home_share: 0.2, symmetric_share: 0.1, stun_share: 0.5 }
    }
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            viewers: 10_000,
            streams: 10,
            k: 2,
            matching: "balanced".into(),
            pair_new_viewers: "any".into(),
            max_depth: 1,
            median_watch_s: 300.0,
            exponential: false,
            host_deaths_per_hour: 2.0,
            relaying_share: 0.9,
            duration_s: 3600,
            sample_s: 10,
            seed: 1,
            sites: 0,
            prefer_same_network: true,
            move_edge_viewers: true,
            move_after_ms: 5_000,
            move_former_clients: true,
            edges: 1,
            networks: None,
        }
    }
}

impl SwarmConfig {
    /// The plugin's `<P2P>` section for this swarm.
    pub fn p2p_xml(&self) -> String {
        format!(
            "<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>{}</MaxClientPeersPerHostPeer><OfferTimeoutMs>{OFFER_CEILING_MS}</OfferTimeoutMs><AnswerTimeoutMs>{ANSWER_DEADLINE_MS}</AnswerTimeoutMs><Matching>{}</Matching><PairNewViewers>{}</PairNewViewers><MaxDepth>{}</MaxDepth><MoveEdgeViewers>{}</MoveEdgeViewers><MoveAfterMs>{}</MoveAfterMs><MoveFormerClients>{}</MoveFormerClients><PreferSameNetwork>{}</PreferSameNetwork></P2P>",
            self.k, self.matching, self.pair_new_viewers, self.max_depth, self.move_edge_viewers, self.move_after_ms, self.move_former_clients, self.prefer_same_network
        )
    }
}

/// (User-Agent, share in percent). The shares are rounded from StatCounter Global Stats' 2025
/// platform and browser shares (desktop/mobile/tablet, then browser and OS within each).
pub const UA_MIX: &[(&str, f64)] = &[
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

/// How long a player with STUN takes to give up on a P2P link that does not form (ICE checks
/// for a while, then `failed`), virtual ms.
const ICE_FAIL_MS: u64 = 5000;
/// After its offer, when a host's relay trickles its LAN candidate, and its server-reflexive one
/// (a STUN round trip), virtual ms.
const LAN_CANDIDATE_MS: u64 = 5;
const SRFLX_CANDIDATE_MS: u64 = 60;

/// Player-side latencies (virtual ms): signalling round trips and connection set-up.
const OPEN_TO_REQUEST_MS: u64 = 50;
const EDGE_SETUP_MS: u64 = 400;
const HOST_OFFER_MS: u64 = 150;
const CLIENT_ANSWER_MS: u64 = 100;
const P2P_SETUP_MS: u64 = 500;
const STOP_TO_REQUEST_MS: u64 = 50;

/// The offer deadline's ceiling and the answer deadline given to the plugin (its defaults).
pub const OFFER_CEILING_MS: u64 = 4000;
/// The answer deadline given to the plugin (its default).
pub const ANSWER_DEADLINE_MS: u64 = 4000;
/// A viewer without feed for longer than this waited past every deadline the plugin has (offer,
/// then answer) plus the edge's set-up: the plugin failed it.
pub const UNFED_LIMIT_MS: u64 = OFFER_CEILING_MS + ANSWER_DEADLINE_MS + EDGE_SETUP_MS + P2P_SETUP_MS + 2 * STOP_TO_REQUEST_MS;
/// exp(sigma^2 / 2) for sigma = 1.
const LOGNORMAL_MEAN_OVER_MEDIAN: f64 = 1.648_721_270_700_128;

/// Something due at a virtual instant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrive,
    RequestOffer(SessionId),
    EdgeUp { id: SessionId, generation: u64 },
    Deliver(SessionId, String),
    PeerUp { client: SessionId, host: SessionId, generation: u64 },
    /// A player with STUN gives up on a P2P link that did not form.
    LinkFailed { client: SessionId, host: SessionId, generation: u64 },
    /// A timer the plugin of that edge set.
    Timer { edge: usize, token: u64 },
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
    /// The edge the load balancer gave it: its plugin instance, and its hosts and clients.
    edge: usize,
    /// Pool of the optimum: (stream, browser kind), or None if it can never take part.
    group: Option<(usize, String)>,
    host_eligible: bool,
    relays: bool,
    /// Its network.
    site: usize,
    feed: Feed,
    /// Since when it has had no feed (virtual ms).
    unfed_since: u64,
    /// Bumped whenever the player starts over: a set-up scheduled before that is void.
    generation: u64,
    /// It received a host peer's offer once: by the rules it may not be a client again.
    matched: bool,
    /// Times it was told `stop {peer_id: 0}` while playing from the edge.
    moves: u32,
    /// Left the edge for a move and is not fed yet.
    moving: bool,
    /// The host whose offer it took last (its main connection's peer), until told `stop`.
    source: Option<SessionId>,
    /// Its home (one public address and LAN), and whether its router is symmetric.
    home: usize,
    symmetric: bool,
    /// Its player has STUN on both connections and reports its links (the project's player).
    stun: bool,
}

impl Viewer {
    /// Whether a P2P link from host `h` to client `c` forms (see the module's doc).
    fn link_forms(h: &Viewer, c: &Viewer) -> bool {
        h.home == c.home || (h.stun && c.stun && !h.symmetric && !c.symmetric)
    }

    /// Whether it can reach (or be reached from) viewers of other homes: the optimum's pools.
    fn open(&self) -> bool {
        self.stun && !self.symmetric
    }
}

/// One sample of the swarm (of the whole cluster, or of one edge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Virtual time, seconds.
    pub t_s: u64,
    /// Viewers present.
    pub viewers: usize,
    /// Viewers fed by a host peer.
    pub from_peers: usize,
    /// The optimum with the same rules, over one pool per stream and browser kind: for the
    /// cluster, one pool over every edge's viewers; for an edge, its own viewers.
    pub optimum: usize,
    /// The optimum without the rule that a viewer once matched is never a client again.
    pub optimum_unrestricted: usize,
    /// `optimum` with trees up to the swarm's `max_depth` ([`optimum_clients_at_depth`]; equal
    /// to `optimum` at depth 1).
    pub optimum_deep: usize,
    /// `optimum_unrestricted` with trees up to the swarm's `max_depth`.
    pub optimum_unrestricted_deep: usize,
    /// The same-rules optimum if every edge keeps its own pools (the sum of the edges' optima;
    /// `optimum` with one edge).
    pub optimum_edge_pools: usize,
    /// The same without the once-a-client rule.
    pub optimum_unrestricted_edge_pools: usize,
    /// Clients fed by a host that is gone.
    pub stranded: usize,
    /// Viewers without feed (joining, or between feeds).
    pub unfed: usize,
    /// Viewers who could only be clients, were never one, and play from the edge.
    pub passed_over: usize,
    /// Pairs whose host and client share a network.
    pub local_pairs: usize,
    /// Viewers the plugin's latest `report_delivery` describes otherwise than the swarm sees them
    /// (fed by host H, or not fed by a peer); pairs answered but not connected yet count here.
    pub misreported: usize,
    /// The most clients one host fed, over k (0 if none fed more than k).
    pub over_capacity: usize,
}

impl Sample {
    /// Adds an edge's sample to the cluster's (the cluster-wide optimum is not a sum: the caller
    /// sets it).
    fn add(&mut self, edge: &Sample) {
        self.viewers += edge.viewers;
        self.from_peers += edge.from_peers;
        self.optimum_edge_pools += edge.optimum_edge_pools;
        self.optimum_unrestricted_edge_pools += edge.optimum_unrestricted_edge_pools;
        self.stranded += edge.stranded;
        self.unfed += edge.unfed;
        self.passed_over += edge.passed_over;
        self.local_pairs += edge.local_pairs;
        self.misreported += edge.misreported;
        self.over_capacity = self.over_capacity.max(edge.over_capacity);
    }
}

/// What a run came to: steady-state means over its second half, and the worst seen.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Mean viewers present.
    pub mean_present: f64,
    /// Share of viewers fed by peers.
    pub offload: f64,
    /// The optimum's share.
    pub optimum: f64,
    /// Offload over the optimum: mean, and the worst sample.
    pub of_optimum: f64,
    /// The worst sample's offload over its optimum.
    pub of_optimum_min: f64,
    /// The optimum without the once-a-client rule.
    pub optimum_unrestricted: f64,
    /// Offload over the optimum without the once-a-client rule (the rule the plugin follows with
    /// `MoveFormerClients` on, which moves former clients back into hosts).
    pub of_unrestricted: f64,
    /// The optimum with trees up to the swarm's `max_depth` (`optimum` at depth 1), its share.
    pub optimum_deep: f64,
    /// Offload over it: mean, and the worst sample.
    pub of_optimum_deep: f64,
    /// The worst sample's offload over its depth-`max_depth` optimum.
    pub of_optimum_deep_min: f64,
    /// The same without the once-a-client rule, and offload over it.
    pub optimum_unrestricted_deep: f64,
    /// Offload over the depth-`max_depth` optimum without the once-a-client rule.
    pub of_unrestricted_deep: f64,
    /// The optimum's share if every edge keeps its own pools (`optimum` with one edge).
    pub optimum_edge_pools: f64,
    /// The same without the once-a-client rule.
    pub optimum_unrestricted_edge_pools: f64,
    /// Share of viewers who could only be clients and play from the edge.
    pub passed_over: f64,
    /// Share of P2P pairs within one network.
    pub local_pairs: f64,
    /// The most stranded clients at any sample.
    pub stranded_max: usize,
    /// Viewers who went without feed past every deadline.
    pub unfed_past_deadline: u64,
    /// The longest any viewer went without feed, ms.
    pub unfed_max_ms: u64,
    /// Stretches without feed but moves (joining, host gone): median, p99 and max, ms.
    pub unfed_ms: (u64, u64, u64),
    /// The most clients any host fed at once, over k (0 if never).
    pub over_capacity_max: usize,
    /// Moves (`stop {peer_id: 0}` to an edge viewer).
    pub moves: u64,
    /// Moves per viewer-hour present.
    pub moves_per_viewer_hour: f64,
    /// The most moves of one viewer.
    pub max_moves_per_viewer: u32,
    /// Playback gaps of moved viewers (edge closed -> fed by the host), ms: median and max.
    pub move_gap_ms: (u64, u64),
    /// Host deaths.
    pub host_deaths: u64,
    /// Arrivals.
    pub arrivals: u64,
    /// Hook calls, and the wall time spent in them.
    pub hook_calls: u64,
    /// Wall time inside the plugin.
    pub hook_time: Duration,
    /// Errors the plugin logged.
    pub errors: u64,
    /// Viewers misreported, as a share of those present (steady state; pairs still connecting
    /// count, so it is not 0).
    pub misreported: f64,
}

/// What is counted as the run goes, per edge (the cluster's is their sum).
#[derive(Debug, Clone, Default)]
struct Tally {
    unfed_max_ms: u64,
    unfed_past_deadline: u64,
    host_deaths: u64,
    arrivals: u64,
    moves: u64,
    max_moves: u32,
    move_gaps: Vec<u64>,
    /// Every stretch a viewer went without feed but moves (joining, its host gone), ms.
    unfed_waits: Vec<u64>,
    hook_calls: u64,
    hook_time: Duration,
    /// Read from the edge's host when summing up.
    errors: u64,
}

impl Tally {
    fn add(&mut self, edge: &Tally) {
        self.unfed_max_ms = self.unfed_max_ms.max(edge.unfed_max_ms);
        self.unfed_past_deadline += edge.unfed_past_deadline;
        self.host_deaths += edge.host_deaths;
        self.arrivals += edge.arrivals;
        self.moves += edge.moves;
        self.max_moves = self.max_moves.max(edge.max_moves);
        self.move_gaps.extend_from_slice(&edge.move_gaps);
        self.unfed_waits.extend_from_slice(&edge.unfed_waits);
        self.hook_calls += edge.hook_calls;
        self.hook_time += edge.hook_time;
        self.errors += edge.errors;
    }
}

/// One edge: an instance of the plugin with a host of its own, and what happened there.
struct Edge {
    host: SimHost,
    plugin: LoadedPlugin,
    tally: Tally,
    samples: Vec<Sample>,
}

/// A swarm on a virtual clock around one instance of the plugin per edge.
pub struct Swarm {
    config: SwarmConfig,
    rng: SmallRng,
    /// The load balancer's draws, apart from the population's: with one edge, a seed gives the
    /// same run as it did before there were edges.
    balancer: SmallRng,
    edges: Vec<Edge>,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    viewers: HashMap<SessionId, Viewer>,
    /// Session ids are unique over the cluster.
    next_id: SessionId,
    ua_weights: Vec<f64>,
    stream_weights: Vec<f64>,
    site_weights: Vec<f64>,
    arrival_rate_per_ms: f64,
    mean_watch_s: f64,
    /// The plugin's latest delivery report per viewer.
    reported: HashMap<SessionId, Delivery>,
    samples: Vec<Sample>,
    /// The network model's draws, apart from the population's: without a model, a seed gives the
    /// same run as before there was one.
    net_rng: SmallRng,
    /// Recently opened homes `(home, symmetric)`, where a viewer joining an existing home goes.
    recent_homes: Vec<(usize, bool)>,
    next_home: usize,
}

/// A pool of the optimum: (stream, browser kind), and the home for viewers who reach no other.
type PoolOf<'a> = (&'a (usize, String), Option<usize>);

/// Homes a joining viewer may share: the most recently opened ones.
const RECENT_HOMES: usize = 4096;

impl Swarm {
    /// A swarm around `config.edges` new instances of the plugin in `library`, nothing scheduled
    /// but the first arrival, the first sample and the host-death clock.
    pub fn new(config: SwarmConfig, library: &PluginLibrary) -> anyhow::Result<Self> {
        anyhow::ensure!(config.edges > 0, "a swarm needs at least one edge");
        let edges = (0..config.edges)
            .map(|edge| {
                let host = SimHost::default();
                let plugin = library
                    .instantiate(host.clone(), Some(&config.p2p_xml()))
                    .map_err(|e| anyhow::anyhow!("instantiating the plugin for edge {edge}: {e:?}"))?;
                Ok(Edge { host, plugin, tally: Tally::default(), samples: Vec::new() })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Exponential watch times get the log-normal's mean, so both runs hold the same population.
        let mean_watch_s = config.median_watch_s * LOGNORMAL_MEAN_OVER_MEDIAN;
        let mut swarm = Self {
            rng: SmallRng::seed_from_u64(config.seed),
            balancer: SmallRng::seed_from_u64(config.seed ^ 0xba1a_4ce5),
            edges,
            queue: BinaryHeap::new(),
            seq: 0,
            viewers: HashMap::new(),
            next_id: 1,
            ua_weights: UA_MIX.iter().map(|(_, w)| *w).collect(),
            stream_weights: (0..config.streams).map(|i| 1.0 / (i + 1) as f64).collect(),
            site_weights: (0..config.sites).map(|i| 1.0 / (i + 1) as f64).collect(),
            arrival_rate_per_ms: config.viewers as f64 / (mean_watch_s * 1000.0),
            mean_watch_s,
            reported: HashMap::new(),
            samples: Vec::new(),
            net_rng: SmallRng::seed_from_u64(config.seed ^ 0x4e47_0de1),
            recent_homes: Vec::new(),
            next_home: 0,
            config,
        };
        swarm.at(0, Event::Arrive);
        swarm.at(0, Event::HostDeath);
        swarm.at(0, Event::Sample);
        Ok(swarm)
    }

    /// The virtual time, ms.
    pub fn now_ms(&self) -> u64 {
        self.edges[0].host.now()
    }

    /// The cluster's samples so far.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Edge `edge`'s samples so far (its optimum is over its own viewers).
    pub fn edge_samples(&self, edge: usize) -> &[Sample] {
        &self.edges[edge].samples
    }

    /// Runs the next due event (the clock jumps to it); false once the run's duration is over.
    pub fn progress(&mut self) -> bool {
        let end = self.config.duration_s * 1000;
        let Some(Reverse((t, _, event))) = self.queue.pop() else { return false };
        if t > end {
            return false;
        }
        for edge in &self.edges {
            edge.host.set_now(t);
        }
        match event {
            Event::Arrive => {
                self.arrive();
                let gap = exponential(&mut self.rng, 1.0 / self.arrival_rate_per_ms);
                self.at(t + gap as u64, Event::Arrive);
            }
            Event::RequestOffer(id) => self.request_offer(id),
            Event::EdgeUp { id, generation } => self.edge_up(id, generation),
            Event::Deliver(id, json) => self.deliver(id, &json),
            Event::PeerUp { client, host, generation } => self.peer_up(client, host, generation),
            Event::LinkFailed { client, host, generation } => {
                if self.viewers.get(&client).is_some_and(|v| v.generation == generation) {
                    self.deliver(client, &link_state(client, host, "failed"));
                }
            }
            Event::Timer { edge, token } => self.hook(edge, |p| p.timer_fired(token).map(drop)),
            Event::Leave(id) => self.leave(id, CloseReason::Disconnected),
            Event::HostDeath => self.host_deaths_this_second(),
            Event::Sample => {
                self.sample();
                self.at(t + self.config.sample_s * 1000, Event::Sample);
            }
        }
        true
    }

    /// Runs to the end and sums up the cluster.
    pub fn run(&mut self) -> Summary {
        while self.progress() {}
        self.summary()
    }

    fn at(&mut self, t: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, event)));
    }

    fn t(&self) -> u64 {
        self.now_ms()
    }

    /// The edge of a viewer present.
    fn edge_of(&self, id: SessionId) -> Option<usize> {
        self.viewers.get(&id).map(|v| v.edge)
    }

    /// Calls a hook of edge `edge`'s plugin, times it, then carries out what it asked for.
    fn hook<R>(&mut self, edge: usize, call: impl FnOnce(&mut LoadedPlugin) -> Result<R, plugin_api::PluginFailure>) -> R {
        let started = Instant::now();
        let result = call(&mut self.edges[edge].plugin).unwrap_or_else(|failure| panic!("the plugin of edge {edge} failed: {failure:?}"));
        let tally = &mut self.edges[edge].tally;
        tally.hook_time += started.elapsed();
        tally.hook_calls += 1;
        for call in self.edges[edge].host.take_calls() {
            self.carry_out(edge, call);
        }
        result
    }

    /// Carries out what the plugin of edge `edge` asked for: about its own viewers only.
    fn carry_out(&mut self, edge: usize, call: HostCall) {
        let t = self.t();
        if let HostCall::Send(id, _) | HostCall::ServeFromEdge(id) | HostCall::ReportDelivery(id, _) = &call {
            if let Some(theirs) = self.edge_of(*id) {
                assert_eq!(theirs, edge, "the plugin of edge {edge} acted on session {id} of edge {theirs}");
            }
        }
        match call {
            HostCall::Send(id, json) => self.message_to_player(id, &json),
            HostCall::ServeFromEdge(id) => self.edge_offer(id),
            HostCall::Close(id, code, reason) => panic!("the plugin closed session {id} ({code} {reason}): the simulated players never misbehave"),
            HostCall::SetTimer { token, after_ms } => self.at(t + after_ms, Event::Timer { edge, token }),
            HostCall::Count(..) => {}
            HostCall::ReportDelivery(id, delivery) => {
                assert!(self.viewers.contains_key(&id), "a delivery reported for {id}, who left");
                if let Some(theirs) = self.edge_of(delivery.upstream) {
                    assert_eq!(theirs, edge, "session {id} of edge {edge} reported fed by {} of edge {theirs}", delivery.upstream);
                }
                self.reported.insert(id, delivery);
            }
        }
    }

    /// Each host peer dies at `host_deaths_per_hour`: every second, a Poisson draw over them all.
    fn host_deaths_this_second(&mut self) {
        let t = self.t();
        let rate_per_ms = self.config.host_deaths_per_hour / 3_600_000.0;
        let hosts = self.hosts();
        let mut elapsed = exponential(&mut self.rng, 1.0 / (rate_per_ms * hosts.len().max(1) as f64));
        while elapsed < 1000.0 && !hosts.is_empty() {
            let victim = hosts[self.rng.random_range(0..hosts.len())];
            if let Some(edge) = self.edge_of(victim) {
                self.edges[edge].tally.host_deaths += 1;
                self.leave(victim, CloseReason::EdgeFailed);
            }
            elapsed += exponential(&mut self.rng, 1.0 / (rate_per_ms * hosts.len() as f64));
        }
        self.at(t + 1000, Event::HostDeath);
    }

    fn arrive(&mut self) {
        // The load balancer: each arrival to an edge drawn uniformly at random.
        let edge = self.balancer.random_range(0..self.edges.len());
        self.edges[edge].tally.arrivals += 1;
        let id = self.next_id;
        self.next_id += 1;
        let ua = UA_MIX[weighted(&mut self.rng, &self.ua_weights)].0;
        let stream = weighted(&mut self.rng, &self.stream_weights);
        let site = if self.site_weights.is_empty() { 0 } else { weighted(&mut self.rng, &self.site_weights) };
        let class = plugin_p2p::classify::classify(ua);
        let group = (class.browser != "UNKNOWN").then(|| (stream, class.browser.clone()));
        let relays = self.rng.random::<f64>() < self.config.relaying_share;
        let t = self.t();
        let viewer = Viewer {
            edge,
            group,
            host_eligible: class.host_eligible,
            relays,
            site,
            feed: Feed::Nothing,
            unfed_since: t,
            generation: 0,
            matched: false,
            moves: 0,
            moving: false,
            source: None,
            home: id as usize,
            symmetric: false,
            stun: false,
        };
        let viewer = self.place(viewer);
        let remote = self.remote_of(&viewer, id, site);
        self.viewers.insert(id, viewer);
        let watch_s = if self.config.exponential {
            exponential(&mut self.rng, self.mean_watch_s)
        } else {
            // Log-normal, sigma 1 (Box-Muller).
            let (u1, u2): (f64, f64) = (1.0 - self.rng.random::<f64>(), self.rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            self.config.median_watch_s * z.exp()
        };
        self.at(t + (watch_s * 1000.0) as u64, Event::Leave(id));
        // The project's player says its relay uses STUN.
        let query = if self.config.networks.is_some() && self.viewers[&id].stun { "p2p_stun=1" } else { "" };
        let info = SessionInfo::new(id, SessionKind::Play, "default", "app", &format!("s{stream}"), ua, &remote, query);
        self.hook(edge, |p| p.session_opened(&info));
        self.at(t + OPEN_TO_REQUEST_MS, Event::RequestOffer(id));
    }

    /// With the network model: `v`'s home (an existing one, or a new one) and player.
    fn place(&mut self, mut v: Viewer) -> Viewer {
        let Some(model) = self.config.networks else { return v };
        let rng = &mut self.net_rng;
        let joins = !self.recent_homes.is_empty() && rng.random::<f64>() < model.same_home_share;
        (v.home, v.symmetric) = if joins {
            self.recent_homes[rng.random_range(0..self.recent_homes.len())]
        } else {
            let home = (self.next_home, rng.random::<f64>() < model.symmetric_share);
            self.next_home += 1;
            if self.recent_homes.len() == RECENT_HOMES {
                self.recent_homes.swap_remove(rng.random_range(0..RECENT_HOMES));
            }
            self.recent_homes.push(home);
            home
        };
        v.stun = rng.random::<f64>() < model.stun_share;
        v
    }

    /// The address the plugin sees `v` (session `id`) come from: its home's public address with
    /// the model, else network `site` as 10.x.y.0/24 (everyone at one address without networks).
    fn remote_of(&self, v: &Viewer, id: SessionId, site: usize) -> String {
        match self.config.networks {
            Some(_) => format!("{}:{}", public_address(v.home), 40_000 + id % 20_000),
            None => format!("10.{}.{}.{}:50000", (site >> 8) & 255, site & 255, 1 + id % 250),
        }
    }

    /// Whether the link from `host` to `client` forms (always, without the model).
    fn link_forms(&self, host: SessionId, client: SessionId) -> bool {
        match (self.config.networks, self.viewers.get(&host), self.viewers.get(&client)) {
            (None, ..) => true,
            (Some(_), Some(h), Some(c)) => Viewer::link_forms(h, c),
            _ => false,
        }
    }

    fn request_offer(&mut self, id: SessionId) {
        let Some(edge) = self.edge_of(id) else { return };
        if self.hook(edge, |p| p.offer_requested(id)) == OfferDecision::ServeFromEdge {
            self.edge_offer(id);
        }
    }

    /// The edge answers the player's request: its connection is up after the set-up time.
    fn edge_offer(&mut self, id: SessionId) {
        let t = self.t();
        let Some(v) = self.viewers.get_mut(&id) else { return };
        v.generation += 1;
        v.source = None;
        let generation = v.generation;
        self.at(t + EDGE_SETUP_MS, Event::EdgeUp { id, generation });
    }

    fn edge_up(&mut self, id: SessionId, generation: u64) {
        let Some(edge) = self.viewers.get(&id).filter(|v| v.generation == generation).map(|v| v.edge) else { return };
        self.fed(id, Feed::Edge);
        self.hook(edge, |p| p.session_playing(id));
    }

    fn peer_up(&mut self, client: SessionId, host: SessionId, generation: u64) {
        // The pair connects only if neither started over since the answer (a `stop` voids it),
        // and the host has the stream (from the edge, or from a peer when it relays further).
        let host_there = self.viewers.get(&host).is_some_and(|h| h.feed != Feed::Nothing);
        if host_there && self.viewers.get(&client).is_some_and(|v| v.generation == generation) {
            self.fed(client, Feed::Peer(host));
            if self.config.networks.is_some() && self.viewers[&client].stun {
                self.deliver(client, &link_state(client, host, "connected"));
            }
        }
    }

    /// `id` is now fed by `feed`; records how long it went without.
    fn fed(&mut self, id: SessionId, feed: Feed) {
        let t = self.t();
        let v = self.viewers.get_mut(&id).expect("checked by the caller");
        let tally = &mut self.edges[v.edge].tally;
        if v.feed == Feed::Nothing {
            let waited = t - v.unfed_since;
            tally.unfed_max_ms = tally.unfed_max_ms.max(waited);
            if waited > UNFED_LIMIT_MS {
                tally.unfed_past_deadline += 1;
            }
            if std::mem::take(&mut v.moving) {
                tally.move_gaps.push(waited);
            } else {
                tally.unfed_waits.push(waited);
            }
        }
        v.feed = feed;
    }

    /// A message from the plugin reaches a player, who answers as OvenPlayer does.
    fn message_to_player(&mut self, id: SessionId, json: &str) {
        let Some(v) = self.viewers.get(&id) else { return };
        let (edge, relays, feed, generation) = (v.edge, v.relays, v.feed, v.generation);
        let m: Value = serde_json::from_str(json).expect("the plugin sends JSON");
        let peer = m["peer_id"].as_u64().unwrap_or(0) as SessionId;
        if let Some(theirs) = self.edge_of(peer) {
            assert_eq!(theirs, edge, "session {id} of edge {edge} was paired with {peer} of edge {theirs}");
        }
        let t = self.t();
        match m["command"].as_str().unwrap_or("") {
            "request_offer_p2p" => {
                if !relays {
                    return;
                }
                let offer = json!({"command": "offer_p2p", "id": id, "peer_id": peer, "sdp": {"type": "offer", "sdp": "v=0"}, "candidates": []});
                self.at(t + HOST_OFFER_MS, Event::Deliver(id, offer.to_string()));
                self.trickle(id, peer, t + HOST_OFFER_MS, true);
            }
            "offer" if peer != 0 => {
                let v = self.viewers.get_mut(&id).expect("checked");
                v.matched = true;
                v.source = Some(peer);
                let reports = self.config.networks.is_some() && self.viewers[&id].stun;
                let mut answer = json!({"command": "answer", "id": id, "peer_id": peer, "sdp": {"type": "answer", "sdp": "v=0"}});
                if reports {
                    answer["link_reports"] = true.into();
                }
                self.at(t + CLIENT_ANSWER_MS, Event::Deliver(id, answer.to_string()));
                self.trickle(id, peer, t + CLIENT_ANSWER_MS, false);
                if self.link_forms(peer, id) {
                    self.at(t + CLIENT_ANSWER_MS + P2P_SETUP_MS, Event::PeerUp { client: id, host: peer, generation });
                } else if reports {
                    self.at(t + CLIENT_ANSWER_MS + ICE_FAIL_MS, Event::LinkFailed { client: id, host: peer, generation });
                }
                // Else OvenPlayer: its connection never comes up and it says nothing.
            }
            // OvenPlayer: `stop` naming the peer of its main connection (0 for the edge) closes
            // that connection and asks again; naming anyone else closes that client's connection.
            "stop" if peer == 0 && feed == Feed::Edge => {
                let v = self.viewers.get_mut(&id).expect("checked");
                v.feed = Feed::Nothing;
                v.unfed_since = t;
                v.generation += 1;
                v.moves += 1;
                v.moving = true;
                let tally = &mut self.edges[edge].tally;
                tally.moves += 1;
                tally.max_moves = tally.max_moves.max(v.moves);
                self.at(t + STOP_TO_REQUEST_MS, Event::RequestOffer(id));
            }
            // To a client (fed by that host, or still connecting to it): the host is gone. Naming
            // one of its own clients (a relay's), that client's connection closes: nothing here.
            "stop" if peer != 0 && self.viewers[&id].source == Some(peer) => {
                let v = self.viewers.get_mut(&id).expect("checked");
                if feed == Feed::Peer(peer) {
                    v.feed = Feed::Nothing;
                    v.unfed_since = t;
                }
                v.source = None;
                v.generation += 1;
                self.at(t + STOP_TO_REQUEST_MS, Event::RequestOffer(id));
            }
            _ => {}
        }
    }

    /// `id` trickles its candidates for its partner `peer` after its offer or answer (sent at
    /// `sent`), as players do: with the network model its LAN address, and with STUN its home's
    /// public one; without it (every link forms) one public address. A host sends
    /// `candidate_p2p`, a client `candidate`.
    fn trickle(&mut self, id: SessionId, peer: SessionId, sent: u64, as_host: bool) {
        let Some(v) = self.viewers.get(&id) else { return };
        let command = if as_host { "candidate_p2p" } else { "candidate" };
        let message = |candidate: &str| json!({"command": command, "id": id, "peer_id": peer, "candidates": [{"candidate": candidate, "sdpMLineIndex": 0}]}).to_string();
        let (first, second) = match self.config.networks {
            None => (format!("candidate:1 1 udp 2122260223 {} 50000 typ host", public_address(id as usize)), None),
            Some(_) => (
                format!("candidate:1 1 udp 2122260223 10.0.{}.{} 50000 typ host", (id >> 8) & 255, id & 255),
                v.stun.then(|| format!("candidate:2 1 udp 1686052607 {} 40000 typ srflx raddr 10.0.0.1 rport 50000", public_address(v.home))),
            ),
        };
        self.at(sent + LAN_CANDIDATE_MS, Event::Deliver(id, message(&first)));
        if let Some(srflx) = second {
            self.at(sent + SRFLX_CANDIDATE_MS, Event::Deliver(id, message(&srflx)));
        }
    }

    fn deliver(&mut self, id: SessionId, json: &str) {
        if let Some(edge) = self.edge_of(id) {
            self.hook(edge, |p| p.message_received(id, json).map(drop));
        }
    }

    fn leave(&mut self, id: SessionId, reason: CloseReason) {
        let Some(v) = self.viewers.remove(&id) else { return };
        self.reported.remove(&id);
        self.hook(v.edge, |p| p.session_closed(id, reason));
    }

    /// Every edge's host peers.
    fn hosts(&self) -> Vec<SessionId> {
        let mut hosts: Vec<SessionId> =
            self.viewers.iter().filter(|(_, v)| v.host_eligible && v.feed == Feed::Edge).map(|(&id, _)| id).collect();
        hosts.sort_unstable();
        hosts
    }

    /// Samples every edge, and the cluster: the cluster's optimum is over one pool per stream
    /// and browser kind spanning every edge, each edge's over its own viewers.
    fn sample(&mut self) {
        let t_s = self.t() / 1000;
        let k = usize::from(self.config.k);
        let mut edges = vec![Sample { t_s, ..Sample::default() }; self.edges.len()];
        // Per edge and group: [free eligible, free not eligible, once-matched eligible,
        // once-matched not eligible] (by the rules, once-matched viewers who cannot host can only
        // be served by the edge; the unrestricted optimum ignores that rule).
        // With the network model, viewers who cannot reach other homes (no STUN, or a symmetric
        // router) pool with their own home only: a feasible assignment, so a lower bound of the
        // model's optimum (exact when no home holds both kinds).
        let mut groups: HashMap<(usize, PoolOf<'_>), [usize; 4]> = HashMap::new();
        let mut fed_by: HashMap<SessionId, usize> = HashMap::new();
        for (id, v) in &self.viewers {
            let s = &mut edges[v.edge];
            s.viewers += 1;
            let reported = self.reported.get(id).filter(|d| d.connected).map(|d| d.upstream);
            s.misreported += usize::from(reported != if let Feed::Peer(h) = v.feed { Some(h) } else { None });
            match v.feed {
                Feed::Peer(h) => match self.viewers.get(&h) {
                    None => s.stranded += 1,
                    Some(host) => {
                        s.from_peers += 1;
                        let local = if self.config.networks.is_some() { host.home == v.home } else { host.site == v.site };
                        s.local_pairs += usize::from(local);
                        *fed_by.entry(h).or_default() += 1;
                    }
                },
                Feed::Nothing => s.unfed += 1,
                Feed::Edge => s.passed_over += (v.group.is_some() && !v.matched && !v.host_eligible) as usize,
            }
            if let Some(g) = &v.group {
                let home = (self.config.networks.is_some() && !v.open()).then_some(v.home);
                let counts = groups.entry((v.edge, (g, home))).or_default();
                let blocked = v.matched && !matches!(v.feed, Feed::Peer(_));
                // A player that cannot relay feeds nobody as a host: the optimum makes it a client.
                match (blocked, v.host_eligible && v.relays) {
                    (false, true) => counts[0] += 1,
                    (false, false) => counts[1] += 1,
                    (true, true) => counts[2] += 1,
                    (true, false) => counts[3] += 1,
                }
            }
        }
        for (host, clients) in fed_by {
            let s = &mut edges[self.viewers[&host].edge];
            s.over_capacity = s.over_capacity.max(clients.saturating_sub(k));
        }
        let optimum = |[free_e, free_n, blocked_e, _]: [usize; 4]| optimum_clients(free_e, free_n, blocked_e, k);
        let unrestricted = |[free_e, free_n, blocked_e, blocked_n]: [usize; 4]| optimum_clients(free_e + blocked_e, free_n + blocked_n, 0, k);
        let depth = self.config.max_depth.max(1);
        let deep = |[free_e, free_n, blocked_e, _]: [usize; 4]| optimum_clients_at_depth(free_e, free_n, blocked_e, k, depth);
        let unrestricted_deep =
            |[free_e, free_n, blocked_e, blocked_n]: [usize; 4]| optimum_clients_at_depth(free_e + blocked_e, free_n + blocked_n, 0, k, depth);
        let mut pools: HashMap<PoolOf<'_>, [usize; 4]> = HashMap::new();
        for ((edge, pool_of), counts) in groups {
            edges[edge].optimum += optimum(counts);
            edges[edge].optimum_unrestricted += unrestricted(counts);
            edges[edge].optimum_deep += deep(counts);
            edges[edge].optimum_unrestricted_deep += unrestricted_deep(counts);
            let pool = pools.entry(pool_of).or_default();
            for (total, n) in pool.iter_mut().zip(counts) {
                *total += n;
            }
        }
        let mut cluster = Sample {
            t_s,
            optimum: pools.values().map(|&c| optimum(c)).sum(),
            optimum_unrestricted: pools.values().map(|&c| unrestricted(c)).sum(),
            optimum_deep: pools.values().map(|&c| deep(c)).sum(),
            optimum_unrestricted_deep: pools.values().map(|&c| unrestricted_deep(c)).sum(),
            ..Sample::default()
        };
        for (edge, mut s) in self.edges.iter_mut().zip(edges) {
            s.optimum_edge_pools = s.optimum;
            s.optimum_unrestricted_edge_pools = s.optimum_unrestricted;
            cluster.add(&s);
            edge.samples.push(s);
        }
        self.samples.push(cluster);
    }

    /// The cluster's summary: offload against the cluster-wide optimum.
    pub fn summary(&self) -> Summary {
        let mut tally = Tally::default();
        for edge in &self.edges {
            tally.add(&Tally { errors: edge.host.errors(), ..edge.tally.clone() });
        }
        self.summarize(&self.samples, &tally)
    }

    /// Each edge's summary: its offload against the optimum of its own viewers.
    pub fn edge_summaries(&self) -> Vec<Summary> {
        self.edges.iter().map(|edge| self.summarize(&edge.samples, &Tally { errors: edge.host.errors(), ..edge.tally.clone() })).collect()
    }

    /// Steady state: the second half of the run (the population has grown to its target).
    fn summarize(&self, samples: &[Sample], tally: &Tally) -> Summary {
        let steady: Vec<&Sample> = samples.iter().filter(|s| s.t_s * 2 >= self.config.duration_s).collect();
        let sum = |f: fn(&Sample) -> usize| steady.iter().map(|s| f(s)).sum::<usize>() as f64;
        let (viewers, peers, optimum) = (sum(|s| s.viewers), sum(|s| s.from_peers), sum(|s| s.optimum));
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let of_optimum_min = steady.iter().filter(|s| s.optimum > 0).map(|s| s.from_peers as f64 / s.optimum as f64).fold(1.0, f64::min);
        let of_optimum_deep_min =
            steady.iter().filter(|s| s.optimum_deep > 0).map(|s| s.from_peers as f64 / s.optimum_deep as f64).fold(1.0, f64::min);
        let viewer_ms: u128 = samples.iter().map(|s| s.viewers as u128 * u128::from(self.config.sample_s * 1000)).sum();
        let mut gaps = tally.move_gaps.clone();
        gaps.sort_unstable();
        let mut waits = tally.unfed_waits.clone();
        waits.sort_unstable();
        let at = |q: usize| waits.get((waits.len() * q / 100).min(waits.len().saturating_sub(1))).copied().unwrap_or(0);
        Summary {
            mean_present: ratio(viewers, steady.len() as f64),
            offload: ratio(peers, viewers),
            optimum: ratio(optimum, viewers),
            of_optimum: ratio(peers, optimum),
            of_optimum_min,
            optimum_unrestricted: ratio(sum(|s| s.optimum_unrestricted), viewers),
            of_unrestricted: ratio(peers, sum(|s| s.optimum_unrestricted)),
            optimum_deep: ratio(sum(|s| s.optimum_deep), viewers),
            of_optimum_deep: ratio(peers, sum(|s| s.optimum_deep)),
            of_optimum_deep_min,
            optimum_unrestricted_deep: ratio(sum(|s| s.optimum_unrestricted_deep), viewers),
            of_unrestricted_deep: ratio(peers, sum(|s| s.optimum_unrestricted_deep)),
            optimum_edge_pools: ratio(sum(|s| s.optimum_edge_pools), viewers),
            optimum_unrestricted_edge_pools: ratio(sum(|s| s.optimum_unrestricted_edge_pools), viewers),
            passed_over: ratio(sum(|s| s.passed_over), viewers),
            local_pairs: ratio(sum(|s| s.local_pairs), peers),
            stranded_max: samples.iter().map(|s| s.stranded).max().unwrap_or(0),
            unfed_past_deadline: tally.unfed_past_deadline,
            unfed_max_ms: tally.unfed_max_ms,
            unfed_ms: (at(50), at(99), waits.last().copied().unwrap_or(0)),
            over_capacity_max: samples.iter().map(|s| s.over_capacity).max().unwrap_or(0),
            moves: tally.moves,
            moves_per_viewer_hour: ratio(tally.moves as f64, viewer_ms as f64 / 3_600_000.0),
            max_moves_per_viewer: tally.max_moves,
            move_gap_ms: (gaps.get(gaps.len() / 2).copied().unwrap_or(0), gaps.last().copied().unwrap_or(0)),
            host_deaths: tally.host_deaths,
            arrivals: tally.arrivals,
            hook_calls: tally.hook_calls,
            hook_time: tally.hook_time,
            errors: tally.errors,
            misreported: ratio(sum(|s| s.misreported), viewers),
        }
    }
}

/// Home `home`'s public address, one per home, from 11.0.0.1 on (public, not private).
fn public_address(home: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from((11u32 << 24) + 1 + home as u32)
}

/// A player's report on its P2P link.
fn link_state(id: SessionId, peer: SessionId, state: &str) -> String {
    json!({"command": "p2p_link_state", "id": id, "peer_id": peer, "state": state}).to_string()
}

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

/// The most clients one pool can have at depth 1 with k clients per host, given `free_e`
/// viewers who may host or be clients, `free_n` who may only be clients, and `blocked_e` who may
/// only host (matched once already). Blocked ones host first (they cost no client); then `h` of
/// the free eligible: clients = min(free_e - h + free_n, k (blocked_e + h)), best at the balance.
pub fn optimum_clients(free_e: usize, free_n: usize, blocked_e: usize, k: usize) -> usize {
    let clients = |h: usize| (free_e - h + free_n).min(k * (blocked_e + h));
    let candidates = free_e + free_n;
    let balance = candidates.saturating_sub(k * blocked_e).div_ceil(k + 1).min(free_e);
    [balance.saturating_sub(1), balance].into_iter().map(clients).max().unwrap_or(0)
}

/// The most clients one pool can have in trees at most `depth` deep (`<MaxDepth>`: a client at
/// depth j < `depth` may relay to k clients at depth j + 1), with k clients per host or relay,
/// given `free_e` viewers who may host, relay or be clients, `free_n` who may only be clients
/// (they cannot relay), and `blocked_e` who may only feed from the edge (matched once already: by
/// the once-a-client rule never a client again, so never a relay either). At depth 1 it is
/// [`optimum_clients`].
///
/// How: the blocked ones are all roots (edge-fed hosts; a root costs no client). Then, for `h`
/// roots taken from the free eligible, the levels fill greedily, eligible viewers first: with
/// `s_1 = k (blocked_e + h)` places at depth 1 and `e = free_e - h` eligible non-roots left, depth
/// j takes `x_j = min(s_j, e left)` eligible viewers (relays if j < `depth`) and fills its other
/// places with the others (`free_n` first, then, at the last depth, any), and
/// `s_{j+1} = k x_j`. `placed(h)` = everyone placed over the depths. Greedy is optimal for a given
/// `h`: an eligible viewer in a place is never worse than a client-only one (it adds k places
/// below, and the client-only one can take one of them), and a place left empty never helps.
/// Over `h`: once everyone fits (`placed(h) = free_e - h + free_n`, which stays true as `h`
/// grows: a new root frees its place and its subtree can hang under it), more roots only lose
/// clients; before that, a new root never loses one (it frees a place for someone unplaced, or
/// it was unplaced and adds k places). So the optimum is at `h*`, the fewest roots with which
/// everyone fits (found by bisection), or `h* - 1`.
pub fn optimum_clients_at_depth(free_e: usize, free_n: usize, blocked_e: usize, k: usize, depth: u8) -> usize {
    if k == 0 || depth == 0 {
        return 0;
    }
    let placed = |h: usize| {
        let (mut eligible, mut others) = (free_e - h, free_n);
        let mut places = k * (blocked_e + h);
        let mut clients = 0;
        for level in 1..=depth {
            if places == 0 {
                break;
            }
            let relays = places.min(eligible);
            eligible -= relays;
            let rest = (places - relays).min(others);
            others -= rest;
            clients += relays + rest;
            if level == depth {
                break;
            }
            places = k.saturating_mul(relays);
        }
        clients
    };
    let everyone = |h: usize| placed(h) == free_e - h + free_n;
    if everyone(0) {
        return placed(0);
    }
    if !everyone(free_e) {
        return placed(free_e);
    }
    // everyone(lo) is false, everyone(hi) true.
    let (mut lo, mut hi) = (0, free_e);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if everyone(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    placed(hi).max(placed(hi - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every assignment by counts, not only the greedy one: `h` roots from the free eligible, then
    /// at each depth any number of eligible and client-only viewers within its places.
    fn exhaustive(free_e: usize, free_n: usize, blocked_e: usize, k: usize, depth: u8) -> usize {
        fn below(e: usize, n: usize, places: usize, k: usize, levels_left: u8) -> usize {
            if levels_left == 0 {
                return 0;
            }
            let mut best = 0;
            for x in 0..=e.min(places) {
                for y in 0..=n.min(places - x) {
                    best = best.max(x + y + below(e - x, n - y, k * x, k, levels_left - 1));
                }
            }
            best
        }
        (0..=free_e).map(|h| below(free_e - h, free_n, k * (blocked_e + h), k, depth)).max().unwrap_or(0)
    }

    #[test]
    fn the_depth_d_optimum_by_hand() {
        // Seven who may relay, k = 2: one root, two relays, four leaves (the 1/7).
        assert_eq!(optimum_clients_at_depth(7, 0, 0, 2, 2), 6);
        assert_eq!(optimum_clients_at_depth(7, 0, 0, 2, 1), 4, "depth 1: 3 hosts and 4 clients (or 2 and 4)");
        // Three who may relay, two who may not: at depth 2 one root feeds two relays, who feed
        // the two; at depth 1 two hosts feed three.
        assert_eq!(optimum_clients_at_depth(3, 2, 0, 2, 2), 4);
        assert_eq!(optimum_clients_at_depth(3, 2, 0, 2, 1), 3);
        // Never more than k per viewer who may feed: 3 eligible feed 6 whatever the depth.
        assert_eq!(optimum_clients_at_depth(3, 6, 0, 2, 2), 6);
        assert_eq!(optimum_clients_at_depth(3, 6, 0, 2, 3), 6);
        // Depth 3: 1 root, 2 + 4 relays, 8 leaves: 14 of 15.
        assert_eq!(optimum_clients_at_depth(7, 8, 0, 2, 3), 14);
        assert_eq!(optimum_clients_at_depth(7, 8, 0, 2, 2), 12, "depth 2: 2 roots feed 4 relays and 8 leaves (or 3 roots, 4 relays: 14 places for 12)");
        // A blocked viewer only feeds from the edge, and client-only viewers relay to nobody.
        assert_eq!(optimum_clients_at_depth(0, 10, 1, 2, 3), 2);
        assert_eq!(optimum_clients_at_depth(2, 10, 1, 2, 2), 6);
        assert_eq!(optimum_clients_at_depth(5, 5, 0, 0, 2), 0);
        assert_eq!(optimum_clients_at_depth(5, 5, 0, 2, 0), 0);
    }

    #[test]
    fn the_depth_d_optimum_is_the_best_of_every_assignment_and_at_depth_1_the_depth_1_one() {
        for k in 1..=3 {
            for depth in 1..=3u8 {
                for free_e in 0..=6 {
                    for free_n in 0..=7 {
                        for blocked_e in 0..=2 {
                            let got = optimum_clients_at_depth(free_e, free_n, blocked_e, k, depth);
                            assert_eq!(got, exhaustive(free_e, free_n, blocked_e, k, depth), "E {free_e} N {free_n} B {blocked_e} k {k} depth {depth}");
                            if depth == 1 {
                                assert_eq!(got, optimum_clients(free_e, free_n, blocked_e, k), "E {free_e} N {free_n} B {blocked_e} k {k}");
                            }
                        }
                    }
                }
            }
        }
    }
}
