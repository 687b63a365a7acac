//! The edge's side of ICE for a viewer: ICE-lite (RFC 8445 2.5). The edge has reachable
//! addresses and a viewer's browser is a full agent that sends the checks and nominates, so the
//! edge answers checks that carry its ufrag and password, and needs no remote candidates. A pair
//! stays alive while the player's checks on it (its consent, RFC 7675) keep coming.
//!
//! The media path moves only to an address that has shown it wants the media. Knowing the ICE
//! password is not enough: the viewer knows it, and can name any address as the source of a
//! check (nor would an authenticated SRTCP or DTLS record do: the viewer holds those keys too).
//! So a nominating check from a new pair makes it a *candidate*: the edge sends a check of its
//! own there, with a fresh random transaction id and signed with the player's password, and the
//! path moves when that check is answered from there. The player's ICE agent answers it; a forger
//! never sees the transaction id. Until then the old path keeps the media and its consent.
//!
//! The first checked pair is the path at once: nothing but DTLS handshake flights goes there
//! before the handshake, which cannot finish without what the edge sent there.
//!
//! The edge sends a check only while a candidate is pending, at most one per [`PROBE_INTERVAL`],
//! after a valid check of the player's (or its answer, for a candidate nominated before it): no
//! address can make it send more than it is sent. Path changes are bounded ([`PATH_CHANGES`]).

use bytes::BytesMut;
use rtc::crypto::RTCCrypto;
use rtc::ice::attributes::control::AttrControlled;
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::stun::attributes::{ATTR_USERNAME, ATTR_USE_CANDIDATE};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a pair lives without a valid check from the player: browsers check every few seconds
/// (consent freshness), and RFC 7675 gives up after 30 s.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Path changes a connection may make per [`PATH_CHANGE_WINDOW`]: a player whose network
/// switches moves once or twice; more is a player (or a forger) thrashing the path.
pub const PATH_CHANGES: u32 = 8;

/// The window [`PATH_CHANGES`] counts in.
pub const PATH_CHANGE_WINDOW: Duration = Duration::from_secs(60);

/// The edge checks a candidate pair at most this often (STUN's first retransmission timeout).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The PRIORITY of the edge's own checks: a peer-reflexive candidate's (RFC 8445 5.1.2.1, type
/// preference 110), as if the player learned the edge's address from the check.
const PROBE_PRIORITY: u32 = (110 << 24) | (65_535 << 8) | 255;

/// `(local, remote)`: a candidate pair, as the edge sees it.
pub type Pair = (SocketAddr, SocketAddr);

/// The player's ICE credentials, from its answer: the edge's own checks carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCredentials {
    pub ufrag: String,
    pub pwd: String,
}

/// A pair the player nominated, waiting for the edge's check to it to be answered.
struct Candidate {
    pair: Pair,
    /// The transaction id of the edge's check (the same in every retransmission).
    transaction: TransactionId,
}

/// A viewer's ICE: the local credentials, and the path the player's checks chose.
pub struct IceLite {
    /// The local username fragment (how the demultiplexer finds this connection).
    pub ufrag: String,
    pwd: String,
    remote: Option<RemoteCredentials>,
    /// Where media goes: the first checked pair, then each nominated one once it answered.
    path: Option<Pair>,
    nominated: bool,
    candidate: Option<Candidate>,
    /// When the edge last checked a candidate.
    last_probe: Option<Instant>,
    /// Path changes in the window that started at the instant.
    changes: (u32, Instant),
    /// ICE-CONTROLLED's tie-breaker in the edge's checks (the edge, lite, is always controlled).
    tie_breaker: u64,
    /// The last valid check on the path (or when checking could start).
    pub last_check: Instant,
}

/// What a STUN message asks of the connection.
pub struct Heard {
    /// The response to a check, to send back to where the check came from.
    pub response: Option<BytesMut>,
    /// The media path changed, or the player nominated it.
    pub new_path: bool,
}

/// Fresh local ICE credentials of an edge connection: a ufrag (16 characters) and a password
/// (32: 192 bits).
pub fn ice_credentials() -> (String, String) {
    (random_token(16), random_token(32))
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";
    (0..len).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}

