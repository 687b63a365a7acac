//! The P2P state machine, sans-IO: session events in, [`HostCall`]s and decisions out. No I/O, no
//! clock, no threads: every event carries the time (`now`, ms on the host's monotonic clock), and
//! deadlines are timers the caller runs and reports back with [`P2pCore::timer_fired`].
//!
//! Here: the events, pairs and moves. Beside it: `core/peer.rs` (one session's record, and its
//! life-cycles as enums), `core/messages.rs` (the P2P messages between partners),
//! `core/links.rs` (where a link can form, and a failed one's aftermath), `core/trees.rs`
//! (clients relaying further), `core/invariants.rs` (the bookkeeping checked).

use crate::broker::{self, BrokerError};
use crate::classify::Classifier;
use crate::config::{Matching, P2pConfig, PairNewViewers};
use crate::failed_links::FailedLinks;
use crate::fallback::{Deadline, Deadlines, OfferDeadline};
use crate::locality::{Locator, Site};
use crate::matching::{HostPool, PoolKey, MAX_SKIPPED, MAX_SKIPPED_LOCAL};
use crate::pair_end::{ClientGets, HostTold, PairEnd};
pub use crate::counts;
pub use crate::pair_end::Stage;
use crate::reparent::Movable;
use plugin_api::{Delivery, HostCall, MessageVerdict, OfferDecision, SessionId, SessionKind};
use ome_signalling::query::{self, Query};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

mod invariants;
mod links;
mod messages;
mod peer;
mod trees;

use peer::{Capabilities, Peer};

/// Links across networks that may fail from one client address (in `FailedLinks`' memory) before
/// it is paired across networks no more: failing with two different hosts says more about its
/// own router (a symmetric NAT) than about theirs.
const MAX_CLIENT_FAILURES: usize = 2;

/// A session as the core sees it when it opens.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// Session id.
    pub id: SessionId,
    /// Publishing or playing.
    pub kind: SessionKind,
    /// The stream's full name (`vhost/app/stream`): the pool it belongs to.
    pub stream: &'a str,
    /// Application name, for the per-application switch.
    pub app: &'a str,
    /// Stream name, for the per-stream switch.
    pub stream_name: &'a str,
    /// The User-Agent header.
    pub user_agent: &'a str,
    /// The URL's query string (`p2p=0` / `p2p=off` opts out).
    pub query: &'a str,
    /// The remote address (`ip:port`), for hosts of the viewer's own network first.
    pub remote: &'a str,
}

/// A peer's part in P2P delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Served by the edge, or not served yet.
    Viewer,
    /// Plays from the edge and relays to these clients (a retired one takes no new ones).
    Host {
        /// Its clients, at most k.
        clients: Vec<SessionId>,
    },
    /// Plays from a host peer.
    Client {
        /// Its host.
        host: SessionId,
        /// How far the pair got.
        stage: Stage,
    },
}

/// Interns names (streams, browser kinds) to small integers for the pool keys.
#[derive(Debug, Default)]
struct Names(HashMap<String, u32>);

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.0.get(name) {
            return id;
        }
        let id = self.0.len() as u32;
        self.0.insert(name.to_string(), id);
        id
    }
}

/// The P2P delivery state machine for every stream of one host.
#[derive(Debug)]
pub struct P2pCore {
    config: P2pConfig,
    classifier: Classifier,
    locator: Locator,
    peers: HashMap<SessionId, Peer>,
    pool: HostPool,
    movable: Movable,
    names: Names,
    deadlines: Deadlines,
    offer_deadline: OfferDeadline,
    failed: FailedLinks,
    /// `<IceServers>` as players read them.
    ice_servers: serde_json::Value,
    /// The latest `now` an event brought, for what runs inside an event without its time.
    clock: u64,
    outputs: Vec<HostCall>,
    /// Decisions to log, apart from the host calls.
    logs: Vec<String>,
    /// Sessions whose delivery may have changed since the outputs were last drained.
    touched: Vec<SessionId>,
}

