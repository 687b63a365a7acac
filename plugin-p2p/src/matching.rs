//! Host/client matching: per stream and browser kind, the eligible host peers ordered by load, so
//! a new viewer goes to the least-loaded host with a vacancy in O(log n); and how many viewers of
//! each pool could only ever be clients, so that viewers who could host are made hosts while the
//! pool has too few hosts for them.

use plugin_api::SessionId;
use std::collections::{BTreeSet, HashMap};

/// Which pool a peer belongs to: its stream and its browser kind, both interned.
pub type PoolKey = (u32, u32);

/// Eligible host peers, least-loaded first, one ordered set per [`PoolKey`], and per key the
/// number of dependants: P2P viewers who cannot host and were never a client (phones, Linux, Edge
/// share a key with the desktops of their browser kind).
#[derive(Debug, Default)]
pub struct HostPool {
    pools: HashMap<PoolKey, BTreeSet<(u16, SessionId)>>,
    dependants: HashMap<PoolKey, u32>,
}

impl HostPool {
    /// A viewer of `key` who can only be a client arrived.
    pub fn dependant_joined(&mut self, key: PoolKey) {
        *self.dependants.entry(key).or_default() += 1;
    }

    /// A dependant of `key` left, or stopped being one.
    pub fn dependant_left(&mut self, key: PoolKey) {
        if let Some(n) = self.dependants.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.dependants.remove(&key);
            }
        }
    }

    /// True if the hosts of `key`, at `capacity` clients each, cannot take all its dependants.
    pub fn short_of_hosts(&self, key: PoolKey, capacity: u16) -> bool {
        let hosts = self.pools.get(&key).map_or(0, BTreeSet::len) as u64;
        let dependants = self.dependants.get(&key).copied().unwrap_or(0) as u64;
        hosts * u64::from(capacity) < dependants
    }

    /// Adds host `id` with `load` clients.
    pub fn insert(&mut self, key: PoolKey, id: SessionId, load: u16) {
        self.pools.entry(key).or_default().insert((load, id));
    }

    /// Removes host `id`, which had `load` clients; true if it was there.
    pub fn remove(&mut self, key: PoolKey, id: SessionId, load: u16) -> bool {
        let Some(pool) = self.pools.get_mut(&key) else { return false };
        let removed = pool.remove(&(load, id));
        if pool.is_empty() {
            self.pools.remove(&key);
        }
        removed
    }

    /// Moves host `id` from `old` to `new` clients, if it is in the pool.
    pub fn reload(&mut self, key: PoolKey, id: SessionId, old: u16, new: u16) {
        if self.remove(key, id, old) {
            self.insert(key, id, new);
        }
    }

    /// Every pooled host as `(key, load, id)` (for `P2pCore::check_invariants`).
    pub(crate) fn hosts(&self) -> impl Iterator<Item = (PoolKey, u16, SessionId)> + '_ {
        self.pools.iter().flat_map(|(&key, set)| set.iter().map(move |&(load, id)| (key, load, id)))
    }

    /// The dependants per key (for `P2pCore::check_invariants`).
    pub(crate) fn dependants(&self) -> &HashMap<PoolKey, u32> {
        &self.dependants
    }

    /// The least-loaded host of `key` with fewer than `capacity` clients.
    pub fn pick(&self, key: PoolKey, capacity: u16) -> Option<SessionId> {
        let &(load, id) = self.pools.get(&key)?.first()?;
        (load < capacity).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_least_loaded_with_vacancy_per_key() {
        let mut pool = HostPool::default();
        pool.insert((1, 1), 10, 1);
        pool.insert((1, 1), 11, 0);
        pool.insert((2, 1), 12, 0);
        assert_eq!(pool.pick((1, 1), 2), Some(11));
        pool.reload((1, 1), 11, 0, 2);
        assert_eq!(pool.pick((1, 1), 2), Some(10));
        pool.reload((1, 1), 10, 1, 2);
        assert_eq!(pool.pick((1, 1), 2), None, "everyone full");
        assert_eq!(pool.pick((1, 2), 2), None, "another browser kind has no host");
        assert_eq!(pool.pick((2, 1), 0), None, "capacity 0 means no clients");
        assert!(pool.remove((2, 1), 12, 0));
        assert_eq!(pool.pick((2, 1), 2), None);
    }

    #[test]
    fn short_of_hosts_while_dependants_outnumber_slots() {
        let mut pool = HostPool::default();
        let key = (1, 1);
        assert!(!pool.short_of_hosts(key, 2), "no dependants, no need");
        pool.dependant_joined(key);
        assert!(pool.short_of_hosts(key, 2), "a dependant and no host");
        pool.insert(key, 1, 0);
        pool.dependant_joined(key);
        assert!(!pool.short_of_hosts(key, 2), "one host takes two");
        pool.dependant_joined(key);
        assert!(pool.short_of_hosts(key, 2), "three need two hosts");
        pool.dependant_left(key);
        assert!(!pool.short_of_hosts(key, 2));
        assert!(!pool.short_of_hosts(key, 0) || pool.pick(key, 0).is_none(), "k = 0 gives no clients either way");
    }
}
