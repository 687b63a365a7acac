//! The P2P state machine driven through whole scenarios: the rules of PROTOCOL.md and the OME
//! defects this project fixes, one test each.

use plugin_api::{MessageVerdict, OfferDecision, SessionKind};
use plugin_p2p::config::P2pConfig;
use plugin_api::HostCall;
use plugin_p2p::core::{counts, Arrival, P2pCore, Role, Stage};
use serde_json::Value;

const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const FIREFOX_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0";
const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36";
const HEADLESS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36";

const MOVE_AFTER: u64 = 10_000;

fn core_with(k: u16) -> P2pCore {
    core_matching(k, "balanced")
}

fn core_matching(k: u16, matching: &str) -> P2pCore {
    let xml = format!("<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>{k}</MaxClientPeersPerHostPeer><OfferTimeoutMs>4000</OfferTimeoutMs><OfferTimeoutMinMs>1000</OfferTimeoutMinMs><OfferTimeoutP99Multiple>3</OfferTimeoutP99Multiple><AnswerTimeoutMs>4000</AnswerTimeoutMs><MoveAfterMs>{MOVE_AFTER}</MoveAfterMs><Matching>{matching}</Matching><PairNewViewers>any</PairNewViewers><Exclude>private</Exclude></P2P>");
    P2pCore::new(P2pConfig::parse(&xml).unwrap())
}

fn open_full(core: &mut P2pCore, id: u32, ua: &str, app: &str, stream: &str, query: &str, kind: SessionKind) {
    let full = format!("default/{app}/{stream}");
    core.session_opened(0, Arrival { id, kind, stream: &full, app, stream_name: stream, user_agent: ua, query, remote: "192.0.2.1:5000" });
}

/// Opens `id` from address `remote`.
fn open_at(core: &mut P2pCore, id: u32, ua: &str, remote: &str) {
    core.session_opened(0, Arrival { id, kind: SessionKind::Play, stream: "default/app/s", app: "app", stream_name: "s", user_agent: ua, query: "", remote });
}

/// k clients per host; host 1 (desktop Chrome) plays from the edge; viewer 2 (`ua`) asked for
/// the stream at t = 0 and was given to 1, which was asked to offer (outputs not drained).
fn host_1_asked_for_client_2(k: u16, ua: &str) -> P2pCore {
    let mut core = core_with(k);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    open(&mut core, 2, ua, "s");
    assert_eq!(core.offer_requested(0, 2), OfferDecision::Handled);
    core
}

/// `offer_p2p` from `host` to `client`, with an empty SDP.
fn offer_p2p(host: u32, client: u32) -> String {
    format!(r#"{{"command":"offer_p2p","id":{host},"peer_id":{client},"sdp":{{}}}}"#)
}

/// `answer` from `client` to `host`, with an empty SDP.
fn answer(client: u32, host: u32) -> String {
    format!(r#"{{"command":"answer","id":{client},"peer_id":{host},"sdp":{{}}}}"#)
}

/// `host` offers to `client` at `now`, and the client answers.
fn exchange(core: &mut P2pCore, now: u64, host: u32, client: u32) {
    assert_eq!(core.message_received(now, host, &offer_p2p(host, client)), MessageVerdict::Handled);
    assert_eq!(core.message_received(now, client, &answer(client, host)), MessageVerdict::Handled);
    assert_eq!(core.role(client), Some(&Role::Client { host, stage: Stage::Answered }));
    outputs(core);
}

/// The timers set in `outputs` as (token, after ms).
fn timers_with_delay(outputs: &[HostCall]) -> Vec<(u64, u64)> {
    outputs.iter().filter_map(|o| if let HostCall::SetTimer { token: t, after_ms: ms } = o { Some((*t, *ms)) } else { None }).collect()
}

fn open(core: &mut P2pCore, id: u32, ua: &str, stream: &str) {
    open_full(core, id, ua, "app", stream, "", SessionKind::Play);
}

/// Opens `id`, has it served by the edge and playing: an eligible one becomes a host.
fn edge_viewer(core: &mut P2pCore, id: u32, ua: &str, stream: &str) {
    open(core, id, ua, stream);
    assert_eq!(core.offer_requested(0, id), OfferDecision::ServeFromEdge);
    core.session_playing(0, id);
    outputs(core);
}

fn outputs(core: &mut P2pCore) -> Vec<HostCall> {
    core.drain_outputs().filter(|o| !matches!(o, HostCall::Count(..) | HostCall::ReportDelivery(..))).collect()
}

fn sent(outputs: &[HostCall]) -> Vec<(u32, Value)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            HostCall::Send(id, json) => Some((*id, serde_json::from_str(json).unwrap())),
            _ => None,
        })
        .collect()
}

fn timers(outputs: &[HostCall]) -> Vec<u64> {
    outputs.iter().filter_map(|o| if let HostCall::SetTimer { token: t, after_ms: _ } = o { Some(*t) } else { None }).collect()
}

