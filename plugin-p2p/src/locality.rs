//! Where a viewer is on the network, so that a client can be given a host near it: a configured
//! site (a name for a set of CIDR blocks: an office, a campus, an ISP's pool), else the viewer's
//! own network, taken as its IPv4 /24 or IPv6 /56 (what one household or one office LAN usually
//! gets). A site is a plain number computed from the address: nothing is remembered per network,
//! so a million distinct networks cost no memory.

use std::net::{IpAddr, SocketAddr};

/// A viewer's network: equal sites mean "near each other". [`Site::UNKNOWN`] matches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Site(u128);

impl Site {
    /// No address, or locality is off: near nobody.
    pub const UNKNOWN: Site = Site(0);
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
