//! Fuzzing the P2P core (issue 10, item 6): random event sequences from many sessions, with the
//! invariants checked after every call into the core.
//!
//! Each case draws a configuration (k, matching, deadlines, P2P on or off) and then events: arrivals
//! with every kind of User-Agent (desktop Chrome/Firefox/Safari/Opera, phones, Linux, Edge, headless,
//! bots, curl, empty, junk, 64 KiB), opted-out and publishing sessions, offer requests, `playing`,
//! closes, honest players answering what the core sent them (hosts offer, clients answer, both
//! trickle candidates, a client told `stop` asks again, an edge-served viewer plays), silent players
//! that never offer or answer, and hostile messages: the four P2P commands addressed to partners,
//! strangers, closed and never-seen ids, 0, self, out-of-range and mistyped ids, with missing, null,
//! mistyped, deeply nested and oversized (up to 256 KiB) fields, other commands and raw junk. Timers
//! are the ones the core asked for, fired in due order on a virtual clock (a few early), plus bogus
//! and already-fired tokens. At the end of a case everyone goes quiet, the clock runs until every
//! deadline has fired, and then everyone leaves.
//!
//! The oracle is a model kept from the core's public outputs alone (who is whose partner, from
//! `request_offer_p2p`, `stop` and `ServeFromEdge`; the stage, from the relayed offer and answer;
//! the `hosts` and `clients` gauges, from `Count`), compared after every call with [`P2pCore::role`]
//! and with [`P2pCore::check_invariants`] (the pool and the deadlines, which only the core sees).
//! A failure is shrunk to a short event sequence and printed with its seed.
//!
//! Short bounded pass (part of `cargo test`, CI): `cargo test -p plugin-p2p --test core_fuzz`.
//! Long run: `P2P_FUZZ_EVENTS=1000000 cargo test -p plugin-p2p --release --test core_fuzz -- --ignored --nocapture`
//! (`P2P_FUZZ_CASES` bounds the cases instead, `P2P_FUZZ_SEED` is the first case's seed).

use plugin_api::{MessageVerdict, OfferDecision, SessionId, SessionKind};
use plugin_p2p::classify::classify;
use plugin_p2p::config::P2pConfig;
use plugin_p2p::core::{Arrival, Output, P2pCore, Role, Stage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

const USER_AGENTS: &[&str] = &[
    // Desktops that may host.
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:140.0) Gecko/20100101 Firefox/140.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36 OPR/122.0.0.0",
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
    // Clients only: Linux, headless, Edge, phones, tablets.
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36 Edg/138.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19041",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/27.0 Chrome/125.0.0.0 Mobile Safari/537.36",
    // Bots, libraries, nothing, junk.
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0",
    "",
    "Mozilla/5.0 (",
    "\u{0}\u{1}\u{7f}",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) 💥 Chrome/∞ Safari/\u{202e}537.36",
];

/// `(vhost, app, stream)`; the configuration excludes `private` and `app/hidden`.
const STREAMS: &[(&str, &str, &str)] = &[
    ("default", "app", "s1"),
    ("default", "app", "s1"),
    ("default", "app", "s1"),
    ("default", "app", "s2"),
    ("default", "app", "hidden"),
    ("default", "private", "s1"),
    ("other", "app", "s1"),
];

const QUERIES: &[&str] = &["", "", "", "", "p2p=0", "p2p=off", "x=1&p2p=no", "p2p=false&y=2", "p2p=1", "p2p=0x", "&&&", "p2p"];

const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
const CANDIDATE: &str = "candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host";

/// One case's settings.
#[derive(Debug, Clone)]
pub struct Setup {
    k: u16,
    greedy: bool,
    enable: bool,
    offer_ms: u64,
    answer_ms: u64,
    penalty_ms: u64,
}

impl Setup {
    fn random(rng: &mut StdRng) -> Self {
        let pick = |rng: &mut StdRng, xs: &[u64]| xs[rng.random_range(0..xs.len())];
        Self {
            k: [0, 1, 1, 2, 2, 2, 2, 3, 4, 16, u16::MAX][rng.random_range(0..11)],
            greedy: rng.random_bool(0.3),
            enable: rng.random_bool(0.95),
            offer_ms: pick(rng, &[0, 1, 100, 4000, 4000]),
            answer_ms: pick(rng, &[0, 1, 200, 4000, 4000]),
            penalty_ms: pick(rng, &[0, 1, 1000, 60_000, 60_000]),
        }
    }

    fn config(&self) -> P2pConfig {
        let xml = format!(
            "<P2P><Enable>{}</Enable><MaxClientPeersPerHostPeer>{}</MaxClientPeersPerHostPeer><OfferTimeoutMs>{}</OfferTimeoutMs><AnswerTimeoutMs>{}</AnswerTimeoutMs><HostPenaltyMs>{}</HostPenaltyMs><Matching>{}</Matching><Exclude>private</Exclude><Exclude>app/hidden</Exclude></P2P>",
            self.enable, self.k, self.offer_ms, self.answer_ms, self.penalty_ms, if self.greedy { "greedy" } else { "balanced" }
        );
        P2pConfig::parse(&xml).expect("the fuzzer's config parses")
    }
}

/// How a player answers what the core sends it (only used to generate events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persona {
    /// Offers when asked, answers offers, trickles candidates, asks again after `stop`.
    Honest,
    /// Plays, but never offers or answers: every deadline it is given passes.
    Silent,
    /// Half the time honest, half the time random and malformed messages.
    Hostile,
}

/// One input to the core. Replayable: an event about a session that is not live is skipped.
#[derive(Clone)]
pub enum Event {
    /// `session_opened` (ids are never reused).
    Open { id: SessionId, ua: String, stream: usize, publish: bool, query: &'static str, persona: Persona },
    /// `offer_requested`.
    RequestOffer(SessionId),
    /// `session_playing`.
    Playing(SessionId),
    /// `session_closed`.
    Close(SessionId),
    /// `message_received` from a session.
    Message(SessionId, String),
    /// The virtual clock moves on by this many ms; the timers due fire in order.
    Advance(u64),
    /// The outstanding timer at this index (mod their number, by token) fires now, early.
    FireEarly(usize),
    /// `timer_fired` with a token that is not outstanding (never given, or fired already).
    FireBogus(u64),
}

fn short(s: &str) -> String {
    if s.len() <= 160 {
        return format!("{s:?}");
    }
    let mut end = 100;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?} ...({} bytes)", &s[..end], s.len())
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Open { id, ua, stream, publish, query, persona } => write!(
                f,
                "Event::Open {{ id: {id}, ua: {}.into(), stream: {stream}, publish: {publish}, query: {query:?}, persona: Persona::{persona:?} }}",
                short(ua)
            ),
            Event::RequestOffer(id) => write!(f, "Event::RequestOffer({id})"),
            Event::Playing(id) => write!(f, "Event::Playing({id})"),
            Event::Close(id) => write!(f, "Event::Close({id})"),
            Event::Message(from, json) => write!(f, "Event::Message({from}, {}.into())", short(json)),
            Event::Advance(ms) => write!(f, "Event::Advance({ms})"),
            Event::FireEarly(i) => write!(f, "Event::FireEarly({i})"),
            Event::FireBogus(t) => write!(f, "Event::FireBogus({t})"),
        }
    }
}

