//! The P2P state machine driven through whole scenarios: the rules of PROTOCOL.md and the OME
//! defects this project fixes, one test each.

use plugin_api::{MessageVerdict, OfferDecision, SessionKind};
use plugin_p2p::config::P2pConfig;
use plugin_p2p::core::{Arrival, Output, P2pCore, Role, Stage};
use serde_json::Value;

const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const FIREFOX_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0";
const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36";
const HEADLESS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36";

fn core_with(k: u16) -> P2pCore {
    core_matching(k, "balanced")
}

fn core_matching(k: u16, matching: &str) -> P2pCore {
    let xml = format!("<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>{k}</MaxClientPeersPerHostPeer><OfferTimeoutMs>100</OfferTimeoutMs><AnswerTimeoutMs>200</AnswerTimeoutMs><HostPenaltyMs>1000</HostPenaltyMs><Matching>{matching}</Matching><Exclude>private</Exclude></P2P>");
    P2pCore::new(P2pConfig::parse(&xml).unwrap())
}

fn open_full(core: &mut P2pCore, id: u32, ua: &str, app: &str, stream: &str, query: &str, kind: SessionKind) {
    let full = format!("default/{app}/{stream}");
    core.session_opened(Arrival { id, kind, stream: &full, app, stream_name: stream, user_agent: ua, query });
}

fn open(core: &mut P2pCore, id: u32, ua: &str, stream: &str) {
    open_full(core, id, ua, "app", stream, "", SessionKind::Play);
}

/// Opens `id`, has it served by the edge and playing: an eligible one becomes a host.
fn edge_viewer(core: &mut P2pCore, id: u32, ua: &str, stream: &str) {
    open(core, id, ua, stream);
    assert_eq!(core.offer_requested(id), OfferDecision::ServeFromEdge);
    core.session_playing(id);
    outputs(core);
}

fn outputs(core: &mut P2pCore) -> Vec<Output> {
    core.drain_outputs().filter(|o| !matches!(o, Output::Count(..))).collect()
}

fn sent(outputs: &[Output]) -> Vec<(u32, Value)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(id, json) => Some((*id, serde_json::from_str(json).unwrap())),
            _ => None,
        })
        .collect()
}

fn timers(outputs: &[Output]) -> Vec<u64> {
    outputs.iter().filter_map(|o| if let Output::SetTimer(t, _) = o { Some(*t) } else { None }).collect()
}

#[test]
fn fills_hosts_up_to_k_then_serves_from_the_edge() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for client in [2, 3] {
        open(&mut core, client, CHROME_WIN, "s");
        assert_eq!(core.offer_requested(client), OfferDecision::Handled);
        let out = sent(&outputs(&mut core));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 1);
        assert_eq!(out[0].1["command"], "request_offer_p2p");
        assert_eq!(out[0].1["peer_id"], client);
    }
    open(&mut core, 4, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(4), OfferDecision::ServeFromEdge, "the host is full");
    assert_eq!(core.role(1), Some(&Role::Host { clients: vec![2, 3] }));
}

#[test]
fn least_loaded_host_is_chosen() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for c in [2, 3] {
        open(&mut core, c, CHROME_WIN, "s");
        core.offer_requested(c);
    }
    edge_viewer(&mut core, 4, CHROME_WIN, "s"); // 1 is full: 4 is served by the edge and hosts
    assert_eq!(core.role(4), Some(&Role::Host { clients: vec![] }));
    core.session_closed(3); // 1 now has one client, 4 none
    open(&mut core, 5, CHROME_WIN, "s");
    core.offer_requested(5);
    assert_eq!(core.role(5), Some(&Role::Client { host: 4, stage: Stage::AwaitingOffer }));
}

