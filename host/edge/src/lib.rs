//! The host's WebRTC edge transport, sans-IO: everything about an edge connection that is bytes,
//! addresses and the clock, and nothing that is a socket, a task or a channel (those are the
//! host's I/O layer, `host/src/edge`). In the manner of `rtc` and str0m: datagrams and deadlines
//! in, datagrams to send, deadlines and events out.
//!
//! - [`plumbing`]: the codecs, payload types and RTP rewrite the edge and the test peers share;
//! - [`media`]: a stream's packets;
//! - [`demux`]: which connection a datagram on a shared port belongs to (RFC 7983's first-byte
//!   rule, written once);
//! - [`stun_server`]: the plain STUN Binding server of every edge port;
//! - [`framing`]: RFC 4571 framing, for ICE over TCP;
//! - [`track`]: one of a viewer's send-only tracks.

pub mod demux;
pub mod framing;
pub mod media;
pub mod plumbing;
pub mod stun_server;
pub mod track;
