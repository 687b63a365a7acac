//! Where a viewer is on the network, so that a client can be given a host near it: a configured
//! site (a name for a set of CIDR blocks: an office, a campus, an ISP's pool), else the viewer's
//! own network, taken as its IPv4 /24 or IPv6 /56 (what one household or one office LAN usually
//! gets). A site is a plain number computed from the address: nothing is remembered per network,
//! so a million distinct networks cost no memory.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};

/// A viewer's network: equal sites mean "near each other". [`Site::UNKNOWN`] matches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Site(u128);

impl Site {
    /// No address, or locality is off: near nobody.
    pub const UNKNOWN: Site = Site(0);

    /// Whether it is a configured `<Site>`: a network the operator declared one, whose viewers
    /// reach each other directly (a /24 or /56 only guesses at neighbours).
    pub fn is_configured(self) -> bool {
        self.0 & TAG_CONFIGURED != 0
    }
}

/// One CIDR block, `10.1.0.0/16` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    v6: bool,
    /// The address as 128 bits (IPv4 in the low 32), masked to the prefix.
    network: u128,
    bits: u8,
}

impl Cidr {
    /// Parses `address/bits`; a bare address is a single host.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, bits) = match text.trim().split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| format!("{text:?}: the prefix length is not a number"))?)),
            None => (text.trim(), None),
        };
        let ip: IpAddr = address.parse().map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let (v6, max) = match ip {
            IpAddr::V4(_) => (false, 32),
            IpAddr::V6(_) => (true, 128),
        };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(format!("{text:?}: a prefix of /{bits} is longer than the address"));
        }
        Ok(Self { v6, network: bits_of(ip) & mask(bits, max), bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let max = if self.v6 { 128 } else { 32 };
        matches!(ip, IpAddr::V6(_)) == self.v6 && bits_of(ip) & mask(self.bits, max) == self.network
    }
}

/// The address as 128 bits; an IPv4-mapped IPv6 address counts as the IPv4 one.
fn bits_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The top `bits` of a `max`-bit address (`bits` <= `max`).
fn mask(bits: u8, max: u8) -> u128 {
    let width = if max == 32 { u128::from(u32::MAX) } else { u128::MAX };
    // A shift by the whole width (/128) is no shift at all in Rust's release builds: spell it out.
    width & !width.checked_shr(u32::from(bits)).unwrap_or(0)
}

/// Turns a remote address into a [`Site`].
#[derive(Debug, Clone, Default)]
pub struct Locator {
    /// Off: every viewer is at [`Site::UNKNOWN`].
    enabled: bool,
    /// Configured sites, first match wins: each one's blocks (its index is its number).
    sites: Vec<Vec<Cidr>>,
}

/// Tags keep the three kinds of site apart: configured, IPv4 /24, IPv6 /56.
const TAG_CONFIGURED: u128 = 1 << 127;
const TAG_V4: u128 = 1 << 126;
const TAG_V6: u128 = 1 << 125;

impl Locator {
    /// A locator over these configured sites (each a list of blocks); `enabled` false places
    /// everyone nowhere.
    pub fn new(enabled: bool, sites: Vec<Vec<Cidr>>) -> Self {
        Self { enabled, sites }
    }

    /// The site of `remote` (`ip:port`, `[ip6]:port` or a bare IP, as the host reports it).
    pub fn site(&self, remote: &str) -> Site {
        if !self.enabled {
            return Site::UNKNOWN;
        }
        let ip = match remote.parse::<SocketAddr>() {
            Ok(a) => a.ip(),
            Err(_) => match remote.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => return Site::UNKNOWN,
            },
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if let Some(i) = self.sites.iter().position(|blocks| blocks.iter().any(|b| b.contains(ip))) {
            return Site(TAG_CONFIGURED | i as u128);
        }
        match ip {
            IpAddr::V4(_) => Site(TAG_V4 | (bits_of(ip) >> 8)),
            IpAddr::V6(_) => Site(TAG_V6 | (bits_of(ip) >> 72)),
        }
    }
}

/// Ordered sets of entries per key, and per key and network, for "the first of this network,
/// else the first of any" in O(log n). An entry at [`Site::UNKNOWN`] is in its key's set only.
/// Emptied sets are dropped: the maps hold nothing but what is indexed.
#[derive(Debug)]
pub struct NearIndex<K, T> {
    by_key: HashMap<K, BTreeSet<T>>,
    by_site: HashMap<(K, Site), BTreeSet<T>>,
}

impl<K, T> Default for NearIndex<K, T> {
    fn default() -> Self {
        Self { by_key: HashMap::new(), by_site: HashMap::new() }
    }
}

impl<K: Hash + Eq + Copy, T: Ord + Copy> NearIndex<K, T> {
    /// Indexes `entry` under `key`, at `site`.
    pub fn insert(&mut self, key: K, site: Site, entry: T) {
        self.by_key.entry(key).or_default().insert(entry);
        if site != Site::UNKNOWN {
            self.by_site.entry((key, site)).or_default().insert(entry);
        }
    }

    /// Unindexes `entry`, which was inserted with this `key` and `site`.
    pub fn remove(&mut self, key: K, site: Site, entry: T) {
        remove_from(&mut self.by_key, key, entry);
        if site != Site::UNKNOWN {
            remove_from(&mut self.by_site, (key, site), entry);
        }
    }

    /// What `pick` finds in the set of `key` at `site`, else in the set of `key`.
    pub fn find<R>(&self, key: K, site: Site, pick: impl Fn(&BTreeSet<T>) -> Option<R>) -> Option<R> {
        let local = (site != Site::UNKNOWN).then(|| self.by_site.get(&(key, site)).and_then(&pick)).flatten();
        local.or_else(|| self.by_key.get(&key).and_then(&pick))
    }

