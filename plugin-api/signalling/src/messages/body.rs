//! The messages' bodies: every field but `command`, which [`PlayerMessage`] and [`ServerMessage`]
//! add. Bodies of the same shape serve several commands (an answer passed on is an `answer_p2p`).
//! Those a server passes on are generic over what they carry, so that it can pass an SDP or
//! candidates on unread ([`Verbatim`]); a player reads them typed (the defaults).
//!
//! [`PlayerMessage`]: super::PlayerMessage
//! [`ServerMessage`]: super::ServerMessage
//! [`Verbatim`]: super::Verbatim

use super::payload::{CandidateInit, IceServer, SessionDescription};
use super::SessionId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `offer`, server -> player: the edge's offer (`peer_id` 0, `code` 200, its candidates), or a
/// host peer's `offer_p2p` passed on to its client (`peer_id` = the host, `candidates` if the
/// host sent any). `offer_p2p`, player -> server: a host peer's offer to its client `peer_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer<Sdp = SessionDescription, Candidates = Vec<CandidateInit>, IceServers = Vec<IceServer>> {
    /// The addressee (server -> player) or the sender (`offer_p2p`).
    pub id: SessionId,
    /// Who offers: 0 for the edge, else the host peer (server -> player); the client offered to
    /// (`offer_p2p`).
    #[serde(default)]
    pub peer_id: SessionId,
    /// The offer's SDP.
    pub sdp: Sdp,
    /// ICE candidates beside the SDP's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Candidates>,
    /// 200 in the edge's offer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// OME's STUN and TURN servers for the receiving connection. Never sent by this host:
    /// OvenPlayer 0.10.38 goes relay-only when an offer has them.
    #[serde(rename = "iceServers", skip_serializing_if = "Option::is_none")]
    pub ice_servers: Option<IceServers>,
    /// This project's: STUN and TURN servers for the player's connections to other players,
    /// which OvenPlayer ignores. In a relayed offer it also tells the player that this server
    /// takes its link reports ([`LinkState`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p2p_ice_servers: Option<IceServers>,
}

impl Offer {
    /// The edge's offer to session `id`: `peer_id` 0, `code` 200, each candidate as
    /// `{candidate, sdpMLineIndex: 0}`.
    pub fn from_edge(id: SessionId, sdp: impl Into<String>, candidates: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            id,
            peer_id: super::EDGE,
            sdp: SessionDescription::offer(sdp),
            candidates: Some(candidates.into_iter().map(CandidateInit::first_mline).collect()),
            code: Some(200),
            ice_servers: None,
            p2p_ice_servers: None,
        }
    }
}

impl<'a> Offer<&'a Value, &'a Value, &'a Value> {
    /// Host `host`'s `offer_p2p`, passed on to its client `client` with `p2p_ice_servers`.
    pub fn relayed(client: SessionId, host: SessionId, sdp: &'a Value, candidates: Option<&'a Value>, p2p_ice_servers: &'a Value) -> Self {
        Self { id: client, peer_id: host, sdp, candidates, code: None, ice_servers: None, p2p_ice_servers: Some(p2p_ice_servers) }
    }
}

/// `answer`, player -> server: its answer to the edge's offer (`peer_id` 0 or absent) or to host
/// peer `peer_id`'s. `answer_p2p`, server -> player: a client's answer passed on to its host
/// (`peer_id` = the client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer<Sdp = SessionDescription> {
    /// The sender (`answer`) or the addressee (`answer_p2p`).
    pub id: SessionId,
    /// The other end.
    #[serde(default)]
    pub peer_id: SessionId,
    /// The answer's SDP.
    pub sdp: Sdp,
    /// This project's, in an answer to a host peer: the player will report the link
    /// ([`LinkState`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub link_reports: bool,
}

/// Trickled ICE candidates: `candidate`, from a player to the edge (`peer_id` 0 or absent) or to
/// its host peer, or a host's passed on to its client; `candidate_p2p`, from a host peer to its
/// client, or a client's passed on to its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trickle<Candidates = Vec<CandidateInit>> {
    /// The sender (player -> server) or the addressee (server -> player).
    pub id: SessionId,
    /// The other end (0: the edge).
    #[serde(default)]
    pub peer_id: SessionId,
    /// The candidates.
    pub candidates: Candidates,
}

/// `request_offer_p2p`, server -> player: asks host peer `id` to offer to its new client
/// `peer_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestOfferP2p<IceServers = Vec<IceServer>> {
    /// The host peer.
    pub id: SessionId,
    /// The new client.
    pub peer_id: SessionId,
    /// This project's: STUN and TURN servers for the relay connection, which OvenPlayer ignores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p2p_ice_servers: Option<IceServers>,
}

/// `stop`: player -> server, the player leaves (rarely sent: a closed socket is a stop too);
/// server -> player, its P2P partner `peer_id` is gone (0: the edge, to move a viewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    /// The sender (player -> server) or the addressee (server -> player).
    pub id: SessionId,
    /// The partner gone (server -> player only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<SessionId>,
}

/// `change_rendition`, player -> server: a rendition by name, or automatic choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRendition {
    /// The sender.
    pub id: SessionId,
    /// The rendition wanted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rendition_name: Option<String>,
    /// Let the server choose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto: Option<bool>,
}

/// `p2p_link_state`, player -> server (this project's; OME answers it 400 "Unknown command", so
/// a player sends it only to a server whose offers name `p2p_ice_servers`): how its P2P link
/// with `peer_id` stands. A client reports its host's link once it is up or has failed (its
/// answer carried `link_reports: true`); a host may report a client's failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// The sender.
    pub id: SessionId,
    /// The partner at the other end of the link.
    pub peer_id: SessionId,
    /// How it stands.
    pub state: LinkStatus,
}

/// How a P2P link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkStatus {
    /// `connected`: media can flow.
    Connected,
    /// `failed`: it never will.
    Failed,
}

/// `notification`, server -> player: after an edge answer, OME's playlist (`type: "playlist"`)
/// or a rendition change (`"rendition_changed"`); OvenPlayer tolerates their absence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// `playlist` or `rendition_changed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What it says.
    pub message: Value,
}

/// The error object, server -> player: `{code, error}`, no `command`. 400 a bad message, 403
/// forbidden, 404 no such stream, 500 internal; the server closes the socket after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// The HTTP-like code.
    pub code: u16,
    /// What went wrong.
    pub error: String,
}

impl ErrorMessage {
    /// The message's JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an error message always serializes")
    }
}