/// A live session as the model sees it.
#[derive(Debug)]
struct Sess {
    /// `vhost/app/stream`.
    stream: String,
    browser: String,
    host_eligible: bool,
    /// Plays, consents, P2P on for its stream.
    p2p: bool,
    persona: Persona,
    /// A host peer: played while a plain P2P viewer that may host, and has not asked again since.
    host: bool,
    /// Was a client once: never one again.
    was_client: bool,
    /// Asked for an offer, the core took it, and neither its host's offer nor the edge's came yet.
    pending: bool,
    /// Sent its host an `answer` before any offer reached it (its own wait, not the core's).
    early_answer: bool,
    /// The core closed it (400); the host will call `session_closed`.
    closing: bool,
    /// Asked for an offer at least once (only used to generate events).
    requested: bool,
}

/// What a message should do, from the model alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Not a P2P command: not the plugin's, no output.
    Unknown,
    /// Malformed, or addressed to a live non-partner: the sender is closed with 400, nothing sent.
    Refuse,
    /// Addressed to a session that is gone: dropped quietly.
    Stale,
    /// Relayed to the sender's partner, once.
    Relay(SessionId),
}

/// Which call the outputs being checked answer.
#[derive(Debug, Clone, Copy)]
enum Ctx {
    Open,
    Request(SessionId),
    Playing,
    Closed(SessionId),
    Message(SessionId, Expect),
    Timer { bogus: bool },
}

/// What the sessions were sent, for the honest players to react to.
#[derive(Debug)]
enum Inbox {
    Msg(Value),
    /// Served by the edge: it will play.
    Edge,
    /// Trickle more candidates to this partner.
    Trickle(SessionId),
}

/// Figures over a run.
#[derive(Debug, Default)]
pub struct Stats {
    cases: u64,
    calls: u64,
    opens: u64,
    requests: u64,
    handled: u64,
    playing: u64,
    closes: u64,
    messages: u64,
    relayed: u64,
    refused: u64,
    stale: u64,
    unknown: u64,
    timers_fired: u64,
    timers_early: u64,
    timers_bogus: u64,
    offers_relayed: u64,
    answers_relayed: u64,
    stops: u64,
    edge_fallbacks: u64,
    penalties: u64,
    early_answers: u64,
    max_live: usize,
    max_pairs: usize,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        macro_rules! sum { ($($f:ident),*) => { $(self.$f += o.$f;)* } }
        sum!(cases, calls, opens, requests, handled, playing, closes, messages, relayed, refused, stale, unknown, timers_fired, timers_early, timers_bogus, offers_relayed, answers_relayed, stops, edge_fallbacks, penalties, early_answers);
        self.max_live = self.max_live.max(o.max_live);
        self.max_pairs = self.max_pairs.max(o.max_pairs);
    }
}

/// The core, the model kept from its outputs, and the virtual clock.
pub struct Harness {
    core: P2pCore,
    config: P2pConfig,
    k: usize,
    now: u64,
    sessions: BTreeMap<SessionId, Sess>,
    ever: BTreeSet<SessionId>,
    closing: BTreeSet<SessionId>,
    /// client -> (host, stage), from the outputs.
    pairs: BTreeMap<SessionId, (SessionId, Stage)>,
    /// Outstanding timers: token -> due.
    timers: BTreeMap<u64, u64>,
    issued: HashSet<u64>,
    max_token: u64,
    gauges: HashMap<&'static str, i64>,
    inbox: VecDeque<(SessionId, Inbox)>,
    stats: Stats,
}

type Check = Result<(), String>;

fn fail<T>(msg: String) -> Result<T, String> {
    Err(msg)
}

