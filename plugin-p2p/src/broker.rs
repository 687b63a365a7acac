//! Brokering the player-to-player signalling: what a P2P message is, who may send it to whom, and
//! the messages relayed on (PROTOCOL.md, "P2P flow").

use ome_signalling::messages::{command, Answer, Envelope, LinkStatus, Offer, RequestOfferP2p, ServerMessage, Stop, Trickle, Verbatim};
use plugin_api::SessionId;
use serde::Deserialize;
use serde_json::Value;

/// A P2P signalling message from a player.
#[derive(Debug, Clone, PartialEq)]
pub enum P2pMessage {
    /// A host's offer to its client `client`.
    OfferP2p {
        /// The addressee.
        client: SessionId,
        /// `{type, sdp}`.
        sdp: Value,
        /// Candidates sent with the offer, if any.
        candidates: Option<Value>,
    },
    /// A host's ICE candidates for its client.
    CandidateP2p {
        /// The addressee.
        client: SessionId,
        /// The candidates.
        candidates: Value,
    },
    /// A client's answer to its host's offer.
    Answer {
        /// The addressee.
        host: SessionId,
        /// `{type, sdp}`.
        sdp: Value,
        /// `link_reports: true`: its player will report the link ([`P2pMessage::LinkState`]).
        link_reports: bool,
    },
    /// A client's ICE candidates for its host.
    Candidate {
        /// The addressee.
        host: SessionId,
        /// The candidates.
        candidates: Value,
    },
    /// [`LINK_STATE`]: a player says how its P2P link with `peer` stands (this project's
    /// extension; OvenPlayer never sends it).
    LinkState {
        /// The partner at the other end of the link.
        peer: SessionId,
        /// `state: "connected"` (true) or `"failed"` (false).
        connected: bool,
    },
}

/// The command of a link report: `{"command": "p2p_link_state", "id": ME, "peer_id": PARTNER,
/// "state": "connected" | "failed"}`. A client sends it about its host once its connection is
/// up or has failed (its answer carried `link_reports: true`); a host may send `failed` about a
/// client. OME answers it with 400 "Unknown command", so a player sends it only to a server whose
/// offers name `p2p_ice_servers` (this host).
pub const LINK_STATE: &str = command::LINK_STATE;

/// Why a message was refused (error 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// Not JSON, or a field missing or of the wrong type.
    #[error("malformed P2P message: {0}")]
    Malformed(&'static str),
    /// The addressee is a live session that is not the sender's partner.
    #[error("session {0} is not your P2P partner")]
    NotPartner(SessionId),
    /// A client answered before its host's offer reached it (it would disarm the offer deadline).
    #[error("an answer before any offer from session {0}")]
    AnswerBeforeOffer(SessionId),
}

/// Reads a P2P message; `Ok(None)` if `json` is not one (another command, or addressed to the edge).
pub fn parse(json: &str) -> Result<Option<P2pMessage>, BrokerError> {
    let v: Value = serde_json::from_str(json).map_err(|_| BrokerError::Malformed("not JSON"))?;
    let Some(message) = v.as_object().and_then(|fields| Envelope::open(fields).ok()) else { return Ok(None) };
    let peer = || message.partner().ok_or(BrokerError::Malformed("peer_id must be a session id"));
    let field = |name: &'static str| message.get(name).cloned().ok_or(BrokerError::Malformed(name));
    Ok(Some(match message.command {
        command::OFFER_P2P => P2pMessage::OfferP2p { client: peer()?, sdp: field("sdp")?, candidates: field("candidates").ok() },
        command::CANDIDATE_P2P => P2pMessage::CandidateP2p { client: peer()?, candidates: field("candidates")? },
        command::ANSWER => P2pMessage::Answer { host: peer()?, sdp: field("sdp")?, link_reports: message.get("link_reports") == Some(&Value::Bool(true)) },
        command::CANDIDATE => P2pMessage::Candidate { host: peer()?, candidates: field("candidates")? },
        command::LINK_STATE => {
            let state = message.get("state").and_then(|s| LinkStatus::deserialize(s).ok());
            let state = state.ok_or(BrokerError::Malformed("state must be \"connected\" or \"failed\""))?;
            P2pMessage::LinkState { peer: peer()?, connected: state == LinkStatus::Connected }
        }
        _ => return Ok(None),
    }))
}