impl P2pCore {
    /// A core with these settings and no sessions.
    pub fn new(config: P2pConfig) -> Self {
        let offer_deadline = OfferDeadline::new(config.offer_timeout_min_ms, config.offer_timeout_ms, config.offer_timeout_p99_multiple);
        Self {
            locator: config.locator(),
            ice_servers: config.ice_servers.to_json(),
            config,
            classifier: Classifier::default(),
            peers: HashMap::new(),
            pool: HostPool::default(),
            movable: Movable::default(),
            names: Names::default(),
            deadlines: Deadlines::default(),
            offer_deadline,
            failed: FailedLinks::default(),
            clock: 0,
            outputs: Vec::new(),
            logs: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// Whether host peers nobody plays from may be moved into other hosts (`PairNewViewers`
    /// proven: new viewers do not fill their vacancies, so moves must).
    fn moves_idle_hosts(&self) -> bool {
        self.config.pair_new_viewers == PairNewViewers::Proven
    }

    /// The settings.
    pub fn config(&self) -> &P2pConfig {
        &self.config
    }

    /// Takes the host calls produced so far, in order; the deliveries that changed come last.
    pub fn drain_outputs(&mut self) -> std::vec::Drain<'_, HostCall> {
        self.report_deliveries();
        self.outputs.drain(..)
    }

    /// Takes the decisions logged so far (for the host's log at debug level), in order.
    pub fn drain_logs(&mut self) -> std::vec::Drain<'_, String> {
        self.logs.drain(..)
    }

    /// How session `id` gets the stream now: from its host once paired (connected once it
    /// answered; a viewer told to move still plays from the edge), or from the edge, relaying to
    /// as many more as its free slots if it is a host peer that may take clients.
    pub fn delivery(&self, id: SessionId) -> Option<Delivery> {
        let peer = self.peers.get(&id)?;
        let k = self.config.max_client_peers_per_host_peer;
        Some(match peer.role() {
            Role::Client { host, stage } if *stage != Stage::Moving => {
                let evidence = !peer.reports_links() && self.link_evidence(*host, id);
                let connected = *stage == Stage::Confirmed || (*stage == Stage::Answered && evidence);
                let relay_clients = peer.relay_clients().filter(|_| !peer.standing.retired());
                let free_relay_slots = relay_clients.map_or(0, |c| k.saturating_sub(c.len() as u16));
                Delivery { upstream: *host, connected, free_relay_slots }
            }
            Role::Host { clients } if !peer.standing.retired() => {
                Delivery { free_relay_slots: k.saturating_sub(clients.len() as u16), ..Delivery::default() }
            }
            _ => Delivery::default(),
        })
    }

    /// Reports each touched session whose delivery differs from what was last reported.
    fn report_deliveries(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for id in touched.drain(..) {
            let Some(now) = self.delivery(id) else { continue };
            let peer = self.peers.get_mut(&id).expect("delivery: known");
            if peer.reported != now {
                peer.reported = now;
                self.outputs.push(HostCall::ReportDelivery(id, now));
            }
        }
        self.touched = touched;
    }

    /// The role of session `id`, if the core knows it.
    pub fn role(&self, id: SessionId) -> Option<&Role> {
        self.peers.get(&id).map(Peer::role)
    }

    /// The deadline the next host asked to offer gets, in ms.
    pub fn offer_deadline_ms(&self) -> u64 {
        self.offer_deadline.current_ms()
    }

    /// A session opened: classify it once and place it on the network.
    pub fn session_opened(&mut self, now: u64, a: Arrival<'_>) {
        self.clock = self.clock.max(now);
        let class = self.classifier.classify(a.user_agent);
        let params = Query::parse(a.query);
        let consents = !params.says_no(query::P2P);
        let p2p = a.kind == SessionKind::Play && consents && self.config.applies_to(a.app, a.stream_name);
        let can = Capabilities {
            p2p,
            host_eligible: class.host_eligible,
            relay_stun: params.get(query::P2P_STUN).is_some() && !params.says_no(query::P2P_STUN),
        };
        let key = (self.names.id(a.stream), self.names.id(&class.browser));
        let ip = a.remote.parse::<SocketAddr>().map(|s| s.ip()).or_else(|_| a.remote.parse()).ok().map(|ip: IpAddr| ip.to_canonical());
        let peer = Peer::new(key, self.locator.site(a.remote), ip, can);
        self.peers.insert(a.id, peer);
    }

