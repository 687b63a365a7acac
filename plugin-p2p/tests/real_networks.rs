//! The P2P state machine on real networks (issue 22): a pair is made, and kept, only where a link
//! can form; a failed link is remembered by address; a player that reports its link is counted as
//! playing from its peer only once it says so. Addresses as a home router shows them: two homes
//! (198.51.100.1 and 203.0.113.1), one with two machines behind it.

use plugin_api::{Delivery, MessageVerdict, OfferDecision, SessionKind};
use plugin_p2p::config::P2pConfig;
use plugin_api::HostCall;
use plugin_p2p::core::{counts, Arrival, P2pCore, Role, Stage};
use serde_json::{json, Value};

const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const HOME_1: &str = "198.51.100.1";
const HOME_2: &str = "203.0.113.1";
const LAN: &str = "candidate:1 1 udp 2122260223 10.1.0.2 50000 typ host generation 0";
const MDNS: &str = "candidate:2 1 udp 2122260223 0b1c9e2a-2f1e-4c55-9a3b-7a1f0e6d5c4b.local 50001 typ host";
const SRFLX: &str = "candidate:3 1 udp 1686052607 198.51.100.1 40000 typ srflx raddr 10.1.0.2 rport 50000";
const REACH_WAIT: u64 = 1500;
const CONFIRM: u64 = 10_000;

fn core() -> P2pCore {
    let xml = format!("<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>2</MaxClientPeersPerHostPeer><ReachWaitMs>{REACH_WAIT}</ReachWaitMs><ConfirmTimeoutMs>{CONFIRM}</ConfirmTimeoutMs><MoveEdgeViewers>false</MoveEdgeViewers><PairNewViewers>any</PairNewViewers></P2P>");
    P2pCore::new(P2pConfig::parse(&xml).unwrap())
}

fn open(core: &mut P2pCore, id: u32, ip: &str, port: u16) {
    open_with(core, id, ip, port, "");
}

/// Opens `id` with `query` (`p2p_stun=1`: the project's player, whose relay uses STUN).
fn open_with(core: &mut P2pCore, id: u32, ip: &str, port: u16, query: &str) {
    let remote = format!("{ip}:{port}");
    core.session_opened(0, Arrival { id, kind: SessionKind::Play, stream: "default/app/s", app: "app", stream_name: "s", user_agent: CHROME_WIN, query, remote: &remote });
}

/// Host 1 plays from the edge in home 1.
fn with_host_in_home_1() -> P2pCore {
    let mut core = core();
    open(&mut core, 1, HOME_1, 40001);
    assert_eq!(core.offer_requested(0, 1), OfferDecision::ServeFromEdge);
    core.session_playing(0, 1);
    drain(&mut core);
    core
}

fn drain(core: &mut P2pCore) -> Vec<HostCall> {
    core.drain_outputs().collect()
}

fn sent(outputs: &[HostCall]) -> Vec<(u32, Value)> {
    outputs.iter().filter_map(|o| if let HostCall::Send(id, m) = o { Some((*id, serde_json::from_str(m).unwrap())) } else { None }).collect()
}

fn counted(outputs: &[HostCall], name: &str) -> bool {
    outputs.iter().any(|o| matches!(o, HostCall::Count(n, 1) if n == name))
}

fn timer(outputs: &[HostCall]) -> (u64, u64) {
    outputs.iter().find_map(|o| if let HostCall::SetTimer { token: t, after_ms: ms } = o { Some((*t, *ms)) } else { None }).expect("a timer")
}

fn send(core: &mut P2pCore, now: u64, from: u32, message: Value) -> Vec<HostCall> {
    assert_eq!(core.message_received(now, from, &message.to_string()), MessageVerdict::Handled);
    drain(core)
}

fn offer(host: u32, client: u32, candidates: &[&str]) -> Value {
    let sdp: String = candidates.iter().map(|c| format!("a={c}\r\n")).collect();
    json!({"command": "offer_p2p", "id": host, "peer_id": client, "sdp": {"type": "offer", "sdp": format!("v=0\r\n{sdp}")}})
}