impl Harness {
    pub fn new(setup: &Setup) -> Self {
        let config = setup.config();
        Self {
            core: P2pCore::new(config.clone()),
            k: usize::from(setup.k),
            config,
            now: 0,
            sessions: BTreeMap::new(),
            ever: BTreeSet::new(),
            closing: BTreeSet::new(),
            pairs: BTreeMap::new(),
            timers: BTreeMap::new(),
            issued: HashSet::new(),
            max_token: 0,
            gauges: HashMap::new(),
            inbox: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    fn active(&self, id: SessionId) -> bool {
        self.sessions.get(&id).is_some_and(|s| !s.closing)
    }

    /// One call into the core, panics caught; its outputs.
    fn call<T>(&mut self, what: &str, f: impl FnOnce(&mut P2pCore) -> T) -> Result<(T, Vec<Output>), String> {
        self.stats.calls += 1;
        let core = &mut self.core;
        catch_unwind(AssertUnwindSafe(|| {
            let t = f(core);
            let outputs = core.drain_outputs().collect();
            (t, outputs)
        }))
        .map_err(|p| {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            format!("panic: in {what}: {}", msg.unwrap_or_default())
        })
    }

    /// Applies one event and checks everything after each call it makes.
    pub fn apply(&mut self, event: &Event) -> Check {
        match event {
            Event::Open { id, ua, stream, publish, query, persona } => {
                if !self.ever.insert(*id) {
                    return Ok(());
                }
                self.stats.opens += 1;
                let (vhost, app, name) = STREAMS[*stream % STREAMS.len()];
                let full = format!("{vhost}/{app}/{name}");
                let kind = if *publish { SessionKind::Publish } else { SessionKind::Play };
                let arrival = Arrival { id: *id, kind, stream: &full, app, stream_name: name, user_agent: ua, query };
                let ((), outputs) = self.call("session_opened", |c| c.session_opened(arrival))?;
                let class = classify(ua);
                let consents = !query.split('&').any(|kv| matches!(kv, "p2p=0" | "p2p=off" | "p2p=false" | "p2p=no"));
                self.sessions.insert(
                    *id,
                    Sess {
                        stream: full,
                        browser: class.browser,
                        host_eligible: class.host_eligible,
                        p2p: !publish && consents && self.config.applies_to(app, name),
                        persona: *persona,
                        host: false,
                        was_client: false,
                        pending: false,
                        early_answer: false,
                        closing: false,
                        requested: false,
                    },
                );
                self.stats.max_live = self.stats.max_live.max(self.sessions.len());
                self.outputs(Ctx::Open, outputs)?;
            }
            Event::RequestOffer(id) => {
                let id = *id;
                if !self.active(id) {
                    return Ok(());
                }
                self.stats.requests += 1;
                let s = self.sessions.get_mut(&id).expect("active");
                s.host = false;
                s.pending = false;
                s.early_answer = false;
                s.requested = true;
                let (decision, outputs) = self.call("offer_requested", |c| c.offer_requested(id))?;
                let new_host = self.outputs(Ctx::Request(id), outputs)?;
                match (decision, new_host) {
                    (OfferDecision::Handled, Some(_)) => {
                        self.stats.handled += 1;
                        self.sessions.get_mut(&id).expect("live").pending = true;
                    }
                    (OfferDecision::ServeFromEdge, None) => self.inbox.push_back((id, Inbox::Edge)),
                    (d, h) => return fail(format!("decision: offer_requested({id}) returned {d:?} with a new host {h:?}")),
                }
            }
            Event::Playing(id) => {
                let id = *id;
                if !self.active(id) {
                    return Ok(());
                }
                self.stats.playing += 1;
                let ((), outputs) = self.call("session_playing", |c| c.session_playing(id))?;
                let is_viewer = !self.pairs.contains_key(&id) && !self.sessions[&id].host;
                let s = self.sessions.get_mut(&id).expect("active");
                if is_viewer && s.p2p && s.host_eligible {
                    s.host = true;
                }
                self.outputs(Ctx::Playing, outputs)?;
            }
            Event::Close(id) => {
                let id = *id;
                if self.sessions.remove(&id).is_none() {
                    return Ok(());
                }
                self.stats.closes += 1;
                self.closing.remove(&id);
                let ((), outputs) = self.call("session_closed", |c| c.session_closed(id))?;
                self.outputs(Ctx::Closed(id), outputs)?;
                if let Some(pair) = self.pairs.iter().find(|(&c, &(h, _))| c == id || h == id) {
                    return fail(format!("partners not told: {id} closed, the pair {pair:?} was not ended by stop or the edge"));
                }
                if let Some(role) = self.core.role(id) {
                    return fail(format!("leak: {id} closed, the core still has it as {role:?}"));
                }
            }
            Event::Message(from, json) => {
                let from = *from;
                if !self.active(from) {
                    return Ok(());
                }
                self.stats.messages += 1;
                let input: Option<Value> = serde_json::from_str(json).ok();
                let expect = self.expect(from, input.as_ref());
                match expect {
                    Expect::Unknown => self.stats.unknown += 1,
                    Expect::Refuse => self.stats.refused += 1,
                    Expect::Stale => self.stats.stale += 1,
                    Expect::Relay(_) => self.stats.relayed += 1,
                }
                let (verdict, outputs) = self.call("message_received", |c| c.message_received(from, json))?;
                let sends = outputs.iter().filter(|o| matches!(o, Output::Send(..))).count();
                let closes = outputs.iter().filter(|o| matches!(o, Output::Close(..))).count();
                let others = outputs.iter().filter(|o| !matches!(o, Output::Count(..))).count();
                let ok = match expect {
                    Expect::Unknown => verdict == MessageVerdict::Unknown && outputs.is_empty(),
                    Expect::Refuse => verdict == MessageVerdict::Handled && closes == 1 && sends == 0,
                    Expect::Stale => verdict == MessageVerdict::Handled && others == 0,
                    Expect::Relay(_) => verdict == MessageVerdict::Handled && sends == 1 && closes == 0,
                };
                if !ok {
                    return fail(format!("verdict: message from {from} expected {expect:?}, got {verdict:?} and {outputs:?}"));
                }
                self.relay_check(from, expect, input.as_ref(), &outputs)?;
                self.outputs(Ctx::Message(from, expect), outputs)?;
            }
            Event::Advance(ms) => {
                self.now += ms;
                loop {
                    let due = self.timers.iter().filter(|(_, &due)| due <= self.now).min_by_key(|(&t, &due)| (due, t)).map(|(&t, _)| t);
                    let Some(token) = due else { break };
                    self.fire(token, false)?;
                }
            }
            Event::FireEarly(i) => {
                if self.timers.is_empty() {
                    return Ok(());
                }
                let token = *self.timers.keys().nth(i % self.timers.len()).expect("in range");
                self.stats.timers_early += 1;
                self.fire(token, false)?;
            }
            Event::FireBogus(token) => {
                if self.timers.contains_key(token) {
                    return Ok(());
                }
                self.stats.timers_bogus += 1;
                self.fire(*token, true)?;
            }
        }
        Ok(())
    }

    fn fire(&mut self, token: u64, bogus: bool) -> Check {
        self.timers.remove(&token);
        self.stats.timers_fired += 1;
        let ((), outputs) = self.call("timer_fired", |c| c.timer_fired(token))?;
        self.outputs(Ctx::Timer { bogus }, outputs).map(drop)
    }

    /// The expected fate of a message, from the model (an independent reading of PROTOCOL.md's rules).
    fn expect(&self, from: SessionId, input: Option<&Value>) -> Expect {
        let Some(v) = input else { return Expect::Refuse };
        let Some(command) = v.get("command").and_then(Value::as_str) else { return Expect::Unknown };
        let (host_sends, field) = match command {
            "offer_p2p" => (true, "sdp"),
            "candidate_p2p" => (true, "candidates"),
            "answer" => (false, "sdp"),
            "candidate" => (false, "candidates"),
            _ => return Expect::Unknown,
        };
        let peer = v.get("peer_id").and_then(Value::as_u64).filter(|&p| p != 0 && p <= u64::from(u32::MAX));
        let Some(peer) = peer.map(|p| p as SessionId) else { return Expect::Refuse };
        if v.get(field).is_none_or(Value::is_null) {
            return Expect::Refuse;
        }
        let (host, client) = if host_sends { (from, peer) } else { (peer, from) };
        if let Some(&(_, stage)) = self.pairs.get(&client).filter(|&&(h, _)| h == host) {
            // An answer before the host's offer reached the client is refused (PROTOCOL.md's flow:
            // the offer comes first); it would otherwise disarm the offer deadline.
            if command == "answer" && stage == Stage::AwaitingOffer {
                return Expect::Refuse;
            }
            Expect::Relay(peer)
        } else if self.sessions.contains_key(&peer) {
            Expect::Refuse
        } else {
            Expect::Stale
        }
    }

    /// A relayed message is exactly what PROTOCOL.md says, with the sender's fields untouched.
    fn relay_check(&self, from: SessionId, expect: Expect, input: Option<&Value>, outputs: &[Output]) -> Check {
        let (Expect::Relay(to), Some(v)) = (expect, input) else { return Ok(()) };
        let Some(Output::Send(_, text)) = outputs.iter().find(|o| matches!(o, Output::Send(..))) else { return Ok(()) };
        let got: Value = serde_json::from_str(text).map_err(|e| format!("relay: not JSON ({e}): {}", short(text)))?;
        let field = |name: &str| v.get(name).cloned().unwrap_or(Value::Null);
        let want = match v["command"].as_str() {
            Some("offer_p2p") => {
                let mut m = json!({"command": "offer", "id": to, "peer_id": from, "sdp": field("sdp")});
                if let Some(c) = v.get("candidates").filter(|c| !c.is_null()) {
                    m["candidates"] = c.clone();
                }
                m
            }
            Some("candidate_p2p") => json!({"command": "candidate", "id": to, "peer_id": from, "candidates": field("candidates")}),
            Some("answer") => json!({"command": "answer_p2p", "id": to, "peer_id": from, "sdp": field("sdp")}),
            _ => json!({"command": "candidate_p2p", "id": to, "peer_id": from, "candidates": field("candidates")}),
        };
        if got != want {
            return fail(format!("relay: {from} sent {}, the core relayed {}", short(&v.to_string()), short(text)));
        }
        Ok(())
    }

    /// Checks a call's outputs one by one, keeping the model; returns the new host of a request.
    fn outputs(&mut self, ctx: Ctx, outputs: Vec<Output>) -> Result<Option<SessionId>, String> {
        let mut new_host = None;
        // Pairs ended in this call (host, client), and who was told with `stop`.
        let mut ended: Vec<(SessionId, SessionId)> = Vec::new();
        let mut told: Vec<(SessionId, SessionId)> = Vec::new();
        for output in outputs {
            if matches!(ctx, Ctx::Open | Ctx::Playing | Ctx::Timer { bogus: true }) && !matches!(output, Output::Count(..)) {
                return fail(format!("unexpected output: {output:?} in {ctx:?}"));
            }
            match output {
                Output::Send(to, text) => {
                    if !self.sessions.contains_key(&to) {
                        return fail(format!("send to a dead session: {to} ({ctx:?}): {}", short(&text)));
                    }
                    let v: Value = serde_json::from_str(&text).map_err(|e| format!("send: not JSON ({e}): {}", short(&text)))?;
                    let command = v.get("command").and_then(Value::as_str).unwrap_or_default().to_string();
                    let peer = v.get("peer_id").and_then(Value::as_u64).and_then(|p| SessionId::try_from(p).ok());
                    let (Some(peer), true) = (peer, v.get("id").and_then(Value::as_u64) == Some(u64::from(to))) else {
                        return fail(format!("send: bad id or peer_id to {to}: {}", short(&text)));
                    };
                    if command == "stop" {
                        if told.contains(&(to, peer)) {
                            return fail(format!("stop: {to} told twice that {peer} is gone ({ctx:?})"));
                        }
                        told.push((to, peer));
                    }
                    self.sent(ctx, to, peer, &command, &mut new_host, &mut ended)?;
                    self.inbox.push_back((to, Inbox::Msg(v)));
                }
                Output::ServeFromEdge(c) => {
                    if !self.sessions.contains_key(&c) {
                        return fail(format!("send to a dead session: edge offer to {c} ({ctx:?})"));
                    }
                    let Some((h, stage)) = self.pairs.remove(&c) else {
                        return fail(format!("edge: ServeFromEdge({c}) ({ctx:?}), but it is nobody's client"));
                    };
                    let ok = match ctx {
                        Ctx::Request(x) | Ctx::Closed(x) => h == x && stage == Stage::AwaitingOffer,
                        Ctx::Timer { bogus } => !bogus && stage != Stage::Answered,
                        _ => false,
                    };
                    if !ok {
                        return fail(format!("edge: ServeFromEdge({c}), client of {h} at {stage:?}, in {ctx:?}"));
                    }
                    ended.push((h, c));
                    self.stats.edge_fallbacks += 1;
                    let s = self.sessions.get_mut(&c).expect("live");
                    s.was_client = true;
                    s.pending = false;
                    self.inbox.push_back((c, Inbox::Edge));
                }
                Output::Close(id, code, reason) => {
                    let ok = matches!(ctx, Ctx::Message(from, Expect::Refuse) if from == id) && code == 400;
                    if !ok || !self.sessions.contains_key(&id) {
                        return fail(format!("close: Close({id}, {code}, {reason:?}) in {ctx:?}"));
                    }
                    self.sessions.get_mut(&id).expect("live").closing = true;
                    self.closing.insert(id);
                }
                Output::SetTimer(token, ms) => {
                    let c = &self.config;
                    let ok = match ctx {
                        Ctx::Request(_) => ms == c.offer_timeout_ms,
                        Ctx::Message(..) => ms == c.answer_timeout_ms,
                        Ctx::Timer { bogus } => !bogus && ms == c.host_penalty_ms,
                        _ => false,
                    };
                    if !ok || !self.issued.insert(token) {
                        return fail(format!("timer: SetTimer({token}, {ms}) in {ctx:?} (reused token or wrong deadline)"));
                    }
                    self.max_token = self.max_token.max(token);
                    self.timers.insert(token, self.now + ms);
                }
                Output::Count(name, delta) => {
                    *self.gauges.entry(name).or_default() += delta;
                    if name == "host_penalties" {
                        self.stats.penalties += 1;
                    }
                }
            }
        }
        self.check()?;
        Ok(new_host)
    }

    /// One `Send` from the core, against the model.
    fn sent(&mut self, ctx: Ctx, to: SessionId, peer: SessionId, command: &str, new_host: &mut Option<SessionId>, ended: &mut Vec<(SessionId, SessionId)>) -> Check {
        match (command, ctx) {
            ("request_offer_p2p", Ctx::Request(c)) if peer == c && new_host.is_none() => {
                let (h, cl) = (&self.sessions[&to], &self.sessions[&c]);
                let mut why = Vec::new();
                if to == c || self.pairs.contains_key(&c) || self.pairs.contains_key(&to) {
                    why.push("not two plain viewers");
                }
                if !(h.p2p && h.host_eligible && h.host) {
                    why.push("the host is not a playing host peer");
                }
                if !cl.p2p || cl.was_client {
                    why.push("the client is not a P2P viewer that was never a client");
                }
                if h.stream != cl.stream || h.browser != cl.browser {
                    why.push("another stream or browser kind");
                }
                if self.pairs.values().filter(|&&(x, _)| x == to).count() >= self.k {
                    why.push("the host is full");
                }
                if !why.is_empty() {
                    return fail(format!("matching: {c} made a client of {to}: {}", why.join(", ")));
                }
                self.pairs.insert(c, (to, Stage::AwaitingOffer));
                self.stats.max_pairs = self.stats.max_pairs.max(self.pairs.len());
                *new_host = Some(to);
            }
            ("offer" | "candidate", Ctx::Message(from, Expect::Relay(t))) if from == peer && t == to => {
                let Some((_, stage)) = self.pairs.get_mut(&to).filter(|(h, _)| *h == from) else {
                    return fail(format!("non-partner relay: {command} from {from} to {to}"));
                };
                if command == "offer" {
                    self.stats.offers_relayed += 1;
                    if *stage == Stage::AwaitingOffer {
                        *stage = Stage::AwaitingAnswer;
                    }
                    self.sessions.get_mut(&to).expect("live").pending = false;
                }
            }
            ("answer_p2p" | "candidate_p2p", Ctx::Message(from, Expect::Relay(t))) if from == peer && t == to => {
                let Some((_, stage)) = self.pairs.get_mut(&from).filter(|(h, _)| *h == to) else {
                    return fail(format!("non-partner relay: {command} from {from} to {to}"));
                };
                if command == "answer_p2p" {
                    self.stats.answers_relayed += 1;
                    if *stage == Stage::AwaitingOffer {
                        self.stats.early_answers += 1;
                        self.sessions.get_mut(&from).expect("live").early_answer = true;
                    }
                    *stage = Stage::Answered;
                }
            }
            ("stop", Ctx::Request(_) | Ctx::Closed(_) | Ctx::Timer { bogus: false }) => {
                if let Ctx::Request(x) | Ctx::Closed(x) = ctx {
                    if peer != x {
                        return fail(format!("stop: {to} told {peer} is gone, in {ctx:?}"));
                    }
                }
                let client = if self.pairs.get(&to).is_some_and(|&(h, _)| h == peer) {
                    to
                } else if self.pairs.get(&peer).is_some_and(|&(h, _)| h == to) {
                    peer
                } else if ended.contains(&(to, peer)) || ended.contains(&(peer, to)) {
                    // The pair just ended in this call (the edge took the client): the other side is told.
                    self.stats.stops += 1;
                    return Ok(());
                } else {
                    return fail(format!("non-partner stop: {to} told its partner {peer} is gone ({ctx:?}), they were not partners"));
                };
                let (host, _) = self.pairs.remove(&client).expect("found");
                ended.push((host, client));
                self.stats.stops += 1;
                if let Some(s) = self.sessions.get_mut(&client) {
                    s.was_client = true;
                }
            }
            _ => return fail(format!("unexpected send: {command} to {to} (peer {peer}) in {ctx:?}")),
        }
        Ok(())
    }

    /// The model against the core's roles and invariants, and the gauges.
    fn check(&self) -> Check {
        self.core.check_invariants().map_err(|e| format!("invariant: {e}"))?;
        let mut load: HashMap<SessionId, Vec<SessionId>> = HashMap::new();
        for (&c, &(h, _)) in &self.pairs {
            if !self.sessions.contains_key(&c) || !self.sessions.contains_key(&h) {
                return fail(format!("dead partner: {c} is a client of {h}, one of them is gone"));
            }
            load.entry(h).or_default().push(c);
        }
        for (&id, s) in &self.sessions {
            let role = self.core.role(id);
            let ok = match (role, self.pairs.get(&id)) {
                (Some(Role::Client { host, stage }), Some(&(h, st))) => *host == h && *stage == st,
                (Some(Role::Host { clients }), None) => {
                    let mut mine = load.get(&id).cloned().unwrap_or_default();
                    let mut theirs = clients.clone();
                    mine.sort_unstable();
                    theirs.sort_unstable();
                    s.host && mine == theirs && theirs.len() <= self.k
                }
                (Some(Role::Viewer), None) => !s.host && !load.contains_key(&id),
                _ => false,
            };
            if !ok {
                return fail(format!("role: {id} is {role:?} to the core; the model says host {}, client of {:?}, clients {:?}", s.host, self.pairs.get(&id), load.get(&id)));
            }
        }
        let hosts = self.sessions.values().filter(|s| s.host).count() as i64;
        let gauge = |name| self.gauges.get(name).copied().unwrap_or(0);
        if gauge("hosts") != hosts || gauge("clients") != self.pairs.len() as i64 {
            return fail(format!("gauges: hosts {} clients {}, actually {hosts} and {}", gauge("hosts"), gauge("clients"), self.pairs.len()));
        }
        Ok(())
    }

    /// The end of a case: the host closes what the core asked it to, everyone goes quiet and the
    /// clock runs until no deadline is left; then nobody may still wait for an offer, no pair may be
    /// stuck before its answer; then everyone leaves and nothing is left behind.
    pub fn finish(&mut self) -> Check {
        let closing: Vec<SessionId> = self.closing.iter().copied().collect();
        for id in closing {
            self.apply(&Event::Close(id))?;
        }
        while let Some(due) = self.timers.values().min().copied() {
            self.apply(&Event::Advance(due.saturating_sub(self.now)))?;
        }
        for (&id, s) in &self.sessions {
            if s.pending && !s.early_answer {
                return fail(format!("liveness: {id} asked for an offer; with every deadline fired it has neither its host's offer nor the edge's (role {:?})", self.core.role(id)));
            }
        }
        if let Some((c, (h, stage))) = self.pairs.iter().find(|(_, (_, st))| *st != Stage::Answered) {
            return fail(format!("liveness: {c}, client of {h}, still {stage:?} with every deadline fired"));
        }
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.apply(&Event::Close(id))?;
        }
        if !self.timers.is_empty() || self.gauges.get("hosts").copied().unwrap_or(0) != 0 || self.gauges.get("clients").copied().unwrap_or(0) != 0 {
            return fail(format!("leak: all gone, timers {:?}, gauges {:?}", self.timers, self.gauges));
        }
        Ok(())
    }
}

/// Draws events from the model's state.
struct Gen {
    next_id: SessionId,
    max_live: usize,
    /// The case's audience: most arrivals use one of these User-Agents (indexes into USER_AGENTS)...
    palette: Vec<usize>,
    /// ... and watch this stream (index into STREAMS).
    main_stream: usize,
}

/// Desktop Chrome (hosts) and Chrome on Linux, headless and Android (clients only): one browser kind.
const CHROME_KIND: &[usize] = &[0, 1, 2, 7, 8, 9, 10, 14, 15, 16];

impl Gen {
    fn pick<T: Copy>(rng: &mut StdRng, xs: &[T]) -> Option<T> {
        (!xs.is_empty()).then(|| xs[rng.random_range(0..xs.len())])
    }