    /// A player asked for a stream: make it a client of a host peer, or let the edge serve it.
    pub fn offer_requested(&mut self, now: u64, id: SessionId) -> OfferDecision {
        self.clock = self.clock.max(now);
        if let Some(&Role::Client { host, stage: Stage::Moving }) = self.role(id) {
            // It closed its edge connection as told: the host's offer answers it.
            self.set_stage(id, Stage::AwaitingOffer);
            self.ask_to_offer(now, host, id);
            self.count(counts::MOVES_COMPLETED, 1);
            return OfferDecision::Handled;
        }
        self.unqueue(id);
        // Whatever it was doing, it starts over: a host's clients and a client's host are released.
        self.release(id);
        let Some(peer) = self.peers.get_mut(&id) else { return OfferDecision::ServeFromEdge };
        peer.edge_since = None;
        if peer.life.ask() && peer.dependant() {
            self.pool.dependant_joined(peer.key);
        }
        let capacity = self.config.max_client_peers_per_host_peer;
        let hosts_wanted = self.config.matching == Matching::Balanced
            && peer.can.host_eligible
            && !peer.standing.retired()
            && self.pool.short_of_hosts(peer.key, capacity);
        let (key, site) = (peer.key, peer.site);
        let wanted = peer.can.p2p && !peer.life.former() && !hosts_wanted;
        // Under `proven`, a joining viewer waits on no link that may fail: only a proven host of
        // its own network (behind its public address, or in its <Site>: a LAN link to a relay
        // that relays; a /24 only guesses). Across networks a link can still fail on the
        // viewer's own router (a symmetric NAT), and an unproven relay may never offer: such
        // pairs are made by moves, while the viewer plays. Under `any`, OME's rule.
        let proven_local = self.config.pair_new_viewers == PairNewViewers::Proven;
        let allowed = |h: SessionId| self.may_pair(now, h, id) && (!proven_local || self.same_network(h, id));
        let host = wanted.then(|| self.pool.pick_where(key, site, capacity, proven_local, crate::matching::MAX_SKIPPED, allowed)).flatten();
        let Some(host) = host else {
            self.count(counts::TO_EDGE, 1);
            self.log(format!("{id}: served by the edge ({})", if wanted { "no host it can reach has a free slot" } else { "not a client now" }));
            return OfferDecision::ServeFromEdge;
        };
        self.log(format!("{id} ({}): client of host {host} ({}), asking it to offer", self.address(id), self.address(host)));
        self.add_client(host, id, Stage::AwaitingOffer);
        self.ask_to_offer(now, host, id);
        self.count(counts::TO_PEER, 1);
        OfferDecision::Handled
    }

    /// The session's edge connection is up: an eligible viewer becomes a host peer; one who could
    /// only be a client may be moved into a host once it has played here for `MoveAfterMs`.
    pub fn session_playing(&mut self, now: u64, id: SessionId) {
        self.clock = self.clock.max(now);
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if *peer.role() != Role::Viewer {
            return;
        }
        peer.edge_since = Some(now);
        if peer.can.may_host() {
            peer.start_hosting();
            let key = peer.key;
            self.touched.push(id);
            if !peer.standing.retired() {
                self.pool.insert(id, key, peer.site, 0, peer.standing.proven());
            }
            self.count(counts::HOST_PEERS, 1);
            // A host that has relayed before takes the viewers waiting to move at once.
            self.fill_vacancies(key);
        }
        self.consider_moving(now, id);
    }

