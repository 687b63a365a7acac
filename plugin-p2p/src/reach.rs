//! Whether a host peer's relay can be reached from another network, read from the ICE candidates
//! it shows (in its offer's SDP, with the offer, or trickled): a relay whose candidates are only
//! its LAN addresses or mDNS names (OvenPlayer 0.10.38's relay has no STUN) reaches only clients
//! behind the same public address or on a network the operator declared one (`<Site>`); one that
//! shows a server-reflexive, relayed or public address can be reached across networks.
//!
//! A candidate line is `candidate:FOUNDATION COMPONENT PROTOCOL PRIORITY ADDRESS PORT typ TYPE ...`
//! (RFC 8839 section 5.1); an SDP carries it as `a=candidate:...`.

use serde_json::Value;
use std::net::IpAddr;

/// What a relay's candidates have shown so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reach {
    /// No candidate seen yet.
    #[default]
    Unknown,
    /// Only LAN addresses and mDNS names.
    LocalOnly,
    /// At least one address another network can reach (server-reflexive, relayed, or a host
    /// candidate on a public address).
    Public,
}

impl Reach {
    /// What is known after also seeing `other` (a public candidate is never forgotten).
    pub fn and(self, other: Reach) -> Reach {
        match (self, other) {
            (Reach::Public, _) | (_, Reach::Public) => Reach::Public,
            (Reach::LocalOnly, _) | (_, Reach::LocalOnly) => Reach::LocalOnly,
            _ => Reach::Unknown,
        }
    }

    /// What an SDP's `a=candidate:` lines show.
    pub fn of_sdp(sdp: &str) -> Reach {
        sdp.lines().filter_map(|l| l.trim_end().strip_prefix("a=")).fold(Reach::Unknown, |r, c| r.and(of_candidate(c)))
    }

    /// What a message's `candidates` (`[{candidate: "..."}, ...]`) show.
    pub fn of_candidates(candidates: &Value) -> Reach {
        let lines = candidates.as_array().into_iter().flatten().filter_map(|c| c.get("candidate").and_then(Value::as_str));
        lines.fold(Reach::Unknown, |r, c| r.and(of_candidate(c)))
    }
}

/// What one candidate line shows; [`Reach::Unknown`] if it is not one (or is end-of-candidates).
pub fn of_candidate(line: &str) -> Reach {
    let Some(rest) = line.strip_prefix("candidate:") else { return Reach::Unknown };
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let (Some(address), Some(kind)) = (fields.get(4), fields.iter().position(|f| *f == "typ").and_then(|i| fields.get(i + 1))) else {
        return Reach::Unknown;
    };
    match *kind {
        "srflx" | "prflx" | "relay" => Reach::Public,
        "host" if address.ends_with(".local") => Reach::LocalOnly,
        "host" => match address.parse::<IpAddr>() {
            Ok(ip) if is_local(ip) => Reach::LocalOnly,
            Ok(_) => Reach::Public,
            Err(_) => Reach::Unknown,
        },
        _ => Reach::Unknown,
    }
}

/// An address no other network can reach: private (RFC 1918, RFC 6598's shared space, unique
/// local fc00::/7), loopback, link-local, unspecified.
pub fn is_local(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lan_addresses_and_mdns_names_reach_only_their_network() {
        for line in [
            "candidate:1 1 udp 2122260223 10.1.0.2 50000 typ host generation 0",
            "candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host",
            "candidate:1 1 udp 2122260223 100.64.3.4 50000 typ host",
            "candidate:1 1 udp 2122260223 fd00::5 50000 typ host",
            "candidate:1 1 udp 2122260223 fe80::1 50000 typ host",
            "candidate:3 1 udp 2122260223 6d0e3f1c-2c1c-4bb4-9bd5-4a7ad9b1d5e1.local 50000 typ host",
        ] {
            assert_eq!(of_candidate(line), Reach::LocalOnly, "{line}");
        }
        for line in [
            "candidate:2 1 udp 1686052607 198.51.100.20 40000 typ srflx raddr 10.1.0.2 rport 50000",
            "candidate:4 1 udp 41885439 203.0.113.5 3478 typ relay raddr 0.0.0.0 rport 0",
            "candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host",
            "candidate:1 1 tcp 1518280447 2001:db8::7 9 typ host tcptype active",
        ] {
            assert_eq!(of_candidate(line), Reach::Public, "{line}");
        }
        for line in ["", "candidate:", "a=fingerprint:x", "candidate:1 1 udp 1 10.0.0.1 9 typ unknown", "candidate:1 1 udp 1 not-an-ip 9 typ host"] {
            assert_eq!(of_candidate(line), Reach::Unknown, "{line}");
        }
    }

    #[test]
    fn a_public_candidate_anywhere_wins_and_is_never_forgotten() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2122260223 10.1.0.2 50000 typ host\r\na=candidate:2 1 udp 1686052607 198.51.100.20 40000 typ srflx raddr 10.1.0.2 rport 50000\r\n";
        assert_eq!(Reach::of_sdp(sdp), Reach::Public);
        assert_eq!(Reach::of_sdp("v=0\r\na=candidate:1 1 udp 2122260223 10.1.0.2 50000 typ host\r\n"), Reach::LocalOnly);
        assert_eq!(Reach::of_sdp("v=0\r\n"), Reach::Unknown);
        let trickled = json!([{"candidate": "candidate:1 1 udp 2122260223 abc.local 5 typ host"}, {"candidate": ""}]);
        assert_eq!(Reach::of_candidates(&trickled), Reach::LocalOnly);
        assert_eq!(Reach::Public.and(Reach::LocalOnly), Reach::Public);
        assert_eq!(Reach::LocalOnly.and(Reach::Unknown), Reach::LocalOnly);
    }
}