    fn next(&mut self, rng: &mut StdRng, h: &mut Harness) -> Event {
        loop {
            if let Some(&id) = h.closing.iter().next() {
                if rng.random_bool(0.5) {
                    return Event::Close(id);
                }
            }
            let active: Vec<SessionId> = h.sessions.iter().filter(|(_, s)| !s.closing).map(|(&id, _)| id).collect();
            match rng.random_range(0..100) {
                0..12 if active.len() < self.max_live => return self.open(rng),
                12..22 => {
                    let fresh: Vec<SessionId> = active.iter().copied().filter(|id| !h.sessions[id].requested).collect();
                    let from = if rng.random_bool(0.9) && !fresh.is_empty() { &fresh } else { &active };
                    if let Some(id) = Self::pick(rng, from) {
                        return Event::RequestOffer(id);
                    }
                }
                22..26 => {
                    if let Some(id) = Self::pick(rng, &active) {
                        return Event::Playing(id);
                    }
                }
                26..29 => {
                    if let Some(id) = Self::pick(rng, &active) {
                        return Event::Close(id);
                    }
                }
                29..68 | 92..100 => {
                    if let Some(event) = self.react(rng, h) {
                        return event;
                    }
                }
                68..79 => {
                    // Hostile players, and now and then an honest one that errs.
                    let hostile: Vec<SessionId> = active.iter().copied().filter(|id| h.sessions[id].persona == Persona::Hostile).collect();
                    let from = if rng.random_bool(0.95) { &hostile } else { &active };
                    if let Some(from) = Self::pick(rng, from) {
                        return Event::Message(from, self.hostile(rng, h, from));
                    }
                }
                79..89 => {
                    let c = &h.config;
                    let ms = [0, 1, 1, c.offer_timeout_ms, c.answer_timeout_ms, c.host_penalty_ms, c.offer_timeout_ms / 2, 10_000, rng.random_range(0..500), rng.random_range(0..500)];
                    return Event::Advance(ms[rng.random_range(0..ms.len())]);
                }
                89 | 90 if !h.timers.is_empty() => return Event::FireEarly(rng.random_range(0..1 << 16)),
                91 if rng.random_bool(0.3) => {
                    let token = match rng.random_range(0..5) {
                        0 => 0,
                        1 => u64::MAX,
                        2 => h.max_token + rng.random_range(1..4),
                        3 => rng.random(),
                        _ => rng.random_range(0..=h.max_token),
                    };
                    return Event::FireBogus(token);
                }
                _ => {}
            }
        }
    }