    /// The session ended: its partners are told, its clients fall back to the edge.
    pub fn session_closed(&mut self, now: u64, id: SessionId) {
        self.clock = self.clock.max(now);
        self.unqueue(id);
        self.release(id);
        if let Some(peer) = self.peers.remove(&id) {
            if peer.dependant() {
                self.pool.dependant_left(peer.key);
            }
        }
    }

    /// A message the host did not handle: relay it between partners, or refuse it.
    pub fn message_received(&mut self, now: u64, from: SessionId, json: &str) -> MessageVerdict {
        self.clock = self.clock.max(now);
        let message = match broker::parse(json) {
            Ok(Some(m)) => m,
            Ok(None) => return MessageVerdict::Unknown,
            Err(e) => {
                self.refuse(from, e);
                return MessageVerdict::Handled;
            }
        };
        let (host, client) = self.ends_of(from, &message);
        if let Some(stage) = self.stage_of(now, from, host, client, &message) {
            self.relay(now, from, host, client, stage, message);
        }
        MessageVerdict::Handled
    }

    /// A timer the core asked for fired.
    pub fn timer_fired(&mut self, now: u64, token: u64) {
        self.clock = self.clock.max(now);
        match self.deadlines.take(token) {
            Some(Deadline::HostOffer { host, client }) if self.is_pair(token, host, client, Stage::AwaitingOffer) => self.end_pair(host, client, PairEnd::OfferMissed),
            Some(Deadline::ClientAnswer { host, client }) if self.is_pair(token, host, client, Stage::AwaitingAnswer) => self.end_pair(host, client, PairEnd::AnswerMissed),
            Some(Deadline::MoveRequest { host, client }) if self.is_pair(token, host, client, Stage::Moving) => self.end_pair(host, client, PairEnd::MoveIgnored),
            Some(Deadline::Reach { host, client }) if self.peers.get(&client).is_some_and(|p| p.timers.reach == token) => self.reach_wait_over(now, host, client),
            Some(Deadline::Confirm { host, client }) if self.awaits_confirmation(token, host, client) => {
                self.link_failed(now, host, client, counts::FALLBACK_NOT_CONFIRMED, "its player did not report the link connected in time");
            }
            Some(Deadline::Settled { viewer }) => self.settled(now, viewer),
            Some(Deadline::MoveCheck { viewer }) => self.consider_moving(now, viewer),
            _ => {}
        }
    }

    fn out(&mut self, call: HostCall) {
        self.outputs.push(call);
    }

    /// Adds `delta` to metric `name` (one of [`counts`]).
    fn count(&mut self, name: &'static str, delta: i64) {
        self.outputs.push(HostCall::Count(name.to_string(), delta));
    }

    /// Asks for [`P2pCore::timer_fired`] with `token` after `after_ms`.
    fn timer(&mut self, token: u64, after_ms: u64) {
        self.outputs.push(HostCall::SetTimer { token, after_ms });
    }

    /// A decision, for the host's log at debug level: who was paired, what was withheld or given
    /// up and why, with session ids and addresses, so that one viewer can be followed.
    fn log(&mut self, text: String) {
        self.logs.push(text);
    }

    /// `id`'s address, for the log.
    fn address(&self, id: SessionId) -> String {
        self.peers.get(&id).and_then(|p| p.ip).map_or_else(|| "no address".into(), |ip| ip.to_string())
    }

