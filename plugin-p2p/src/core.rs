//! The P2P state machine, sans-IO: session events in, [`Output`]s and decisions out. No I/O, no
//! clock, no threads: deadlines are timers the caller runs and reports back with [`P2pCore::timer_fired`].

use crate::broker::{self, BrokerError, P2pMessage};
use crate::classify::Classifier;
use crate::config::{Matching, P2pConfig};
use crate::fallback::{Deadline, Deadlines};
use crate::matching::{HostPool, PoolKey};
use plugin_api::{MessageVerdict, OfferDecision, SessionId, SessionKind};
use std::collections::HashMap;

/// What the core asks of the outside world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a JSON message to a session.
    Send(SessionId, String),
    /// Serve a session's pending offer request from the edge.
    ServeFromEdge(SessionId),
    /// Send error `code` with text, then close the session.
    Close(SessionId, u16, String),
    /// Call [`P2pCore::timer_fired`] with this token after this many ms.
    SetTimer(u64, u64),
    /// Add to a metric.
    Count(&'static str, i64),
}

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
}

/// How a client's connection to its host stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The host was asked to offer; nothing sent to the client yet.
    AwaitingOffer,
    /// The client has the host's offer and must answer.
    AwaitingAnswer,
    /// The client answered; the pair connects on its own.
    Answered,
}

/// A peer's part in P2P delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Served by the edge, or not served yet.
    Viewer,
    /// Plays from the edge and relays to these clients.
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

#[derive(Debug)]
struct Peer {
    key: PoolKey,
    /// Takes part in P2P at all (plays, consents, stream not excluded, P2P on).
    p2p: bool,
    /// May be a host (classification).
    host_eligible: bool,
    role: Role,
    /// Was a client on this socket once: from now on the edge serves it (it may still host).
    was_client: bool,
    /// Missed a deadline; out of the pool until its penalty is over.
    penalized: bool,
}

impl Peer {
    /// Whether it counts among its pool's dependants: viewers who could only ever be clients.
    fn dependant(&self) -> bool {
        self.p2p && !self.host_eligible && !self.was_client
    }

    /// It was a client and is not one any more: from now on the edge serves it.
    fn end_client_life(&mut self, pool: &mut HostPool) {
        if self.dependant() {
            pool.dependant_left(self.key);
        }
        self.was_client = true;
    }

    fn load(&self) -> u16 {
        match &self.role {
            Role::Host { clients } => clients.len() as u16,
            _ => 0,
        }
    }
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
    peers: HashMap<SessionId, Peer>,
    pool: HostPool,
    names: Names,
    deadlines: Deadlines,
    outputs: Vec<Output>,
}