    fn open(&mut self, rng: &mut StdRng) -> Event {
        let id = self.next_id;
        self.next_id += if rng.random_bool(0.2) { rng.random_range(2..5) } else { 1 };
        let ua = match rng.random_range(0..100) {
            0..75 => USER_AGENTS[self.palette[rng.random_range(0..self.palette.len())]].to_string(),
            75..85 => USER_AGENTS[rng.random_range(0..USER_AGENTS.len())].to_string(),
            85..92 => (0..rng.random_range(0..80)).map(|_| rng.random_range(b' '..=b'~') as char).collect(),
            92..97 => (0..rng.random_range(0..40)).map(|_| char::from_u32(rng.random_range(0..0x11000)).unwrap_or('?')).collect(),
            _ => format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36 {}", "A".repeat(rng.random_range(1..65_536))),
        };
        let persona = match rng.random_range(0..100) {
            0..70 => Persona::Honest,
            70..85 => Persona::Silent,
            _ => Persona::Hostile,
        };
        Event::Open {
            id,
            ua,
            stream: if rng.random_bool(0.8) { self.main_stream } else { rng.random_range(0..STREAMS.len()) },
            publish: rng.random_bool(0.04),
            query: if rng.random_bool(0.7) { "" } else { QUERIES[rng.random_range(0..QUERIES.len())] },
            persona,
        }
    }