#[test]
fn fills_hosts_up_to_k_then_serves_from_the_edge() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for client in [2, 3] {
        open(&mut core, client, CHROME_WIN, "s");
        assert_eq!(core.offer_requested(0, client), OfferDecision::Handled);
        let out = sent(&outputs(&mut core));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 1);
        assert_eq!(out[0].1["command"], "request_offer_p2p");
        assert_eq!(out[0].1["peer_id"], client);
    }
    open(&mut core, 4, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(0, 4), OfferDecision::ServeFromEdge, "the host is full");
    assert_eq!(core.role(1), Some(&Role::Host { clients: vec![2, 3] }));
}

#[test]
fn least_loaded_host_is_chosen() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for c in [2, 3] {
        open(&mut core, c, CHROME_WIN, "s");
        core.offer_requested(0, c);
    }
    edge_viewer(&mut core, 4, CHROME_WIN, "s"); // 1 is full: 4 is served by the edge and hosts
    assert_eq!(core.role(4), Some(&Role::Host { clients: vec![] }));
    core.session_closed(0, 3); // 1 now has one client, 4 none
    open(&mut core, 5, CHROME_WIN, "s");
    core.offer_requested(0, 5);
    assert_eq!(core.role(5), Some(&Role::Client { host: 4, stage: Stage::AwaitingOffer }));
}

#[test]
fn brokers_the_whole_exchange_between_partners() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 10, CHROME_WIN, "s");
    open(&mut core, 20, CHROME_WIN, "s");
    core.offer_requested(0, 20);
    outputs(&mut core);

    let offer = r#"{"command":"offer_p2p","id":10,"peer_id":20,"sdp":{"type":"offer","sdp":"v=0"},"candidates":[{"candidate":"c1"}]}"#;
    assert_eq!(core.message_received(0, 10, offer), MessageVerdict::Handled);
    let out = outputs(&mut core);
    let msgs = sent(&out);
    assert_eq!(msgs[0].0, 20);
    assert_eq!(msgs[0].1["command"], "offer");
    assert_eq!(msgs[0].1["id"], 20);
    assert_eq!(msgs[0].1["peer_id"], 10);
    assert_eq!(msgs[0].1["sdp"]["sdp"], "v=0");
    assert_eq!(msgs[0].1["candidates"][0]["candidate"], "c1");
    assert_eq!(timers(&out).len(), 1, "the answer deadline is armed");

    core.message_received(0, 10, r#"{"command":"candidate_p2p","id":10,"peer_id":20,"candidates":[{"candidate":"c2"}]}"#);
    let msgs = sent(&outputs(&mut core));
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str()), (20, Some("candidate")));
    assert_eq!(msgs[0].1["peer_id"], 10);

    core.message_received(0, 20, r#"{"command":"answer","id":20,"peer_id":10,"sdp":{"type":"answer","sdp":"v=0"}}"#);
    let msgs = sent(&outputs(&mut core));
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str()), (10, Some("answer_p2p")));
    assert_eq!(msgs[0].1["peer_id"], 20);
    assert_eq!(core.role(20), Some(&Role::Client { host: 10, stage: Stage::Answered }));

    core.message_received(0, 20, r#"{"command":"candidate","id":20,"peer_id":10,"candidates":[{"candidate":"c3"}]}"#);
    let msgs = sent(&outputs(&mut core));
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str()), (10, Some("candidate_p2p")));
}

#[test]
fn strangers_cannot_be_addressed() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    edge_viewer(&mut core, 2, FIREFOX_WIN, "s");
    open(&mut core, 3, CHROME_WIN, "s");
    core.offer_requested(0, 3);
    outputs(&mut core);
    // Host 2 offers to 3, which is 1's client: refused, 2 is closed with 400.
    core.message_received(0, 2, &offer_p2p(2, 3));
    assert!(matches!(outputs(&mut core).as_slice(), [HostCall::Close(2, 400, _)]));
    // Client 3 answers host 2, not its host: refused.
    core.message_received(0, 3, &answer(3, 2));
    assert!(matches!(outputs(&mut core).as_slice(), [HostCall::Close(3, 400, _)]));
    // A message for a session that just left is dropped quietly.
    assert_eq!(core.message_received(0, 1, r#"{"command":"candidate_p2p","id":1,"peer_id":99,"candidates":[]}"#), MessageVerdict::Handled);
    assert!(outputs(&mut core).is_empty());
    // Malformed P2P messages are refused; other commands are not the plugin's.
    core.message_received(0, 1, r#"{"command":"offer_p2p","id":1,"sdp":{}}"#);
    assert!(matches!(outputs(&mut core).as_slice(), [HostCall::Close(1, 400, _)]));
    assert_eq!(core.message_received(0, 1, r#"{"command":"dance","id":1}"#), MessageVerdict::Unknown);
}

#[test]
fn a_leaving_host_sends_its_clients_to_the_edge() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for c in [2, 3] {
        open(&mut core, c, CHROME_WIN, "s");
        core.offer_requested(0, c);
    }
    core.message_received(0, 1, &offer_p2p(1, 2));
    outputs(&mut core);

    core.session_closed(0, 1);
    let out = outputs(&mut core);
    // 2 had an offer: it is told to stop. 3 was still waiting: the edge serves it at once.
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 1);
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str(), msgs[0].1["peer_id"].as_u64()), (2, Some("stop"), Some(1)));
    assert!(out.contains(&HostCall::ServeFromEdge(3)));
    // 2 asks again and is served by the edge; it may then become a host itself.
    assert_eq!(core.offer_requested(0, 2), OfferDecision::ServeFromEdge);
    core.session_playing(0, 2);
    assert_eq!(core.role(2), Some(&Role::Host { clients: vec![] }));
}

