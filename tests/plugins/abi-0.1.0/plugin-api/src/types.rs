//! Plain data shared by both sides of the boundary: all FFI-safe, usable as ordinary Rust types.

use abi_stable::std_types::{ROption, RString};
use abi_stable::StableAbi;
use std::fmt;

/// A signalling session's id: a random integer in `1..2^31`; `0` means the server (the edge).
pub type SessionId = u32;

/// Whether a session publishes a stream or plays one.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// A viewer: it asks for offers and receives media.
    Play,
    /// A publisher: it sends media to the host.
    Publish,
}

/// What a plugin answers when a player asks for an offer.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferDecision {
    /// The host answers with its own (edge) offer now.
    ServeFromEdge,
    /// The plugin takes it over; it will later call [`crate::Host::serve_from_edge`] or send an
    /// offer itself. Until then the player waits.
    Handled,
}

/// What a plugin answers about a message the host did not handle.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageVerdict {
    /// The plugin dealt with it (including by closing the session with an error).
    Handled,
    /// Not the plugin's either: the host replies with error 400 and closes the session.
    Unknown,
}

/// Why a session ended.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The socket closed or went silent.
    Disconnected,
    /// The player sent `stop`.
    Stopped,
    /// The session's edge WebRTC connection failed (ICE or DTLS).
    EdgeFailed,
    /// The session was closed after an error message (bad input, unknown stream, plugin request).
    Error,
    /// The stream the session plays stopped.
    StreamEnded,
}

/// Severity of a line logged through [`crate::Host::log`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something is wrong but the plugin carries on.
    Warn,
    /// A notable event.
    Info,
    /// Detail for diagnosis.
    Debug,
    /// Very fine detail.
    Trace,
}

/// Everything the host knows about a session when it opens.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    id: SessionId,
    kind: SessionKind,
    vhost: RString,
    app: RString,
    stream: RString,
    user_agent: RString,
    remote_addr: RString,
    query: RString,
}

impl SessionInfo {
    /// Describes a session; `query` is the URL's query string without `?` (may be empty).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: SessionId,
        kind: SessionKind,
        vhost: &str,
        app: &str,
        stream: &str,
        user_agent: &str,
        remote_addr: &str,
        query: &str,
    ) -> Self {
        Self {
            id,
            kind,
            vhost: vhost.into(),
            app: app.into(),
            stream: stream.into(),
            user_agent: user_agent.into(),
            remote_addr: remote_addr.into(),
            query: query.into(),
        }
    }
    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }
    /// Publishing or playing.
    pub fn kind(&self) -> SessionKind {
        self.kind
    }
    /// The virtual host the session connected to.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }
    /// The application name (first path segment).
    pub fn app(&self) -> &str {
        &self.app
    }
    /// The stream name (second path segment).
    pub fn stream(&self) -> &str {
        &self.stream
    }
    /// The `User-Agent` header of the WebSocket upgrade request ("" when absent).
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }
    /// The remote socket address, `ip:port`.
    pub fn remote_addr(&self) -> &str {
        &self.remote_addr
    }
    /// The URL's query string without the `?` ("" when absent).
    pub fn query(&self) -> &str {
        &self.query
    }
}

/// A plugin's refusal of its configuration section.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Byte offset of the problem inside the section text, when known; the host turns it into
    /// the file's line and column.
    pub offset: ROption<u64>,
    /// What is wrong and what was expected.
    pub message: RString,
}

impl ConfigError {
    /// A refusal at `offset` bytes into the section text (if known).
    pub fn new(offset: Option<u64>, message: impl Into<String>) -> Self {
        Self { offset: offset.into(), message: message.into().into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A host call whose effect is carried out after the hook that made it returns, as data: the one
/// effect type the host executes ([`crate::HostServices`] implementations queue these), which
/// simulators and benches queue the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCall {
    /// [`crate::Host::send`]: a JSON text message to a session.
    Send(SessionId, String),
    /// [`crate::Host::serve_from_edge`]: answer the session's pending `request_offer` from the edge.
    ServeFromEdge(SessionId),
    /// [`crate::Host::close`]: the protocol's error `{code, error}`, then close the session.
    Close(SessionId, u16, String),
    /// [`crate::Host::set_timer`]: call `timer_fired(token)` after `after_ms`.
    SetTimer {
        /// The plugin's token.
        token: u64,
        /// The delay, in ms.
        after_ms: u64,
    },
    /// [`crate::Host::count`]: add `delta` to the plugin's metric `name`.
    Count(String, i64),
}
