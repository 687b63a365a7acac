//! The messages of OvenMediaEngine's signalling (`shared/PROTOCOL.md`, "Messages"), as types:
//! what a player sends the server ([`PlayerMessage`]), what the server sends a player
//! ([`ServerMessage`], and the error object [`ErrorMessage`]), and what they carry ([`payload`]).
//! Written, each gives the JSON the protocol has; read, each takes it.
//!
//! A server reads a player's message as OME does, no further than it handles it itself
//! ([`Envelope`]): the rest is for the plugin that brokers it, which passes SDPs and candidates
//! on as the player sent them ([`Verbatim`]).

pub mod body;
pub mod command;
pub mod envelope;
pub mod payload;
pub mod player;
pub mod server;

pub use body::{Answer, ChangeRendition, ErrorMessage, LinkState, LinkStatus, Notification, Offer, RequestOfferP2p, Stop, Trickle};
pub use envelope::{BadMessage, Envelope};
pub use payload::{CandidateInit, IceServer, SdpType, SessionDescription};
pub use player::PlayerMessage;
pub use server::{ServerMessage, Verbatim};

/// A session's id: a random integer in [1, 2^31-1], unique among live sessions ([`EDGE`] where a
/// peer id is expected means the server).
pub type SessionId = u32;

/// The `peer_id` of the server itself (the edge).
pub const EDGE: SessionId = 0;