#[test]
fn a_leaving_client_frees_its_slot_for_good() {
    let mut core = core_with(1);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for round in 0..3u32 {
        let c = 10 + round;
        open(&mut core, c, CHROME_WIN, "s");
        assert_eq!(core.offer_requested(0, c), OfferDecision::Handled, "round {round}: the slot is free again");
        outputs(&mut core);
        core.session_closed(0, c);
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
    assert_eq!(core.offer_requested(0, 2), OfferDecision::ServeFromEdge, "a viewer of b never gets a host of a");
}

#[test]
fn a_host_must_be_playing_first() {
    let mut core = core_with(2);
    open(&mut core, 1, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(0, 1), OfferDecision::ServeFromEdge);
    outputs(&mut core);
    open(&mut core, 2, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(0, 2), OfferDecision::ServeFromEdge, "1 has an offer but is not playing yet");
}

#[test]
fn a_host_that_does_not_offer_in_time_is_never_asked_again_and_its_client_is_not_blamed() {
    let mut core = host_1_asked_for_client_2(2, CHROME_ANDROID);
    let deadline = timers(&outputs(&mut core))[0];

    core.timer_fired(4000, deadline);
    let out = outputs(&mut core);
    assert!(out.contains(&HostCall::ServeFromEdge(2)));
    let msgs = sent(&out);
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str(), msgs[0].1["peer_id"].as_u64()), (1, Some("stop"), Some(2)));
    let delays: Vec<u64> = timers_with_delay(&out).iter().map(|&(_, ms)| ms).collect();
    assert_eq!(delays, [0], "no penalty to serve (it is out for good); only a settling check: a player that cannot relay may be moved into a host as a client");

    open(&mut core, 3, CHROME_ANDROID, "s");
    assert_eq!(core.offer_requested(0, 3), OfferDecision::ServeFromEdge, "a host that never offers is not chosen again");
    core.timer_fired(3_600_000, deadline);
    open(&mut core, 4, CHROME_ANDROID, "s");
    assert_eq!(core.offer_requested(3_600_000, 4), OfferDecision::ServeFromEdge, "not even an hour later");

    edge_viewer(&mut core, 5, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(3_600_000, 2), OfferDecision::Handled, "its client may be a client of another host");
    assert_eq!(core.role(2), Some(&Role::Client { host: 5, stage: Stage::AwaitingOffer }));
}

#[test]
fn a_client_that_does_not_answer_is_the_one_penalised_and_its_host_is_not() {
    let mut core = host_1_asked_for_client_2(2, CHROME_ANDROID);
    outputs(&mut core);
    core.message_received(100, 1, &offer_p2p(1, 2));
    let answer_deadline = timers(&outputs(&mut core))[0];
    core.timer_fired(4100, answer_deadline);
    let out = core.drain_outputs().collect::<Vec<_>>();
    assert!(out.contains(&HostCall::ServeFromEdge(2)));
    assert!(out.contains(&HostCall::Count(counts::FALLBACK_ANSWER_DEADLINE.into(), 1)));
    assert!(!out.iter().any(|o| matches!(o, HostCall::Count(n, _) if n == counts::HOSTS_RETIRED)), "the host did its part");

    open(&mut core, 3, CHROME_ANDROID, "s");
    assert_eq!(core.offer_requested(4200, 3), OfferDecision::Handled, "the host still takes clients");
    assert_eq!(core.role(3), Some(&Role::Client { host: 1, stage: Stage::AwaitingOffer }));
    assert_eq!(core.offer_requested(4200, 2), OfferDecision::ServeFromEdge, "the silent client's next requests go to the edge");
}