fn trickle(host: u32, client: u32, candidate: &str) -> Value {
    json!({"command": "candidate_p2p", "id": host, "peer_id": client, "candidates": [{"candidate": candidate, "sdpMLineIndex": 0}]})
}

/// Viewer `id` opens at `ip` and is given to host 1, which is asked to offer.
fn client_of_1(core: &mut P2pCore, id: u32, ip: &str, port: u16) {
    open(core, id, ip, port);
    assert_eq!(core.offer_requested(100, id), OfferDecision::Handled);
    assert_eq!(core.role(id), Some(&Role::Client { host: 1, stage: Stage::AwaitingOffer }));
    drain(core);
}

#[test]
fn an_offer_showing_only_lan_candidates_is_withheld_from_another_network_and_the_client_plays_from_the_edge() {
    let mut core = with_host_in_home_1();
    client_of_1(&mut core, 2, HOME_2, 50000);
    let out = send(&mut core, 300, 1, offer(1, 2, &[LAN, MDNS]));
    assert!(out.contains(&HostCall::ServeFromEdge(2)), "{out:?}");
    assert!(sent(&out).iter().all(|(to, _)| *to != 2), "the client never sees the offer: {out:?}");
    assert_eq!(sent(&out), [(1, json!({"command": "stop", "id": 1, "peer_id": 2}))]);
    assert!(counted(&out, counts::FALLBACK_UNREACHABLE));
    assert_eq!(core.role(2), Some(&Role::Viewer));

    // A reloading page (a new session, the same address) is not paired into the same failure;
    // a neighbour behind host 1's own router is.
    open(&mut core, 3, HOME_2, 50001);
    assert_eq!(core.offer_requested(400, 3), OfferDecision::ServeFromEdge, "host 1 cannot reach home 2");
    client_of_1(&mut core, 4, HOME_1, 40002);
    let out = send(&mut core, 500, 1, offer(1, 4, &[LAN, MDNS]));
    assert_eq!(sent(&out)[0].0, 4, "the same network: delivered ({out:?})");
    assert_eq!(core.role(4), Some(&Role::Client { host: 1, stage: Stage::AwaitingAnswer }));
}

#[test]
fn a_pair_across_networks_is_given_up_when_the_host_trickles_only_lan_candidates_until_the_deadline() {
    let mut core = with_host_in_home_1();
    client_of_1(&mut core, 2, HOME_2, 50000);
    // OvenPlayer's offer carries no candidate: it is delivered, and the candidates decide.
    let out = send(&mut core, 300, 1, offer(1, 2, &[]));
    assert_eq!(sent(&out)[0].0, 2);
    let (token, after) = timer(&out);
    assert_eq!(after, REACH_WAIT, "across networks the host has this long to show where it can be reached");
    send(&mut core, 310, 2, json!({"command": "answer", "id": 2, "peer_id": 1, "sdp": {"type": "answer", "sdp": "v=0"}}));
    send(&mut core, 320, 1, trickle(1, 2, LAN));
    send(&mut core, 330, 1, trickle(1, 2, MDNS));
    core.timer_fired(300 + REACH_WAIT, token);
    let out = drain(&mut core);
    assert_eq!(
        sent(&out),
        [(2, json!({"command": "stop", "id": 2, "peer_id": 1})), (1, json!({"command": "stop", "id": 1, "peer_id": 2}))],
        "the client is told to leave its host at once (it asks again and the edge serves it)"
    );
    assert!(counted(&out, counts::FALLBACK_UNREACHABLE));
    let logged: Vec<String> = core.drain_logs().collect();
    assert!(logged.iter().any(|text| text.contains("203.0.113.1") && text.contains("198.51.100.1")), "logged with addresses: {logged:?}");
    assert_eq!(core.offer_requested(2000, 2), OfferDecision::ServeFromEdge, "it asks again: the edge");
}

