//! Where a P2P link can form, and what happens when it cannot or fails: one network or not, the
//! reach a pair's candidates show, the deadlines that wait for it, and a failed link's aftermath
//! (part of [`P2pCore`]; `reach` and `failed_links` hold the rules' pieces).

use super::{counts, P2pCore, Peer, Role, Stage, MAX_CLIENT_FAILURES};
use crate::fallback::Deadline;
use crate::pair_end::PairEnd;
use crate::config::PairNewViewers;
use crate::reach::Reach;
use plugin_api::SessionId;

impl P2pCore {
    /// Whether `host` and `client` are on one network: behind one public address, in one
    /// configured `<Site>`, or both reaching the server from private addresses (no NAT between
    /// them and the server: its own LAN). A relay that shows only LAN or mDNS candidates reaches
    /// only these.
    pub(super) fn same_network(&self, host: SessionId, client: SessionId) -> bool {
        let (Some(h), Some(c)) = (self.peers.get(&host), self.peers.get(&client)) else { return false };
        let both_private = matches!((h.ip, c.ip), (Some(hi), Some(ci)) if crate::reach::is_local(hi) && crate::reach::is_local(ci));
        (h.ip.is_some() && h.ip == c.ip) || (h.site.is_configured() && h.site == c.site) || both_private
    }

    /// Whether `client` may be paired with `host` at `now`: a link between them can form as far
    /// as the core knows (the host's relay reaches the client's network, and no link between
    /// their addresses failed lately).
    pub(super) fn may_pair(&self, now: u64, host: SessionId, client: SessionId) -> bool {
        let (Some(h), Some(c)) = (self.peers.get(&host), self.peers.get(&client)) else { return false };
        if matches!((h.ip, c.ip), (Some(hi), Some(ci)) if self.failed.has_failed(now, hi, ci)) {
            return false;
        }
        if self.same_network(host, client) {
            return true;
        }
        // Across networks both ends must be able to show a public address, and the client's
        // address must not have failed with several hosts lately (its router, not theirs).
        let client_failures = c.ip.map_or(0, |ci| self.failed.failures_of(now, ci));
        self.reaches_out(h) && !c.receives_lan_only && client_failures < MAX_CLIENT_FAILURES
    }

    /// Whether `host`'s relay may take clients of other networks: not one that showed only LAN
    /// or mDNS candidates, and under `proven` (nobody is moved into a link that cannot form) only
    /// one that has shown a public candidate, or whose player says it uses STUN.
    fn reaches_out(&self, host: &Peer) -> bool {
        let known_to_reach = self.config.pair_new_viewers == PairNewViewers::Any || host.relay_reach == Reach::Public || host.can.relay_stun;
        host.relay_reach != Reach::LocalOnly && known_to_reach
    }

    /// Whether every viewer `host` may take is of its site (so its site's queue holds them all):
    /// its relay reaches no other network, and its network is no wider than its site (it is
    /// placed, and not at a private address: the server's own LAN is one network of many sites).
    pub(super) fn takes_only_its_site(&self, host: SessionId) -> bool {
        let Some(h) = self.peers.get(&host) else { return false };
        let private = h.ip.is_none_or(crate::reach::is_local);
        !self.reaches_out(h) && h.site != crate::locality::Site::UNKNOWN && !private
    }

    /// `host`'s relay showed `shown` as well: what it has shown in all.
    pub(super) fn relay_shows(&mut self, host: SessionId, shown: Reach) -> Reach {
        let Some(peer) = self.peers.get_mut(&host) else { return Reach::Unknown };
        peer.relay_reach = peer.relay_reach.and(shown);
        peer.relay_reach
    }

    /// Arms the reach deadline of `client`'s pair with `host` (once per pairing; never with
    /// `ReachWaitMs` 0).
    pub(super) fn arm_reach_deadline(&mut self, host: SessionId, client: SessionId) {
        let Some(peer) = self.peers.get(&client).filter(|_| self.config.reach_wait_ms > 0) else { return };
        if self.deadlines.get(peer.timers.reach) == Some(&Deadline::Reach { host, client }) {
            return;
        }
        let token = self.deadlines.arm(Deadline::Reach { host, client });
        self.peers.get_mut(&client).expect("checked above").timers.reach = token;
        self.timer(token, self.config.reach_wait_ms);
    }