#[test]
fn brokers_the_whole_exchange_between_partners() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 10, CHROME_WIN, "s");
    open(&mut core, 20, CHROME_WIN, "s");
    core.offer_requested(20);
    outputs(&mut core);

    let offer = r#"{"command":"offer_p2p","id":10,"peer_id":20,"sdp":{"type":"offer","sdp":"v=0"},"candidates":[{"candidate":"c1"}]}"#;
    assert_eq!(core.message_received(10, offer), MessageVerdict::Handled);
    let out = outputs(&mut core);
    let msgs = sent(&out);
    assert_eq!(msgs[0].0, 20);
    assert_eq!(msgs[0].1["command"], "offer");
    assert_eq!(msgs[0].1["id"], 20);
    assert_eq!(msgs[0].1["peer_id"], 10);
    assert_eq!(msgs[0].1["sdp"]["sdp"], "v=0");
    assert_eq!(msgs[0].1["candidates"][0]["candidate"], "c1");
    assert_eq!(timers(&out).len(), 1, "the answer deadline is armed");

    core.message_received(10, r#"{"command":"candidate_p2p","id":10,"peer_id":20,"candidates":[{"candidate":"c2"}]}"#);
    let msgs = sent(&outputs(&mut core));
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str()), (20, Some("candidate")));
    assert_eq!(msgs[0].1["peer_id"], 10);

    core.message_received(20, r#"{"command":"answer","id":20,"peer_id":10,"sdp":{"type":"answer","sdp":"v=0"}}"#);
    let msgs = sent(&outputs(&mut core));
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str()), (10, Some("answer_p2p")));
    assert_eq!(msgs[0].1["peer_id"], 20);
    assert_eq!(core.role(20), Some(&Role::Client { host: 10, stage: Stage::Answered }));

    core.message_received(20, r#"{"command":"candidate","id":20,"peer_id":10,"candidates":[{"candidate":"c3"}]}"#);
    let msgs = sent(&outputs(&mut core));
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str()), (10, Some("candidate_p2p")));
}

#[test]
fn strangers_cannot_be_addressed() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    edge_viewer(&mut core, 2, FIREFOX_WIN, "s");
    open(&mut core, 3, CHROME_WIN, "s");
    core.offer_requested(3);
    outputs(&mut core);
    // Host 2 offers to 3, which is 1's client: refused, 2 is closed with 400.
    core.message_received(2, r#"{"command":"offer_p2p","id":2,"peer_id":3,"sdp":{}}"#);
    assert!(matches!(outputs(&mut core).as_slice(), [Output::Close(2, 400, _)]));
    // Client 3 answers host 2, not its host: refused.
    core.message_received(3, r#"{"command":"answer","id":3,"peer_id":2,"sdp":{}}"#);
    assert!(matches!(outputs(&mut core).as_slice(), [Output::Close(3, 400, _)]));
    // A message for a session that just left is dropped quietly.
    assert_eq!(core.message_received(1, r#"{"command":"candidate_p2p","id":1,"peer_id":99,"candidates":[]}"#), MessageVerdict::Handled);
    assert!(outputs(&mut core).is_empty());
    // Malformed P2P messages are refused; other commands are not the plugin's.
    core.message_received(1, r#"{"command":"offer_p2p","id":1,"sdp":{}}"#);
    assert!(matches!(outputs(&mut core).as_slice(), [Output::Close(1, 400, _)]));
    assert_eq!(core.message_received(1, r#"{"command":"dance","id":1}"#), MessageVerdict::Unknown);
}

#[test]
fn a_leaving_host_sends_its_clients_to_the_edge() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for c in [2, 3] {
        open(&mut core, c, CHROME_WIN, "s");
        core.offer_requested(c);
    }
    core.message_received(1, r#"{"command":"offer_p2p","id":1,"peer_id":2,"sdp":{}}"#);
    outputs(&mut core);

    core.session_closed(1);
    let out = outputs(&mut core);
    // 2 had an offer: it is told to stop. 3 was still waiting: the edge serves it at once.
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 1);
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str(), msgs[0].1["peer_id"].as_u64()), (2, Some("stop"), Some(1)));
    assert!(out.contains(&Output::ServeFromEdge(3)));
    // 2 asks again and is served by the edge; it may then become a host itself.
    assert_eq!(core.offer_requested(2), OfferDecision::ServeFromEdge);
    core.session_playing(2);
    assert_eq!(core.role(2), Some(&Role::Host { clients: vec![] }));
}

#[test]
fn a_leaving_client_frees_its_slot_for_good() {
    let mut core = core_with(1);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for round in 0..3u32 {
        let c = 10 + round;
        open(&mut core, c, CHROME_WIN, "s");
        assert_eq!(core.offer_requested(c), OfferDecision::Handled, "round {round}: the slot is free again");
        outputs(&mut core);
        core.session_closed(c);
        let msgs = sent(&outputs(&mut core));
        assert_eq!((msgs[0].0, msgs[0].1["command"].as_str(), msgs[0].1["peer_id"].as_u64()), (1, Some("stop"), Some(c as u64)));
    }
    assert_eq!(core.role(1), Some(&Role::Host { clients: vec![] }));
}

#[test]
fn one_pool_per_stream() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "a");
    open(&mut core, 2, CHROME_WIN, "b");
    assert_eq!(core.offer_requested(2), OfferDecision::ServeFromEdge, "a viewer of b never gets a host of a");
}

#[test]
fn a_host_must_be_playing_first() {
    let mut core = core_with(2);
    open(&mut core, 1, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(1), OfferDecision::ServeFromEdge);
    outputs(&mut core);
    open(&mut core, 2, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(2), OfferDecision::ServeFromEdge, "1 has an offer but is not playing yet");
}

#[test]
fn a_host_that_does_not_offer_in_time_is_given_up_and_benched() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    open(&mut core, 2, CHROME_WIN, "s");
    core.offer_requested(2);
    let deadline = timers(&outputs(&mut core))[0];

    core.timer_fired(deadline);
    let out = outputs(&mut core);
    assert!(out.contains(&Output::ServeFromEdge(2)));
    let msgs = sent(&out);
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str(), msgs[0].1["peer_id"].as_u64()), (1, Some("stop"), Some(2)));
    let penalty = timers(&out)[0];

    open(&mut core, 3, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(3), OfferDecision::ServeFromEdge, "a benched host is not chosen");
    outputs(&mut core);
    core.timer_fired(penalty);
    open(&mut core, 4, CHROME_ANDROID, "s");
    assert_eq!(core.offer_requested(4), OfferDecision::Handled, "after the penalty it hosts again");
}

