//! A signalling URL's query, read once: `key=value` pairs split on `&`, keys and values
//! percent-decoded (RFC 3986; `+` is a plus), keys compared without regard to ASCII case, at most
//! [`MAX_PARAMS`] pairs kept. And the other way: a query written from pairs, each encoded so that
//! no value can add a parameter or end the query.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::borrow::Cow;

/// `p2p`: a viewer's consent to take part in P2P (see [`Query::says_no`]).
pub const P2P: &str = "p2p";
/// `direction`: `send` (an OvenLiveKit publisher), `whip` (a WHIP publisher), else a viewer.
pub const DIRECTION: &str = "direction";
/// `token`: an OvenLiveKit publisher's token.
pub const TOKEN: &str = "token";
/// `edge`: an edge pulling the stream names itself with it.
pub const EDGE: &str = "edge";
/// `transport`: the ICE transports a viewer's offer names, as OvenMediaEngine reads it: `tcp`
/// for TCP candidates only, `udp` for UDP only, anything else (or none) for both.
pub const TRANSPORT: &str = "transport";
/// `p2p_stun=1`: the player's relay connections use STUN (this project's player adds it; OME
/// ignores it), so a host's relay may reach other networks before it has shown so.
pub const P2P_STUN: &str = "p2p_stun";

/// Pairs kept from one query; the rest are ignored (an HTTP request line is bounded anyway).
pub const MAX_PARAMS: usize = 32;

/// The values that mean "no", whatever their case (`?p2p=OFF`).
const NO: [&str; 4] = ["0", "off", "false", "no"];

/// What a signalling request asks for, by its `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A player (no `direction`, or any other value).
    Play,
    /// `direction=send`: an OvenLiveKit publisher.
    Send,
    /// `direction=whip`: a WHIP publisher.
    Whip,
}

/// A parsed query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    params: Vec<(String, String)>,
}

impl Query {
    /// Reads `raw` (the text after `?`, without it). Never fails: a malformed escape is kept as
    /// written, bytes that are not UTF-8 become U+FFFD.
    pub fn parse(raw: &str) -> Self {
        let params = raw
            .split('&')
            .filter(|pair| !pair.is_empty())
            .take(MAX_PARAMS)
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key).into_owned(), decode(value).into_owned())
            })
            .collect();
        Self { params }
    }

    /// The value of the first `key` parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values(key).next()
    }

    /// Whether some `key` parameter says no: `0`, `off`, `false` or `no` in any case.
    pub fn says_no(&self, key: &str) -> bool {
        self.values(key).any(|v| NO.iter().any(|no| v.eq_ignore_ascii_case(no)))
    }

    /// The request's [`Direction`] (its first `direction`, in any case).
    pub fn direction(&self) -> Direction {
        match self.get(DIRECTION) {
            Some(d) if d.eq_ignore_ascii_case("send") => Direction::Send,
            Some(d) if d.eq_ignore_ascii_case("whip") => Direction::Whip,
            _ => Direction::Play,
        }
    }

    fn values<'q, 'k>(&'q self, key: &'k str) -> impl Iterator<Item = &'q str> + use<'q, 'k> {
        self.params.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
}

fn decode(text: &str) -> Cow<'_, str> {
    percent_decode_str(text).decode_utf8_lossy()
}

/// Everything but RFC 3986's unreserved characters is escaped in a query part.
const QUERY_PART: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Writes `pairs` as a query (without the `?`), each key and value escaped.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    let pair = |(k, v): &(&str, &str)| format!("{}={}", utf8_percent_encode(k, QUERY_PART), utf8_percent_encode(v, QUERY_PART));
    pairs.iter().map(pair).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_is_refused_in_every_spelling() {
        for raw in ["p2p=0", "p2p=FALSE", "p2p=Off", "P2P=0", "p2p=%30", "x=1&p2p=no", "%70%32%70=off", "p2p=1&p2p=0"] {
            assert!(Query::parse(raw).says_no(P2P), "{raw}");
        }
        for raw in ["", "p2p=1", "p2p=0x", "p2p", "xp2p=0", "p2p=%300", "&&&"] {
            assert!(!Query::parse(raw).says_no(P2P), "{raw}");
        }
    }

    #[test]
    fn values_are_decoded_and_keys_match_in_any_case() {
        let q = Query::parse("Token=a%2Bb+c&direction=SEND&bad=%zz&edge=%E2%9C%93");
        assert_eq!(q.get(TOKEN), Some("a+b+c"), "+ is a plus");
        assert_eq!(q.direction(), Direction::Send);
        assert_eq!(q.get("bad"), Some("%zz"), "a malformed escape is kept");
        assert_eq!(q.get(EDGE), Some("✓"));
        assert_eq!(Query::parse("direction=whip").direction(), Direction::Whip);
        assert_eq!(Query::parse("direction=sideways").direction(), Direction::Play);
    }

    #[test]
    fn no_more_than_the_bound_of_pairs_is_kept() {
        let raw = (0..1000).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join("&") + "&p2p=0";
        let q = Query::parse(&raw);
        assert_eq!(q.params.len(), MAX_PARAMS);
        assert!(!q.says_no(P2P), "past the bound");
    }

    #[test]
    fn an_encoded_value_cannot_add_a_parameter() {
        let raw = encode(&[(P2P, "0"), (EDGE, "e?p2p=1&x=#")]);
        assert_eq!(raw, "p2p=0&edge=e%3Fp2p%3D1%26x%3D%23");
        let q = Query::parse(&raw);
        assert_eq!((q.get(P2P), q.get(EDGE)), (Some("0"), Some("e?p2p=1&x=#")));
        assert_eq!(q.params.len(), 2);
    }
}
