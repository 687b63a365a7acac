//! One session as the core keeps it ([`Peer`]), and the life-cycles hidden in it made explicit:
//! a viewer's history as a client ([`ClientLife`]), its relay's standing as a host ([`Standing`]),
//! whether it may be moved into a host ([`Movability`]), its current pairing while it is a client
//! ([`Pair`]) and whether it relays further from there ([`Relay`]). What is known at join and
//! never changes is in [`Capabilities`]. Each transition is a method named after its event; the
//! core (part of [`P2pCore`](super::P2pCore)) decides when the events happen.

use super::{Role, Stage};
use crate::locality::Site;
use crate::matching::{HostPool, PoolKey};
use crate::reach::Reach;
use crate::reparent::MAX_MOVES_PER_VIEWER;
use plugin_api::{Delivery, SessionId};
use std::net::IpAddr;

/// What a session can do, known when it opens (its User-Agent, query and stream) and fixed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Capabilities {
    /// Takes part in P2P at all (plays, consents, stream not excluded, P2P on).
    pub p2p: bool,
    /// May be a host (classification).
    pub host_eligible: bool,
    /// Its player says its relay connections use STUN (`?p2p_stun=1`).
    pub relay_stun: bool,
}

impl Capabilities {
    /// Takes part in P2P and may relay.
    pub fn may_host(self) -> bool {
        self.p2p && self.host_eligible
    }
}

/// A viewer's history as a client, on this socket.
///
/// `Unasked` → `Asked` when it first asks for the stream ([`ClientLife::ask`]); `Asked` →
/// `Former` when a pair of its ends in a way that ends its client life ([`ClientLife::end`]).
/// Nothing leads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientLife {
    /// It has not asked for the stream: it does not count as needing a host.
    Unasked,
    /// It asked at least once: it counts as needing a host, and may be made a client.
    Asked,
    /// It was a client once: its requests are served by the edge from now on (OME's rule; it may
    /// still host, and with `MoveFormerClients` it may still be moved into a host).
    Former,
}

impl ClientLife {
    /// It asked for the stream; true if for the first time.
    pub fn ask(&mut self) -> bool {
        let first = *self == ClientLife::Unasked;
        if first {
            *self = ClientLife::Asked;
        }
        first
    }

    /// Its client life ended: a former client from now on.
    pub fn end(&mut self) {
        *self = ClientLife::Former;
    }

    /// Whether it ever asked for the stream.
    pub fn asked(self) -> bool {
        self != ClientLife::Unasked
    }

    /// Whether it was a client once.
    pub fn former(self) -> bool {
        self == ClientLife::Former
    }
}

/// How a session's relay stands as a host peer, on this socket (it keeps its standing while it
/// is not a host: a proven relay asking again is pooled as proven when it hosts again).
///
/// `Untried` → `Proven` when a client's link with it first plays ([`Standing::prove`]);
/// `Untried` or `Proven` → `Retired` when it misses an offer deadline ([`Standing::retire`]);
/// a retired relay whose client's link plays is marked `relayed` (that still counts as its
/// first proof: its pool's vacancies are filled then, as for any host proven). Retirement is
/// for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// No client's link with it has played yet.
    Untried,
    /// A client answered its offer (or confirmed the link): its relay works; it goes before
    /// untried hosts, and under `PairNewViewers` proven only proven hosts take new viewers.
    Proven,
    /// It missed an offer deadline: never asked to offer again, never given a client, never a
    /// move target; a client-only viewer from now on. `relayed`: a client's link with it
    /// played all the same.
    Retired { relayed: bool },
}

impl Standing {
    /// A client's link with it plays: true if that is its first proof.
    pub fn prove(&mut self) -> bool {
        let first = !self.proven();
        *self = match *self {
            Standing::Retired { .. } => Standing::Retired { relayed: true },
            _ => Standing::Proven,
        };
        first
    }

    /// It missed an offer deadline: true if it was not retired yet.
    pub fn retire(&mut self) -> bool {
        let first = !self.retired();
        if first {
            *self = Standing::Retired { relayed: self.proven() };
        }
        first
    }

    /// Whether a client's link with it played.
    pub fn proven(self) -> bool {
        matches!(self, Standing::Proven | Standing::Retired { relayed: true })
    }

    /// Whether it missed an offer deadline.
    pub fn retired(self) -> bool {
        matches!(self, Standing::Retired { .. })
    }
}

