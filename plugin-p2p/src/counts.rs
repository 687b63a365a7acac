//! The metrics the P2P core counts, named for the host's `/metrics` (`p2p_` is prefixed there): a
//! name ending in `_total` is a counter, any other a gauge; labels in Prometheus's own syntax.

/// Gauge: viewers acting as host peers: eligible ones playing from the edge, and clients relaying
/// further (`MaxDepth` over 1).
pub const HOST_PEERS: &str = "host_peers";
/// Gauge: viewers paired with a host peer, at any stage.
pub const CLIENTS: &str = "clients";
/// Offer requests served by the edge.
pub const TO_EDGE: &str = r#"assignments_total{to="edge"}"#;
/// Offer requests given to a host peer.
pub const TO_PEER: &str = r#"assignments_total{to="peer"}"#;
/// Clients sent back to the edge because their host peer left (or started over).
pub const FALLBACK_HOST_LEFT: &str = r#"fallbacks_total{reason="host_left"}"#;
/// Clients sent to the edge because their host peer missed its offer deadline.
pub const FALLBACK_OFFER_DEADLINE: &str = r#"fallbacks_total{reason="offer_deadline"}"#;
/// Clients sent to the edge because they missed their answer deadline.
pub const FALLBACK_ANSWER_DEADLINE: &str = r#"fallbacks_total{reason="answer_deadline"}"#;
/// Clients sent to the edge because a player reported their link failed.
pub const FALLBACK_LINK_FAILED: &str = r#"fallbacks_total{reason="link_failed"}"#;
/// Clients sent to the edge because their host, on another network, shows only LAN or mDNS
/// candidates (its offer withheld, or the pair given up after `ReachWaitMs`).
pub const FALLBACK_UNREACHABLE: &str = r#"fallbacks_total{reason="unreachable"}"#;
/// Clients sent to the edge because their player did not report the link connected in time.
pub const FALLBACK_NOT_CONFIRMED: &str = r#"fallbacks_total{reason="not_confirmed"}"#;
/// Links a client's player reported connected.
pub const LINKS_CONFIRMED: &str = "links_confirmed_total";
/// Clients sent back because the client relaying to them lost its own source (`MaxDepth`
/// over 1).
pub const FALLBACK_RELAY_LOST: &str = r#"fallbacks_total{reason="relay_lost"}"#;
/// Host peers never asked again (missed an offer deadline).
pub const HOSTS_RETIRED: &str = "hosts_retired_total";
/// Edge viewers told to move into a host peer.
pub const MOVES: &str = "moves_total";
/// Moved viewers that asked again as told.
pub const MOVES_COMPLETED: &str = "moves_completed_total";
/// Moved viewers that did not ask again in time.
pub const MOVES_IGNORED: &str = "moves_ignored_total";
/// P2P messages refused (the sender was closed with 400).
pub const MESSAGES_REFUSED: &str = "messages_refused_total";
/// P2P messages of a pair that had just ended, dropped.
pub const MESSAGES_STALE: &str = "messages_stale_total";
