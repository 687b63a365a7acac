//! The edge's side of ICE for a viewer: ICE-lite (RFC 8445 2.5). The edge has reachable
//! addresses and a viewer's browser is a full agent that sends the checks and nominates, so the
//! edge only answers checks that carry its ufrag and password. It never sends a request itself,
//! so no address a player names can make it send anything (nothing to amplify), and it needs no
//! remote candidates. A pair stays alive while the player's checks (its consent, RFC 7675) keep
//! coming.

use bytes::BytesMut;
use rtc::crypto::RTCCrypto;
use rtc::stun::attributes::{ATTR_USERNAME, ATTR_USE_CANDIDATE};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, BINDING_REQUEST, BINDING_SUCCESS};
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a pair lives without a valid check from the player: browsers check every few seconds
/// (consent freshness), and RFC 7675 gives up after 30 s.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A viewer's ICE: the local credentials, and the path the player's checks chose.
pub struct IceLite {
    /// The local username fragment (how the demultiplexer finds this connection).
    pub ufrag: String,
    pwd: String,
    /// `(local, remote)`: where media goes. The last nominated pair, or the first checked one
    /// until the player nominates.
    pub path: Option<(SocketAddr, SocketAddr)>,
    nominated: bool,
    /// The last valid check on the path (or when checking could start).
    pub last_check: Instant,
}

/// What a valid check asks of the connection.
pub struct Checked {
    /// The response, to send back to where the check came from.
    pub response: BytesMut,
    /// The media path changed.
    pub new_path: bool,
}

impl IceLite {
    /// Fresh credentials.
    pub fn new(now: Instant) -> Self {
        let (ufrag, pwd) = super::link::ice_credentials();
        Self { ufrag, pwd, path: None, nominated: false, last_check: now }
    }

    /// The local password (for the offer).
    pub fn pwd(&self) -> &str {
        &self.pwd
    }

    /// Whether the player has nominated the path (its pair is chosen: it takes DTLS on it).
    pub fn nominated(&self) -> bool {
        self.nominated
    }

    /// When the pair is given up without another check.
    pub fn deadline(&self) -> Instant {
        self.last_check + CONSENT_TIMEOUT
    }

    /// A STUN datagram from `from` on `local`: the response if it is a binding request for this
    /// connection with a valid MESSAGE-INTEGRITY, `None` (dropped) otherwise.
    pub fn check(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: &[u8], crypto: &dyn RTCCrypto) -> Option<Checked> {
        let mut request = Message::new();
        request.raw = data.to_vec();
        request.decode().ok()?;
        if request.typ != BINDING_REQUEST {
            return None;
        }
        let username = TextAttribute::get_from_as(&request, ATTR_USERNAME).ok()?;
        if username.text.split(':').next() != Some(self.ufrag.as_str()) {
            return None;
        }
        MessageIntegrity::check(&mut request, self.pwd.as_bytes(), crypto).ok()?;
        let mut response = Message::new();
        response
            .build(&[
                Box::new(request.clone()),
                Box::new(BINDING_SUCCESS),
                Box::new(XorMappedAddress { ip: from.ip(), port: from.port() }),
                Box::new(MessageIntegrity::new_short_term_integrity_with_provider(self.pwd.clone(), crypto)),
                Box::new(FINGERPRINT),
            ])
            .ok()?;
        let nominate = request.contains(ATTR_USE_CANDIDATE);
        let new_path = match self.path {
            None => true,
            Some(path) => nominate && (path != (local, from) || !self.nominated),
        };
        if new_path {
            self.path = Some((local, from));
            self.nominated |= nominate;
        }
        // Consent is the media path's (RFC 7675 5.1): checks on another pair do not keep it.
        if self.path == Some((local, from)) {
            self.last_check = now;
        }
        Some(Checked { response: BytesMut::from(&response.raw[..]), new_path })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rtc::stun::attributes::ATTR_PRIORITY;
    use rtc::stun::message::{Getter, TransactionId};

    /// A binding request as a player sends it.
    pub(crate) fn request(username: &str, pwd: &str, nominate: bool) -> Vec<u8> {
        let provider = rtc::crypto::default_provider().unwrap();
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn rtc::stun::message::Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
            Box::new(rtc::stun::attributes::RawAttribute { typ: ATTR_PRIORITY, length: 4, value: vec![0, 0, 0, 1] }),
        ];
        if nominate {
            setters.push(Box::new(rtc::stun::attributes::RawAttribute { typ: ATTR_USE_CANDIDATE, length: 0, value: vec![] }));
        }
        setters.push(Box::new(MessageIntegrity::new_short_term_integrity_with_provider(pwd.to_owned(), provider.crypto())));
        setters.push(Box::new(FINGERPRINT));
        m.build(&setters).unwrap();
        m.raw
    }

    #[test]
    fn a_check_with_the_password_is_answered_and_sets_the_path() {
        let provider = rtc::crypto::default_provider().unwrap();
        let t0 = Instant::now();
        let mut ice = IceLite::new(t0);
        let (local, a, b) = ("10.0.0.1:10000".parse().unwrap(), "10.0.0.2:5000".parse().unwrap(), "10.0.0.3:6000".parse().unwrap());
        let user = format!("{}:theirs", ice.ufrag);
        let t1 = t0 + Duration::from_secs(3);
        let checked = ice.check(t1, local, a, &request(&user, ice.pwd(), false), provider.crypto()).expect("answered");
        assert!(checked.new_path);
        assert_eq!(ice.path, Some((local, a)));
        assert_eq!(ice.deadline(), t1 + CONSENT_TIMEOUT);
        let mut response = Message::new();
        response.raw = checked.response.to_vec();
        response.decode().unwrap();
        assert_eq!(response.typ, BINDING_SUCCESS);
        MessageIntegrity::check(&mut response, ice.pwd().as_bytes(), provider.crypto()).expect("signed with the local password");
        let mut mapped = XorMappedAddress::default();
        mapped.get_from(&response).unwrap();
        assert_eq!(SocketAddr::new(mapped.ip, mapped.port), a);

        // A check on another pair neither moves the path nor keeps its consent, until the player
        // nominates that pair.
        let t2 = t1 + Duration::from_secs(3);
        assert!(!ice.check(t2, local, b, &request(&user, ice.pwd(), false), provider.crypto()).unwrap().new_path);
        assert_eq!(ice.deadline(), t1 + CONSENT_TIMEOUT);
        assert!(ice.check(t2, local, b, &request(&user, ice.pwd(), true), provider.crypto()).unwrap().new_path);
        assert_eq!(ice.path, Some((local, b)));
        assert_eq!(ice.deadline(), t2 + CONSENT_TIMEOUT);
    }

    #[test]
    fn checks_without_the_password_or_for_another_ufrag_are_dropped() {
        let provider = rtc::crypto::default_provider().unwrap();
        let t0 = Instant::now();
        let mut ice = IceLite::new(t0);
        let (local, a) = ("10.0.0.1:10000".parse().unwrap(), "10.0.0.2:5000".parse().unwrap());
        let user = format!("{}:theirs", ice.ufrag);
        assert!(ice.check(t0, local, a, &request(&user, "wrong password", true), provider.crypto()).is_none());
        assert!(ice.check(t0, local, a, &request("other:theirs", ice.pwd(), true), provider.crypto()).is_none());
        assert!(ice.check(t0, local, a, b"\x00\x01garbage", provider.crypto()).is_none());
        assert_eq!(ice.path, None);
    }
}