    /// Ends the pair of `host` and `client` for `end`, doing what [`PairEnd::aftermath`] says for
    /// how far it had got. The one way a pair ends.
    fn end_pair(&mut self, host: SessionId, client: SessionId, end: PairEnd) {
        let Some(&Role::Client { host: h, stage }) = self.role(client) else { return };
        if h != host {
            return;
        }
        // A client relaying further loses what it relays: its own clients go first, each told
        // before it is (OvenPlayer 0.10.38 throws on a `stop` between its own and its next offer).
        self.stop_relaying(client, if end == PairEnd::ClientLeft { PairEnd::HostLeft } else { PairEnd::RelayLost });
        let after = end.aftermath(stage);
        self.touch(&[client]);
        if let Some(count) = after.count {
            self.count(count, 1);
        }
        if end == PairEnd::OfferMissed {
            self.retire(host);
        }
        let peer = self.peers.get_mut(&client).expect("a pair's client is known");
        peer.unpair();
        if after.unmovable {
            peer.movability.never_again();
        }
        if after.ends_client_life {
            peer.end_client_life(&mut self.pool);
        }
        if after.host_told == HostTold::Before {
            self.out(HostCall::Send(host, broker::stop(host, client)));
        }
        if after.frees_slot {
            self.remove_client(host, client);
        }
        match after.client_gets {
            ClientGets::Nothing => {}
            ClientGets::EdgeOffer => self.out(HostCall::ServeFromEdge(client)),
            ClientGets::Stop => self.out(HostCall::Send(client, broker::stop(client, host))),
        }
        if after.host_told == HostTold::After {
            self.out(HostCall::Send(host, broker::stop(host, client)));
        }
    }

    /// `ids`' deliveries may have changed: checked (and reported if so) when outputs are drained.
    fn touch(&mut self, ids: &[SessionId]) {
        self.touched.extend_from_slice(ids);
    }

    fn refuse(&mut self, id: SessionId, error: BrokerError) {
        self.count(counts::MESSAGES_REFUSED, 1);
        self.out(HostCall::Close(id, 400, error.to_string()));
    }

    /// Whether the timer `token` is the current deadline of `client`, still `host`'s client at `stage`.
    fn is_pair(&self, token: u64, host: SessionId, client: SessionId, stage: Stage) -> bool {
        let Some(peer) = self.peers.get(&client) else { return false };
        let current = peer.pair().is_some_and(|p| p.deadline == token);
        current && *peer.role() == Role::Client { host, stage }
    }

    /// Arms `deadline` as `client`'s current pair deadline, due in `after_ms`.
    fn arm_pair_deadline(&mut self, client: SessionId, deadline: Deadline, after_ms: u64) {
        let token = self.deadlines.arm(deadline);
        if let Some(pair) = self.peers.get_mut(&client).and_then(Peer::pair_mut) {
            pair.deadline = token;
        }
        self.timer(token, after_ms);
    }

    fn set_stage(&mut self, client: SessionId, stage: Stage) {
        self.touch(&[client]);
        if let Some(peer) = self.peers.get_mut(&client) {
            peer.set_stage(stage);
        }
    }

    /// A host offered to `client` (in time or late): its latency feeds the offer deadline, once
    /// per pairing.
    fn measure_offer(&mut self, now: u64, client: SessionId) {
        if let Some(asked_at) = self.peers.get_mut(&client).and_then(|p| p.host_asked_at.take()) {
            self.offer_deadline.observe(now.saturating_sub(asked_at));
        }
    }

    /// Sends `host` the request to offer to `client` and arms the offer deadline.
    fn ask_to_offer(&mut self, now: u64, host: SessionId, client: SessionId) {
        if let Some(peer) = self.peers.get_mut(&client) {
            peer.host_asked_at = Some(now);
            peer.edge_since = None;
        }
        self.out(HostCall::Send(host, broker::request_offer_p2p(host, client, &self.ice_servers)));
        self.arm_pair_deadline(client, Deadline::HostOffer { host, client }, self.offer_deadline.current_ms());
    }

    /// Makes `client` a client of `host` at `stage`, taking one of its slots.
    fn add_client(&mut self, host: SessionId, client: SessionId, stage: Stage) {
        self.touch(&[host, client]);
        self.unqueue(host); // it relays now: an idle host waiting to be moved is not idle any more
        let peer = self.peers.get_mut(&host).expect("a pooled host is known");
        let depth = peer.depth + 1;
        let Some(clients) = peer.downstream() else { unreachable!("only hosts and relaying clients are pooled: {host} is {:?}", peer.role()) };
        clients.push(client);
        let load = peer.load();
        self.pool.set_load(host, load);
        self.peers.get_mut(&client).expect("checked by the caller").pair_with(host, stage, depth);
        self.count(counts::CLIENTS, 1);
    }

