//! The P2P messages between a pair's two players (part of [`P2pCore`]): which pair a message
//! belongs to, whether it is relayed, dropped as stale or refused, and what each relayed one does
//! to its pair.

use super::{counts, P2pCore, Role, Stage};
use crate::broker::{self, BrokerError, P2pMessage};
use crate::fallback::Deadline;
use crate::reach::Reach;
use plugin_api::{HostCall, SessionId};
use serde_json::Value;

/// What an SDP (`{type, sdp}`) shows in its candidates.
fn reach_of_sdp(sdp: &Value) -> Reach {
    Reach::of_sdp(sdp.get("sdp").and_then(Value::as_str).unwrap_or(""))
}

impl P2pCore {
    /// The pair `(host, client)` a message from `from` is about.
    pub(super) fn ends_of(&self, from: SessionId, message: &P2pMessage) -> (SessionId, SessionId) {
        match message {
            P2pMessage::OfferP2p { client, .. } | P2pMessage::CandidateP2p { client, .. } => (from, *client),
            P2pMessage::Answer { host, .. } | P2pMessage::Candidate { host, .. } => (*host, from),
            P2pMessage::LinkState { peer, .. } => {
                let sender_is_client = matches!(self.role(from), Some(Role::Client { host, .. }) if host == peer)
                    || self.peers.get(&from).is_some_and(|p| p.last_host == Some(*peer));
                if sender_is_client { (*peer, from) } else { (from, *peer) }
            }
        }
    }

    /// The stage of the pair of `host` and `client` if they are one past `Moving`, for a message
    /// from `from` to be relayed; else it is dealt with here (stale: dropped; to a stranger:
    /// refused), and `None`.
    pub(super) fn stage_of(&mut self, now: u64, from: SessionId, host: SessionId, client: SessionId, message: &P2pMessage) -> Option<Stage> {
        let partner = if host == from { client } else { host };
        match self.role(client) {
            // A viewer being moved has not been introduced to its host yet: nobody may address it.
            Some(&Role::Client { host: h, stage }) if h == host && stage != Stage::Moving => return Some(stage),
            _ if self.peers.get(&client).is_some_and(|p| p.last_host == Some(host)) => {
                // Their pair just ended (a deadline passed, or one of them started over) and this
                // crossed the `stop` on the wire: dropped, never held against the sender. A late
                // offer still says how long hosts take, so the deadline can grow back.
                if matches!(message, P2pMessage::OfferP2p { .. }) {
                    self.measure_offer(now, client);
                }
                self.count(counts::MESSAGES_STALE, 1);
            }
            _ if self.peers.contains_key(&partner) => self.refuse(from, BrokerError::NotPartner(partner)),
            // The partner just left; its `stop` is on its way to the sender.
            _ => self.count(counts::MESSAGES_STALE, 1),
        }
        None
    }

    /// Relays `message` from `from` within the pair of `host` and `client`, at `stage`, and does
    /// what it means for the pair.
    pub(super) fn relay(&mut self, now: u64, from: SessionId, host: SessionId, client: SessionId, stage: Stage, message: P2pMessage) {
        match message {
            P2pMessage::OfferP2p { sdp, candidates, .. } => self.offer_received(now, host, client, stage, &sdp, candidates.as_ref()),
            P2pMessage::CandidateP2p { candidates, .. } => {
                self.out(HostCall::Send(client, broker::relayed_host_candidates(client, host, &candidates)));
                let shown = Reach::of_candidates(&candidates);
                self.reach_shown(host, client, |p| Some(&mut p.relay_reach), host, shown);
            }
            P2pMessage::LinkState { connected: true, .. } if from == client && stage == Stage::Answered => {
                self.set_stage(client, Stage::Confirmed);
                self.count(counts::LINKS_CONFIRMED, 1);
                self.log(format!("{client}: its link with host {host} is connected"));
                self.proven(host);
                self.maybe_relay(client);
            }
            P2pMessage::LinkState { connected: false, .. } if stage != Stage::AwaitingOffer => {
                let by = if from == client { "the client" } else { "the host" };
                self.link_failed(now, host, client, counts::FALLBACK_LINK_FAILED, &format!("{by} reported the link failed"));
            }
            P2pMessage::LinkState { .. } => {}
            P2pMessage::Answer { .. } if stage == Stage::AwaitingOffer => self.refuse(from, BrokerError::AnswerBeforeOffer(host)),
            P2pMessage::Answer { sdp, link_reports, .. } => self.answer_received(host, client, stage, &sdp, link_reports),
            P2pMessage::Candidate { candidates, .. } => {
                self.out(HostCall::Send(host, broker::candidate_p2p(host, client, &candidates)));
                let shown = Reach::of_candidates(&candidates);
                self.reach_shown(host, client, |p| p.pair_mut().map(|pair| &mut pair.recv_reach), client, shown);
            }
        }
    }

    /// `host` offered to `client`: the offer is relayed (unless it shows the link cannot form),
    /// measured once per pairing, and the client's answer deadline armed.
    fn offer_received(&mut self, now: u64, host: SessionId, client: SessionId, stage: Stage, sdp: &Value, candidates: Option<&Value>) {
        let shown = reach_of_sdp(sdp).and(candidates.map_or(Reach::Unknown, Reach::of_candidates));
        if self.relay_shows(host, shown) == Reach::LocalOnly && !self.same_network(host, client) {
            // The offer shows it: this link cannot form. The client never sees it.
            if stage == Stage::AwaitingOffer {
                self.measure_offer(now, client);
            }
            self.link_failed(now, host, client, counts::FALLBACK_UNREACHABLE, "the host's offer shows only LAN or mDNS candidates, and the client is on another network");
            return;
        }
        self.out(HostCall::Send(client, broker::relayed_offer(client, host, sdp, candidates, &self.ice_servers)));
        self.log(format!("{client}: host {host}'s offer delivered"));
        if !self.same_network(host, client) {
            // Across networks the host must show where it can be reached, in time.
            self.arm_reach_deadline(host, client);
        }
        if stage == Stage::AwaitingOffer {
            self.measure_offer(now, client);
            self.set_stage(client, Stage::AwaitingAnswer);
            self.arm_pair_deadline(client, Deadline::ClientAnswer { host, client }, self.config.answer_timeout_ms);
        }
    }

    /// `client` answered `host`'s offer: the answer is relayed; the first one makes the pair
    /// answered, pending its player's report if it reports links, else proving the host if the
    /// pair passes the reach rule.
    fn answer_received(&mut self, host: SessionId, client: SessionId, stage: Stage, sdp: &Value, link_reports: bool) {
        self.out(HostCall::Send(host, broker::answer_p2p(host, client, sdp)));
        if stage != Stage::AwaitingAnswer {
            return; // a repeated answer changes nothing
        }
        self.reach_shown(host, client, |p| p.pair_mut().map(|pair| &mut pair.recv_reach), client, reach_of_sdp(sdp));
        self.set_stage(client, Stage::Answered);
        if link_reports {
            // Its player will say whether the link plays: until then it is pending.
            let token = self.deadlines.arm(Deadline::Confirm { host, client });
            let peer = self.peers.get_mut(&client).expect("a pair's client is known");
            peer.pair_mut().expect("a client has its pair").reports_links = true;
            peer.timers.confirm = token;
            self.timer(token, self.config.confirm_timeout_ms);
        } else if self.link_evidence(host, client) {
            // OvenPlayer cannot report: the pair passes the reach rule, that is the evidence.
            self.proven(host);
            self.maybe_relay(client);
        }
    }
}
