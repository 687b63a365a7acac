//! A player's message as the server reads it: a JSON object with a string `command`, the
//! sender's `id` checked as OME checks it, the addressee in `peer_id`; the rest read only by
//! whoever handles the command (the server the messages for the edge, a plugin those between
//! players), so that each reads no more than it must and refuses what it reads ill.

use super::command;
use super::payload::CandidateInit;
use super::{SessionId, EDGE};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A message refused: the protocol's error 400, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadMessage(pub String);

impl BadMessage {
    fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}

/// A player's message, opened.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// What it is ([`command`]'s names, or any other).
    pub command: &'a str,
    fields: &'a Map<String, Value>,
}

impl<'a> Envelope<'a> {
    /// Opens a message's JSON object: it must have a string `command`.
    pub fn open(fields: &'a Map<String, Value>) -> Result<Self, BadMessage> {
        let command = fields
            .get("command")
            .and_then(Value::as_str)
            .ok_or_else(|| BadMessage::new("a message must have a string \"command\""))?;
        Ok(Self { command, fields })
    }

    /// Checks that session `session` sent it: every command but `request_offer` and `pong`
    /// (which OvenPlayer sends before it knows its id) must carry it as `id`, else "Invalid ID".
    pub fn check_sender(&self, session: SessionId) -> Result<(), BadMessage> {
        if matches!(self.command, command::REQUEST_OFFER | command::PONG) || self.integer("id")? == Some(i64::from(session)) {
            Ok(())
        } else {
            Err(BadMessage::new("Invalid ID"))
        }
    }

    /// The addressee, `peer_id`: absent or null is 0, the edge.
    pub fn peer_id(&self) -> Result<i64, BadMessage> {
        Ok(self.integer("peer_id")?.unwrap_or(0))
    }

    /// The addressee of a message between players: `peer_id`, a session's id (never the edge).
    pub fn partner(&self) -> Option<SessionId> {
        self.peer_id().ok().and_then(|p| SessionId::try_from(p).ok()).filter(|&p| p != EDGE)
    }

    /// An answer's SDP text (`sdp: {type, sdp}`; `type` is not read).
    pub fn answer_sdp(&self) -> Result<&'a str, BadMessage> {
        self.fields
            .get("sdp")
            .and_then(|s| s.get("sdp"))
            .and_then(Value::as_str)
            .ok_or_else(|| BadMessage::new("an answer must carry sdp: {type, sdp}"))
    }

    /// The `candidates` of a `candidate` message.
    pub fn candidates(&self) -> Result<Vec<CandidateInit>, BadMessage> {
        let candidates = self.fields.get("candidates").ok_or_else(|| BadMessage::new("a candidate message must carry \"candidates\""))?;
        Vec::deserialize(candidates).map_err(|e| BadMessage(format!("bad candidates: {e}")))
    }

    /// Field `name`, present and not null: what a server passes on unread (an SDP, candidates).
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.fields.get(name).filter(|v| !v.is_null())
    }

    /// A JSON integer field (OvenPlayer sends ids as numbers): absent or null is `None`.
    fn integer(&self, name: &str) -> Result<Option<i64>, BadMessage> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| BadMessage(format!("\"{name}\" must be an integer"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open(message: &Value) -> Result<Envelope<'_>, BadMessage> {
        Envelope::open(message.as_object().unwrap())
    }

    #[test]
    fn a_message_needs_a_string_command() {
        for message in [json!({"id": 7}), json!({"command": 5})] {
            assert_eq!(open(&message).unwrap_err().0, "a message must have a string \"command\"");
        }
        assert_eq!(open(&json!({"command": "dance"})).unwrap().command, "dance");
    }

    #[test]
    fn every_command_but_request_offer_and_pong_carries_the_senders_id() {
        for command in [command::REQUEST_OFFER, command::PONG] {
            assert_eq!(open(&json!({"command": command, "id": "x"})).unwrap().check_sender(7), Ok(()));
        }
        let check = |m: Value| open(&m).unwrap().check_sender(7);
        assert_eq!(check(json!({"command": "stop", "id": 7})), Ok(()));
        for wrong in [json!({"command": "stop"}), json!({"command": "stop", "id": 8}), json!({"command": "stop", "id": null})] {
            assert_eq!(check(wrong), Err(BadMessage::new("Invalid ID")));
        }
        for bad in [json!("7"), json!(7.0), json!(u64::MAX)] {
            assert_eq!(check(json!({"command": "stop", "id": bad})), Err(BadMessage::new("\"id\" must be an integer")));
        }
    }

    #[test]
    fn peer_id_is_the_edge_when_absent_and_a_session_between_players() {
        let peer = |m: Value| (open(&m).unwrap().peer_id(), open(&m).unwrap().partner());
        assert_eq!(peer(json!({"command": "answer"})), (Ok(0), None));
        assert_eq!(peer(json!({"command": "answer", "peer_id": 9})), (Ok(9), Some(9)));
        assert_eq!(peer(json!({"command": "answer", "peer_id": -1})), (Ok(-1), None));
        assert_eq!(peer(json!({"command": "answer", "peer_id": 1u64 << 32})), (Ok(1 << 32), None));
        assert_eq!(peer(json!({"command": "answer", "peer_id": "9"})), (Err(BadMessage::new("\"peer_id\" must be an integer")), None));
    }

    #[test]
    fn bodies_are_read_on_demand() {
        let answer = json!({"command": "answer", "sdp": {"sdp": "v=0"}});
        assert_eq!(open(&answer).unwrap().answer_sdp(), Ok("v=0"));
        assert!(open(&json!({"command": "answer", "sdp": "v=0"})).unwrap().answer_sdp().is_err());
        let candidate = json!({"command": "candidate", "candidates": [{"candidate": "c", "sdpMLineIndex": 0}]});
        assert_eq!(open(&candidate).unwrap().candidates(), Ok(vec![CandidateInit::first_mline("c")]));
        let missing = open(&json!({"command": "candidate", "candidates": [{}]})).unwrap().candidates().unwrap_err();
        assert_eq!(missing.0, "bad candidates: missing field `candidate`");
        let with_null = json!({"command": "offer_p2p", "sdp": {}, "candidates": null});
        assert_eq!((open(&with_null).unwrap().get("sdp"), open(&with_null).unwrap().get("candidates")), (Some(&json!({})), None));
    }
}