    /// Takes `client` off `host`'s list; the freed slot may go to a waiting edge viewer.
    fn remove_client(&mut self, host: SessionId, client: SessionId) {
        self.touch(&[host, client]);
        let Some(peer) = self.peers.get_mut(&host) else { return };
        let Some(clients) = peer.downstream() else { return };
        let before = clients.len();
        clients.retain(|&c| c != client);
        if clients.len() < before {
            let (load, key) = (peer.load(), peer.key);
            let retired_and_free = peer.standing.retired() && load == 0;
            let idle = load == 0 && self.moves_idle_hosts();
            self.pool.set_load(host, load);
            self.count(counts::CLIENTS, -1);
            self.fill_vacancies(key);
            if (retired_and_free || idle) && self.config.move_edge_viewers {
                // A host that cannot relay (retired), or relays to nobody while moves take idle
                // hosts, may be moved into another host (checked at once: the timer knows the time).
                let token = self.deadlines.arm(Deadline::MoveCheck { viewer: host });
                self.timer(token, 0);
            }
        }
    }

    /// A client answered `host`'s offer: its relay works, and its vacancies may take moved viewers.
    fn proven(&mut self, host: SessionId) {
        let Some(peer) = self.peers.get_mut(&host) else { return };
        if peer.standing.prove() {
            let key = peer.key;
            self.pool.set_proven(host);
            self.fill_vacancies(key);
        }
    }

    /// Ends every P2P relation of `id`: a client leaves its host (which is told), a host's clients
    /// fall back to the edge. `id` becomes a plain viewer.
    fn release(&mut self, id: SessionId) {
        self.touch(&[id]);
        match self.role(id) {
            None | Some(Role::Viewer) => {}
            Some(&Role::Client { host, .. }) => self.end_pair(host, id, PairEnd::ClientLeft),
            Some(Role::Host { .. }) => {
                let clients = self.peers.get_mut(&id).expect("it has a role").stop_hosting();
                self.pool.remove(id);
                self.count(counts::HOST_PEERS, -1);
                self.count(counts::CLIENTS, -(clients.len() as i64));
                for client in clients {
                    self.end_pair(id, client, PairEnd::HostLeft);
                }
            }
        }
    }

    /// `host` did not offer in time: it is never asked again on this socket (OvenPlayer >= 0.10.39
    /// never offers), and the viewers moving to it are matched anew when they ask.
    fn retire(&mut self, host: SessionId) {
        self.touch(&[host]);
        if let Some(peer) = self.peers.get_mut(&host) {
            let was_dependant = peer.dependant();
            if peer.standing.retire() {
                if !was_dependant && peer.dependant() {
                    self.pool.dependant_joined(peer.key);
                }
                self.pool.remove(host);
                self.count(counts::HOSTS_RETIRED, 1);
            }
        }
        // A host's or a relaying client's: clients moved to it and not yet asked go elsewhere.
        let Some(clients) = self.peers.get(&host).map(Peer::clients) else { return };
        let moving: Vec<SessionId> = clients.iter().copied().filter(|&c| matches!(self.role(c), Some(Role::Client { stage: Stage::Moving, .. }))).collect();
        for client in moving {
            self.end_pair(host, client, PairEnd::HostGivenUp);
        }
    }

    /// If `id` may be moved: once it has played from the edge for `MoveAfterMs` it joins the
    /// queue (and goes to a vacancy at once if there is one); before that, a timer is armed.
    fn consider_moving(&mut self, now: u64, id: SessionId) {
        let move_after = self.config.move_after_ms;
        let idle_hosts = self.moves_idle_hosts();
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if !self.config.move_edge_viewers || !peer.may_move(self.config.move_former_clients, idle_hosts) || peer.movability.queued_since().is_some() {
            return;
        }
        let settled_at = peer.edge_since.expect("may_move: on the edge").saturating_add(move_after);
        if now < settled_at {
            let token = self.deadlines.arm(Deadline::Settled { viewer: id });
            self.timer(token, settled_at - now);
            return;
        }
        peer.movability.queue(now);
        let key = peer.key;
        self.movable.insert(key, peer.site, now, id);
        self.fill_vacancies(key);
    }

