//! Re-parenting: the edge viewers who may be moved into a host peer's vacancy, per pool, oldest
//! first. Who qualifies (asked for the stream, can only be a client, relays to nobody, played from
//! the edge long enough, did not ignore a move, moved fewer than twice) is the core's rule; this
//! module only keeps the queue.
//!
//! OvenPlayer answers `stop {id, peer_id: 0}` (its main connection's peer is the edge) by closing
//! its edge connection and sending `request_offer` again, which the core answers with the host's
//! offer; the cost is one short gap in playback (PROTOCOL.md, "How OvenPlayer handles stop").

use crate::locality::{NearIndex, Site};
use crate::matching::{PoolKey, MAX_SKIPPED};
use plugin_api::SessionId;

/// Moves of one viewer in one session, at most: a viewer is moved again only after it came back
/// to the edge (its new host left or failed, and `MoveFormerClients` lets a former client move),
/// and each move costs it a short gap, so two is the bound (raising it to 4 gained nothing in the
/// swarm simulation, BENCHMARKS.md).
pub const MAX_MOVES_PER_VIEWER: u8 = 2;

/// Edge viewers waiting for a vacancy, per pool and per pool and network, by the time they
/// became movable (ms): the first is the one who has waited longest.
#[derive(Debug, Default)]
pub struct Movable {
    queue: NearIndex<PoolKey, (u64, SessionId)>,
}

impl Movable {
    /// `id` of `key`, at `site`, may be moved from `since` on.
    pub fn insert(&mut self, key: PoolKey, site: Site, since: u64, id: SessionId) {
        self.queue.insert(key, site, (since, id));
    }

    /// `id`, movable since `since`, may no longer be moved (it asked again, left, or was moved).
    pub fn remove(&mut self, key: PoolKey, site: Site, since: u64, id: SessionId) {
        self.queue.remove(key, site, (since, id));
    }

    /// The viewer of `key` at `site` who has waited longest, else the one of `key`.
    pub fn first(&self, key: PoolKey, site: Site) -> Option<SessionId> {
        self.queue.find(key, site, |set| set.first().map(|&(_, id)| id))
    }

    /// [`Self::first`] among the viewers `allowed` accepts (a link to the host can form), each of
    /// the two queues searched among its [`MAX_SKIPPED`] + 1 longest waiting.
    pub fn first_where(&self, key: PoolKey, site: Site, allowed: impl Fn(SessionId) -> bool) -> Option<SessionId> {
        self.queue.find(key, site, |set| set.iter().take(MAX_SKIPPED + 1).map(|&(_, id)| id).find(|&id| allowed(id)))
    }

    /// [`Self::first_where`] among the viewers of `site` only.
    pub fn first_at_site_where(&self, key: PoolKey, site: Site, allowed: impl Fn(SessionId) -> bool) -> Option<SessionId> {
        self.queue.find_at_site(key, site, |set| set.iter().take(MAX_SKIPPED + 1).map(|&(_, id)| id).find(|&id| allowed(id)))
    }

    /// Every movable viewer as `(key, since, id)` (for `P2pCore::check_invariants`).
    pub(crate) fn all(&self) -> impl Iterator<Item = (PoolKey, u64, SessionId)> + '_ {
        self.queue.iter().map(|(key, (since, id))| (key, since, id))
    }

    /// How many are indexed by network (for `P2pCore::check_invariants`).
    pub(crate) fn sited(&self) -> usize {
        self.queue.counts().1
    }
}
