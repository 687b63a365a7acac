//! The core's bookkeeping checked whole (for tests and the fuzzer; part of [`P2pCore`]).

use super::peer::{Movability, Peer};
use super::{P2pCore, Role, Stage};
use crate::fallback::Deadline;
use crate::locality::Site;
use crate::matching::PoolKey;
use plugin_api::SessionId;
use std::collections::HashMap;

/// A host in the pool as the peers say it should be: `(key, load, id)`.
type Pooled = (PoolKey, u16, SessionId);

impl P2pCore {
    /// Checks the bookkeeping behind [`Self::role`] (for tests and the fuzzer): roles point at each
    /// other and share a pool key, no host has more than k clients, the pool holds exactly the
    /// hosts not retired at their loads, the dependants are counted right, the movable queue holds
    /// exactly the viewers who may move, and every waiting pair has its deadline armed.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut pool: Vec<_> = self.pool.hosts().collect();
        let (mut pooled, mut dependants) = (Vec::new(), HashMap::new());
        for (&id, p) in &self.peers {
            if p.dependant() {
                *dependants.entry(p.key).or_insert(0u32) += 1;
            }
            pooled.extend(self.check_peer(id, p)?);
        }
        pool.sort_unstable();
        pooled.sort_unstable();
        if pool != pooled {
            return Err(format!("pool {pool:?}, hosts {pooled:?}"));
        }
        self.pool.check_indexes()?;
        if *self.pool.dependants() != dependants {
            return Err(format!("dependants counted {:?}, actually {dependants:?}", self.pool.dependants()));
        }
        self.check_queue()
    }

    /// One peer's record, and its place in the pool if it should have one.
    fn check_peer(&self, id: SessionId, p: &Peer) -> Result<Option<Pooled>, String> {
        if p.movability.queued_since().is_some() && !p.may_move(self.config.move_former_clients, self.moves_idle_hosts()) {
            return Err(format!("{id} is queued to move but may not ({:?}, moves {})", p.role(), p.moves));
        }
        if p.pair().is_some() != matches!(p.role(), Role::Client { .. }) {
            return Err(format!("{id} is {:?} with pairing {:?}", p.role(), p.pair()));
        }
        match p.role() {
            Role::Viewer => Ok(None),
            Role::Host { clients } => self.check_host(id, p, clients),
            Role::Client { host, stage } => self.check_client(id, p, *host, *stage),
        }
    }

    /// A host peer: may host, at most k clients, each its own and listed once.
    fn check_host(&self, id: SessionId, p: &Peer, clients: &[SessionId]) -> Result<Option<Pooled>, String> {
        let k = usize::from(self.config.max_client_peers_per_host_peer);
        if !p.can.may_host() || clients.len() > k {
            return Err(format!("{id} hosts {clients:?} ({:?}, k {k})", p.can));
        }
        for (i, c) in clients.iter().enumerate() {
            let back = self.peers.get(c).filter(|cp| cp.key == p.key).map(Peer::role);
            if !matches!(back, Some(Role::Client { host, .. }) if *host == id) || clients[..i].contains(c) {
                return Err(format!("host {id} lists {c}, whose role is {back:?}"));
            }
        }
        Ok((!p.standing.retired()).then_some((p.key, clients.len() as u16, id)))
    }

    /// A client: listed by its host, taking part in P2P, no former client unless moved as one,
    /// its pair's current deadline armed; relaying further only within the depth and k.
    fn check_client(&self, id: SessionId, p: &Peer, host: SessionId, stage: Stage) -> Result<Option<Pooled>, String> {
        let listed = match self.peers.get(&host) {
            Some(h) if matches!(h.role(), Role::Client { .. }) => h.relay_clients().is_some_and(|c| c.contains(&id)),
            Some(h) => matches!(h.role(), Role::Host { clients } if clients.contains(&id)),
            None => false,
        };
        let deadline = match stage {
            Stage::Moving => Some(Deadline::MoveRequest { host, client: id }),
            Stage::AwaitingOffer => Some(Deadline::HostOffer { host, client: id }),
            Stage::AwaitingAnswer => Some(Deadline::ClientAnswer { host, client: id }),
            Stage::Answered | Stage::Confirmed => None,
        };
        let former = p.life.former() && !(self.config.move_former_clients && p.moves > 0);
        let token = p.pair().map_or(0, |pair| pair.deadline);
        let current = deadline.is_none_or(|d| self.deadlines.get(token) == Some(&d));
        if !listed || !p.can.p2p || former || !current {
            return Err(format!("client {id} of {host} at {stage:?}: listed {listed}, p2p {}, {:?}, deadline {deadline:?} current: {current}", p.can.p2p, p.life));
        }
        let Some(subs) = p.relay_clients() else { return Ok(None) };
        let k = usize::from(self.config.max_client_peers_per_host_peer);
        let too_deep = p.depth >= self.config.max_depth || subs.len() > k;
        let theirs = subs.iter().all(|c| matches!(self.role(*c), Some(Role::Client { host, .. }) if *host == id));
        if too_deep || !theirs || !p.can.host_eligible {
            return Err(format!("relaying client {id} at depth {} relays to {subs:?}", p.depth));
        }
        Ok((!p.standing.retired()).then_some((p.key, subs.len() as u16, id)))
    }

    /// The movable queue: each entry matches its viewer's record, and the per-network index
    /// counts those of a known network.
    fn check_queue(&self) -> Result<(), String> {
        let mut sited = 0;
        for (key, since, id) in self.movable.all() {
            let Some(p) = self.peers.get(&id).filter(|p| p.key == key && p.movability == Movability::Queued { since }) else {
                return Err(format!("{id} is queued to move under {key:?} since {since}, but its record says otherwise"));
            };
            sited += usize::from(p.site != Site::UNKNOWN);
        }
        if sited != self.movable.sited() {
            return Err(format!("{} queued by network, {sited} expected", self.movable.sited()));
        }
        Ok(())
    }
}