#[test]
fn a_viewer_counts_as_needing_a_host_only_once_it_asked_for_an_offer() {
    const LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for idle in 100..110 {
        open(&mut core, idle, LINUX, "s");
    }
    open(&mut core, 2, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(0, 2), OfferDecision::Handled, "ten idle sockets do not make the pool short of hosts");
    for asking in 100..103 {
        core.offer_requested(0, asking);
    }
    open(&mut core, 3, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(0, 3), OfferDecision::ServeFromEdge, "three that asked do: the Windows viewer hosts instead");
    core.check_invariants().unwrap();
}

#[test]
fn the_offer_deadline_follows_the_offer_latency_of_hosts_that_offer() {
    let mut core = core_with(100);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    let mut deadlines = Vec::new();
    for (i, client) in (10..20).enumerate() {
        let t = 1000 * i as u64;
        open(&mut core, client, CHROME_ANDROID, "s");
        core.offer_requested(t, client);
        deadlines.push(timers_with_delay(&outputs(&mut core))[0].1);
        core.message_received(t + 400, 1, &offer_p2p(1, client));
        outputs(&mut core);
    }
    assert_eq!(&deadlines[..8], &[4000; 8], "the ceiling until 8 offers are measured");
    assert_eq!(&deadlines[8..], &[1200, 1200], "then 3 x the p99 (400 ms)");
    assert_eq!(core.offer_deadline_ms(), 1200);
}

#[test]
fn an_edge_viewer_who_could_be_a_client_is_moved_into_a_vacancy_of_a_host_that_has_relayed() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for phone in [2, 3] {
        open(&mut core, phone, CHROME_ANDROID, "s");
        core.offer_requested(0, phone);
        outputs(&mut core);
        exchange(&mut core, 100, 1, phone);
    }
    open(&mut core, 4, CHROME_ANDROID, "s");
    assert_eq!(core.offer_requested(1000, 4), OfferDecision::ServeFromEdge, "the host is full");
    core.session_playing(1500, 4);
    let settle = timers_with_delay(&outputs(&mut core));
    assert_eq!(settle.len(), 1);
    assert_eq!(settle[0].1, MOVE_AFTER);
    core.timer_fired(1500 + MOVE_AFTER, settle[0].0);
    assert!(outputs(&mut core).is_empty(), "no vacancy yet: it waits");

    core.session_closed(20_000, 2);
    let out = outputs(&mut core);
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str(), msgs[0].1["peer_id"].as_u64()), (1, Some("stop"), Some(2)), "the host is told");
    assert_eq!((msgs[1].0, msgs[1].1["command"].as_str(), msgs[1].1["peer_id"].as_u64()), (4, Some("stop"), Some(0)), "the viewer leaves the edge");
    assert_eq!(core.role(4), Some(&Role::Client { host: 1, stage: Stage::Moving }));

    assert_eq!(core.offer_requested(20_050, 4), OfferDecision::Handled, "its next request is the host's");
    let msgs = sent(&outputs(&mut core));
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str(), msgs[0].1["peer_id"].as_u64()), (1, Some("request_offer_p2p"), Some(4)));
    exchange(&mut core, 20_100, 1, 4);
    core.check_invariants().unwrap();
}

/// H1 (k = 1) hosts phone 2; phone 3 plays from the edge since t = 0 and has settled.
fn a_phone_waits_for_h1(proven: bool) -> P2pCore {
    let mut core = host_1_asked_for_client_2(1, CHROME_ANDROID);
    outputs(&mut core);
    if proven {
        exchange(&mut core, 0, 1, 2);
    }
    open(&mut core, 3, CHROME_ANDROID, "s");
    core.offer_requested(0, 3);
    core.session_playing(0, 3);
    let settle = timers(&outputs(&mut core))[0];
    core.timer_fired(MOVE_AFTER, settle);
    outputs(&mut core);
    core
}

#[test]
fn nobody_is_moved_into_a_host_that_has_not_relayed() {
    let mut core = a_phone_waits_for_h1(false);
    core.session_closed(MOVE_AFTER + 1, 2);
    assert!(sent(&outputs(&mut core)).iter().all(|(to, _)| *to != 3), "1 never relayed: 3 stays where it plays");
    assert_eq!(core.role(3), Some(&Role::Viewer));
}

#[test]
fn a_viewer_who_joined_recently_is_not_moved() {
    let mut core = host_1_asked_for_client_2(1, CHROME_ANDROID);
    exchange(&mut core, 0, 1, 2);
    open(&mut core, 3, CHROME_ANDROID, "s");
    core.offer_requested(0, 3);
    core.session_playing(5000, 3);
    let settle = timers(&outputs(&mut core))[0];
    core.session_closed(6000, 2);
    assert!(sent(&outputs(&mut core)).iter().all(|(to, _)| *to != 3), "3 has played for 1 s only");
    core.timer_fired(5000 + MOVE_AFTER, settle);
    assert_eq!(core.role(3), Some(&Role::Client { host: 1, stage: Stage::Moving }), "once settled, it takes the slot");
}