    /// The reach deadline of `client`'s pair with `host` passed: given up unless the host's relay
    /// has shown a public candidate meanwhile.
    pub(super) fn reach_wait_over(&mut self, now: u64, host: SessionId, client: SessionId) {
        let waiting = |stage: Stage| matches!(stage, Stage::AwaitingAnswer | Stage::Answered);
        let paired = matches!(self.role(client), Some(&Role::Client { host: h, stage }) if h == host && waiting(stage));
        let host_public = self.peers.get(&host).is_some_and(|p| p.relay_reach == Reach::Public);
        if paired && !(self.link_evidence(host, client) && host_public) {
            let why = format!("across networks, the host showed no public candidate, or an end only LAN or mDNS ones, in {} ms", self.config.reach_wait_ms);
            self.link_failed(now, host, client, counts::FALLBACK_UNREACHABLE, &why);
        }
    }

    /// Whether what the pair's candidates show lets its link form: one network, or neither end
    /// showing only LAN or mDNS candidates (an end that showed none yet is given the benefit of
    /// the doubt). For a player that cannot report its link, this is the evidence it plays.
    pub(super) fn link_evidence(&self, host: SessionId, client: SessionId) -> bool {
        let (Some(h), Some(c)) = (self.peers.get(&host), self.peers.get(&client)) else { return false };
        let recv_reach = c.pair().map_or(Reach::Unknown, |p| p.recv_reach);
        self.same_network(host, client) || (h.relay_reach != Reach::LocalOnly && recv_reach != Reach::LocalOnly)
    }

    /// `end` (the pair's host or client) showed `shown` in its candidates for the pair of `host`
    /// and `client` (`reach` picks which of its reaches): the pair's deadline is armed when the
    /// evidence is lost, and a non-reporting client's host is proven when it is found.
    pub(super) fn reach_shown(&mut self, host: SessionId, client: SessionId, reach: fn(&mut Peer) -> Option<&mut Reach>, end: SessionId, shown: Reach) {
        let before = self.link_evidence(host, client);
        if let Some(r) = self.peers.get_mut(&end).and_then(reach) {
            *r = r.and(shown);
        }
        let after = self.link_evidence(host, client);
        if before != after {
            self.touch(&[client]);
        }
        if !after {
            self.arm_reach_deadline(host, client);
        } else if !before && self.peers.get(&client).is_some_and(|p| matches!(p.role(), Role::Client { stage: Stage::Answered, .. }) && !p.reports_links()) {
            self.proven(host);
            self.maybe_relay(client);
        }
    }

    /// Whether the timer `token` is the confirmation deadline of `client`, still `host`'s client,
    /// answered and not confirmed.
    pub(super) fn awaits_confirmation(&self, token: u64, host: SessionId, client: SessionId) -> bool {
        self.peers.get(&client).is_some_and(|p| *p.role() == Role::Client { host, stage: Stage::Answered } && p.timers.confirm == token)
    }

    /// The link of `client` with `host` cannot form or failed (`reason`, a fallback count): the
    /// client plays from the edge at once (an edge offer if it was still waiting for the host's,
    /// else `stop`, after which it asks again and the edge serves it); the host is told `stop`;
    /// the two addresses are not paired again for a while. The host is not blamed otherwise.
    pub(super) fn link_failed(&mut self, now: u64, host: SessionId, client: SessionId, reason: &'static str, why: &str) {
        if !matches!(self.role(client), Some(&Role::Client { host: h, .. }) if h == host) {
            return;
        }
        self.log(format!("{client} ({}): link with host {host} ({}) given up: {why}; the edge serves it", self.address(client), self.address(host)));
        // A host that showed only LAN candidates explains the failure: the client is not suspect.
        let host_at_fault = self.peers.get(&host).is_some_and(|p| p.relay_reach == Reach::LocalOnly);
        if let (Some(h), Some(c)) = (self.peers.get(&host).and_then(|p| p.ip), self.peers.get(&client).and_then(|p| p.ip)) {
            self.failed.failed(now, h, c, !host_at_fault);
        }
        // A client whose receiving side showed only LAN candidates across networks, or whose links
        // failed from its side too often, is not paired across networks again (on its own network
        // it still is: a LAN pair needs no public address).
        let barred = self.peers.get(&client).and_then(|p| p.ip).is_some_and(|ci| self.failed.failures_of(now, ci) >= MAX_CLIENT_FAILURES);
        let across = !self.same_network(host, client);
        let peer = self.peers.get_mut(&client).expect("a pair's client is known");
        let receives_lan_only = peer.pair().is_some_and(|pair| pair.recv_reach == Reach::LocalOnly);
        peer.receives_lan_only |= barred || (across && receives_lan_only);
        self.end_pair(host, client, PairEnd::LinkFailed(reason));
    }
}