#[test]
fn a_host_that_shows_a_server_reflexive_candidate_keeps_its_client_across_networks() {
    let mut core = with_host_in_home_1();
    client_of_1(&mut core, 2, HOME_2, 50000);
    let (token, _) = timer(&send(&mut core, 300, 1, offer(1, 2, &[])));
    send(&mut core, 320, 1, trickle(1, 2, LAN));
    send(&mut core, 400, 1, trickle(1, 2, SRFLX));
    core.timer_fired(300 + REACH_WAIT, token);
    assert!(sent(&drain(&mut core)).is_empty(), "a public candidate came in time");
    assert_eq!(core.role(2), Some(&Role::Client { host: 1, stage: Stage::AwaitingAnswer }));
    // Known to reach out now: its next offer across networks is delivered at once.
    client_of_1(&mut core, 3, "192.0.2.77", 1234);
    assert_eq!(sent(&send(&mut core, 600, 1, offer(1, 3, &[LAN])))[0].0, 3);
}

#[test]
fn a_reporting_player_counts_as_playing_from_its_peer_only_once_it_says_so() {
    let mut core = with_host_in_home_1();
    client_of_1(&mut core, 2, HOME_1, 40002);
    send(&mut core, 300, 1, offer(1, 2, &[]));
    let out = send(&mut core, 310, 2, json!({"command": "answer", "id": 2, "peer_id": 1, "sdp": {"type": "answer", "sdp": "v=0"}, "link_reports": true}));
    assert!(!out.iter().any(|o| matches!(o, HostCall::ReportDelivery(2, d) if d.connected)), "not connected on its answer: {out:?}");
    assert_eq!(core.delivery(2), Some(Delivery { upstream: 1, connected: false, free_relay_slots: 0 }), "pending");
    let out = send(&mut core, 900, 2, json!({"command": "p2p_link_state", "id": 2, "peer_id": 1, "state": "connected"}));
    assert!(out.contains(&HostCall::ReportDelivery(2, Delivery { upstream: 1, connected: true, free_relay_slots: 0 })), "{out:?}");
    assert!(counted(&out, counts::LINKS_CONFIRMED));
    assert_eq!(core.role(2), Some(&Role::Client { host: 1, stage: Stage::Confirmed }));
}

#[test]
fn a_link_reported_failed_or_never_confirmed_sends_the_client_to_the_edge_at_once() {
    let mut core = with_host_in_home_1();
    let answer = |c: u32| json!({"command": "answer", "id": c, "peer_id": 1, "sdp": {"type": "answer", "sdp": "v=0"}, "link_reports": true});
    client_of_1(&mut core, 2, HOME_1, 40002);
    send(&mut core, 300, 1, offer(1, 2, &[]));
    send(&mut core, 310, 2, answer(2));
    let out = send(&mut core, 5000, 2, json!({"command": "p2p_link_state", "id": 2, "peer_id": 1, "state": "failed"}));
    assert_eq!(sent(&out), [(2, json!({"command": "stop", "id": 2, "peer_id": 1})), (1, json!({"command": "stop", "id": 1, "peer_id": 2}))]);
    assert!(counted(&out, counts::FALLBACK_LINK_FAILED));

    // (Another address: the failure of 2's link is remembered for home 1's addresses.)
    client_of_1(&mut core, 3, "192.0.2.77", 40003);
    send(&mut core, 6000, 1, offer(1, 3, &[]));
    let out = send(&mut core, 6010, 3, answer(3));
    let (token, after) = timer(&out);
    assert_eq!(after, CONFIRM);
    core.timer_fired(6010 + CONFIRM, token);
    let out = drain(&mut core);
    assert_eq!(sent(&out)[0], (3, json!({"command": "stop", "id": 3, "peer_id": 1})));
    assert!(counted(&out, counts::FALLBACK_NOT_CONFIRMED));
}