/// Whether a viewer may be moved into a host peer's vacancy, and whether it waits for one.
///
/// `Movable` ⇄ `Queued` as it joins its pool's queue ([`Movability::queue`], once it may move
/// and has played from the edge for `MoveAfterMs`) and leaves it ([`Movability::unqueue`]: it
/// asked again, left, was moved, or relays now); any → `Never` when it ignores a move or misses
/// an answer deadline ([`Movability::never_again`]), for good. The other conditions of a move
/// (see `Peer::may_move`) are read from the rest of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Movability {
    /// It may be moved when the rules allow; it is not in the queue.
    Movable,
    /// In its pool's movable queue since `since` (ms).
    Queued { since: u64 },
    /// Never moved again in this session (it ignored a move, or missed an answer deadline).
    Never,
}

impl Movability {
    /// It joins the queue at `now`.
    pub fn queue(&mut self, now: u64) {
        *self = Movability::Queued { since: now };
    }

    /// It leaves the queue: since when it was in it, if it was.
    pub fn unqueue(&mut self) -> Option<u64> {
        let Movability::Queued { since } = *self else { return None };
        *self = Movability::Movable;
        Some(since)
    }

    /// It is never moved again.
    pub fn never_again(&mut self) {
        *self = Movability::Never;
    }

    /// Since when it waits in the queue, if it does.
    pub fn queued_since(self) -> Option<u64> {
        match self {
            Movability::Queued { since } => Some(since),
            _ => None,
        }
    }
}

/// Whether a client relays the stream further (`MaxDepth` over 1).
///
/// `Off` → `On` when its link plays and it may relay at its depth ([`Relay::start`]); `On` →
/// `Off` when it stops ([`Relay::stop`]: its own pair ends, and its clients' pairs with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Relay {
    /// It relays to nobody.
    Off,
    /// It is pooled as a host, and these are its clients (at most k).
    On { clients: Vec<SessionId> },
}

impl Relay {
    /// It starts relaying, to nobody yet.
    pub fn start(&mut self) {
        *self = Relay::On { clients: Vec::new() };
    }

    /// It relays no more: its clients, if it relayed.
    pub fn stop(&mut self) -> Option<Vec<SessionId>> {
        match std::mem::replace(self, Relay::Off) {
            Relay::On { clients } => Some(clients),
            Relay::Off => None,
        }
    }

    /// Its clients, if it relays.
    pub fn clients(&self) -> Option<&Vec<SessionId>> {
        match self {
            Relay::On { clients } => Some(clients),
            Relay::Off => None,
        }
    }
}

/// A client's current pairing with its host (whose id and stage are in [`Role::Client`]): the
/// peer holds one exactly while its role is a client's. Made when it is paired, dropped when the
/// pair ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pair {
    /// The token of the deadline the pair must meet now: only that timer may end the pair (one
    /// armed for an earlier pairing of the same two sessions does nothing).
    pub deadline: u64,
    /// Its player reports its link (its answer said `link_reports: true`).
    pub reports_links: bool,
    /// What its receiving connection's candidates have shown (its answer, and the candidates it
    /// sends its host).
    pub recv_reach: Reach,
    /// Whether it relays further.
    pub relay: Relay,
}

impl Pair {
    fn new() -> Self {
        Pair { deadline: 0, reports_links: false, recv_reach: Reach::Unknown, relay: Relay::Off }
    }
}

/// The tokens of a client's reach and confirmation deadlines, if armed. They are kept across
/// pairings: a timer is checked against the token here and the `(host, client)` it names, so
/// one armed for an earlier pairing of the same two sessions, still due, stands for the next.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LinkTimers {
    /// The reach deadline's token.
    pub reach: u64,
    /// The confirmation deadline's token.
    pub confirm: u64,
}

