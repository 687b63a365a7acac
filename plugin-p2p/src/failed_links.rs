//! P2P links that failed, remembered by the two ends' addresses rather than their sessions: a page
//! that reloads (a new socket, a new session) from the same address is not paired into the same
//! failure again. Bounded: each entry expires after [`REMEMBER_MS`], a client address keeps at
//! most [`PER_CLIENT`] failures (its oldest forgotten first), and the whole memo holds at most
//! [`CAPACITY`] (the oldest forgotten first).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// How long a failure is remembered, ms.
pub const REMEMBER_MS: u64 = 10 * 60 * 1000;
/// Failures remembered per client address: so many hosts in a row failing from one address
/// says more about that address than about the hosts.
pub const PER_CLIENT: usize = 8;
/// Failures remembered in all.
pub const CAPACITY: usize = 16 * 1024;

/// `(host address, client address)` pairs whose link failed, with when (ms).
#[derive(Debug, Default)]
pub struct FailedLinks {
    /// Per client address: its failed hosts, when, and whether the client's side is suspect (the
    /// host's side showed nothing that explains the failure).
    by_client: HashMap<IpAddr, Vec<(IpAddr, u64, bool)>>,
    /// Every entry by time, oldest first, for expiry and the global bound.
    by_time: BTreeSet<(u64, IpAddr, IpAddr)>,
}

impl FailedLinks {
    /// The link from `host` to `client` failed at `now`; `client_suspect` if nothing on the
    /// host's side explains it.
    pub fn failed(&mut self, now: u64, host: IpAddr, client: IpAddr, client_suspect: bool) {
        self.expire(now);
        self.forget(host, client);
        let failures = self.by_client.entry(client).or_default();
        if failures.len() >= PER_CLIENT {
            let (old_host, at, _) = failures.remove(0);
            self.by_time.remove(&(at, client, old_host));
        }
        failures.push((host, now, client_suspect));
        self.by_time.insert((now, client, host));
        if self.by_time.len() > CAPACITY {
            let (at, c, h) = self.by_time.pop_first().expect("over capacity: not empty");
            self.remove_from_client(c, h, at);
        }
    }

    /// Whether the link from `host` to `client` failed in the last [`REMEMBER_MS`] before `now`.
    pub fn has_failed(&self, now: u64, host: IpAddr, client: IpAddr) -> bool {
        self.by_client.get(&client).is_some_and(|f| f.iter().any(|&(h, at, _)| h == host && now.saturating_sub(at) < REMEMBER_MS))
    }

    /// How many links to `client` failed in the last [`REMEMBER_MS`] before `now` with the
    /// client's side suspect.
    pub fn failures_of(&self, now: u64, client: IpAddr) -> usize {
        self.by_client.get(&client).map_or(0, |f| f.iter().filter(|&&(_, at, suspect)| suspect && now.saturating_sub(at) < REMEMBER_MS).count())
    }

    /// Entries held (for tests).
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }

    fn forget(&mut self, host: IpAddr, client: IpAddr) {
        if let Some(at) = self.by_client.get(&client).and_then(|f| f.iter().find(|(h, ..)| *h == host)).map(|&(_, at, _)| at) {
            self.by_time.remove(&(at, client, host));
            self.remove_from_client(client, host, at);
        }
    }

    fn remove_from_client(&mut self, client: IpAddr, host: IpAddr, at: u64) {
        if let Some(failures) = self.by_client.get_mut(&client) {
            failures.retain(|&(h, t, _)| !(h == host && t == at));
            if failures.is_empty() {
                self.by_client.remove(&client);
            }
        }
    }

    fn expire(&mut self, now: u64) {
        while let Some(&(at, client, host)) = self.by_time.first() {
            if now.saturating_sub(at) < REMEMBER_MS {
                break;
            }
            self.by_time.pop_first();
            self.remove_from_client(client, host, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_failure_is_remembered_by_address_until_it_expires() {
        let mut f = FailedLinks::default();
        f.failed(1000, ip(1), ip(2), true);
        assert!(f.has_failed(2000, ip(1), ip(2)));
        assert!(!f.has_failed(2000, ip(2), ip(1)), "one direction: host 1 to client 2");
        assert_eq!(f.failures_of(2000, ip(2)), 1);
        assert!(!f.has_failed(1000 + REMEMBER_MS, ip(1), ip(2)), "expired");
        f.failed(1000 + REMEMBER_MS, ip(3), ip(4), false);
        assert_eq!(f.len(), 1, "the expired entry is dropped on the next write");
    }

    #[test]
    fn the_memo_is_bounded_per_client_and_in_all() {
        let mut f = FailedLinks::default();
        for h in 0..(PER_CLIENT as u32 + 3) {
            f.failed(u64::from(h), ip(100 + h), ip(1), h % 2 == 0);
        }
        assert_eq!(f.len(), PER_CLIENT);
        assert!(!f.has_failed(20, ip(100), ip(1)) && f.has_failed(20, ip(100 + PER_CLIENT as u32 + 2), ip(1)), "the oldest forgotten");
        for c in 0..(CAPACITY as u32 + 10) {
            f.failed(100, ip(7), ip(1_000_000 + c), false);
        }
        assert_eq!(f.len(), CAPACITY);
        assert_eq!(f.by_client.values().map(Vec::len).sum::<usize>(), CAPACITY, "both indexes agree");
        f.failed(200, ip(7), ip(1_000_000), false);
        f.failed(201, ip(7), ip(1_000_000), false);
        assert_eq!(f.by_client[&ip(1_000_000)].len(), 1, "a repeated failure replaces its entry");
    }
}
