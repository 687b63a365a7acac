//! What messages carry: an SDP, ICE candidates, ICE servers.

use serde::{Deserialize, Serialize};

/// An SDP as the protocol carries it: `{type, sdp}` (the browser's `RTCSessionDescriptionInit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// `offer` or `answer`.
    #[serde(rename = "type")]
    pub kind: SdpType,
    /// The SDP text.
    pub sdp: String,
}

impl SessionDescription {
    /// An offer's SDP.
    pub fn offer(sdp: impl Into<String>) -> Self {
        Self { kind: SdpType::Offer, sdp: sdp.into() }
    }

    /// An answer's SDP.
    pub fn answer(sdp: impl Into<String>) -> Self {
        Self { kind: SdpType::Answer, sdp: sdp.into() }
    }
}

/// What an SDP is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// `offer`.
    Offer,
    /// `answer`.
    Answer,
}

/// One ICE candidate (the browser's `RTCIceCandidateInit`). Written, an absent field is left
/// out: the edge's offer lists `{candidate, sdpMLineIndex: 0}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateInit {
    /// The `candidate:...` line ("" = end of candidates).
    pub candidate: String,
    /// The media id.
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The m-line index.
    #[serde(rename = "sdpMLineIndex", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u16>,
    /// The ICE username fragment.
    #[serde(rename = "usernameFragment", default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

impl CandidateInit {
    /// A candidate of the first m-line, as the edge offers them (its connection is bundled).
    pub fn first_mline(candidate: impl Into<String>) -> Self {
        Self { candidate: candidate.into(), sdp_mline_index: Some(0), ..Self::default() }
    }
}

/// A STUN or TURN server (the browser's `RTCIceServer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:HOST:PORT`, `turn:HOST:PORT?transport=udp`, ...
    pub urls: Vec<String>,
    /// A TURN server's user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A TURN server's credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceServer {
    /// A server without credentials (STUN).
    pub fn at(urls: Vec<String>) -> Self {
        Self { urls, ..Self::default() }
    }
}
