//! The OME-compatible signalling messages (see `shared/PROTOCOL.md`; their types are
//! `ome_signalling::messages`): reading what players send within the host's bounds, with the
//! protocol's error for anything malformed, and writing what the host sends.

use crate::config::SignallingLimits;
use ome_signalling::messages::{command, BadMessage, Envelope, ErrorMessage, IceServer, Offer, ServerMessage};
pub use ome_signalling::messages::CandidateInit;
use plugin_api::SessionId;
use serde_json::{Map, Value};
use std::net::SocketAddr;

/// A message from a player, as far as the host itself handles it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `request_offer`: give me a stream.
    RequestOffer,
    /// `answer` to the edge's offer (`peer_id` 0 or absent).
    EdgeAnswer {
        /// The answer SDP.
        sdp: String,
    },
    /// `candidate` for the edge (`peer_id` 0 or absent).
    EdgeCandidates {
        /// The trickled candidates.
        candidates: Vec<CandidateInit>,
    },
    /// `change_rendition`: accepted; the host has one rendition.
    ChangeRendition,
    /// `stop`: the player leaves.
    Stop,
    /// `pong`: an answer to a JSON ping.
    Pong,
    /// Anything else (`offer_p2p`, peer-addressed `answer`/`candidate`, unknown commands): for the
    /// plugins.
    ForPlugins {
        /// The command name.
        command: String,
    },
}

/// A refused message: the protocol's error code and text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message}")]
pub struct ProtocolError {
    /// 400, 403, 404 or 500.
    pub code: u16,
    /// What was wrong.
    pub message: String,
}

impl ProtocolError {
    /// A 400 "bad message" error.
    pub fn bad(message: impl Into<String>) -> Self {
        Self { code: 400, message: message.into() }
    }
}

impl From<BadMessage> for ProtocolError {
    fn from(bad: BadMessage) -> Self {
        Self::bad(bad.0)
    }
}

/// Parses a player's text message for session `session` within the default bounds.
#[cfg(test)]
pub fn parse(text: &str, session: SessionId) -> Result<Incoming, ProtocolError> {
    parse_bounded(text, session, &SignallingLimits::default()).map(|(incoming, _)| incoming)
}