#[test]
fn a_host_reporting_a_failed_link_ends_the_pair_too_and_a_stranger_cannot() {
    let mut core = with_host_in_home_1();
    client_of_1(&mut core, 2, HOME_1, 40002);
    send(&mut core, 300, 1, offer(1, 2, &[]));
    send(&mut core, 310, 2, json!({"command": "answer", "id": 2, "peer_id": 1, "sdp": {"type": "answer", "sdp": "v=0"}}));
    open(&mut core, 9, HOME_2, 9999);
    let out = send(&mut core, 400, 9, json!({"command": "p2p_link_state", "id": 9, "peer_id": 2, "state": "failed"}));
    assert!(out.iter().any(|o| matches!(o, HostCall::Close(9, 400, _))), "not its partner: {out:?}");
    assert_eq!(core.role(2), Some(&Role::Client { host: 1, stage: Stage::Answered }));
    let out = send(&mut core, 500, 1, json!({"command": "p2p_link_state", "id": 1, "peer_id": 2, "state": "failed"}));
    assert!(counted(&out, counts::FALLBACK_LINK_FAILED), "{out:?}");
    assert_eq!(core.role(2), Some(&Role::Viewer));
    core.check_invariants().unwrap();
}

const PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36";
const MOVE_AFTER: u64 = 5000;

/// The plugin's defaults but for the move delay (`PairNewViewers` proven).
fn default_core() -> P2pCore {
    let xml = format!("<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>2</MaxClientPeersPerHostPeer><MoveAfterMs>{MOVE_AFTER}</MoveAfterMs></P2P>");
    P2pCore::new(P2pConfig::parse(&xml).unwrap())
}

fn open_as(core: &mut P2pCore, now: u64, id: u32, ua: &str, remote: &str) {
    core.session_opened(now, Arrival { id, kind: SessionKind::Play, stream: "default/app/s", app: "app", stream_name: "s", user_agent: ua, query: "", remote });
}

/// Plays from the edge from `now` and waits out its settling time; the outputs then.
fn settled_on_the_edge(core: &mut P2pCore, now: u64, id: u32) -> Vec<HostCall> {
    core.session_playing(now, id);
    let (token, after) = timer(&drain(core));
    assert_eq!(after, MOVE_AFTER);
    core.timer_fired(now + MOVE_AFTER, token);
    drain(core)
}

#[test]
fn by_default_a_joining_viewer_gets_a_host_of_its_own_network_at_once_and_one_of_another_only_by_a_move() {
    for (host_query, moved) in [("p2p_stun=1", true), ("", false)] {
        joining_and_moving(host_query, moved);
    }
}

