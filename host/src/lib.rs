//! The part of the host that its tests share: the WebRTC plumbing (codecs, payload types, the
//! RTP rewrite), so the Rust test peers relay exactly as the edge sends. The host itself is the
//! `host` binary (`src/main.rs`).

pub use edge_transport::plumbing;