impl P2pCore {
    /// A core with these settings and no sessions.
    pub fn new(config: P2pConfig) -> Self {
        Self {
            config,
            classifier: Classifier::default(),
            peers: HashMap::new(),
            pool: HostPool::default(),
            names: Names::default(),
            deadlines: Deadlines::default(),
            outputs: Vec::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &P2pConfig {
        &self.config
    }

    /// Takes the outputs produced so far, in order.
    pub fn drain_outputs(&mut self) -> std::vec::Drain<'_, Output> {
        self.outputs.drain(..)
    }

    /// The role of session `id`, if the core knows it.
    pub fn role(&self, id: SessionId) -> Option<&Role> {
        self.peers.get(&id).map(|p| &p.role)
    }

    /// Checks the bookkeeping behind [`Self::role`] (for tests and the fuzzer): roles point at each
    /// other and share a pool key, no host has more than k clients, the pool holds exactly the
    /// unpenalized hosts at their loads, the dependants are counted right, and every waiting pair and
    /// every penalty has its deadline armed.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let k = usize::from(self.config.max_client_peers_per_host_peer);
        let armed: Vec<Deadline> = self.deadlines.armed().copied().collect();
        let mut pool: Vec<_> = self.pool.hosts().collect();
        let (mut pooled, mut dependants) = (Vec::new(), HashMap::new());
        for (&id, p) in &self.peers {
            if p.dependant() {
                *dependants.entry(p.key).or_insert(0u32) += 1;
            }
            if p.penalized && !armed.contains(&Deadline::PenaltyOver { host: id }) {
                return Err(format!("{id} is penalized with no PenaltyOver armed"));
            }
            match &p.role {
                Role::Viewer => {}
                Role::Host { clients } => {
                    if !(p.p2p && p.host_eligible) || clients.len() > k {
                        return Err(format!("{id} hosts {clients:?} (p2p {}, eligible {}, k {k})", p.p2p, p.host_eligible));
                    }
                    if !p.penalized {
                        pooled.push((p.key, clients.len() as u16, id));
                    }
                    for (i, c) in clients.iter().enumerate() {
                        let back = self.peers.get(c).filter(|cp| cp.key == p.key).map(|cp| &cp.role);
                        if !matches!(back, Some(Role::Client { host, .. }) if *host == id) || clients[..i].contains(c) {
                            return Err(format!("host {id} lists {c}, whose role is {back:?}"));
                        }
                    }
                }
                Role::Client { host, stage } => {
                    let listed = matches!(self.peers.get(host).map(|h| &h.role), Some(Role::Host { clients }) if clients.contains(&id));
                    let deadline = match stage {
                        Stage::AwaitingOffer => Some(Deadline::HostOffer { host: *host, client: id }),
                        Stage::AwaitingAnswer => Some(Deadline::ClientAnswer { host: *host, client: id }),
                        Stage::Answered => None,
                    };
                    if !listed || !p.p2p || p.was_client || deadline.is_some_and(|d| !armed.contains(&d)) {
                        return Err(format!("client {id} of {host} at {stage:?}: listed {listed}, p2p {}, was_client {}, deadline {deadline:?} armed: no", p.p2p, p.was_client));
                    }
                }
            }
        }
        pool.sort_unstable();
        pooled.sort_unstable();
        if pool != pooled {
            return Err(format!("pool {pool:?}, hosts {pooled:?}"));
        }
        if *self.pool.dependants() != dependants {
            return Err(format!("dependants counted {:?}, actually {dependants:?}", self.pool.dependants()));
        }
        Ok(())
    }

    /// A session opened: classify it once.
    pub fn session_opened(&mut self, a: Arrival<'_>) {
        let class = self.classifier.classify(a.user_agent);
        let consents = !a.query.split('&').any(|kv| matches!(kv, "p2p=0" | "p2p=off" | "p2p=false" | "p2p=no"));
        let p2p = a.kind == SessionKind::Play && consents && self.config.applies_to(a.app, a.stream_name);
        let key = (self.names.id(a.stream), self.names.id(&class.browser));
        let peer = Peer { key, p2p, host_eligible: class.host_eligible, role: Role::Viewer, was_client: false, penalized: false };
        if peer.dependant() {
            self.pool.dependant_joined(key);
        }
        self.peers.insert(a.id, peer);
    }

    /// A player asked for a stream: make it a client of a host peer, or let the edge serve it.
    pub fn offer_requested(&mut self, id: SessionId) -> OfferDecision {
        // Whatever it was doing, it starts over: a host's clients and a client's host are released.
        self.release(id);
        let Some(peer) = self.peers.get(&id) else { return OfferDecision::ServeFromEdge };
        let capacity = self.config.max_client_peers_per_host_peer;
        let hosts_wanted = self.config.matching == Matching::Balanced
            && peer.host_eligible
            && !peer.penalized
            && self.pool.short_of_hosts(peer.key, capacity);
        let host = (peer.p2p && !peer.was_client && !hosts_wanted).then(|| self.pool.pick(peer.key, capacity)).flatten();
        let Some(host) = host else {
            self.out(Output::Count("edge_assignments", 1));
            return OfferDecision::ServeFromEdge;
        };
        self.add_client(host, id);
        self.peers.get_mut(&id).expect("checked").role = Role::Client { host, stage: Stage::AwaitingOffer };
        self.out(Output::Send(host, broker::request_offer_p2p(host, id)));
        let token = self.deadlines.arm(Deadline::HostOffer { host, client: id });
        self.out(Output::SetTimer(token, self.config.offer_timeout_ms));
        self.out(Output::Count("p2p_assignments", 1));
        OfferDecision::Handled
    }