#[test]
fn a_player_that_ignores_the_move_stays_on_the_edge_and_is_never_moved_again() {
    let mut core = a_phone_waits_for_h1(true);
    core.session_closed(20_000, 2);
    let out = outputs(&mut core);
    let (token, after) = timers_with_delay(&out)[0];
    assert_eq!(after, 4000, "it has OfferTimeoutMs to ask again");
    core.timer_fired(24_000, token);
    assert_eq!(core.role(3), Some(&Role::Viewer));
    assert_eq!(core.role(1), Some(&Role::Host { clients: vec![] }), "the slot is free again");
    open(&mut core, 5, CHROME_ANDROID, "s");
    core.offer_requested(25_000, 5);
    core.session_closed(26_000, 5);
    assert!(sent(&outputs(&mut core)).iter().all(|(to, _)| *to != 3), "never asked to move again");
    core.check_invariants().unwrap();
}

#[test]
fn a_viewer_is_moved_at_most_twice() {
    let mut core = a_phone_waits_for_h1(true);
    let mut now = 20_000;
    for round in 0..2 {
        // The slot opens, 3 is moved, asks again... and the host leaves before offering.
        core.session_closed(now, 2);
        assert!(sent(&outputs(&mut core)).iter().any(|(to, m)| *to == 3 && m["command"] == "stop"), "move {round}");
        core.offer_requested(now, 3);
        core.session_closed(now, 1);
        assert!(outputs(&mut core).contains(&HostCall::ServeFromEdge(3)), "its host left before offering: the edge");
        core.session_playing(now, 3);
        let settle = timers(&outputs(&mut core));
        assert_eq!(settle.len(), 1 - round, "after the second move it is not queued again");
        now += MOVE_AFTER;
        for token in settle {
            core.timer_fired(now, token);
        }
        // A new proven host with one client, who leaves in the next round.
        edge_viewer(&mut core, 1, CHROME_WIN, "s");
        open(&mut core, 2, CHROME_ANDROID, "s");
        core.offer_requested(now, 2);
        exchange(&mut core, now, 1, 2);
        core.check_invariants().unwrap();
    }
    core.session_closed(now, 2);
    assert!(sent(&outputs(&mut core)).iter().all(|(to, _)| *to != 3), "no third move");
}

#[test]
fn moves_can_be_turned_off() {
    let xml = "<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>1</MaxClientPeersPerHostPeer><MoveEdgeViewers>false</MoveEdgeViewers><PairNewViewers>any</PairNewViewers></P2P>";
    let mut core = P2pCore::new(P2pConfig::parse(xml).unwrap());
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    open(&mut core, 2, CHROME_ANDROID, "s");
    core.offer_requested(0, 2);
    exchange(&mut core, 0, 1, 2);
    edge_viewer(&mut core, 3, CHROME_ANDROID, "s");
    edge_viewer(&mut core, 4, CHROME_ANDROID, "s");
    assert!(timers(&outputs(&mut core)).is_empty(), "no settling timers");
}

#[test]
fn a_client_gets_a_host_of_its_own_network_first() {
    let mut core = core_with(2);
    open_at(&mut core, 1, CHROME_WIN, "192.0.2.10:5000");
    open_at(&mut core, 2, CHROME_WIN, "198.51.100.20:5000");
    for host in [1, 2] {
        core.offer_requested(0, host);
    }
    for host in [1, 2] {
        core.session_playing(0, host);
    }
    open_at(&mut core, 3, CHROME_ANDROID, "192.0.2.77:5000");
    core.offer_requested(0, 3);
    exchange(&mut core, 0, 1, 3);
    open_at(&mut core, 4, CHROME_ANDROID, "198.51.100.99:6000");
    core.offer_requested(0, 4);
    assert_eq!(core.role(4), Some(&Role::Client { host: 2, stage: Stage::AwaitingOffer }), "its own /24, though 1 has relayed");
    open_at(&mut core, 5, CHROME_ANDROID, "192.0.2.5:7000");
    core.offer_requested(0, 5);
    assert_eq!(core.role(5), Some(&Role::Client { host: 1, stage: Stage::AwaitingOffer }), "its own /24, though 1 is more loaded");
    open_at(&mut core, 6, CHROME_ANDROID, "203.0.113.1:7000");
    core.offer_requested(0, 6);
    assert_eq!(core.role(6), Some(&Role::Client { host: 2, stage: Stage::AwaitingOffer }), "no local host: any with room");
    core.check_invariants().unwrap();
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
        assert_eq!(core.offer_requested(0, phone), OfferDecision::Handled);
    }
    edge_viewer(&mut core, 4, CHROME_ANDROID, "s");
    edge_viewer(&mut core, 5, CHROME_ANDROID, "s");
    core.session_closed(0, 2);
    open(&mut core, 6, CHROME_WIN, "s");
    let desktop_is_client = core.offer_requested(0, 6) == OfferDecision::Handled;
    if !desktop_is_client {
        core.session_playing(0, 6);
    }
    open(&mut core, 7, CHROME_ANDROID, "s");
    let phone_is_client = core.offer_requested(0, 7) == OfferDecision::Handled;
    (desktop_is_client, phone_is_client)
}

