//! Server -> player (PROTOCOL.md, "Messages: server -> player"); the error object, which has no
//! `command`, is [`ErrorMessage`](super::ErrorMessage).

use super::body::{Answer, Notification, Offer, RequestOfferP2p, Stop, Trickle};
use super::payload::{CandidateInit, IceServer, SessionDescription};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A message from the server, with its `command`; generic over the SDPs, candidates and ICE
/// servers it carries (see [`Verbatim`]), typed by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ServerMessage<Sdp = SessionDescription, Candidates = Vec<CandidateInit>, IceServers = Vec<IceServer>> {
    /// `offer`: the edge's (the answer to `request_offer` when the edge serves), or a host
    /// peer's `offer_p2p` passed on.
    Offer(Offer<Sdp, Candidates, IceServers>),
    /// `candidate`: a host peer's `candidate_p2p`, passed on to its client.
    Candidate(Trickle<Candidates>),
    /// `request_offer_p2p`: asks a host peer to offer to a new client.
    RequestOfferP2p(RequestOfferP2p<IceServers>),
    /// `answer_p2p`: a client's `answer`, passed on to its host.
    AnswerP2p(Answer<Sdp>),
    /// `candidate_p2p`: a client's `candidate`, passed on to its host.
    CandidateP2p(Trickle<Candidates>),
    /// `stop`: a P2P partner is gone (`peer_id` 0: play from the edge again).
    Stop(Stop),
    /// `notification`: a playlist or a rendition change.
    Notification(Notification),
    /// `ping`: answer with `pong`.
    Ping,
    /// A command not in the protocol: a player ignores it. Read only.
    #[serde(other, skip_serializing)]
    Unknown,
}

/// A server message whose SDP, candidates and ICE servers are JSON passed on as they came (from
/// a player, or from the configuration), unread and uncopied.
pub type Verbatim<'a> = ServerMessage<&'a Value, &'a Value, &'a Value>;

impl<Sdp: Serialize, Candidates: Serialize, IceServers: Serialize> ServerMessage<Sdp, Candidates, IceServers> {
    /// The message's JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a server message always serializes")
    }
}

