//! Host/client matching: per stream and browser kind, the host peers that may take clients,
//! ordered so that a new client gets, in O(log n), a host of its own network if one has a vacancy,
//! else any; among those a host that has already relayed in this session, and the least loaded.
//! And per pool, how many viewers could only ever be clients, so that viewers who could host are
//! made hosts while the pool has too few hosts for them.

use crate::locality::{NearIndex, Site};
use plugin_api::SessionId;
use std::collections::{BTreeSet, HashMap};

/// Which pool a peer belongs to: its stream and its browser kind, both interned.
pub type PoolKey = (u32, u32);

/// A host's place in the order: proven relays first, then the shallowest (a host fed by the edge
/// before a client relaying further), then the least loaded (the id breaks ties).
type Rank = (bool, u8, u16, SessionId);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: PoolKey,
    site: Site,
    load: u16,
    proven: bool,
    /// 0: fed by the edge; n: a client n hops from it, relaying further.
    depth: u8,
}

impl Entry {
    fn rank(&self, id: SessionId) -> Rank {
        (!self.proven, self.depth, self.load, id)
    }
}

/// The pooled hosts, ranked in their pool and in their pool's network, and per pool the number
/// of dependants: viewers who asked for the stream, cannot host and were never a
/// client (phones, Linux, Edge share a key with the desktops of their browser kind).
#[derive(Debug, Default)]
pub struct HostPool {
    hosts: HashMap<SessionId, Entry>,
    ranks: NearIndex<PoolKey, Rank>,
    /// The deepest host ever pooled: the depths a pick walks.
    deepest: u8,
    dependants: HashMap<PoolKey, u32>,
}

impl HostPool {
    /// A viewer of `key` who can only be a client asked for the stream.
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
        let hosts = self.ranks.len(key) as u64;
        let dependants = self.dependants.get(&key).copied().unwrap_or(0) as u64;
        hosts * u64::from(capacity) < dependants
    }

    /// Adds host `id` with `load` clients (replacing any earlier entry), fed by the edge.
    pub fn insert(&mut self, id: SessionId, key: PoolKey, site: Site, load: u16, proven: bool) {
        self.insert_at(id, key, site, load, proven, 0);
    }

    /// Adds host `id` at `depth` (a client relaying further: its hops from the edge).
    pub fn insert_at(&mut self, id: SessionId, key: PoolKey, site: Site, load: u16, proven: bool, depth: u8) {
        self.remove(id);
        self.deepest = self.deepest.max(depth);
        let entry = Entry { key, site, load, proven, depth };
        self.hosts.insert(id, entry);
        self.ranks.insert(key, site, entry.rank(id));
    }

    /// Removes host `id`; true if it was there.
    pub fn remove(&mut self, id: SessionId) -> bool {
        let Some(entry) = self.hosts.remove(&id) else { return false };
        self.ranks.remove(entry.key, entry.site, entry.rank(id));
        true
    }

    /// Host `id` now has `load` clients (nothing if it is not pooled).
    pub fn set_load(&mut self, id: SessionId, load: u16) {
        self.update(id, |e| e.load = load);
    }

    /// Host `id` has relayed: it goes before the unproven ones.
    pub fn set_proven(&mut self, id: SessionId) {
        self.update(id, |e| e.proven = true);
    }

    fn update(&mut self, id: SessionId, change: impl FnOnce(&mut Entry)) {
        if let Some(&entry) = self.hosts.get(&id) {
            let mut new = entry;
            change(&mut new);
            if new != entry {
                self.insert_at(id, new.key, new.site, new.load, new.proven, new.depth);
            }
        }
    }

    /// Every pooled host as `(key, load, id)` (for `P2pCore::check_invariants`).
    pub(crate) fn hosts(&self) -> impl Iterator<Item = (PoolKey, u16, SessionId)> + '_ {
        self.hosts.iter().map(|(&id, e)| (e.key, e.load, id))
    }

    /// Checks that both orders hold exactly the entries (for `P2pCore::check_invariants`).
    pub(crate) fn check_indexes(&self) -> Result<(), String> {
        let (in_keys, in_sites) = self.ranks.counts();
        let sited = self.hosts.values().filter(|e| e.site != Site::UNKNOWN).count();
        let all_there = self.hosts.iter().all(|(&id, e)| self.ranks.contains(e.key, e.site, &e.rank(id)));
        if in_keys != self.hosts.len() || in_sites != sited || !all_there {
            return Err(format!("pool indexes: {in_keys} ranked by pool, {in_sites} by site, {} hosts ({sited} with a site)", self.hosts.len()));
        }
        Ok(())
    }

    /// The dependants per key (for `P2pCore::check_invariants`).
    pub(crate) fn dependants(&self) -> &HashMap<PoolKey, u32> {
        &self.dependants
    }

    /// The host for a client of `key` at `site`: a host of that site with fewer than `capacity`
    /// clients if there is one, else any of `key`; proven relays first, then the least loaded.
    /// With `proven_only`, only hosts that have relayed.
    pub fn pick(&self, key: PoolKey, site: Site, capacity: u16, proven_only: bool) -> Option<SessionId> {
        self.pick_where(key, site, capacity, proven_only, MAX_SKIPPED, |_| true)
    }

    /// [`Self::pick`] among the hosts `allowed` accepts (a client's link to it can form). Each
    /// group (proven or not, at one depth) is searched among its `skipped` + 1 first vacancies
    /// ([`MAX_SKIPPED`] for a joining viewer): a refusal costs a step, never a scan of the pool.
    pub fn pick_where(&self, key: PoolKey, site: Site, capacity: u16, proven_only: bool, skipped: usize, allowed: impl Fn(SessionId) -> bool) -> Option<SessionId> {
        // A group is ordered by load: past its first full host, every host is full.
        let fits = |&&(_, _, load, _): &&Rank| load < capacity;
        let first = |ranks: std::collections::btree_set::Range<'_, Rank>| ranks.take_while(fits).take(skipped + 1).map(|r| r.3).find(|&id| allowed(id));
        let halves: &[bool] = if proven_only { &[false] } else { &[false, true] };
        self.ranks.find(key, site, |set: &BTreeSet<Rank>| {
            // Proven hosts first, then the shallowest, then the least loaded.
            // (Depths are bounded by `MaxDepth`, far below u8::MAX: d + 1 does not overflow.)
            let groups = halves.iter().flat_map(|&unproven| (0..=self.deepest).map(move |d| (unproven, d)));
            groups.into_iter().find_map(|(unproven, d)| first(set.range((unproven, d, 0, 0)..(unproven, d + 1, 0, 0))))
        })
    }
}