#[test]
fn balanced_matching_makes_a_viewer_who_could_host_a_host_while_the_pool_is_short_of_hosts() {
    assert_eq!(desktop_arrives_where_phones_wait("balanced"), (false, true), "D6 hosts, so phone A7 gets a host peer");
    assert_eq!(desktop_arrives_where_phones_wait("greedy"), (true, false), "OME's rule: D6 takes the slot, A7 gets the edge");
}

#[test]
fn a_client_that_does_not_answer_in_time_is_given_up() {
    let mut core = host_1_asked_for_client_2(2, CHROME_WIN);
    let offer_deadline = timers(&outputs(&mut core))[0];
    core.message_received(0, 1, &offer_p2p(1, 2));
    let answer_deadline = timers(&outputs(&mut core))[0];
    core.timer_fired(0, offer_deadline);
    assert!(outputs(&mut core).is_empty(), "the host offered in time");
    core.timer_fired(0, answer_deadline);
    assert!(outputs(&mut core).contains(&HostCall::ServeFromEdge(2)));
}

#[test]
fn deadlines_of_pairs_that_went_well_do_nothing() {
    let mut core = host_1_asked_for_client_2(2, CHROME_WIN);
    let mut all = timers(&outputs(&mut core));
    core.message_received(0, 1, &offer_p2p(1, 2));
    all.extend(timers(&outputs(&mut core)));
    core.message_received(0, 2, &answer(2, 1));
    outputs(&mut core);
    for t in all {
        core.timer_fired(0, t);
    }
    assert!(outputs(&mut core).is_empty());
    assert_eq!(core.role(2), Some(&Role::Client { host: 1, stage: Stage::Answered }));
}

#[test]
fn zero_clients_per_host_means_none() {
    let mut core = core_with(0);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    open(&mut core, 2, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(0, 2), OfferDecision::ServeFromEdge);
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
    assert_eq!(core.offer_requested(0, 4), OfferDecision::ServeFromEdge, "no Firefox host");
    open(&mut core, 5, CHROME_ANDROID, "s");
    assert_eq!(core.offer_requested(0, 5), OfferDecision::Handled, "a phone may be a client of a Chrome host");
}

#[test]
fn consent_exclusions_and_publishers() {
    let mut core = core_with(2);
    open_full(&mut core, 1, CHROME_WIN, "app", "s", "p2p=0", SessionKind::Play);
    core.offer_requested(0, 1);
    core.session_playing(0, 1);
    assert_eq!(core.role(1), Some(&Role::Viewer), "opted out: never a host");
    edge_viewer(&mut core, 2, CHROME_WIN, "s");
    open_full(&mut core, 3, CHROME_WIN, "app", "s", "x=1&p2p=off", SessionKind::Play);
    assert_eq!(core.offer_requested(0, 3), OfferDecision::ServeFromEdge, "opted out: never a client");
    open_full(&mut core, 4, CHROME_WIN, "app", "s", "", SessionKind::Publish);
    assert_eq!(core.offer_requested(0, 4), OfferDecision::ServeFromEdge, "publishers are never P2P");
    open_full(&mut core, 5, CHROME_WIN, "private", "s", "", SessionKind::Play);
    core.offer_requested(0, 5);
    core.session_playing(0, 5);
    open_full(&mut core, 6, CHROME_WIN, "private", "s", "", SessionKind::Play);
    assert_eq!(core.offer_requested(0, 6), OfferDecision::ServeFromEdge, "excluded application");
}

#[test]
fn consent_is_refused_in_any_case_and_percent_encoding() {
    let mut core = core_with(2);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    for (id, query) in [(2, "p2p=FALSE"), (3, "p2p=Off"), (4, "P2P=0"), (5, "p2p=%30"), (6, "p2p=1&p2p=no")] {
        open_full(&mut core, id, CHROME_WIN, "app", "s", query, SessionKind::Play);
        assert_eq!(core.offer_requested(0, id), OfferDecision::ServeFromEdge, "{query}: opted out");
    }
    open_full(&mut core, 7, CHROME_WIN, "app", "s", "p2p=1", SessionKind::Play);
    assert_eq!(core.offer_requested(0, 7), OfferDecision::Handled, "consenting: a client of host 1");
}

#[test]
fn disabled_p2p_serves_everyone_from_the_edge() {
    let mut core = P2pCore::new(P2pConfig::default());
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    open(&mut core, 2, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(0, 2), OfferDecision::ServeFromEdge);
}