impl IceLite {
    /// Fresh credentials.
    pub fn new(now: Instant) -> Self {
        let (ufrag, pwd) = ice_credentials();
        Self {
            ufrag,
            pwd,
            remote: None,
            path: None,
            nominated: false,
            candidate: None,
            last_probe: None,
            changes: (0, now),
            tie_breaker: rand::random(),
            last_check: now,
        }
    }

    /// The local password (for the offer).
    pub fn pwd(&self) -> &str {
        &self.pwd
    }

    /// Where media goes, once a check set it.
    pub fn path(&self) -> Option<Pair> {
        self.path
    }

    /// The player's credentials, from its answer.
    pub fn set_remote(&mut self, remote: Option<RemoteCredentials>) {
        self.remote = remote;
    }

    /// Whether the player has nominated the path (its pair is chosen: it takes DTLS on it).
    pub fn nominated(&self) -> bool {
        self.nominated
    }

    /// When the pair is given up without another check.
    pub fn deadline(&self) -> Instant {
        self.last_check + CONSENT_TIMEOUT
    }

    /// A STUN datagram from `from` on `local`: a binding request for this connection with a
    /// valid MESSAGE-INTEGRITY, or the player's answer to the edge's own check; `None` (dropped)
    /// for anything else.
    pub fn read(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, data: &[u8], crypto: &dyn RTCCrypto) -> Option<Heard> {
        let mut message = Message::new();
        message.raw = data.to_vec();
        message.decode().ok()?;
        match message.typ {
            BINDING_REQUEST => self.check(now, (local, from), message, crypto),
            BINDING_SUCCESS => self.answered(now, (local, from), message, crypto),
            _ => None,
        }
    }

