//! Player -> server (PROTOCOL.md, "Messages: player -> server").

use super::body::{Answer, ChangeRendition, LinkState, Offer, Stop, Trickle};
use serde::{Deserialize, Serialize};

/// A message from a player, with its `command`. Every one but `request_offer` and `pong` carries
/// `id`, the sender's session (a server reads them with [`Envelope`](super::Envelope)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum PlayerMessage {
    /// `request_offer`: give me a stream (from the edge or from a host peer).
    RequestOffer,
    /// `answer`: to the edge's offer (`peer_id` 0), or to host peer `peer_id`'s.
    Answer(Answer),
    /// `candidate`: trickled ICE, for the edge (`peer_id` 0) or for host peer `peer_id`.
    Candidate(Trickle),
    /// `offer_p2p`: a host peer's offer to its client `peer_id`, with optional `candidates`.
    OfferP2p(Offer),
    /// `candidate_p2p`: a host peer's ICE candidates for its client `peer_id`.
    CandidateP2p(Trickle),
    /// `change_rendition`: accepted; a P2P client's is accepted and ignored.
    ChangeRendition(ChangeRendition),
    /// `stop`: leaving (rarely sent: OvenPlayer never does).
    Stop(Stop),
    /// `pong`: the answer to a JSON `ping`, with no `id`.
    Pong,
    /// `p2p_link_state`: how the player's P2P link with `peer_id` stands (this project's).
    #[serde(rename = "p2p_link_state")]
    LinkState(LinkState),
}

impl PlayerMessage {
    /// The message's JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a player message always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{command, CandidateInit, LinkStatus, SessionDescription};
    use super::*;
    use serde_json::{json, Value};

    /// Each message, its exact JSON, and back.
    #[test]
    fn each_message_is_the_protocols_json_and_reads_back() {
        let candidate = CandidateInit { candidate: "candidate:1 1 udp 1 192.0.2.1 9 typ host".into(), sdp_mid: Some("0".into()), sdp_mline_index: Some(0), username_fragment: Some("u".into()) };
        let cases = [
            (PlayerMessage::RequestOffer, json!({"command": "request_offer"})),
            (
                PlayerMessage::Answer(Answer { id: 7, peer_id: 0, sdp: SessionDescription::answer("v=0"), link_reports: false }),
                json!({"command": "answer", "id": 7, "peer_id": 0, "sdp": {"type": "answer", "sdp": "v=0"}}),
            ),
            (
                PlayerMessage::Answer(Answer { id: 7, peer_id: 9, sdp: SessionDescription::answer("v=0"), link_reports: true }),
                json!({"command": "answer", "id": 7, "peer_id": 9, "sdp": {"type": "answer", "sdp": "v=0"}, "link_reports": true}),
            ),
            (
                PlayerMessage::Candidate(Trickle { id: 7, peer_id: 0, candidates: vec![candidate.clone()] }),
                json!({"command": "candidate", "id": 7, "peer_id": 0, "candidates": [{"candidate": candidate.candidate, "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "u"}]}),
            ),
            (
                PlayerMessage::OfferP2p(Offer { id: 7, peer_id: 9, sdp: SessionDescription::offer("v=0"), candidates: None, code: None, ice_servers: None, p2p_ice_servers: None }),
                json!({"command": "offer_p2p", "id": 7, "peer_id": 9, "sdp": {"type": "offer", "sdp": "v=0"}}),
            ),
            (
                PlayerMessage::CandidateP2p(Trickle { id: 7, peer_id: 9, candidates: vec![CandidateInit { candidate: "".into(), ..Default::default() }] }),
                json!({"command": "candidate_p2p", "id": 7, "peer_id": 9, "candidates": [{"candidate": ""}]}),
            ),
            (
                PlayerMessage::ChangeRendition(ChangeRendition { id: 7, rendition_name: None, auto: Some(true) }),
                json!({"command": "change_rendition", "id": 7, "auto": true}),
            ),
            (PlayerMessage::Stop(Stop { id: 7, peer_id: None }), json!({"command": "stop", "id": 7})),
            (PlayerMessage::Pong, json!({"command": "pong"})),
            (
                PlayerMessage::LinkState(LinkState { id: 7, peer_id: 9, state: LinkStatus::Connected }),
                json!({"command": "p2p_link_state", "id": 7, "peer_id": 9, "state": "connected"}),
            ),
        ];
        for (message, wire) in cases {
            let written: Value = serde_json::from_str(&message.to_json()).unwrap();
            assert_eq!(written, wire, "{message:?}");
            assert_eq!(serde_json::from_value::<PlayerMessage>(wire).unwrap(), message);
        }
    }

    #[test]
    fn commands_are_the_constants() {
        let some = |text: &str| serde_json::from_str::<Value>(text).unwrap()["command"].as_str().unwrap().to_string();
        let sdp = SessionDescription::offer("");
        let offer = Offer { id: 1, peer_id: 2, sdp: sdp.clone(), candidates: None, code: None, ice_servers: None, p2p_ice_servers: None };
        let trickle = Trickle { id: 1, peer_id: 2, candidates: vec![] };
        for (message, name) in [
            (PlayerMessage::RequestOffer, command::REQUEST_OFFER),
            (PlayerMessage::Answer(Answer { id: 1, peer_id: 2, sdp: SessionDescription::answer(""), link_reports: false }), command::ANSWER),
            (PlayerMessage::Candidate(trickle.clone()), command::CANDIDATE),
            (PlayerMessage::OfferP2p(offer), command::OFFER_P2P),
            (PlayerMessage::CandidateP2p(trickle), command::CANDIDATE_P2P),
            (PlayerMessage::ChangeRendition(ChangeRendition { id: 1, rendition_name: None, auto: None }), command::CHANGE_RENDITION),
            (PlayerMessage::Stop(Stop { id: 1, peer_id: None }), command::STOP),
            (PlayerMessage::Pong, command::PONG),
            (PlayerMessage::LinkState(LinkState { id: 1, peer_id: 2, state: LinkStatus::Failed }), command::LINK_STATE),
        ] {
            assert_eq!(some(&message.to_json()), name);
        }
    }

    /// What players send and the protocol allows: `peer_id` absent (the edge), a browser's
    /// candidate with nulls, fields the server does not know.
    #[test]
    fn reads_what_players_send() {
        let text = r#"{"command":"candidate","id":7,"candidates":[{"candidate":"c","sdpMid":null,"sdpMLineIndex":null,"usernameFragment":null}],"extra":1}"#;
        let PlayerMessage::Candidate(trickle) = serde_json::from_str(text).unwrap() else { panic!() };
        assert_eq!((trickle.peer_id, &trickle.candidates[..]), (0, &[CandidateInit { candidate: "c".into(), ..Default::default() }][..]));
        assert!(serde_json::from_str::<PlayerMessage>(r#"{"command":"p2p_link_state","id":7,"peer_id":9,"state":"fine"}"#).is_err());
    }
}