/// A session as the core sees it.
#[derive(Debug)]
pub(super) struct Peer {
    pub key: PoolKey,
    /// Its network, for local hosts first.
    pub site: Site,
    /// Its address, as the server sees it (its network's public address behind NAT).
    pub ip: Option<IpAddr>,
    /// What it can do, known at join.
    pub can: Capabilities,
    /// Its part (changed only by the methods below, with `pair`).
    role: Role,
    /// Its pairing, exactly while it is a client.
    pair: Option<Pair>,
    /// Its history as a client.
    pub life: ClientLife,
    /// Its relay's standing as a host.
    pub standing: Standing,
    /// Plays from the edge since this instant (ms), as far as the core knows.
    pub edge_since: Option<u64>,
    /// Whether it may be moved into a host, and whether it waits for one.
    pub movability: Movability,
    /// Times it was moved into a host in this session.
    pub moves: u8,
    /// A link of its across networks failed with its receiving connection showing only LAN or
    /// mDNS candidates (no STUN: OvenPlayer without `iceServers`), or such links failed from its
    /// side `MAX_CLIENT_FAILURES` times: it is not paired across networks again, nor moved, in
    /// this session (waiting in the queue it would only hold up the viewers behind it).
    pub receives_lan_only: bool,
    /// The host of its latest pairing (kept after the pair ended): a message of that pair still on
    /// the wire when it ended is dropped as stale, not refused.
    pub last_host: Option<SessionId>,
    /// When the host of its latest pairing was asked to offer (ms), until the offer is measured
    /// (kept after the pair ended: a late offer is measured too): the offer latency is measured
    /// from it, once per pairing.
    pub host_asked_at: Option<u64>,
    /// Its delivery as last reported to the host.
    pub reported: Delivery,
    /// What its relay's candidates have shown, as a host: who can reach it.
    pub relay_reach: Reach,
    /// Hops from the edge as of its latest pairing: a client one more than its host; 0 if it was
    /// never paired (not reset when a pair ends).
    pub depth: u8,
    /// Its reach and confirmation deadlines, as a client.
    pub timers: LinkTimers,
}

impl Peer {
    /// A session that just opened, in pool `key` at `site`.
    pub fn new(key: PoolKey, site: Site, ip: Option<IpAddr>, can: Capabilities) -> Self {
        Peer {
            key,
            site,
            ip,
            can,
            role: Role::Viewer,
            pair: None,
            life: ClientLife::Unasked,
            standing: Standing::Untried,
            edge_since: None,
            movability: Movability::Movable,
            moves: 0,
            receives_lan_only: false,
            last_host: None,
            host_asked_at: None,
            reported: Delivery::default(),
            relay_reach: Reach::Unknown,
            depth: 0,
            timers: LinkTimers::default(),
        }
    }

    /// Whether it asked for the stream and can only be a client (it may not host, or its player
    /// proved it cannot relay).
    pub fn client_only(&self) -> bool {
        self.can.p2p && (!self.can.host_eligible || self.standing.retired()) && self.life.asked()
    }

    /// Whether it counts among its pool's dependants: client-only viewers who were never a client.
    pub fn dependant(&self) -> bool {
        self.client_only() && !self.life.former()
    }

    /// Whether it may wait in the movable queue: a client-only viewer playing from the edge,
    /// relaying to nobody, that can still be moved (a former client only if `former_clients`);
    /// with `idle_hosts`, also a host peer nobody plays from (under `PairNewViewers` proven, how
    /// a viewer who could host becomes a client at all).
    pub fn may_move(&self, former_clients: bool, idle_hosts: bool) -> bool {
        let relays_to_nobody = match &self.role {
            Role::Viewer => true,
            Role::Host { clients } => clients.is_empty(),
            Role::Client { .. } => false,
        };
        let idle_host = idle_hosts && self.can.p2p && self.life.asked() && matches!(self.role, Role::Host { .. });
        (self.client_only() || idle_host)
            && !self.receives_lan_only
            && (!self.life.former() || former_clients)
            && relays_to_nobody
            && self.edge_since.is_some()
            && !matches!(self.movability, Movability::Never)
            && self.moves < MAX_MOVES_PER_VIEWER
    }

    /// It was a client and is not one any more: its requests go to the edge from now on.
    pub fn end_client_life(&mut self, pool: &mut HostPool) {
        if self.dependant() {
            pool.dependant_left(self.key);
        }
        self.life.end();
    }

    /// Its part in P2P delivery.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// Its pairing, if it is a client.
    pub fn pair(&self) -> Option<&Pair> {
        self.pair.as_ref()
    }

    /// Its pairing, if it is a client, to change.
    pub fn pair_mut(&mut self) -> Option<&mut Pair> {
        self.pair.as_mut()
    }

    /// A viewer starts hosting, with no clients yet.
    pub fn start_hosting(&mut self) {
        debug_assert_eq!(self.role, Role::Viewer, "only a viewer starts hosting");
        self.role = Role::Host { clients: Vec::new() };
    }

    /// A host stops hosting: its clients (whose pairs the caller ends).
    pub fn stop_hosting(&mut self) -> Vec<SessionId> {
        match std::mem::replace(&mut self.role, Role::Viewer) {
            Role::Host { clients } => clients,
            other => {
                self.role = other;
                Vec::new()
            }
        }
    }