/// Chrome viewers of one stream, k=2: H1 hosts, phones A2 and A3 are its clients, phones A4 and
/// A5 find it full and are served by the edge; A2 leaves. Three phones now wait on one host with
/// one free slot when desktop D6 arrives. Returns whether D6 became a client, and then whether
/// phone A7 did.
fn desktop_arrives_where_phones_wait(matching: &str) -> (bool, bool) {
    let mut core = core_matching(2, matching);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for phone in [2, 3] {
        open(&mut core, phone, CHROME_ANDROID, "s");
        assert_eq!(core.offer_requested(phone), OfferDecision::Handled);
    }
    edge_viewer(&mut core, 4, CHROME_ANDROID, "s");
    edge_viewer(&mut core, 5, CHROME_ANDROID, "s");
    core.session_closed(2);
    open(&mut core, 6, CHROME_WIN, "s");
    let desktop_is_client = core.offer_requested(6) == OfferDecision::Handled;
    if !desktop_is_client {
        core.session_playing(6);
    }
    open(&mut core, 7, CHROME_ANDROID, "s");
    let phone_is_client = core.offer_requested(7) == OfferDecision::Handled;
    (desktop_is_client, phone_is_client)
}

#[test]
fn balanced_matching_makes_a_viewer_who_could_host_a_host_while_the_pool_is_short_of_hosts() {
    assert_eq!(desktop_arrives_where_phones_wait("balanced"), (false, true), "D6 hosts, so phone A7 gets a host peer");
    assert_eq!(desktop_arrives_where_phones_wait("greedy"), (true, false), "OME's rule: D6 takes the slot, A7 gets the edge");
}