/// `request_offer_p2p`: asks host `host` to offer to new client `client`; `ice_servers` for its
/// relay connection (this project's `p2p_ice_servers`, which OvenPlayer ignores).
pub fn request_offer_p2p(host: SessionId, client: SessionId, ice_servers: &Value) -> String {
    Verbatim::RequestOfferP2p(RequestOfferP2p { id: host, peer_id: client, p2p_ice_servers: Some(ice_servers) }).to_json()
}

/// The host's offer, relayed to its client, with `ice_servers` for its receiving connection
/// (`p2p_ice_servers`: also what tells a player this server takes its link reports).
pub fn relayed_offer(client: SessionId, host: SessionId, sdp: &Value, candidates: Option<&Value>, ice_servers: &Value) -> String {
    Verbatim::Offer(Offer::relayed(client, host, sdp, candidates, ice_servers)).to_json()
}

/// The host's candidates, relayed to its client.
pub fn relayed_host_candidates(client: SessionId, host: SessionId, candidates: &Value) -> String {
    Verbatim::Candidate(Trickle { id: client, peer_id: host, candidates }).to_json()
}

/// The client's answer, relayed to its host.
pub fn answer_p2p(host: SessionId, client: SessionId, sdp: &Value) -> String {
    Verbatim::AnswerP2p(Answer { id: host, peer_id: client, sdp, link_reports: false }).to_json()
}

/// The client's candidates, relayed to its host.
pub fn candidate_p2p(host: SessionId, client: SessionId, candidates: &Value) -> String {
    Verbatim::CandidateP2p(Trickle { id: host, peer_id: client, candidates }).to_json()
}

/// `stop`: tells `to` that its partner `gone` left.
pub fn stop(to: SessionId, gone: SessionId) -> String {
    let stop: ServerMessage = ServerMessage::Stop(Stop { id: to, peer_id: Some(gone) });
    stop.to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_four_p2p_messages() {
        let m = parse(r#"{"command":"offer_p2p","id":1,"peer_id":2,"sdp":{"type":"offer","sdp":"v=0"}}"#).unwrap();
        assert!(matches!(m, Some(P2pMessage::OfferP2p { client: 2, candidates: None, .. })));
        let m = parse(r#"{"command":"candidate_p2p","id":1,"peer_id":2,"candidates":[]}"#).unwrap();
        assert!(matches!(m, Some(P2pMessage::CandidateP2p { client: 2, .. })));
        let m = parse(r#"{"command":"answer","id":2,"peer_id":1,"sdp":{}}"#).unwrap();
        assert!(matches!(m, Some(P2pMessage::Answer { host: 1, .. })));
        let m = parse(r#"{"command":"candidate","id":2,"peer_id":1,"candidates":[]}"#).unwrap();
        assert!(matches!(m, Some(P2pMessage::Candidate { host: 1, .. })));
        assert_eq!(parse(r#"{"command":"dance","id":2}"#), Ok(None));
        let m = parse(r#"{"command":"answer","id":2,"peer_id":1,"sdp":{},"link_reports":true}"#).unwrap();
        assert!(matches!(m, Some(P2pMessage::Answer { host: 1, link_reports: true, .. })));
        let m = parse(r#"{"command":"p2p_link_state","id":2,"peer_id":1,"state":"failed"}"#).unwrap();
        assert_eq!(m, Some(P2pMessage::LinkState { peer: 1, connected: false }));
    }

    #[test]
    fn refuses_malformed_ones() {
        assert!(parse("nope").is_err());
        assert!(parse(r#"{"command":"offer_p2p","id":1,"peer_id":0,"sdp":{}}"#).is_err());
        assert!(parse(r#"{"command":"offer_p2p","id":1,"peer_id":"2","sdp":{}}"#).is_err());
        assert!(parse(r#"{"command":"answer","id":1,"peer_id":2}"#).is_err());
        assert!(parse(r#"{"command":"p2p_link_state","id":1,"peer_id":2,"state":"fine"}"#).is_err());
    }
}