impl ServerMessage {
    /// Reads a message the server sent (an error object is not one: see
    /// [`ErrorMessage`](super::ErrorMessage)).
    pub fn read(message: &Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(message)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{command, ErrorMessage};
    use super::*;
    use serde_json::json;

    fn wire<S: Serialize, C: Serialize, I: Serialize>(message: &ServerMessage<S, C, I>) -> Value {
        serde_json::from_str(&message.to_json()).unwrap()
    }

    #[test]
    fn the_edges_offer_lists_its_candidates_on_the_first_mline() {
        let offer = ServerMessage::Offer(Offer::from_edge(7, "v=0", ["candidate:x", "candidate:y"]));
        let expected = json!({
            "command": "offer", "id": 7, "peer_id": 0, "code": 200, "sdp": {"type": "offer", "sdp": "v=0"},
            "candidates": [{"candidate": "candidate:x", "sdpMLineIndex": 0}, {"candidate": "candidate:y", "sdpMLineIndex": 0}],
        });
        assert_eq!(wire(&offer), expected);
        assert_eq!(ServerMessage::read(&expected).unwrap(), offer);
        let none = wire(&ServerMessage::Offer(Offer::from_edge(7, "v=0", [""; 0])));
        assert_eq!(none["candidates"], json!([]), "always there, if empty");
    }

    #[test]
    fn a_viewers_offer_adds_p2p_ice_servers() {
        let mut offer = Offer::from_edge(7, "v=0", ["candidate:x"]);
        offer.p2p_ice_servers = Some(vec![IceServer::at(vec!["stun:203.0.113.5:10000".into()])]);
        let v = wire(&ServerMessage::Offer(offer.clone()));
        assert_eq!(v["p2p_ice_servers"], json!([{"urls": ["stun:203.0.113.5:10000"]}]));
        assert!(v.get("iceServers").is_none());
        assert_eq!(ServerMessage::read(&v).unwrap(), ServerMessage::Offer(offer));
    }

    /// What a broker passes on, exactly as it came.
    #[test]
    fn relayed_messages_carry_what_they_pass_on_unread() {
        let sdp = json!({"type": "offer", "sdp": "v=0", "odd": [1]});
        let candidates = json!([{"candidate": "c", "sdpMid": null}]);
        let ice = json!([{"urls": ["stun:a:1"]}, {"urls": ["turn:b:2"], "username": "u", "credential": "p"}]);
        let (none, empty) = (json!([]), json!({}));
        let cases: [(Verbatim, Value); 8] = [
            (
                ServerMessage::Offer(Offer::relayed(2, 1, &sdp, Some(&candidates), &ice)),
                json!({"command": "offer", "id": 2, "peer_id": 1, "sdp": sdp, "candidates": candidates, "p2p_ice_servers": ice}),
            ),
            (
                ServerMessage::Offer(Offer::relayed(2, 1, &sdp, None, &none)),
                json!({"command": "offer", "id": 2, "peer_id": 1, "sdp": sdp, "p2p_ice_servers": []}),
            ),
            (
                ServerMessage::Candidate(Trickle { id: 2, peer_id: 1, candidates: &candidates }),
                json!({"command": "candidate", "id": 2, "peer_id": 1, "candidates": candidates}),
            ),
            (
                ServerMessage::RequestOfferP2p(RequestOfferP2p { id: 1, peer_id: 2, p2p_ice_servers: Some(&ice) }),
                json!({"command": "request_offer_p2p", "id": 1, "peer_id": 2, "p2p_ice_servers": ice}),
            ),
            (
                ServerMessage::AnswerP2p(Answer { id: 1, peer_id: 2, sdp: &empty, link_reports: false }),
                json!({"command": "answer_p2p", "id": 1, "peer_id": 2, "sdp": {}}),
            ),
            (
                ServerMessage::CandidateP2p(Trickle { id: 1, peer_id: 2, candidates: &candidates }),
                json!({"command": "candidate_p2p", "id": 1, "peer_id": 2, "candidates": candidates}),
            ),
            (ServerMessage::Stop(Stop { id: 2, peer_id: Some(0) }), json!({"command": "stop", "id": 2, "peer_id": 0})),
            (ServerMessage::Ping, json!({"command": "ping"})),
        ];
        for (message, expected) in cases {
            assert_eq!(wire(&message), expected, "{message:?}");
        }
    }

    #[test]
    fn typed_messages_read_back() {
        let sdp = SessionDescription::answer("v=0");
        let candidates = vec![CandidateInit::first_mline("c")];
        let messages: [ServerMessage; 7] = [
            ServerMessage::Candidate(Trickle { id: 2, peer_id: 1, candidates: candidates.clone() }),
            ServerMessage::RequestOfferP2p(RequestOfferP2p { id: 1, peer_id: 2, p2p_ice_servers: None }),
            ServerMessage::AnswerP2p(Answer { id: 1, peer_id: 2, sdp, link_reports: false }),
            ServerMessage::CandidateP2p(Trickle { id: 1, peer_id: 2, candidates }),
            ServerMessage::Stop(Stop { id: 2, peer_id: Some(1) }),
            ServerMessage::Notification(Notification { kind: "playlist".into(), message: json!({"renditions": []}) }),
            ServerMessage::Ping,
        ];
        for message in messages {
            assert_eq!(ServerMessage::read(&wire(&message)).unwrap(), message);
        }
        assert_eq!(
            wire(&ServerMessage::<SessionDescription>::Notification(Notification { kind: "playlist".into(), message: json!({}) })),
            json!({"command": "notification", "type": "playlist", "message": {}})
        );
        assert_eq!(ServerMessage::read(&json!({"command": "dance", "id": 1})).unwrap(), ServerMessage::Unknown);
    }

    #[test]
    fn commands_are_the_constants() {
        let command_of = |m: &Verbatim| wire(m)["command"].as_str().unwrap().to_string();
        let v = json!(null);
        for (message, name) in [
            (ServerMessage::Offer(Offer::relayed(1, 2, &v, None, &v)), command::OFFER),
            (ServerMessage::Candidate(Trickle { id: 1, peer_id: 2, candidates: &v }), command::CANDIDATE),
            (ServerMessage::RequestOfferP2p(RequestOfferP2p { id: 1, peer_id: 2, p2p_ice_servers: None }), command::REQUEST_OFFER_P2P),
            (ServerMessage::AnswerP2p(Answer { id: 1, peer_id: 2, sdp: &v, link_reports: false }), command::ANSWER_P2P),
            (ServerMessage::CandidateP2p(Trickle { id: 1, peer_id: 2, candidates: &v }), command::CANDIDATE_P2P),
            (ServerMessage::Stop(Stop { id: 1, peer_id: Some(2) }), command::STOP),
            (ServerMessage::Notification(Notification { kind: String::new(), message: v.clone() }), command::NOTIFICATION),
            (ServerMessage::Ping, command::PING),
        ] {
            assert_eq!(command_of(&message), name);
        }
    }

    #[test]
    fn the_error_object_has_no_command() {
        let error = ErrorMessage { code: 404, error: "no such stream".into() };
        assert_eq!(error.to_json(), r#"{"code":404,"error":"no such stream"}"#);
        assert_eq!(serde_json::from_str::<ErrorMessage>(&error.to_json()).unwrap(), error);
    }
}