/// Host 1 opened with `host_query`: a viewer of its network gets it by a move, and at once once
/// host 1 has relayed; one of another network is moved into it only if its relay is known to
/// reach out (`moved`).
fn joining_and_moving(host_query: &str, moved: bool) {
    let mut core = default_core();
    open_with(&mut core, 1, HOME_1, 40001, host_query);
    assert_eq!(core.offer_requested(0, 1), OfferDecision::ServeFromEdge);
    core.session_playing(0, 1);
    drain(&mut core); // (host 1's own settling timer: it is a host, idle, and may be moved too)
    open_as(&mut core, 100, 2, PHONE, "198.51.100.1:40002");
    assert_eq!(core.offer_requested(100, 2), OfferDecision::ServeFromEdge, "host 1 has not relayed: the edge at once, even behind its router");
    let out = settled_on_the_edge(&mut core, 150, 2);
    assert_eq!(core.role(2), Some(&Role::Client { host: 1, stage: Stage::Moving }), "then a move: a LAN link ({out:?})");
    assert_eq!(core.offer_requested(5200, 2), OfferDecision::Handled);
    // The project's player's relay shows its server-reflexive address; OvenPlayer's only its LAN.
    let shown: &[&str] = if moved { &[LAN, SRFLX] } else { &[LAN] };
    send(&mut core, 5300, 1, offer(1, 2, shown));
    send(&mut core, 5400, 2, json!({"command": "answer", "id": 2, "peer_id": 1, "sdp": {"type": "answer", "sdp": "v=0"}}));
    open_as(&mut core, 5500, 4, PHONE, "198.51.100.1:40004");
    assert_eq!(core.offer_requested(5500, 4), OfferDecision::Handled, "proven now: a viewer behind its router gets it at once");
    core.session_closed(5600, 4);
    drain(&mut core);
    open_as(&mut core, 5700, 3, PHONE, "203.0.113.1:50003");
    assert_eq!(core.offer_requested(5700, 3), OfferDecision::ServeFromEdge, "another network: the edge at once, a move later");
    drain(&mut core);
    let out = settled_on_the_edge(&mut core, 5800, 3);
    if moved {
        assert_eq!(core.role(3), Some(&Role::Client { host: 1, stage: Stage::Moving }), "{out:?}");
        assert!(sent(&out).contains(&(3, json!({"command": "stop", "id": 3, "peer_id": 0}))));
    } else {
        assert_eq!(core.role(3), Some(&Role::Viewer), "an OvenPlayer relay that has shown nothing: never moved into across routers ({out:?})");
        assert!(sent(&out).is_empty(), "{out:?}");
    }
    core.check_invariants().unwrap();
}

#[test]
fn by_default_an_idle_host_peer_is_moved_into_another_so_an_audience_of_desktops_pairs() {
    let mut core = default_core();
    open_with(&mut core, 1, HOME_1, 40001, "p2p_stun=1");
    assert_eq!(core.offer_requested(0, 1), OfferDecision::ServeFromEdge);
    core.session_playing(0, 1);
    open_with(&mut core, 2, HOME_2, 50002, "p2p_stun=1");
    assert_eq!(core.offer_requested(100, 2), OfferDecision::ServeFromEdge, "another network: the edge, and a host itself");
    drain(&mut core);
    let out = settled_on_the_edge(&mut core, 200, 2);
    let moved = [(1, 2), (2, 1)].into_iter().find(|&(client, host)| core.role(client) == Some(&Role::Client { host, stage: Stage::Moving }));
    let (client, host) = moved.unwrap_or_else(|| panic!("an idle host was moved into the other: {out:?}"));
    assert_eq!(core.role(host), Some(&Role::Host { clients: vec![client] }));
    assert_eq!(core.offer_requested(5300, client), OfferDecision::Handled, "it asks again: the host's offer answers it");
    core.check_invariants().unwrap();
}

#[test]
fn a_client_that_shows_only_lan_candidates_across_networks_is_not_counted_and_is_given_up() {
    let mut core = with_host_in_home_1();
    client_of_1(&mut core, 2, HOME_2, 50000);
    let (token, after) = timer(&send(&mut core, 300, 1, offer(1, 2, &[])));
    assert_eq!(after, REACH_WAIT);
    send(&mut core, 305, 1, trickle(1, 2, SRFLX));
    send(&mut core, 310, 2, json!({"command": "answer", "id": 2, "peer_id": 1, "sdp": {"type": "answer", "sdp": "v=0"}}));
    assert_eq!(core.delivery(2).map(|d| d.connected), Some(true), "nothing says otherwise yet");
    let out = send(&mut core, 320, 2, json!({"command": "candidate", "id": 2, "peer_id": 1, "candidates": [{"candidate": MDNS}]}));
    assert!(out.contains(&HostCall::ReportDelivery(2, Delivery { upstream: 1, connected: false, free_relay_slots: 0 })), "no longer counted: {out:?}");
    core.timer_fired(300 + REACH_WAIT, token);
    let out = drain(&mut core);
    assert!(counted(&out, counts::FALLBACK_UNREACHABLE), "{out:?}");
    assert_eq!(sent(&out)[0], (2, json!({"command": "stop", "id": 2, "peer_id": 1})));
}