    /// Its pair got to `stage`.
    pub fn set_stage(&mut self, stage: Stage) {
        if let Role::Client { stage: s, .. } = &mut self.role {
            *s = stage;
        }
    }

    /// It becomes `host`'s client at `stage`, `depth` hops from the edge: a new pairing.
    pub fn pair_with(&mut self, host: SessionId, stage: Stage, depth: u8) {
        self.role = Role::Client { host, stage };
        self.pair = Some(Pair::new());
        self.depth = depth;
        self.last_host = Some(host);
    }

    /// Its pair ended: it plays from the edge (or is about to), zero hops from it.
    pub fn unpair(&mut self) {
        self.role = Role::Viewer;
        self.pair = None;
        self.depth = 0;
    }

    /// Whether, as a client, its player reports its link.
    pub fn reports_links(&self) -> bool {
        self.pair.as_ref().is_some_and(|p| p.reports_links)
    }

    /// The clients it relays to as a client relaying further.
    pub fn relay_clients(&self) -> Option<&Vec<SessionId>> {
        self.pair.as_ref().and_then(|p| p.relay.clients())
    }

    /// The clients it relays to: a host's, or a relaying client's (none for anyone else).
    pub fn clients(&self) -> &[SessionId] {
        match &self.role {
            Role::Host { clients } => clients,
            Role::Client { .. } => self.relay_clients().map_or(&[], Vec::as_slice),
            Role::Viewer => &[],
        }
    }

    /// How many it relays to.
    pub fn load(&self) -> u16 {
        self.clients().len() as u16
    }

    /// The clients it relays to: a host's, or a relaying client's.
    pub fn downstream(&mut self) -> Option<&mut Vec<SessionId>> {
        match (&mut self.role, &mut self.pair) {
            (Role::Host { clients }, _) => Some(clients),
            (Role::Client { .. }, Some(Pair { relay: Relay::On { clients }, .. })) => Some(clients),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_is_proven_once_and_retired_for_good() {
        let mut s = Standing::Untried;
        assert!(s.prove(), "the first proof");
        assert!(!s.prove(), "and only the first");
        assert!(s.retire() && s.retired() && s.proven(), "a proven relay retired stays proven");
        assert!(!s.retire(), "retired once");
        let mut s = Standing::Untried;
        assert!(s.retire() && !s.proven());
        assert!(s.prove(), "a retired relay's first proof still counts as one");
        assert_eq!(s, Standing::Retired { relayed: true });
    }

    #[test]
    fn a_client_life_goes_one_way() {
        let mut life = ClientLife::Unasked;
        assert!(!life.asked());
        assert!(life.ask() && !life.ask(), "asked once");
        life.end();
        assert!(life.former() && life.asked());
        assert!(!life.ask(), "a former client stays one");
        assert!(life.former());
    }

    #[test]
    fn only_a_queued_viewer_leaves_the_queue_and_never_is_for_good() {
        let mut m = Movability::Movable;
        assert_eq!(m.unqueue(), None);
        m.queue(7);
        assert_eq!((m.queued_since(), m.unqueue(), m), (Some(7), Some(7), Movability::Movable));
        m.never_again();
        assert_eq!((m.unqueue(), m.queued_since(), m), (None, None, Movability::Never), "never moved again");
    }

    #[test]
    fn a_pairing_lives_exactly_while_a_client() {
        let can = Capabilities { p2p: true, host_eligible: true, relay_stun: false };
        let mut p = Peer::new((0, 0), Site::UNKNOWN, None, can);
        assert!(p.pair().is_none() && p.downstream().is_none());
        p.pair_with(3, Stage::AwaitingOffer, 1);
        assert_eq!((p.role(), p.last_host, p.depth), (&Role::Client { host: 3, stage: Stage::AwaitingOffer }, Some(3), 1));
        assert!(p.downstream().is_none(), "a client relays to nobody until it relays");
        p.pair_mut().unwrap().relay.start();
        p.downstream().unwrap().push(9);
        assert_eq!((p.load(), p.relay_clients()), (1, Some(&vec![9])));
        assert_eq!(p.pair_mut().unwrap().relay.stop(), Some(vec![9]));
        p.unpair();
        assert!(p.pair().is_none() && *p.role() == Role::Viewer);
        assert_eq!(p.last_host, Some(3), "kept: a message of the pair still on the wire is stale");
        p.start_hosting();
        p.downstream().unwrap().push(4);
        assert_eq!(p.stop_hosting(), vec![4]);
        assert_eq!(p.role(), &Role::Viewer);
    }
}