#[test]
fn a_host_that_asks_again_releases_its_clients() {
    let mut core = host_1_asked_for_client_2(2, CHROME_WIN);
    outputs(&mut core);
    assert_eq!(core.offer_requested(0, 1), OfferDecision::ServeFromEdge);
    assert!(outputs(&mut core).contains(&HostCall::ServeFromEdge(2)));
    open(&mut core, 3, CHROME_WIN, "s");
    assert_eq!(core.offer_requested(0, 3), OfferDecision::ServeFromEdge, "1 is not playing again yet");
}

/// Phone 3 was host 1's client; 1 leaves. Host 2 (relayed to phone 4) then gets a free slot.
fn a_former_client_waits_on_the_edge(former_clients: bool) -> P2pCore {
    let xml = format!("<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>1</MaxClientPeersPerHostPeer><MoveAfterMs>{MOVE_AFTER}</MoveAfterMs><MoveFormerClients>{former_clients}</MoveFormerClients><PairNewViewers>any</PairNewViewers></P2P>");
    let mut core = P2pCore::new(P2pConfig::parse(&xml).unwrap());
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    open(&mut core, 3, CHROME_ANDROID, "s");
    core.offer_requested(0, 3);
    exchange(&mut core, 0, 1, 3);
    edge_viewer(&mut core, 2, CHROME_WIN, "s");
    open(&mut core, 4, CHROME_ANDROID, "s");
    core.offer_requested(0, 4);
    exchange(&mut core, 0, 2, 4);
    core.session_closed(1000, 1);
    let msgs = sent(&outputs(&mut core));
    assert_eq!((msgs[0].0, msgs[0].1["command"].as_str()), (3, Some("stop")), "3 is told its host left");
    assert_eq!(core.offer_requested(1050, 3), OfferDecision::ServeFromEdge, "a former client asking again gets the edge, as OME's rule says");
    core.session_playing(1500, 3);
    for token in timers(&outputs(&mut core)) {
        core.timer_fired(1500 + MOVE_AFTER, token);
    }
    outputs(&mut core);
    core.session_closed(20_000, 4);
    core
}

#[test]
fn a_former_client_may_be_moved_back_into_a_host_later_unless_omes_rule_is_kept() {
    let core = a_former_client_waits_on_the_edge(true);
    assert_eq!(core.role(3), Some(&Role::Client { host: 2, stage: Stage::Moving }), "moved into 2's free slot");
    core.check_invariants().unwrap();
    let mut core = a_former_client_waits_on_the_edge(false);
    assert_eq!(core.role(3), Some(&Role::Viewer), "MoveFormerClients false: the edge serves it for good");
    assert!(sent(&outputs(&mut core)).iter().all(|(to, _)| *to != 3));
}

#[test]
fn a_vacancy_goes_to_a_waiting_viewer_of_the_hosts_network_first() {
    let mut core = core_with(1);
    open_at(&mut core, 1, CHROME_WIN, "192.0.2.10:5000");
    core.offer_requested(0, 1);
    core.session_playing(0, 1);
    open_at(&mut core, 2, CHROME_ANDROID, "192.0.2.20:5000");
    core.offer_requested(0, 2);
    exchange(&mut core, 0, 1, 2);
    // Two phones wait on the edge: 3 from elsewhere (it has waited longer), 4 from 1's network.
    for (id, remote, at) in [(3, "198.51.100.3:5000", 0), (4, "192.0.2.44:5000", 1000)] {
        open_at(&mut core, id, CHROME_ANDROID, remote);
        assert_eq!(core.offer_requested(at, id), OfferDecision::ServeFromEdge);
        core.session_playing(at, id);
        let settle = timers(&outputs(&mut core))[0];
        core.timer_fired(at + MOVE_AFTER, settle);
    }
    core.session_closed(20_000, 2);
    assert_eq!(core.role(4), Some(&Role::Client { host: 1, stage: Stage::Moving }), "the host's neighbour first");
    assert_eq!(core.role(3), Some(&Role::Viewer), "the one from elsewhere waits");
    core.check_invariants().unwrap();
}

#[test]
fn an_offer_or_answer_that_crosses_its_deadline_is_dropped_not_punished_with_a_close() {
    let mut core = host_1_asked_for_client_2(2, CHROME_ANDROID);
    let deadline = timers(&outputs(&mut core))[0];
    core.timer_fired(4000, deadline);
    outputs(&mut core);
    // 1's offer was on the wire when the deadline passed: stale, 1 is not closed.
    assert_eq!(core.message_received(4010, 1, &offer_p2p(1, 2)), MessageVerdict::Handled);
    assert!(outputs(&mut core).is_empty(), "no close, nothing relayed");

    open(&mut core, 3, CHROME_ANDROID, "s");
    edge_viewer(&mut core, 4, CHROME_WIN, "s");
    core.offer_requested(5000, 3);
    outputs(&mut core);
    core.message_received(5100, 4, &offer_p2p(4, 3));
    let answer_deadline = timers(&outputs(&mut core))[0];
    core.timer_fired(9100, answer_deadline);
    outputs(&mut core);
    // 3's answer crossed its deadline: stale, 3 is not closed (it plays from the edge).
    core.message_received(9110, 3, &answer(3, 4));
    assert!(outputs(&mut core).is_empty(), "no close, nothing relayed");
    // A stranger is still refused.
    core.message_received(9200, 3, &answer(3, 1));
    assert!(matches!(outputs(&mut core).as_slice(), [HostCall::Close(3, 400, _)]));
}