#[test]
fn a_host_that_shows_no_candidate_at_all_across_networks_does_not_keep_its_client_waiting() {
    let mut core = with_host_in_home_1();
    client_of_1(&mut core, 2, HOME_2, 50000);
    let (token, _) = timer(&send(&mut core, 300, 1, offer(1, 2, &[])));
    send(&mut core, 310, 2, json!({"command": "answer", "id": 2, "peer_id": 1, "sdp": {"type": "answer", "sdp": "v=0"}}));
    core.timer_fired(300 + REACH_WAIT, token);
    let out = drain(&mut core);
    assert!(counted(&out, counts::FALLBACK_UNREACHABLE), "{out:?}");
    assert_eq!(sent(&out)[0], (2, json!({"command": "stop", "id": 2, "peer_id": 1})));
    open(&mut core, 3, HOME_2, 50001);
    assert_eq!(core.offer_requested(2000, 3), OfferDecision::ServeFromEdge, "its reloaded page is not paired into the same failure");
}

#[test]
fn viewers_reaching_the_server_from_private_addresses_are_one_network() {
    // The server on the viewers' own LAN (an office, a campus): no NAT between them and it.
    let mut core = core();
    open(&mut core, 1, "10.1.0.5", 40001);
    assert_eq!(core.offer_requested(0, 1), OfferDecision::ServeFromEdge);
    core.session_playing(0, 1);
    drain(&mut core);
    client_of_1(&mut core, 2, "10.1.0.6", 40002);
    let out = send(&mut core, 300, 1, offer(1, 2, &[LAN, MDNS]));
    assert_eq!(sent(&out)[0].0, 2, "a LAN-only relay reaches a viewer of the server's LAN: {out:?}");
    assert!(!out.iter().any(|o| matches!(o, HostCall::SetTimer { token: _, after_ms: ms } if *ms == REACH_WAIT)), "no reach deadline on one network: {out:?}");
}

/// Behind home routers most relays reach only their own network (OvenPlayer's show only LAN
/// candidates): twenty such hosts with vacancies, each in its own home, come first in the pool,
/// and a relay known to reach out (`p2p_stun=1`) comes after them. A viewer of yet another home
/// waiting on the edge is moved into that relay: passing the twenty costs a look at each one's
/// own network, not the search's whole budget (it stopped after nine before).
#[test]
fn past_many_hosts_that_reach_only_their_own_network_a_waiting_viewer_reaches_one_that_reaches_out() {
    let mut core = default_core();
    let mut now = 0;
    for id in 1..=20u32 {
        open_as(&mut core, now, id, CHROME_WIN, &format!("198.51.{id}.1:40000"));
        assert_eq!(core.offer_requested(now, id), OfferDecision::ServeFromEdge);
        core.session_playing(now, id);
        drain(&mut core);
        now += 10;
    }
    open_with(&mut core, 21, "203.0.113.21", 40021, "p2p_stun=1");
    assert_eq!(core.offer_requested(now, 21), OfferDecision::ServeFromEdge);
    core.session_playing(now, 21);
    drain(&mut core);
    open_as(&mut core, now, 30, PHONE, "192.0.2.30:50000");
    assert_eq!(core.offer_requested(now, 30), OfferDecision::ServeFromEdge, "no proven host of its network");
    let out = settled_on_the_edge(&mut core, now, 30);
    let moved_into_21: Vec<u32> = (1..=30).filter(|id| matches!(core.role(*id), Some(Role::Client { host: 21, .. }))).collect();
    assert!(!moved_into_21.is_empty(), "someone waiting is moved into the relay that reaches out: {out:?}");
    for id in 1..=20 {
        assert!(!matches!(core.role(id), Some(Role::Host { clients }) if !clients.is_empty()), "{id} reaches no other network");
    }
    core.check_invariants().unwrap();
}