#[test]
fn a_client_that_does_not_answer_in_time_is_given_up() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    open(&mut core, 2, CHROME_WIN, "s");
    core.offer_requested(2);
    let offer_deadline = timers(&outputs(&mut core))[0];
    core.message_received(1, r#"{"command":"offer_p2p","id":1,"peer_id":2,"sdp":{}}"#);
    let answer_deadline = timers(&outputs(&mut core))[0];
    core.timer_fired(offer_deadline);
    assert!(outputs(&mut core).is_empty(), "the host offered in time");
    core.timer_fired(answer_deadline);
    assert!(outputs(&mut core).contains(&Output::ServeFromEdge(2)));
}

#[test]
fn deadlines_of_pairs_that_went_well_do_nothing() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    open(&mut core, 2, CHROME_WIN, "s");
    core.offer_requested(2);
    let mut all = timers(&outputs(&mut core));
    core.message_received(1, r#"{"command":"offer_p2p","id":1,"peer_id":2,"sdp":{}}"#);
    all.extend(timers(&outputs(&mut core)));
    core.message_received(2, r#"{"command":"answer","id":2,"peer_id":1,"sdp":{}}"#);
    outputs(&mut core);
    for t in all {
        core.timer_fired(t);
    }
    assert!(outputs(&mut core).is_empty());
    assert_eq!(core.role(2), Some(&Role::Client { host: 1, stage: Stage::Answered }));
}

#[test]
fn zero_clients_per_host_means_none() {
    let mut core = core_with(0);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    open(&mut core, 2, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(2), OfferDecision::ServeFromEdge);
}

#[test]
fn who_may_host_and_who_may_be_a_client() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_ANDROID, "s");
    edge_viewer(&mut core, 2, HEADLESS, "s");
    assert_eq!(core.role(1), Some(&Role::Viewer), "a phone never hosts");
    assert_eq!(core.role(2), Some(&Role::Viewer), "a headless browser never hosts");
    edge_viewer(&mut core, 3, CHROME_WIN, "s");
    open(&mut core, 4, FIREFOX_WIN, "s");
    assert_eq!(core.offer_requested(4), OfferDecision::ServeFromEdge, "no Firefox host");
    open(&mut core, 5, CHROME_ANDROID, "s");
    assert_eq!(core.offer_requested(5), OfferDecision::Handled, "a phone may be a client of a Chrome host");
}

#[test]
fn consent_exclusions_and_publishers() {
    let mut core = core_with(2);
    open_full(&mut core, 1, CHROME_WIN, "app", "s", "p2p=0", SessionKind::Play);
    core.offer_requested(1);
    core.session_playing(1);
    assert_eq!(core.role(1), Some(&Role::Viewer), "opted out: never a host");
    edge_viewer(&mut core, 2, CHROME_WIN, "s");
    open_full(&mut core, 3, CHROME_WIN, "app", "s", "x=1&p2p=off", SessionKind::Play);
    assert_eq!(core.offer_requested(3), OfferDecision::ServeFromEdge, "opted out: never a client");
    open_full(&mut core, 4, CHROME_WIN, "app", "s", "", SessionKind::Publish);
    assert_eq!(core.offer_requested(4), OfferDecision::ServeFromEdge, "publishers are never P2P");
    open_full(&mut core, 5, CHROME_WIN, "private", "s", "", SessionKind::Play);
    core.offer_requested(5);
    core.session_playing(5);
    open_full(&mut core, 6, CHROME_WIN, "private", "s", "", SessionKind::Play);
    assert_eq!(core.offer_requested(6), OfferDecision::ServeFromEdge, "excluded application");
}

#[test]
fn disabled_p2p_serves_everyone_from_the_edge() {
    let mut core = P2pCore::new(P2pConfig::default());
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    open(&mut core, 2, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(2), OfferDecision::ServeFromEdge);
}

#[test]
fn a_host_that_asks_again_releases_its_clients() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    open(&mut core, 2, CHROME_WIN, "s");
    core.offer_requested(2);
    outputs(&mut core);
    assert_eq!(core.offer_requested(1), OfferDecision::ServeFromEdge);
    assert!(outputs(&mut core).contains(&Output::ServeFromEdge(2)));
    open(&mut core, 3, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(3), OfferDecision::ServeFromEdge, "1 is not playing again yet");
}