    /// A player's answer to something the core sent it.
    fn react(&mut self, rng: &mut StdRng, h: &mut Harness) -> Option<Event> {
        while h.inbox.len() > 256 {
            h.inbox.pop_front();
        }
        (0..8).find_map(|_| self.react_once(rng, h))
    }

    fn react_once(&mut self, rng: &mut StdRng, h: &mut Harness) -> Option<Event> {
        let n = h.inbox.len().max(1);
        let i = match rng.random_range(0..10) {
            0..5 => 0,
            5..8 => n - 1,
            _ => rng.random_range(0..n),
        };
        let (to, item) = h.inbox.remove(i)?;
        let s = h.sessions.get(&to).filter(|s| !s.closing)?;
        let persona = s.persona;
        if persona == Persona::Hostile && rng.random_bool(0.5) {
            return Some(Event::Message(to, self.hostile(rng, h, to)));
        }
        let candidates = || json!([{"candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0}]);
        match item {
            Inbox::Edge => Some(Event::Playing(to)),
            Inbox::Trickle(peer) => {
                let command = if h.pairs.contains_key(&to) { "candidate" } else { "candidate_p2p" };
                Some(Event::Message(to, json!({"command": command, "id": to, "peer_id": peer, "candidates": candidates()}).to_string()))
            }
            Inbox::Msg(_) if persona == Persona::Silent => None,
            Inbox::Msg(v) => {
                let peer = v["peer_id"].as_u64().unwrap_or(0) as SessionId;
                let message = match v["command"].as_str().unwrap_or_default() {
                    "request_offer_p2p" => {
                        let mut m = json!({"command": "offer_p2p", "id": to, "peer_id": peer, "sdp": {"type": "offer", "sdp": SDP}});
                        if rng.random_bool(0.5) {
                            m["candidates"] = candidates();
                        }
                        m
                    }
                    "offer" => json!({"command": "answer", "id": to, "peer_id": peer, "sdp": {"type": "answer", "sdp": SDP}}),
                    "answer_p2p" if rng.random_bool(0.3) => {
                        json!({"command": "candidate_p2p", "id": to, "peer_id": peer, "candidates": candidates()})
                    }
                    "stop" if !h.sessions[&to].host => return Some(Event::RequestOffer(to)),
                    _ => return None,
                };
                if rng.random_bool(0.3) {
                    h.inbox.push_back((to, Inbox::Trickle(peer)));
                }
                Some(Event::Message(to, message.to_string()))
            }
        }
    }

    /// A random addressee for a message from `from`.
    fn target(&self, rng: &mut StdRng, h: &Harness, from: SessionId) -> Option<Value> {
        let mut partners: Vec<SessionId> = h.pairs.iter().filter(|(_, &(host, _))| host == from).map(|(&c, _)| c).collect();
        partners.extend(h.pairs.get(&from).map(|&(host, _)| host));
        let live: Vec<SessionId> = h.sessions.keys().copied().filter(|&id| id != from).collect();
        let gone: Vec<SessionId> = h.ever.iter().copied().filter(|id| !h.sessions.contains_key(id)).collect();
        let id = |id: Option<SessionId>| id.map(|i| json!(i));
        match rng.random_range(0..100) {
            0..35 => id(Self::pick(rng, &partners).or_else(|| Self::pick(rng, &live))),
            35..55 => id(Self::pick(rng, &live)),
            55..65 => id(Self::pick(rng, &gone)),
            65..73 => Some(json!(self.next_id + rng.random_range(0..100))),
            73..77 => Some(json!(from)),
            77..80 => Some(json!(0)),
            80..83 => Some(json!(u32::MAX)),
            83..85 => Some(json!(u64::from(u32::MAX) + 1)),
            85..87 => Some(json!(-1)),
            87..89 => Some(json!(from.to_string())),
            89..91 => Some(json!(2.0)),
            91..93 => Some(Value::Null),
            _ => None,
        }
    }

    /// An `sdp` or `candidates` field, often wrong.
    fn payload(rng: &mut StdRng, sdp: bool) -> Option<Value> {
        Some(match rng.random_range(0..100) {
            0..60 if sdp => json!({"type": "offer", "sdp": SDP}),
            0..60 => json!([{"candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0}]),
            60..62 => json!("x".repeat(1 << rng.random_range(10..=18))),
            62..64 => Value::Array(vec![json!({"candidate": CANDIDATE}); 1 << rng.random_range(4..=14)]),
            64..67 => {
                let mut v = json!(SDP);
                for _ in 0..rng.random_range(1..=140) {
                    v = if rng.random_bool(0.5) { json!([v]) } else { json!({"a": v}) };
                }
                v
            }
            67..71 => Value::Null,
            71..77 => return None,
            77..81 => json!(rng.random::<i64>()),
            81..85 => json!("x"),
            85..88 => json!({}),
            88..91 => json!([]),
            91..94 => json!(true),
            _ => json!({"type": "\u{0}\u{1F4A5}\"\\\u{202e}", "sdp": "\u{FEFF}", "": {"": []}}),
        })
    }

    /// A message from a hostile player: mostly the four P2P commands, addressed anywhere, fields
    /// missing, mistyped, nested, oversized; sometimes another command or no JSON at all.
    fn hostile(&self, rng: &mut StdRng, h: &Harness, from: SessionId) -> String {
        if rng.random_bool(0.1) {
            return self.junk(rng, h, from);
        }
        let command = if rng.random_bool(0.85) {
            ["offer_p2p", "answer", "candidate", "candidate_p2p"][rng.random_range(0..4)]
        } else {
            ["request_offer", "stop", "offer", "answer_p2p", "request_offer_p2p", "dance", "", "OFFER_P2P", "offer_p2p "][rng.random_range(0..9)]
        };
        let mut m = Map::new();
        match rng.random_range(0..20) {
            0 => {}
            1 => drop(m.insert("command".into(), json!([command]))),
            _ => drop(m.insert("command".into(), json!(command))),
        }
        m.insert("id".into(), if rng.random_bool(0.85) { json!(from) } else { json!(rng.random::<u32>()) });
        if let Some(peer) = self.target(rng, h, from) {
            m.insert("peer_id".into(), peer);
        }
        if let Some(sdp) = Self::payload(rng, true) {
            m.insert("sdp".into(), sdp);
        }
        if let Some(c) = Self::payload(rng, false) {
            m.insert("candidates".into(), c);
        }
        if rng.random_bool(0.05) {
            m.insert("\u{0}extra".into(), json!({"nested": [1, 2, 3]}));
        }
        let text = Value::Object(m).to_string();
        if rng.random_bool(0.05) {
            // A duplicate key in front (the later one wins in serde_json).
            return format!("{{\"peer_id\":{},{}", rng.random::<u32>(), &text[1..]);
        }
        text
    }

    fn junk(&self, rng: &mut StdRng, h: &Harness, from: SessionId) -> String {
        let peer = h.pairs.get(&from).map_or(from, |&(host, _)| host);
        match rng.random_range(0..14) {
            0 => String::new(),
            1 => "null".into(),
            2 => "[]".into(),
            3 => "{}".into(),
            4 => "1e999".into(),
            5 => "\"offer_p2p\"".into(),
            6 => (0..rng.random_range(0..80)).map(|_| rng.random_range(b' '..=b'~') as char).collect(),
            7 => {
                let full = json!({"command": "answer", "id": from, "peer_id": peer, "sdp": {"type": "answer", "sdp": SDP}}).to_string();
                let mut cut = rng.random_range(0..full.len());
                while !full.is_char_boundary(cut) {
                    cut -= 1;
                }
                full[..cut].to_string()
            }
            8 => format!("{{\"command\":[\"offer_p2p\"],\"peer_id\":{peer}}}"),
            9 => "[".repeat(rng.random_range(1..300)),
            10 => format!("{{\"command\":\"candidate\",\"id\":{from},\"peer_id\":{peer},\"candidates\":[]}}}}"),
            11 => format!("  \n\t{{\"command\":\"candidate\",\"id\":{from},\"peer_id\":{peer},\"candidates\":[]}}{}", " ".repeat(rng.random_range(0..4096))),
            12 => format!("{{\"command\":\"answer\",\"id\":{from},\"peer_id\":{peer},\"sdp\":\"\\ud800\"}}"),
            _ => format!("\u{FEFF}{{\"command\":\"answer\",\"id\":{from},\"peer_id\":{peer},\"sdp\":{{}}}}"),
        }
    }
}

/// A failed case: its seed, settings, events and what broke.
struct Failure {
    seed: u64,
    setup: Setup,
    events: Vec<Event>,
    error: String,
}

/// Runs one seeded case of up to `budget` calls into the core.
fn run_case(seed: u64, budget: u64) -> Result<Stats, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let setup = Setup::random(&mut rng);
    let mut h = Harness::new(&setup);
    let palette = if rng.random_bool(0.6) {
        CHROME_KIND.to_vec()
    } else {
        (0..rng.random_range(1..=6)).map(|_| rng.random_range(0..USER_AGENTS.len())).collect()
    };
    let main_stream = if rng.random_bool(0.9) { rng.random_range(0..4) } else { rng.random_range(0..STREAMS.len()) };
    let mut gen = Gen { next_id: 1, max_live: if rng.random_bool(0.1) { rng.random_range(40..=250) } else { rng.random_range(2..=40) }, palette, main_stream };
    let mut events = Vec::new();
    let mut result = Ok(());
    while h.stats.calls < budget {
        let event = gen.next(&mut rng, &mut h);
        result = h.apply(&event);
        events.push(event);
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = h.finish();
    }
    match result {
        Ok(()) => {
            h.stats.cases = 1;
            Ok(h.stats)
        }
        Err(error) => Err(Failure { seed, setup, events, error }),
    }
}

/// Replays `events` from a fresh core, then ends the case as [`Harness::finish`] does.
pub fn replay(setup: &Setup, events: &[Event]) -> Check {
    let mut h = Harness::new(setup);
    for e in events {
        h.apply(e)?;
    }
    h.finish()
}

fn kind(error: &str) -> &str {
    error.split(':').next().unwrap_or(error)
}

/// Removes events while the same kind of failure remains (delta debugging).
fn shrink(setup: &Setup, mut events: Vec<Event>, error: &str) -> (Vec<Event>, String) {
    let want = kind(error).to_string();
    let mut last = error.to_string();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut chunk = events.len().div_ceil(2).max(1);
    loop {
        let mut progress = false;
        let mut i = 0;
        while i < events.len() {
            let candidate: Vec<Event> = events[..i].iter().chain(&events[(i + chunk).min(events.len())..]).cloned().collect();
            match replay(setup, &candidate) {
                Err(e) if kind(&e) == want => {
                    events = candidate;
                    last = e;
                    progress = true;
                }
                _ => i += chunk,
            }
        }
        if !progress {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }
    std::panic::set_hook(hook);
    (events, last)
}

fn report(f: Failure) -> String {
    let (events, error) = shrink(&f.setup, f.events.clone(), &f.error);
    let lines: Vec<String> = events.iter().map(|e| format!("    {e:?},")).collect();
    format!(
        "P2P core fuzz failure, seed {} ({} events, shrunk to {}):\n  {}\nfirst seen as:\n  {}\nreplay:\n  replay(&{:?}, &[\n{}\n  ])",
        f.seed,
        f.events.len(),
        events.len(),
        error,
        f.error,
        f.setup,
        lines.join("\n")
    )
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.replace('_', "").parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

/// Runs cases from `seed` on until `cases` cases or `events` calls into the core; panics with a
/// shrunk replay on the first failure.
fn run(seed: u64, cases: Option<u64>, events: Option<u64>, case_budget: u64) -> Stats {
    let mut total = Stats::default();
    let mut s = seed;
    while cases.is_none_or(|c| total.cases < c) && events.is_none_or(|e| total.calls < e) {
        let mut rng = StdRng::seed_from_u64(s ^ 0x9e37_79b9_7f4a_7c15);
        let budget = rng.random_range(20..=case_budget);
        match run_case(s, budget) {
            Ok(stats) => total.add(&stats),
            Err(f) => panic!("{}", report(f)),
        }
        s += 1;
    }
    total
}

/// CI's short bounded pass: fixed seeds, a few seconds in debug.
#[test]
fn fuzz_short_bounded_pass() {
    let stats = run(0, Some(300), None, 400);
    eprintln!("{stats:#?}");
    assert!(stats.offers_relayed > 0 && stats.answers_relayed > 0 && stats.edge_fallbacks > 0 && stats.stops > 0 && stats.penalties > 0 && stats.refused > 0 && stats.stale > 0, "the pass reaches every path: {stats:?}");
}

/// The long run: `P2P_FUZZ_EVENTS` calls into the core (default 1,000,000) or `P2P_FUZZ_CASES`
/// cases, from seed `P2P_FUZZ_SEED` (default 1,000,000, past the short pass's seeds).
#[test]
#[ignore = "long: P2P_FUZZ_EVENTS=1000000 cargo test -p plugin-p2p --release --test core_fuzz -- --ignored --nocapture"]
fn fuzz_long() {
    let seed = env("P2P_FUZZ_SEED").unwrap_or(1_000_000);
    let cases = env("P2P_FUZZ_CASES");
    let events = if cases.is_some() { env("P2P_FUZZ_EVENTS") } else { Some(env("P2P_FUZZ_EVENTS").unwrap_or(1_000_000)) };
    let start = Instant::now();
    let stats = run(seed, cases, events, 2000);
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{stats:#?}");
    eprintln!(
        "fuzz_long: seeds {seed}..{}: {} cases, {} calls into the core in {secs:.1} s = {:.0} calls/s, no failure",
        seed + stats.cases,
        stats.cases,
        stats.calls,
        stats.calls as f64 / secs
    );
}

/// The driver's own oracle catches a core that misbehaves: a replayed sequence with a relay the
/// model did not expect fails (guards against a fuzzer that checks nothing).
#[test]
fn the_oracle_rejects_what_it_should() {
    let setup = Setup { k: 2, greedy: false, enable: true, offer_ms: 100, answer_ms: 200, penalty_ms: 1000 };
    let chrome = USER_AGENTS[0].to_string();
    let open = |id| Event::Open { id, ua: chrome.clone(), stream: 0, publish: false, query: "", persona: Persona::Honest };
    let honest = [
        open(1),
        Event::RequestOffer(1),
        Event::Playing(1),
        open(2),
        Event::RequestOffer(2),
        Event::Message(1, r#"{"command":"offer_p2p","id":1,"peer_id":2,"sdp":{"type":"offer","sdp":"v=0"}}"#.into()),
        Event::Message(2, r#"{"command":"answer","id":2,"peer_id":1,"sdp":{"type":"answer","sdp":"v=0"}}"#.into()),
        Event::Message(2, r#"{"command":"candidate","id":2,"peer_id":1,"candidates":[]}"#.into()),
        Event::Advance(10_000),
        Event::FireBogus(77),
        Event::Close(1),
    ];
    replay(&setup, &honest).expect("the honest exchange passes");
    // The harness's view is checked against the core: a model that disagrees is reported.
    let mut h = Harness::new(&setup);
    for e in &honest[..5] {
        h.apply(e).unwrap();
    }
    h.pairs.clear();
    assert!(h.check().unwrap_err().starts_with("role"), "a model without the pair disagrees with role()");
    let mut h = Harness::new(&setup);
    for e in &honest[..5] {
        h.apply(e).unwrap();
    }
    h.sessions.get_mut(&2).unwrap().pending = true;
    h.pairs.clear();
    h.gauges.insert("clients", 0);
    h.gauges.insert("hosts", 0);
    h.core.session_closed(1);
    h.core.drain_outputs().for_each(drop);
    h.sessions.remove(&1);
    assert!(h.finish().unwrap_err().starts_with("liveness"), "a session left waiting is reported");
}

/// Found by this fuzzer (a hostile client's `answer` reached the core before its host's offer 57
/// times in the first million calls; the liveness check exempts such a client as `early_answer`,
/// since only its own wait is at stake): the core relays a client's `answer` sent before any offer reached it
/// (Stage::AwaitingOffer -> Answered), which disarms the host's offer deadline. If the host never
/// offers (OvenPlayer 0.10.39+ hosts never do, PROTOCOL.md), the client waits for an offer forever,
/// the host keeps the slot and is never penalized. Only a misbehaving client can do this to itself;
/// the core's fix would be to refuse (or drop) an `answer` at AwaitingOffer.
#[test]
fn an_answer_before_the_offer_does_not_disarm_the_offer_deadline() {
    let setup = Setup { k: 2, greedy: false, enable: true, offer_ms: 100, answer_ms: 200, penalty_ms: 1000 };
    let chrome = USER_AGENTS[0].to_string();
    let open = |id| Event::Open { id, ua: chrome.clone(), stream: 0, publish: false, query: "", persona: Persona::Silent };
    let events = [
        open(1),
        Event::RequestOffer(1), // served by the edge
        Event::Playing(1),      // a host peer, which never offers
        open(2),
        Event::RequestOffer(2), // a client of 1: request_offer_p2p to 1, offer deadline armed
        Event::Message(2, r#"{"command":"answer","id":2,"peer_id":1,"sdp":{"type":"answer","sdp":"v=0"}}"#.into()),
        Event::Advance(100), // the offer deadline passes: nothing happens, 2 is Answered
    ];
    let mut h = Harness::new(&setup);
    for e in &events {
        h.apply(e).unwrap();
    }
    // The early answer is refused (400 and a close), so it cannot disarm the offer deadline.
    assert_ne!(h.core.role(2), Some(&Role::Client { host: 1, stage: Stage::Answered }));
    h.finish().expect("with every deadline fired, nobody waits");
}
