//! The host's WebRTC edge transport, sans-IO: everything about an edge connection that is bytes,
//! addresses and the clock, and nothing that is a socket, a task or a channel (those are the
//! host's I/O layer, `host/src/edge`). In the manner of `rtc` and str0m: datagrams and deadlines
//! in, datagrams to send, deadlines and events out.
//!
//! - [`connection`]: the one interface of every edge connection ([`Connection`]: datagram in,
//!   timeout, [`Output`] out);
//! - [`conn`]: a viewer's connection, on the edge's own lean machinery: ICE-lite ([`ice_lite`]),
//!   the SDP written by hand ([`sdp`]), DTLS from `rtc`'s sans-IO endpoint for the keys, and
//!   media sealed straight into SRTP ([`track`]);
//! - [`ingest`]: a publisher's or a pull's connection, on `rtc`'s peer connection ([`link`]);
//! - [`demux`]: which connection a datagram on a shared port belongs to (RFC 7983's first-byte
//!   rule, written once);
//! - [`stun_server`]: the plain STUN Binding server of every edge port;
//! - [`counters`]: what the edge counts, typed ([`EdgeCounts`]);
//! - [`framing`]: RFC 4571 framing, for ICE over TCP;
//! - [`plumbing`]: the codecs, payload types and RTP rewrite the edge and the test peers share;
//! - [`media`]: a stream's packets;
//! - [`error`]: why a connection could not be made or refused an answer.
//!
//! The crate has no configuration file of its own: the host gives each connection its plain
//! values ([`conn::NewConn`], [`ingest::NewPublisher`]).

pub mod conn;
pub mod connection;
pub mod counters;
pub mod demux;
pub mod error;
pub mod framing;
pub mod ice_lite;
pub mod ingest;
pub mod link;
pub mod media;
pub mod plumbing;
pub mod sdp;
pub mod stun_server;
pub mod track;

pub use connection::{Arrival, ConnEvent, Connection, Output, Source, Transmit};
pub use counters::EdgeCounts;
pub use error::Error;