    /// A binding request: answered if it is for this connection and signed with its password.
    fn check(&mut self, now: Instant, pair: Pair, mut request: Message, crypto: &dyn RTCCrypto) -> Option<Heard> {
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
                Box::new(XorMappedAddress { ip: pair.1.ip(), port: pair.1.port() }),
                Box::new(MessageIntegrity::new_short_term_integrity_with_provider(self.pwd.clone(), crypto)),
                Box::new(FINGERPRINT),
            ])
            .ok()?;
        let new_path = self.follow(now, pair, request.contains(ATTR_USE_CANDIDATE));
        Some(Heard { response: Some(BytesMut::from(&response.raw[..])), new_path })
    }

    /// What a valid check on `pair` does to the path; true if it set or nominated it.
    fn follow(&mut self, now: Instant, pair: Pair, nominate: bool) -> bool {
        let Some(path) = self.path else {
            self.path = Some(pair);
            self.nominated = nominate;
            self.last_check = now;
            return true;
        };
        if path != pair {
            // Consent is the media path's (RFC 7675 5.1): checks on another pair do not keep it.
            if nominate {
                self.propose(now, pair);
            }
            return false;
        }
        self.last_check = now;
        if !nominate {
            return false;
        }
        self.candidate = None; // the player chose the path again
        !std::mem::replace(&mut self.nominated, true)
    }

    /// Makes `pair`, nominated by the player, the candidate, unless it already is or the path
    /// has changed [`PATH_CHANGES`] times in this window.
    fn propose(&mut self, now: Instant, pair: Pair) {
        if self.candidate.as_ref().is_some_and(|c| c.pair == pair) {
            return;
        }
        if now.saturating_duration_since(self.changes.1) >= PATH_CHANGE_WINDOW {
            self.changes = (0, now);
        }
        if self.changes.0 < PATH_CHANGES {
            self.candidate = Some(Candidate { pair, transaction: TransactionId::new() });
        }
    }

    /// A binding success: if it answers the edge's check of the candidate, from the candidate,
    /// signed with the player's password, the candidate is the path.
    fn answered(&mut self, now: Instant, pair: Pair, mut response: Message, crypto: &dyn RTCCrypto) -> Option<Heard> {
        let candidate = self.candidate.as_ref()?;
        if candidate.pair != pair || candidate.transaction != response.transaction_id {
            return None;
        }
        MessageIntegrity::check(&mut response, self.remote.as_ref()?.pwd.as_bytes(), crypto).ok()?;
        self.candidate = None;
        self.path = Some(pair);
        self.nominated = true;
        self.last_check = now; // an answered check is consent (RFC 7675 5.1)
        self.changes.0 += 1;
        Some(Heard { response: None, new_path: true })
    }

    /// The edge's check of the candidate pair, if one is pending, the player's credentials are
    /// known and the last was at least [`PROBE_INTERVAL`] ago: `(pair, request)`.
    pub fn probe(&mut self, now: Instant, crypto: &dyn RTCCrypto) -> Option<(Pair, BytesMut)> {
        let (candidate, remote) = (self.candidate.as_ref()?, self.remote.as_ref()?);
        if self.last_probe.is_some_and(|t| now < t + PROBE_INTERVAL) {
            return None;
        }
        let mut request = Message::new();
        request
            .build(&[
                Box::new(BINDING_REQUEST),
                Box::new(candidate.transaction),
                Box::new(TextAttribute::new(ATTR_USERNAME, format!("{}:{}", remote.ufrag, self.ufrag))),
                Box::new(AttrControlled(self.tie_breaker)),
                Box::new(PriorityAttr(PROBE_PRIORITY)),
                Box::new(MessageIntegrity::new_short_term_integrity_with_provider(remote.pwd.clone(), crypto)),
                Box::new(FINGERPRINT),
            ])
            .ok()?;
        self.last_probe = Some(now);
        Some((candidate.pair, BytesMut::from(&request.raw[..])))
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

    /// The player's answer to the binding request `request` (the edge's check), signed with
    /// `pwd`, and the request's USERNAME.
    pub(crate) fn answer(request: &[u8], pwd: &str) -> (Vec<u8>, String) {
        let provider = rtc::crypto::default_provider().unwrap();
        let mut m = Message::new();
        m.raw = request.to_vec();
        m.decode().unwrap();
        assert_eq!(m.typ, BINDING_REQUEST);
        MessageIntegrity::check(&mut m, pwd.as_bytes(), provider.crypto()).expect("signed with the player's password");
        let username = TextAttribute::get_from_as(&m, ATTR_USERNAME).unwrap().text;
        let mut response = Message::new();
        response
            .build(&[
                Box::new(m.clone()),
                Box::new(BINDING_SUCCESS),
                Box::new(MessageIntegrity::new_short_term_integrity_with_provider(pwd.to_owned(), provider.crypto())),
                Box::new(FINGERPRINT),
            ])
            .unwrap();
        (response.raw, username)
    }

    fn addrs() -> (SocketAddr, SocketAddr, SocketAddr, SocketAddr) {
        let parse = |a: &str| a.parse().unwrap();
        (parse("10.0.0.1:10000"), parse("10.0.0.2:5000"), parse("10.0.0.3:6000"), parse("10.0.0.4:7000"))
    }

    /// An ICE-lite agent whose player (`ufrag:pwd` "theirs:player-pwd") checked from `a`.
    fn checked_from(t0: Instant, local: SocketAddr, a: SocketAddr, crypto: &dyn RTCCrypto) -> (IceLite, String) {
        let mut ice = IceLite::new(t0);
        ice.set_remote(Some(RemoteCredentials { ufrag: "theirs".into(), pwd: "player-pwd".into() }));
        let user = format!("{}:theirs", ice.ufrag);
        assert!(ice.read(t0, local, a, &request(&user, ice.pwd(), true), crypto).unwrap().new_path);
        (ice, user)
    }

    #[test]
    fn a_check_with_the_password_is_answered_and_sets_the_path() {
        let provider = rtc::crypto::default_provider().unwrap();
        let t0 = Instant::now();
        let mut ice = IceLite::new(t0);
        let (local, a, b, _) = addrs();
        let user = format!("{}:theirs", ice.ufrag);
        let t1 = t0 + Duration::from_secs(3);
        let heard = ice.read(t1, local, a, &request(&user, ice.pwd(), false), provider.crypto()).expect("answered");
        assert!(heard.new_path);
        assert_eq!(ice.path(), Some((local, a)));
        assert!(!ice.nominated());
        assert_eq!(ice.deadline(), t1 + CONSENT_TIMEOUT);
        let mut response = Message::new();
        response.raw = heard.response.expect("a response").to_vec();
        response.decode().unwrap();
        assert_eq!(response.typ, BINDING_SUCCESS);
        MessageIntegrity::check(&mut response, ice.pwd().as_bytes(), provider.crypto()).expect("signed with the local password");
        let mut mapped = XorMappedAddress::default();
        mapped.get_from(&response).unwrap();
        assert_eq!(SocketAddr::new(mapped.ip, mapped.port), a);

        // A check on another pair neither moves the path nor keeps its consent.
        let t2 = t1 + Duration::from_secs(3);
        assert!(!ice.read(t2, local, b, &request(&user, ice.pwd(), false), provider.crypto()).unwrap().new_path);
        assert_eq!(ice.deadline(), t1 + CONSENT_TIMEOUT);
        // The player nominates the path: news (DTLS may start), and consent.
        assert!(ice.read(t2, local, a, &request(&user, ice.pwd(), true), provider.crypto()).unwrap().new_path);
        assert!(ice.nominated());
        assert_eq!(ice.deadline(), t2 + CONSENT_TIMEOUT);
        assert!(!ice.read(t2, local, a, &request(&user, ice.pwd(), true), provider.crypto()).unwrap().new_path, "once");
    }

    #[test]
    fn a_nominated_pair_becomes_the_path_only_once_it_answers_the_edges_check() {
        let provider = rtc::crypto::default_provider().unwrap();
        let crypto = provider.crypto();
        let t0 = Instant::now();
        let (local, a, b, c) = addrs();
        let (mut ice, user) = checked_from(t0, local, a, crypto);
        assert!(ice.probe(t0, crypto).is_none(), "nothing to check");

        let t1 = t0 + Duration::from_secs(5);
        let heard = ice.read(t1, local, b, &request(&user, ice.pwd(), true), crypto).unwrap();
        assert!(heard.response.is_some() && !heard.new_path, "answered, but the path stays");
        assert_eq!(ice.path(), Some((local, a)));
        assert_eq!(ice.deadline(), t0 + CONSENT_TIMEOUT, "and keeps its consent");
        let (pair, check) = ice.probe(t1, crypto).expect("the edge checks the candidate");
        assert_eq!(pair, (local, b));
        let (answer, username) = answer(&check, "player-pwd");
        assert_eq!(username, format!("theirs:{}", ice.ufrag), "RFC 8445 7.2.2: the player's ufrag first");

        // Not the answer: from elsewhere, for another transaction, signed with another password.
        assert!(ice.read(t1, local, c, &answer, crypto).is_none());
        let (other, _) = super::tests::answer(&request("theirs:x", "player-pwd", false), "player-pwd");
        assert!(ice.read(t1, local, b, &other, crypto).is_none());
        let (forged, _) = super::tests::answer(&request("theirs:x", "edge-pwd", false), "edge-pwd");
        let mut forged_msg = Message::new();
        forged_msg.raw = forged;
        forged_msg.decode().unwrap();
        forged_msg.transaction_id = TransactionId(check[8..20].try_into().unwrap());
        forged_msg.write_transaction_id();
        assert!(ice.read(t1, local, b, &forged_msg.raw, crypto).is_none(), "signed without the player's password");
        assert_eq!(ice.path(), Some((local, a)));

        let t2 = t1 + Duration::from_millis(40);
        let heard = ice.read(t2, local, b, &answer, crypto).expect("the answer");
        assert!(heard.new_path && heard.response.is_none());
        assert_eq!(ice.path(), Some((local, b)));
        assert_eq!(ice.deadline(), t2 + CONSENT_TIMEOUT, "an answered check is consent");
        assert!(ice.read(t2, local, b, &answer, crypto).is_none(), "once");
    }

    #[test]
    fn the_player_nominating_its_path_again_withdraws_the_candidate() {
        let provider = rtc::crypto::default_provider().unwrap();
        let crypto = provider.crypto();
        let t0 = Instant::now();
        let (local, a, b, _) = addrs();
        let (mut ice, user) = checked_from(t0, local, a, crypto);
        ice.read(t0, local, b, &request(&user, ice.pwd(), true), crypto).unwrap();
        let (_, check) = ice.probe(t0, crypto).unwrap();
        ice.read(t0, local, a, &request(&user, ice.pwd(), true), crypto).unwrap();
        assert!(ice.read(t0, local, b, &answer(&check, "player-pwd").0, crypto).is_none());
        assert_eq!(ice.path(), Some((local, a)));
    }

    #[test]
    fn the_edge_checks_a_candidate_at_most_every_probe_interval_once_it_has_the_players_password() {
        let provider = rtc::crypto::default_provider().unwrap();
        let crypto = provider.crypto();
        let t0 = Instant::now();
        let (local, a, b, c) = addrs();
        let (mut ice, user) = checked_from(t0, local, a, crypto);
        let remote = ice.remote.take();
        ice.read(t0, local, b, &request(&user, ice.pwd(), true), crypto).unwrap();
        assert!(ice.probe(t0, crypto).is_none(), "no answer yet: no password to sign with");
        ice.set_remote(remote);
        let (_, first) = ice.probe(t0, crypto).unwrap();
        // Another candidate every check does not make the edge check any faster.
        ice.read(t0, local, c, &request(&user, ice.pwd(), true), crypto).unwrap();
        assert!(ice.probe(t0 + PROBE_INTERVAL / 2, crypto).is_none());
        ice.read(t0, local, b, &request(&user, ice.pwd(), true), crypto).unwrap();
        let (pair, again) = ice.probe(t0 + PROBE_INTERVAL, crypto).unwrap();
        assert_eq!(pair, (local, b));
        assert_ne!(first[8..20], again[8..20], "a new candidate, a new transaction");
        let (_, resent) = ice.probe(t0 + 2 * PROBE_INTERVAL, crypto).unwrap();
        assert_eq!(again[8..20], resent[8..20], "a retransmission keeps its transaction");
    }

    #[test]
    fn the_path_changes_at_most_path_changes_times_per_window() {
        let provider = rtc::crypto::default_provider().unwrap();
        let crypto = provider.crypto();
        let t0 = Instant::now();
        let (local, a, b, _) = addrs();
        let (mut ice, user) = checked_from(t0, local, a, crypto);
        let mut now = t0;
        let moves = |ice: &mut IceLite, now: Instant| {
            let to = if ice.path() == Some((local, a)) { b } else { a };
            ice.read(now, local, to, &request(&user, ice.pwd(), true), crypto).unwrap();
            let Some((_, check)) = ice.probe(now, crypto) else { return false };
            ice.read(now, local, to, &answer(&check, "player-pwd").0, crypto).is_some_and(|h| h.new_path)
        };
        for _ in 0..PATH_CHANGES {
            now += PROBE_INTERVAL;
            assert!(moves(&mut ice, now));
        }
        now += PROBE_INTERVAL;
        assert!(!moves(&mut ice, now), "the window's changes are spent: the edge does not even check");
        assert!(moves(&mut ice, t0 + PATH_CHANGE_WINDOW + PROBE_INTERVAL), "a new window");
    }

    #[test]
    fn checks_without_the_password_or_for_another_ufrag_are_dropped() {
        let provider = rtc::crypto::default_provider().unwrap();
        let t0 = Instant::now();
        let mut ice = IceLite::new(t0);
        let (local, a, _, _) = addrs();
        let user = format!("{}:theirs", ice.ufrag);
        assert!(ice.read(t0, local, a, &request(&user, "wrong password", true), provider.crypto()).is_none());
        assert!(ice.read(t0, local, a, &request("other:theirs", ice.pwd(), true), provider.crypto()).is_none());
        assert!(ice.read(t0, local, a, b"\x00\x01garbage", provider.crypto()).is_none());
        assert_eq!(ice.path(), None);
    }
}