/// Vacancies passed over per half of a pool when the client may not pair with them.
pub const MAX_SKIPPED: usize = 8;

/// Vacancies passed over when they are filled by moves, if their hosts reach no other network:
/// such a host takes only a viewer of its own network (one look at that network's queue), so
/// passing it is cheap, and behind home routers most hosts are such (OvenPlayer's relays).
pub const MAX_SKIPPED_LOCAL: usize = 8 * MAX_SKIPPED;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locality::Locator;

    const NOWHERE: Site = Site::UNKNOWN;

    #[test]
    fn picks_least_loaded_with_vacancy_per_key() {
        let mut pool = HostPool::default();
        pool.insert(10, (1, 1), NOWHERE, 1, false);
        pool.insert(11, (1, 1), NOWHERE, 0, false);
        pool.insert(12, (2, 1), NOWHERE, 0, false);
        assert_eq!(pool.pick((1, 1), NOWHERE, 2, false), Some(11));
        pool.set_load(11, 2);
        assert_eq!(pool.pick((1, 1), NOWHERE, 2, false), Some(10));
        pool.set_load(10, 2);
        assert_eq!(pool.pick((1, 1), NOWHERE, 2, false), None, "everyone full");
        assert_eq!(pool.pick((1, 2), NOWHERE, 2, false), None, "another browser kind has no host");
        assert_eq!(pool.pick((2, 1), NOWHERE, 0, false), None, "capacity 0 means no clients");
        assert!(pool.remove(12));
        assert_eq!(pool.pick((2, 1), NOWHERE, 2, false), None);
        pool.check_indexes().unwrap();
    }

    #[test]
    fn proven_relays_first_and_only_them_when_asked() {
        let mut pool = HostPool::default();
        pool.insert(1, (1, 1), NOWHERE, 0, false);
        pool.insert(2, (1, 1), NOWHERE, 1, false);
        assert_eq!(pool.pick((1, 1), NOWHERE, 2, true), None, "nobody has relayed yet");
        pool.set_proven(2);
        assert_eq!(pool.pick((1, 1), NOWHERE, 2, false), Some(2), "a proven relay before a less loaded stranger");
        assert_eq!(pool.pick((1, 1), NOWHERE, 2, true), Some(2));
        pool.set_load(2, 2);
        assert_eq!(pool.pick((1, 1), NOWHERE, 2, false), Some(1), "the proven one is full");
        assert_eq!(pool.pick((1, 1), NOWHERE, 2, true), None);
        pool.check_indexes().unwrap();
    }

    #[test]
    fn a_host_of_the_clients_network_first() {
        let l = Locator::new(true, vec![]);
        let (home, away) = (l.site("192.0.2.10:1"), l.site("198.51.100.7:1"));
        let mut pool = HostPool::default();
        pool.insert(1, (1, 1), away, 0, true);
        pool.insert(2, (1, 1), home, 1, false);
        assert_eq!(pool.pick((1, 1), home, 2, false), Some(2), "local, though loaded and unproven");
        assert_eq!(pool.pick((1, 1), away, 2, false), Some(1));
        assert_eq!(pool.pick((1, 1), l.site("203.0.113.1:1"), 2, false), Some(1), "no local host: the global order");
        pool.set_load(2, 2);
        assert_eq!(pool.pick((1, 1), home, 2, false), Some(1), "the local host is full");
        assert_eq!(pool.pick((1, 1), home, 2, true), Some(1));
        pool.remove(1);
        pool.remove(2);
        assert_eq!(pool.ranks.counts(), (0, 0), "nothing left behind");
    }

    #[test]
    fn short_of_hosts_while_dependants_outnumber_slots() {
        let mut pool = HostPool::default();
        let key = (1, 1);
        assert!(!pool.short_of_hosts(key, 2), "no dependants, no need");
        pool.dependant_joined(key);
        assert!(pool.short_of_hosts(key, 2), "a dependant and no host");
        pool.insert(1, key, NOWHERE, 0, false);
        pool.dependant_joined(key);
        assert!(!pool.short_of_hosts(key, 2), "one host takes two");
        pool.dependant_joined(key);
        assert!(pool.short_of_hosts(key, 2), "three need two hosts");
        pool.dependant_left(key);
        assert!(!pool.short_of_hosts(key, 2));
    }
}
