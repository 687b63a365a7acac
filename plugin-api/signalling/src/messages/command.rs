//! The `command` of every message, by name: what a server matches a player's message on.

/// Player -> server: give me a stream (from the edge or from a host peer).
pub const REQUEST_OFFER: &str = "request_offer";
/// Player -> server: an answer to the edge's offer, or to a host peer's.
pub const ANSWER: &str = "answer";
/// Either way: trickled ICE candidates (to the edge or a host peer; from a host peer).
pub const CANDIDATE: &str = "candidate";
/// Player -> server: a host peer's offer to one of its clients.
pub const OFFER_P2P: &str = "offer_p2p";
/// Either way: ICE candidates between a host peer and its client.
pub const CANDIDATE_P2P: &str = "candidate_p2p";
/// Player -> server: a rendition asked for (the host has one).
pub const CHANGE_RENDITION: &str = "change_rendition";
/// Either way: a player leaving; a P2P partner gone.
pub const STOP: &str = "stop";
/// Player -> server: the answer to a JSON [`PING`].
pub const PONG: &str = "pong";
/// Player -> server: how a P2P link stands (this project's extension; OME refuses it).
pub const LINK_STATE: &str = "p2p_link_state";
/// Server -> player: an offer, from the edge or a host peer.
pub const OFFER: &str = "offer";
/// Server -> player: asks a host peer to offer to a new client.
pub const REQUEST_OFFER_P2P: &str = "request_offer_p2p";
/// Server -> player: a client's answer, passed on to its host.
pub const ANSWER_P2P: &str = "answer_p2p";
/// Server -> player: a playlist or a rendition change.
pub const NOTIFICATION: &str = "notification";
/// Server -> player: a keepalive a player answers with [`PONG`] (this host pings with WebSocket
/// frames instead).
pub const PING: &str = "ping";
