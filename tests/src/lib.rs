//! Test support shared by the integration tests and tools: running the real host binary
//! ([`harness`]), speaking its signalling ([`signal`]), and a real WebRTC peer that plays and can
//! relay the stream to its own clients as a P2P host peer ([`peer`]).

pub mod harness;
pub mod nack;
pub mod nat;
pub mod peer;
pub mod procstat;
pub mod publisher;
pub mod signal;
pub mod sim_host;
pub mod stun;
pub mod swarm;