    /// `viewer`'s settling time may be over (a timer armed by [`Self::consider_moving`]; a stale
    /// one finds it not settled yet, or gone, and does nothing).
    fn settled(&mut self, now: u64, viewer: SessionId) {
        let Some(peer) = self.peers.get(&viewer) else { return };
        let settled_at = peer.edge_since.map(|since| since.saturating_add(self.config.move_after_ms));
        if settled_at.is_some_and(|at| now >= at) {
            self.consider_moving(now, viewer);
        }
    }

    /// Takes `id` out of the movable queue.
    fn unqueue(&mut self, id: SessionId) {
        if let Some(peer) = self.peers.get_mut(&id) {
            if let Some(since) = peer.movability.unqueue() {
                self.movable.remove(peer.key, peer.site, since, id);
            }
        }
    }

    /// Moves waiting edge viewers of `key` into vacancies of hosts (proven ones first; only proven
    /// ones under `PairNewViewers` any): each vacancy (of the least-loaded host, whatever its
    /// network) to the viewer of the host's own network who has waited longest, else to the one
    /// of any network who has.
    /// The waiting viewer of `key` who has waited longest of those `host` may take: of its own
    /// network's queue only if it takes no other ([`Self::takes_only_its_site`]), else of its
    /// network's, then of every network's.
    fn movable_for(&self, key: PoolKey, host: SessionId) -> Option<SessionId> {
        let clock = self.clock;
        let site = self.peers.get(&host)?.site;
        let may = |v| v != host && self.may_pair(clock, host, v);
        if self.takes_only_its_site(host) {
            self.movable.first_at_site_where(key, site, may)
        } else {
            self.movable.first_where(key, site, may)
        }
    }

    fn fill_vacancies(&mut self, key: PoolKey) {
        if !self.config.move_edge_viewers {
            return;
        }
        let capacity = self.config.max_client_peers_per_host_peer;
        // Where new viewers get only proven hosts, moves are how a host proves itself: any host
        // may take one, of a viewer its relay can reach.
        let proven_only = self.config.pair_new_viewers == PairNewViewers::Any;
        // Hosts with a vacancy no waiting viewer can reach (bounded: a step each, no scan): those
        // that take only their own network's viewers, and the others.
        let mut passed_over: Vec<SessionId> = Vec::new();
        let mut passed_reaching = 0;
        loop {
            let allowed = |h: SessionId| !passed_over.contains(&h);
            let Some(host) = self.pool.pick_where(key, Site::UNKNOWN, capacity, proven_only, MAX_SKIPPED_LOCAL, allowed) else { break };
            let Some(viewer) = self.movable_for(key, host) else {
                passed_over.push(host);
                passed_reaching += usize::from(!self.takes_only_its_site(host));
                if passed_over.len() > MAX_SKIPPED_LOCAL || passed_reaching > MAX_SKIPPED {
                    break;
                }
                continue;
            };
            self.unqueue(viewer);
            if matches!(self.role(viewer), Some(Role::Host { .. })) {
                // A host nobody plays from (retired, or idle) becomes a client.
                self.pool.remove(viewer);
                self.count(counts::HOST_PEERS, -1);
            }
            self.add_client(host, viewer, Stage::Moving);
            self.peers.get_mut(&viewer).expect("queued viewers are known").moves += 1;
            self.out(HostCall::Send(viewer, broker::stop(viewer, 0)));
            self.arm_pair_deadline(viewer, Deadline::MoveRequest { host, client: viewer }, self.config.offer_timeout_ms);
            self.count(counts::MOVES, 1);
        }
    }
}
