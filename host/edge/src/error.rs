//! Why an edge connection could not be made, or refused an answer.

/// The crate's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An `rtc` component (DTLS, SRTP, RTCP, the peer connection and its SDP) refused.
    #[error(transparent)]
    Rtc(#[from] rtc::shared::error::Error),
    /// The edge's DTLS identity could not be made.
    #[error("the DTLS identity: {0}")]
    Identity(String),
    /// The player's answer is not one the edge takes.
    #[error(transparent)]
    Answer(#[from] crate::sdp::AnswerError),
    /// The offer was answered already.
    #[error("the offer was already answered")]
    AlreadyAnswered,
    /// An SDP without a video section.
    #[error("no video in the SDP")]
    NoVideo,
    /// An offer whose video the edge does not take.
    #[error("the offer's video is neither VP8 nor H264: this host takes those")]
    OfferedVideo,
    /// A video section without a payload type.
    #[error("a video section without a codec")]
    NoVideoCodec,
    /// A publisher's video in a codec the edge does not take.
    #[error("the publisher's video is {0}; this host takes VP8 or H264")]
    PublisherVideo(String),
    /// The peer connection gave no local description.
    #[error("no local description")]
    NoLocalDescription,
    /// The finished handshake gave no SRTP keys.
    #[error("{0}")]
    Srtp(String),
}

/// A result of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