    /// The session's edge connection is up: an eligible viewer becomes a host peer.
    pub fn session_playing(&mut self, id: SessionId) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if peer.p2p && peer.host_eligible && peer.role == Role::Viewer {
            peer.role = Role::Host { clients: Vec::new() };
            if !peer.penalized {
                self.pool.insert(peer.key, id, 0);
            }
            self.out(Output::Count("hosts", 1));
        }
    }

    /// The session ended: its partners are told, its clients fall back to the edge.
    pub fn session_closed(&mut self, id: SessionId) {
        self.release(id);
        if let Some(peer) = self.peers.remove(&id) {
            if peer.dependant() {
                self.pool.dependant_left(peer.key);
            }
        }
    }

    /// A message the host did not handle: relay it between partners, or refuse it.
    pub fn message_received(&mut self, from: SessionId, json: &str) -> MessageVerdict {
        let message = match broker::parse(json) {
            Ok(Some(m)) => m,
            Ok(None) => return MessageVerdict::Unknown,
            Err(e) => {
                self.refuse(from, e);
                return MessageVerdict::Handled;
            }
        };
        let (host, client) = match &message {
            P2pMessage::OfferP2p { client, .. } | P2pMessage::CandidateP2p { client, .. } => (from, *client),
            P2pMessage::Answer { host, .. } | P2pMessage::Candidate { host, .. } => (*host, from),
        };
        let partner = if host == from { client } else { host };
        let stage = match self.peers.get(&client).map(|p| &p.role) {
            Some(&Role::Client { host: h, stage }) if h == host => stage,
            _ if self.peers.contains_key(&partner) => {
                self.refuse(from, BrokerError::NotPartner(partner));
                return MessageVerdict::Handled;
            }
            _ => {
                // The partner just left; its `stop` is on its way to the sender.
                self.out(Output::Count("stale_messages", 1));
                return MessageVerdict::Handled;
            }
        };
        match message {
            P2pMessage::OfferP2p { sdp, candidates, .. } => {
                self.out(Output::Send(client, broker::relayed_offer(client, host, &sdp, candidates.as_ref())));
                if stage == Stage::AwaitingOffer {
                    self.set_stage(client, Stage::AwaitingAnswer);
                    let token = self.deadlines.arm(Deadline::ClientAnswer { host, client });
                    self.out(Output::SetTimer(token, self.config.answer_timeout_ms));
                }
            }
            P2pMessage::CandidateP2p { candidates, .. } => {
                self.out(Output::Send(client, broker::relayed_host_candidates(client, host, &candidates)));
            }
            P2pMessage::Answer { .. } if stage == Stage::AwaitingOffer => {
                self.refuse(from, BrokerError::AnswerBeforeOffer(host));
            }
            P2pMessage::Answer { sdp, .. } => {
                self.out(Output::Send(host, broker::answer_p2p(host, client, &sdp)));
                self.set_stage(client, Stage::Answered);
            }
            P2pMessage::Candidate { candidates, .. } => {
                self.out(Output::Send(host, broker::candidate_p2p(host, client, &candidates)));
            }
        }
        MessageVerdict::Handled
    }

    /// A timer the core asked for fired.
    pub fn timer_fired(&mut self, token: u64) {
        match self.deadlines.take(token) {
            Some(Deadline::HostOffer { host, client }) => self.missed(host, client, Stage::AwaitingOffer, "offer_timeouts"),
            Some(Deadline::ClientAnswer { host, client }) => self.missed(host, client, Stage::AwaitingAnswer, "answer_timeouts"),
            Some(Deadline::PenaltyOver { host }) => {
                if let Some(peer) = self.peers.get_mut(&host) {
                    peer.penalized = false;
                    if matches!(peer.role, Role::Host { .. }) {
                        self.pool.insert(peer.key, host, peer.load());
                    }
                }
            }
            None => {}
        }
    }

    fn out(&mut self, output: Output) {
        self.outputs.push(output);
    }

    fn refuse(&mut self, id: SessionId, error: BrokerError) {
        self.out(Output::Count("refused_messages", 1));
        self.out(Output::Close(id, 400, error.to_string()));
    }

    fn set_stage(&mut self, client: SessionId, stage: Stage) {
        if let Some(Peer { role: Role::Client { stage: s, .. }, .. }) = self.peers.get_mut(&client) {
            *s = stage;
        }
    }

    fn add_client(&mut self, host: SessionId, client: SessionId) {
        let peer = self.peers.get_mut(&host).expect("a pooled host is known");
        let old = peer.load();
        if let Role::Host { clients } = &mut peer.role {
            clients.push(client);
        }
        self.pool.reload(peer.key, host, old, old + 1);
        self.out(Output::Count("clients", 1));
    }

    /// Takes `client` off `host`'s list, freeing the slot.
    fn remove_client(&mut self, host: SessionId, client: SessionId) {
        let Some(peer) = self.peers.get_mut(&host) else { return };
        let old = peer.load();
        if let Role::Host { clients } = &mut peer.role {
            let before = clients.len();
            clients.retain(|&c| c != client);
            if clients.len() < before {
                self.pool.reload(peer.key, host, old, old - 1);
                self.outputs.push(Output::Count("clients", -1));
            }
        }
    }

    /// Ends every P2P relation of `id`: a client leaves its host (which is told), a host's clients
    /// fall back to the edge. `id` becomes a plain viewer.
    fn release(&mut self, id: SessionId) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        match std::mem::replace(&mut peer.role, Role::Viewer) {
            Role::Viewer => {}
            Role::Client { host, .. } => {
                peer.end_client_life(&mut self.pool);
                self.remove_client(host, id);
                self.out(Output::Send(host, broker::stop(host, id)));
            }
            Role::Host { clients } => {
                let key = peer.key;
                if !peer.penalized {
                    self.pool.remove(key, id, clients.len() as u16);
                }
                self.out(Output::Count("hosts", -1));
                self.out(Output::Count("clients", -(clients.len() as i64)));
                for client in clients {
                    self.orphaned(client, id);
                }
            }
        }
    }

    /// `client`'s host `host` is gone: a client still waiting for an offer gets the edge's at once;
    /// one that had the host's offer is told `stop` and asks again (and the edge serves it).
    fn orphaned(&mut self, client: SessionId, host: SessionId) {
        let Some(peer) = self.peers.get_mut(&client) else { return };
        let Role::Client { stage, .. } = std::mem::replace(&mut peer.role, Role::Viewer) else { return };
        peer.end_client_life(&mut self.pool);
        self.out(Output::Count("fallbacks", 1));
        match stage {
            Stage::AwaitingOffer => self.out(Output::ServeFromEdge(client)),
            Stage::AwaitingAnswer | Stage::Answered => self.out(Output::Send(client, broker::stop(client, host))),
        }
    }

    /// A deadline passed: if the pair is still at `stage`, the client gets the edge's offer, the
    /// host gets `stop` and is not chosen again for a while.
    fn missed(&mut self, host: SessionId, client: SessionId, stage: Stage, metric: &'static str) {
        let still_waiting = matches!(self.peers.get(&client), Some(Peer { role: Role::Client { host: h, stage: s }, .. }) if *h == host && *s == stage);
        if !still_waiting {
            return;
        }
        self.out(Output::Count(metric, 1));
        let peer = self.peers.get_mut(&client).expect("checked");
        peer.role = Role::Viewer;
        peer.end_client_life(&mut self.pool);
        self.remove_client(host, client);
        self.out(Output::ServeFromEdge(client));
        self.out(Output::Send(host, broker::stop(host, client)));
        self.penalize(host);
    }

    fn penalize(&mut self, host: SessionId) {
        let Some(peer) = self.peers.get_mut(&host) else { return };
        if peer.penalized {
            return;
        }
        peer.penalized = true;
        let (key, load) = (peer.key, peer.load());
        self.pool.remove(key, host, load);
        let token = self.deadlines.arm(Deadline::PenaltyOver { host });
        self.out(Output::SetTimer(token, self.config.host_penalty_ms));
        self.out(Output::Count("host_penalties", 1));
    }
}
