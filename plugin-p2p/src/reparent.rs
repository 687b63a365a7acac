//! Re-parenting: the edge viewers who may be moved into a host peer's vacancy, per pool, oldest
//! first. Who qualifies (asked for the stream, can only be a client, relays to nobody, played from
//! the edge long enough, did not ignore a move, moved fewer than twice) is the core's rule; this
//! module only keeps the queue.
//!
//! OvenPlayer answers `stop {id, peer_id: 0}` (its main connection's peer is the edge) by closing
//! its edge connection and sending `request_offer` again, which the core answers with the host's
//! offer; the cost is one short gap in playback (PROTOCOL.md, "How OvenPlayer handles stop").

use crate::matching::PoolKey;
use plugin_api::SessionId;
use std::collections::{BTreeSet, HashMap};

/// Moves of one viewer in one session, at most: a viewer is moved again only after it came back
/// to the edge (its new host left or failed, and `MoveFormerClients` lets a former client move),
/// and each move costs it a short gap, so two is the bound (raising it to 4 gained nothing in the
/// swarm simulation, BENCHMARKS.md).
pub const MAX_MOVES_PER_VIEWER: u8 = 2;

/// Edge viewers waiting for a vacancy, per pool, by the time they became movable (ms): the first
/// is the one who has waited longest.
#[derive(Debug, Default)]
pub struct Movable {
    by_key: HashMap<PoolKey, BTreeSet<(u64, SessionId)>>,
}

impl Movable {
    /// `id` of `key` may be moved from `since` on.
    pub fn insert(&mut self, key: PoolKey, since: u64, id: SessionId) {
        self.by_key.entry(key).or_default().insert((since, id));
    }

    /// `id`, movable since `since`, may no longer be moved (it asked again, left, or was moved).
    pub fn remove(&mut self, key: PoolKey, since: u64, id: SessionId) {
        if let Some(set) = self.by_key.get_mut(&key) {
            set.remove(&(since, id));
            if set.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }

    /// The viewer of `key` who has waited longest.
    pub fn first(&self, key: PoolKey) -> Option<SessionId> {
        self.by_key.get(&key)?.first().map(|&(_, id)| id)
    }

    /// Every movable viewer as `(key, id)` (for `P2pCore::check_invariants`).
    pub(crate) fn all(&self) -> impl Iterator<Item = (PoolKey, u64, SessionId)> + '_ {
        self.by_key.iter().flat_map(|(&key, set)| set.iter().map(move |&(since, id)| (key, since, id)))
    }
}