    /// `pick` over the set of `key` at `site` only (none at [`Site::UNKNOWN`]).
    pub fn find_at_site<R>(&self, key: K, site: Site, pick: impl Fn(&BTreeSet<T>) -> Option<R>) -> Option<R> {
        (site != Site::UNKNOWN).then(|| self.by_site.get(&(key, site)).and_then(&pick)).flatten()
    }

    /// How many entries `key` has.
    pub fn len(&self, key: K) -> usize {
        self.by_key.get(&key).map_or(0, BTreeSet::len)
    }

    /// Whether `entry` is indexed under `key` and, unless unknown, under `site` (for invariants).
    pub fn contains(&self, key: K, site: Site, entry: &T) -> bool {
        self.by_key.get(&key).is_some_and(|s| s.contains(entry))
            && (site == Site::UNKNOWN || self.by_site.get(&(key, site)).is_some_and(|s| s.contains(entry)))
    }

    /// Entries indexed by key, and by key and network (for invariants).
    pub fn counts(&self) -> (usize, usize) {
        (self.by_key.values().map(BTreeSet::len).sum(), self.by_site.values().map(BTreeSet::len).sum())
    }

    /// Every entry, with its key.
    pub fn iter(&self) -> impl Iterator<Item = (K, T)> + '_ {
        self.by_key.iter().flat_map(|(&key, set)| set.iter().map(move |&entry| (key, entry)))
    }
}

fn remove_from<K: Hash + Eq, T: Ord>(sets: &mut HashMap<K, BTreeSet<T>>, key: K, entry: T) {
    if let Some(set) = sets.get_mut(&key) {
        set.remove(&entry);
        if set.is_empty() {
            sets.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_network_is_the_slash_24_or_the_slash_56() {
        let l = Locator::new(true, vec![]);
        assert_eq!(l.site("192.0.2.1:5000"), l.site("192.0.2.200:6000"));
        assert_ne!(l.site("192.0.2.1:5000"), l.site("192.0.3.1:5000"));
        assert_eq!(l.site("[2001:db8:0:aa01::1]:5000"), l.site("[2001:db8:0:aaff::2]:1"));
        assert_ne!(l.site("[2001:db8:0:aa01::1]:5000"), l.site("[2001:db8:0:ab01::1]:1"));
        assert_eq!(l.site("[::ffff:192.0.2.9]:1"), l.site("192.0.2.1:1"), "IPv4-mapped counts as IPv4");
        assert_eq!(l.site("not an address"), Site::UNKNOWN);
        assert_eq!(Locator::new(false, vec![]).site("192.0.2.1:1"), Site::UNKNOWN);
    }

    #[test]
    fn configured_sites_come_first() {
        let campus = vec![Cidr::parse("10.1.0.0/16").unwrap(), Cidr::parse("2001:db8:1::/48").unwrap()];
        let l = Locator::new(true, vec![campus]);
        assert_eq!(l.site("10.1.2.3:1"), l.site("10.1.200.3:1"));
        assert_eq!(l.site("10.1.2.3:1"), l.site("[2001:db8:1:5::1]:1"), "one site over both families");
        assert_ne!(l.site("10.2.2.3:1"), l.site("10.1.2.3:1"));
    }

    #[test]
    fn the_near_index_looks_in_the_network_first_and_drops_empty_sets() {
        let l = Locator::new(true, vec![]);
        let (here, there) = (l.site("192.0.2.1:1"), l.site("198.51.100.1:1"));
        let mut index: NearIndex<u32, u32> = NearIndex::default();
        index.insert(1, there, 5);
        index.insert(1, here, 9);
        index.insert(1, Site::UNKNOWN, 2);
        let first = |s: &BTreeSet<u32>| s.first().copied();
        assert_eq!(index.find(1, here, first), Some(9), "its network first");
        assert_eq!(index.find(1, Site::UNKNOWN, first), Some(2), "no network: the first of any");
        assert_eq!(index.find(2, here, first), None, "another key");
        assert_eq!((index.len(1), index.counts()), (3, (3, 2)));
        for (site, entry) in [(there, 5), (here, 9), (Site::UNKNOWN, 2)] {
            assert!(index.contains(1, site, &entry));
            index.remove(1, site, entry);
        }
        assert!(index.by_key.is_empty() && index.by_site.is_empty(), "nothing left behind");
    }

    #[test]
    fn cidr_parsing() {
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0/8").is_err());
        assert!(Cidr::parse("10.0.0.0/x").is_err());
        assert!(Cidr::parse("::/0").unwrap().contains("2001:db8::1".parse().unwrap()));
        assert!(!Cidr::parse("::/0").unwrap().contains("10.0.0.1".parse().unwrap()), "families stay apart");
        assert!(Cidr::parse("10.9.9.9").unwrap().contains("10.9.9.9".parse().unwrap()));
        assert!(Cidr::parse("10.9.9.9/8").unwrap().contains("10.1.1.1".parse().unwrap()), "host bits are masked");
        let one = Cidr::parse("2001:db8::1").unwrap();
        assert!(one.contains("2001:db8::1".parse().unwrap()) && !one.contains("2001:db8::2".parse().unwrap()), "a bare IPv6 address is one host");
        assert_eq!(Cidr::parse("2001:db8::1/128").unwrap(), one);
        assert!(!Cidr::parse("10.0.0.1/32").unwrap().contains("10.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("203.0.113.9".parse().unwrap()));
    }
}