#[test]
fn late_offers_still_teach_the_deadline_so_it_can_grow_back() {
    let mut core = core_with(100);
    edge_viewer(&mut core, 1, CHROME_WIN, "s");
    let mut t = 0;
    for client in 10..20 {
        open(&mut core, client, CHROME_ANDROID, "s");
        core.offer_requested(t, client);
        outputs(&mut core);
        core.message_received(t + 100, 1, &offer_p2p(1, client));
        outputs(&mut core);
        t += 1000;
    }
    assert_eq!(core.offer_deadline_ms(), 1000, "fast hosts: the floor");
    // Hosts slow down to 2.5 s: every offer misses the 1 s deadline and arrives late.
    for (i, host) in (30..40).enumerate() {
        let client = 100 + i as u32;
        edge_viewer(&mut core, host, CHROME_WIN, &format!("t{i}"));
        open(&mut core, client, CHROME_ANDROID, &format!("t{i}"));
        core.offer_requested(t, client);
        let deadline = timers(&outputs(&mut core))[0];
        core.timer_fired(t + 1000, deadline);
        outputs(&mut core);
        core.message_received(t + 2500, host, &offer_p2p(host, client));
        outputs(&mut core);
        t += 3000;
    }
    assert_eq!(core.offer_deadline_ms(), 4000, "the late offers raised the p99: the ceiling again");
}

#[test]
fn a_client_that_failed_to_answer_is_never_moved_into_a_host() {
    let mut core = host_1_asked_for_client_2(1, CHROME_ANDROID);
    exchange(&mut core, 0, 1, 2);
    open(&mut core, 3, CHROME_ANDROID, "s");
    edge_viewer(&mut core, 4, CHROME_WIN, "s");
    core.offer_requested(0, 3);
    outputs(&mut core);
    core.message_received(100, 4, &offer_p2p(4, 3));
    let answer_deadline = timers(&outputs(&mut core))[0];
    core.timer_fired(4100, answer_deadline);
    outputs(&mut core);
    core.session_playing(4500, 3);
    assert!(timers(&outputs(&mut core)).is_empty(), "no settling: it will not be moved");
    core.session_closed(20_000, 2);
    assert_eq!(core.role(3), Some(&Role::Viewer), "1's free slot does not go to 3");
}

#[test]
fn a_retired_host_whose_last_client_leaves_may_be_moved_as_a_client() {
    let mut core = core_with(2);
    for host in [1, 9] {
        open(&mut core, host, CHROME_WIN, "s");
        core.offer_requested(0, host);
    }
    for host in [1, 9] {
        core.session_playing(0, host);
    }
    outputs(&mut core);
    let host_of = |core: &P2pCore, c| match core.role(c) {
        Some(&Role::Client { host, .. }) => host,
        role => panic!("{c} is {role:?}"),
    };
    // X relays to 2, then misses its offer to 3 (proven hosts come first): retired, 2 stays.
    open(&mut core, 2, CHROME_ANDROID, "s");
    core.offer_requested(0, 2);
    let x = host_of(&core, 2);
    exchange(&mut core, 0, x, 2);
    open(&mut core, 3, CHROME_ANDROID, "s");
    core.offer_requested(0, 3);
    assert_eq!(host_of(&core, 3), x);
    let deadline = timers(&outputs(&mut core))[0];
    core.timer_fired(4000, deadline);
    outputs(&mut core);
    // Y relays to 5.
    open(&mut core, 5, CHROME_ANDROID, "s");
    core.offer_requested(5000, 5);
    let y = host_of(&core, 5);
    assert_ne!(x, y, "a retired host takes no new client");
    exchange(&mut core, 5000, y, 5);
    // 2 leaves: X relays to nobody now, and cannot relay: it is moved into Y's free slot.
    core.session_closed(10_000, 2);
    let checks = timers_with_delay(&outputs(&mut core));
    assert!(checks.iter().any(|&(_, ms)| ms == 0), "a settling check for the emptied retired host: {checks:?}");
    for (token, _) in checks {
        core.timer_fired(10_000, token);
    }
    assert_eq!(core.role(x), Some(&Role::Client { host: y, stage: Stage::Moving }), "moved into the host that relays");
    core.check_invariants().unwrap();
}