/// Parses a player's text message for session `session`, refusing an SDP or candidates over
/// `limits` in any message (P2P messages for the plugins included). Returns the message and how
/// many ICE candidates it carries.
pub fn parse_bounded(text: &str, session: SessionId, limits: &SignallingLimits) -> Result<(Incoming, usize), ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ProtocolError::bad(format!("malformed JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| ProtocolError::bad("a message must be a JSON object"))?;
    let candidates = check_sizes(obj, limits)?;
    Ok((incoming(obj, session)?, candidates))
}

/// Checks the SDP and candidates of any message against `limits`; returns the candidate count.
fn check_sizes(obj: &Map<String, Value>, limits: &SignallingLimits) -> Result<usize, ProtocolError> {
    let sdp = obj.get("sdp").and_then(|s| s.get("sdp")).and_then(Value::as_str).map_or(0, str::len);
    if sdp > limits.max_sdp_bytes {
        return Err(ProtocolError::bad(format!("an SDP of {sdp} bytes is over the limit of {}", limits.max_sdp_bytes)));
    }
    let Some(candidates) = obj.get("candidates") else { return Ok(0) };
    let list = candidates.as_array().ok_or_else(|| ProtocolError::bad("\"candidates\" must be an array"))?;
    if list.len() > limits.max_candidates_per_message {
        return Err(ProtocolError::bad(format!("{} candidates in one message; the limit is {}", list.len(), limits.max_candidates_per_message)));
    }
    let longest = list.iter().map(|c| c.get("candidate").and_then(Value::as_str).map_or(0, str::len)).max().unwrap_or(0);
    if longest > limits.max_candidate_bytes {
        return Err(ProtocolError::bad(format!("a candidate of {longest} bytes is over the limit of {}", limits.max_candidate_bytes)));
    }
    Ok(list.len())
}

/// What the host does with a message: those for the edge are read here, the rest go to the
/// plugins unread.
fn incoming(obj: &Map<String, Value>, session: SessionId) -> Result<Incoming, ProtocolError> {
    let message = Envelope::open(obj)?;
    message.check_sender(session)?;
    let for_edge = message.peer_id()? == 0;
    Ok(match message.command {
        command::REQUEST_OFFER => Incoming::RequestOffer,
        command::ANSWER if for_edge => Incoming::EdgeAnswer { sdp: message.answer_sdp()?.to_string() },
        command::CANDIDATE if for_edge => Incoming::EdgeCandidates { candidates: message.candidates()? },
        command::CHANGE_RENDITION => Incoming::ChangeRendition,
        command::STOP => Incoming::Stop,
        command::PONG => Incoming::Pong,
        other => Incoming::ForPlugins { command: other.to_string() },
    })
}

/// The edge's `offer` to session `id`.
pub fn edge_offer(id: SessionId, sdp: &str, candidates: &[String]) -> String {
    ServerMessage::Offer(Offer::from_edge(id, sdp, candidates)).to_json()
}

/// The edge's `offer` to a viewer's session `id`: [`edge_offer`], and the host's STUN server at
/// `stun_servers` in `p2p_ice_servers`, a list of RTCIceServer, for the player's connections to
/// other players. Never `iceServers`: OvenPlayer 0.10.38 goes relay-only when an offer has it,
/// and ignores unknown fields.
pub fn viewer_offer(id: SessionId, sdp: &str, candidates: &[String], stun_servers: &[SocketAddr]) -> String {
    let urls: Vec<String> = stun_servers.iter().map(|a| format!("stun:{a}")).collect();
    let servers = if urls.is_empty() { vec![] } else { vec![IceServer::at(urls)] };
    ServerMessage::Offer(Offer { p2p_ice_servers: Some(servers), ..Offer::from_edge(id, sdp, candidates) }).to_json()
}

/// The protocol's error message.
pub fn error(code: u16, message: &str) -> String {
    ErrorMessage { code, error: message.to_string() }.to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Valid messages of every kind, to mutate.
    const SEEDS: &[&str] = &[
        r#"{"command":"request_offer"}"#,
        r#"{"command":"answer","id":7,"peer_id":0,"sdp":{"type":"answer","sdp":"v=0\r\n"}}"#,
        r#"{"command":"candidate","id":7,"peer_id":0,"candidates":[{"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host","sdpMLineIndex":0}]}"#,
        r#"{"command":"offer_p2p","id":7,"peer_id":9,"sdp":{"type":"offer","sdp":"v=0"},"candidates":[]}"#,
        r#"{"command":"change_rendition","id":7,"auto":true}"#,
        r#"{"command":"stop","id":7}"#,
        r#"{"command":"pong"}"#,
    ];

    /// A seeded mutation of a seed message: bytes flipped, cut, duplicated or spliced.
    fn mutate(rng: &mut rand::rngs::StdRng, seed: &str) -> Vec<u8> {
        use rand::Rng;
        let mut bytes = seed.as_bytes().to_vec();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..=bytes.len());
            match rng.random_range(0..5) {
                0 if at < bytes.len() => bytes[at] = rng.random(),
                1 => bytes.truncate(at),
                2 => {
                    const ALPHABET: &[u8] = b"{}[]\":,0-9e.\\u";
                    bytes.insert(at, ALPHABET[rng.random_range(0..ALPHABET.len())]);
                }
                3 => {
                    let other = SEEDS[rng.random_range(0..SEEDS.len())].as_bytes();
                    let from = rng.random_range(0..other.len());
                    bytes.splice(at..at, other[from..].iter().copied());
                }
                _ => bytes.extend_from_within(..at),
            }
        }
        bytes
    }

    /// Random and mutated messages: every one is parsed or refused with a 400, never a panic.
    /// `PROTOCOL_FUZZ_CASES=1000000 cargo test -p host --release protocol_fuzz` for a long run.
    #[test]
    fn protocol_fuzz_any_input_is_parsed_or_refused_never_a_panic() {
        use rand::SeedableRng;
        let cases: usize = std::env::var("PROTOCOL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let limits = SignallingLimits::default();
        let (mut parsed, mut refused) = (0, 0);
        for i in 0..cases {
            let input = mutate(&mut rng, SEEDS[i % SEEDS.len()]);
            let text = String::from_utf8_lossy(&input);
            match parse_bounded(&text, 7, &limits) {
                Ok(_) => parsed += 1,
                Err(e) => {
                    assert_eq!(e.code, 400, "{text:?}: {e}");
                    refused += 1;
                }
            }
        }
        assert!(parsed > 0 && refused > 0, "both outcomes are exercised: {parsed} parsed, {refused} refused");
    }

    #[test]
    fn sdp_and_candidates_over_the_limits_are_refused_in_any_message() {
        let limits = SignallingLimits { max_sdp_bytes: 10, max_candidates_per_message: 2, max_candidate_bytes: 20, ..Default::default() };
        let p2p = |body: &str| format!(r#"{{"command":"offer_p2p","id":7,"peer_id":9,{body}}}"#);
        assert!(parse_bounded(&p2p(r#""sdp":{"type":"offer","sdp":"v=0"}"#), 7, &limits).is_ok());
        let long_sdp = p2p(r#""sdp":{"type":"offer","sdp":"v=0 and much more"}"#);
        assert!(parse_bounded(&long_sdp, 7, &limits).unwrap_err().message.contains("SDP"));
        let three = r#"{"command":"candidate","id":7,"peer_id":0,"candidates":[{"candidate":"a"},{"candidate":"b"},{"candidate":"c"}]}"#;
        assert!(parse_bounded(three, 7, &limits).unwrap_err().message.contains("3 candidates"));
        let two = r#"{"command":"candidate_p2p","id":7,"peer_id":9,"candidates":[{"candidate":"a"},{"candidate":"b"}]}"#;
        assert_eq!(parse_bounded(two, 7, &limits).unwrap().1, 2);
        let long = r#"{"command":"candidate","id":7,"candidates":[{"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host"}]}"#;
        assert_eq!(parse_bounded(long, 7, &limits).unwrap_err().code, 400);
        assert_eq!(parse_bounded(r#"{"command":"candidate","id":7,"candidates":{}}"#, 7, &limits).unwrap_err().code, 400);
    }

    #[test]
    fn request_offer_needs_no_id() {
        assert_eq!(parse(r#"{"command":"request_offer"}"#, 7), Ok(Incoming::RequestOffer));
    }

    #[test]
    fn wrong_or_missing_id_is_invalid() {
        for text in [r#"{"command":"stop"}"#, r#"{"command":"stop","id":8}"#] {
            assert_eq!(parse(text, 7).unwrap_err(), ProtocolError::bad("Invalid ID"));
        }
        assert_eq!(parse(r#"{"command":"stop","id":"7"}"#, 7).unwrap_err().code, 400);
        assert_eq!(parse(r#"{"command":"stop","id":7}"#, 7), Ok(Incoming::Stop));
    }

    #[test]
    fn malformed_messages_are_400() {
        for text in ["{", "[]", r#"{"id":7}"#, r#"{"command":5}"#, r#"{"command":"answer","id":7}"#] {
            assert_eq!(parse(text, 7).unwrap_err().code, 400, "{text}");
        }
    }

    #[test]
    fn peer_addressed_messages_go_to_plugins() {
        let answer = r#"{"command":"answer","id":7,"peer_id":9,"sdp":{"type":"answer","sdp":"v=0"}}"#;
        assert_eq!(parse(answer, 7), Ok(Incoming::ForPlugins { command: "answer".into() }));
        let edge = r#"{"command":"answer","id":7,"peer_id":0,"sdp":{"type":"answer","sdp":"v=0"}}"#;
        assert_eq!(parse(edge, 7), Ok(Incoming::EdgeAnswer { sdp: "v=0".into() }));
        assert_eq!(
            parse(r#"{"command":"offer_p2p","id":7,"peer_id":9}"#, 7),
            Ok(Incoming::ForPlugins { command: "offer_p2p".into() })
        );
    }

    #[test]
    fn candidates_are_read() {
        let text = r#"{"command":"candidate","id":7,"peer_id":0,"candidates":[{"candidate":"candidate:1 1 udp 1 192.0.2.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abc"}]}"#;
        let Incoming::EdgeCandidates { candidates } = parse(text, 7).unwrap() else { panic!() };
        assert_eq!(candidates[0].sdp_mid.as_deref(), Some("0"));
        assert_eq!(candidates[0].username_fragment.as_deref(), Some("abc"));
    }

    #[test]
    fn offer_carries_candidates_and_code() {
        let v: Value = serde_json::from_str(&edge_offer(7, "v=0", &["candidate:x".into()])).unwrap();
        assert_eq!(v["command"], "offer");
        assert_eq!(v["peer_id"], 0);
        assert_eq!(v["code"], 200);
        assert_eq!(v["candidates"][0]["sdpMLineIndex"], 0);
        let e: Value = serde_json::from_str(&error(404, "no such stream")).unwrap();
        assert!(e.get("command").is_none());
        assert_eq!(e["code"], 404);
    }

    #[test]
    fn a_viewers_offer_names_the_hosts_stun_server_where_ovenplayer_does_not_look() {
        let at = ["203.0.113.5:10000".parse().unwrap(), "[2001:db8::5]:10000".parse().unwrap()];
        let v: Value = serde_json::from_str(&viewer_offer(7, "v=0", &["candidate:x".into()], &at)).unwrap();
        assert_eq!(v["p2p_ice_servers"], json!([{"urls": ["stun:203.0.113.5:10000", "stun:[2001:db8::5]:10000"]}]));
        assert_eq!(v["candidates"][0]["candidate"], "candidate:x");
        assert!(v.get("iceServers").is_none() && v.get("ice_servers").is_none(), "OvenPlayer 0.10.38 would go relay-only");
        let none: Value = serde_json::from_str(&viewer_offer(7, "v=0", &[], &[])).unwrap();
        assert_eq!(none["p2p_ice_servers"], json!([]));
    }
}
