//! Trees deeper than OME's one level (issue 25): with `<MaxDepth>` 2 a client whose link plays
//! relays to clients of its own; nobody is deeper than the bound; shallow places come first; when
//! a relay loses its source or leaves, its whole subtree is handled, its clients told before it.

use plugin_api::{MessageVerdict, OfferDecision, SessionKind};
use plugin_p2p::config::P2pConfig;
use plugin_api::HostCall;
use plugin_p2p::core::{counts, Arrival, P2pCore, Role, Stage};
use serde_json::{json, Value};

const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";

/// k = 2, depth 2, every viewer behind one address (a LAN: every link forms), OME's pairing.
fn core() -> P2pCore {
    let xml = "<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>2</MaxClientPeersPerHostPeer><MaxDepth>2</MaxDepth><PairNewViewers>any</PairNewViewers><MoveEdgeViewers>false</MoveEdgeViewers></P2P>";
    P2pCore::new(P2pConfig::parse(xml).unwrap())
}

fn open(core: &mut P2pCore, id: u32) {
    core.session_opened(0, Arrival { id, kind: SessionKind::Play, stream: "default/app/s", app: "app", stream_name: "s", user_agent: CHROME_WIN, query: "", remote: "198.51.100.1:40000" });
}

fn drain(core: &mut P2pCore) -> Vec<HostCall> {
    core.drain_outputs().collect()
}

fn sent(outputs: &[HostCall]) -> Vec<(u32, Value)> {
    outputs.iter().filter_map(|o| if let HostCall::Send(id, m) = o { Some((*id, serde_json::from_str(m).unwrap())) } else { None }).collect()
}

fn stop(to: u32, gone: u32) -> (u32, Value) {
    (to, json!({"command": "stop", "id": to, "peer_id": gone}))
}

/// `id` joins and plays from `host`, through a whole exchange.
fn joins_from(core: &mut P2pCore, now: u64, id: u32, host: u32) {
    open(core, id);
    assert_eq!(core.offer_requested(now, id), OfferDecision::Handled, "{id} gets a host");
    assert_eq!(core.role(id), Some(&Role::Client { host, stage: Stage::AwaitingOffer }), "{id}'s host");
    let offer = json!({"command": "offer_p2p", "id": host, "peer_id": id, "sdp": {"type": "offer", "sdp": "v=0"}});
    assert_eq!(core.message_received(now, host, &offer.to_string()), MessageVerdict::Handled);
    let answer = json!({"command": "answer", "id": id, "peer_id": host, "sdp": {"type": "answer", "sdp": "v=0"}});
    assert_eq!(core.message_received(now, id, &answer.to_string()), MessageVerdict::Handled);
    drain(core);
}

/// Host 1 on the edge; 2 and 3 its clients, relaying; 4 and 5 clients of 2; 6 and 7 of 3.
fn two_levels() -> P2pCore {
    let mut core = core();
    open(&mut core, 1);
    assert_eq!(core.offer_requested(0, 1), OfferDecision::ServeFromEdge);
    core.session_playing(0, 1);
    for (id, host) in [(2, 1), (3, 1), (4, 2), (5, 2), (6, 3), (7, 3)] {
        joins_from(&mut core, 100 * u64::from(id), id, host);
    }
    core.check_invariants().unwrap();
    core
}

#[test]
fn with_max_depth_2_clients_whose_links_play_relay_and_nobody_is_deeper() {
    let mut core = two_levels();
    assert_eq!(core.delivery(2).map(|d| (d.upstream, d.connected, d.free_relay_slots)), Some((1, true, 0)), "2 plays from 1 and relays to two");
    assert_eq!(core.delivery(4).map(|d| (d.upstream, d.free_relay_slots)), Some((2, 0)), "4 is at depth 2: it relays to nobody");
    open(&mut core, 8);
    assert_eq!(core.offer_requested(1000, 8), OfferDecision::ServeFromEdge, "every place within depth 2 is taken");
    core.check_invariants().unwrap();
}

#[test]
fn a_new_client_takes_the_shallowest_free_place() {
    let mut core = two_levels();
    core.session_closed(1000, 7);
    core.session_closed(1000, 3);
    let out = drain(&mut core);
    assert!(sent(&out).contains(&stop(6, 3)), "3's client is told its host left: {out:?}");
    open(&mut core, 9);
    assert_eq!(core.offer_requested(1100, 9), OfferDecision::Handled);
    assert_eq!(core.role(9), Some(&Role::Client { host: 1, stage: Stage::AwaitingOffer }), "1 (depth 0) before relay 2 (full anyway) or a deeper place");
    core.check_invariants().unwrap();
}

#[test]
fn when_a_relay_loses_its_source_its_clients_are_told_before_it_is() {
    let mut core = two_levels();
    core.session_closed(1000, 1);
    let out = drain(&mut core);
    let messages = sent(&out);
    for (relay, clients) in [(2, [4, 5]), (3, [6, 7])] {
        let told_of_source = messages.iter().position(|m| *m == stop(relay, 1)).unwrap_or_else(|| panic!("{relay} is told its source left: {messages:?}"));
        for c in clients {
            let told_of_client = messages.iter().position(|m| *m == stop(relay, c)).unwrap_or_else(|| panic!("{relay} is told {c} goes: {messages:?}"));
            assert!(told_of_client < told_of_source, "{relay} hears of {c} before of its own source: {messages:?}");
            assert!(messages.contains(&stop(c, relay)), "{c} is told its relay lost its source");
        }
    }
    assert_eq!(out.iter().filter(|o| matches!(o, HostCall::Count(n, 1) if n == counts::FALLBACK_RELAY_LOST)).count(), 4, "{out:?}");
    for id in 2..=7 {
        assert_eq!(core.role(id), Some(&Role::Viewer), "{id} starts over");
        assert_eq!(core.offer_requested(1100, id), OfferDecision::ServeFromEdge, "{id} asks again: the edge (once a client)");
    }
    core.check_invariants().unwrap();
}

#[test]
fn when_a_relay_leaves_its_clients_fall_back_and_it_is_told_nothing() {
    let mut core = two_levels();
    core.session_closed(1000, 2);
    let out = drain(&mut core);
    let messages = sent(&out);
    assert!(messages.contains(&stop(4, 2)) && messages.contains(&stop(5, 2)), "{messages:?}");
    assert!(messages.contains(&stop(1, 2)), "its own host frees its slot");
    assert!(messages.iter().all(|(to, _)| *to != 2), "the gone relay is sent nothing");
    assert_eq!(core.role(3), Some(&Role::Client { host: 1, stage: Stage::Answered }), "its sibling's subtree is untouched");
    assert_eq!(core.role(6), Some(&Role::Client { host: 3, stage: Stage::Answered }));
    core.check_invariants().unwrap();
}

#[test]
fn a_former_client_that_hosts_from_the_edge_feeds_clients_at_depth_1() {
    let mut core = two_levels();
    core.session_closed(1000, 1);
    drain(&mut core);
    assert_eq!(core.offer_requested(1100, 2), OfferDecision::ServeFromEdge, "2 plays from the edge now");
    core.session_playing(1200, 2);
    joins_from(&mut core, 1300, 8, 2);
    assert_eq!(core.delivery(8).map(|d| (d.upstream, d.connected, d.free_relay_slots)), Some((2, true, 2)), "8 is one hop from the edge: it relays");
    core.check_invariants().unwrap();
}

#[test]
fn max_depth_is_checked() {
    for bad in ["0", "9"] {
        assert!(P2pConfig::parse(&format!("<P2P><MaxDepth>{bad}</MaxDepth></P2P>")).is_err(), "{bad}");
    }
    assert_eq!(P2pConfig::default().max_depth, 1, "OME's rule by default");
}

/// Random events over a small audience at depths 2 and 3, the players answering as they do (a
/// host offers when asked, a client answers its offer, a reporting one reports its link, each
/// sometimes not at all) while viewers join, ask again and leave and timers fire; the core's
/// bookkeeping is checked after each call: roles point at each other, nobody is deeper than the
/// bound, relays are pooled, deadlines armed.
#[test]
fn random_events_at_depth_2_and_3_keep_the_bookkeeping_whole() {
    use rand::{Rng, SeedableRng};
    let mut deepest_of_all = 0;
    for (seed, depth, pairing) in [(1u64, 2u8, "any"), (2, 3, "any"), (3, 2, "proven"), (4, 3, "proven"), (5, 3, "any"), (6, 3, "proven")] {
        let xml = format!("<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>2</MaxClientPeersPerHostPeer><MaxDepth>{depth}</MaxDepth><MoveAfterMs>1000</MoveAfterMs><PairNewViewers>{pairing}</PairNewViewers><Matching>greedy</Matching></P2P>");
        let mut core = P2pCore::new(P2pConfig::parse(&xml).unwrap());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (mut now, mut live) = (0u64, Vec::<u32>::new());
        // Timers as (due, token); messages players will send, as (sender, text).
        let (mut timers, mut inbox) = (Vec::<(u64, u64)>::new(), Vec::<(u32, String)>::new());
        let (mut next, mut deepest) = (1u32, 0);
        for step in 0..6000 {
            now += rng.random_range(0..100);
            if let Some((from, message)) = (!inbox.is_empty()).then(|| inbox.remove(rng.random_range(0..inbox.len()))) {
                if live.contains(&from) {
                    core.message_received(now, from, &message);
                }
            } else {
                match rng.random_range(0..10) {
                    0..=2 if live.len() < 30 => {
                        let home = if rng.random_bool(0.5) { "198.51.100.1" } else { "203.0.113.1" };
                        let remote = format!("{home}:{}", 40000 + next);
                        core.session_opened(now, Arrival { id: next, kind: SessionKind::Play, stream: "default/app/s", app: "app", stream_name: "s", user_agent: CHROME_WIN, query: "p2p_stun=1", remote: &remote });
                        if core.offer_requested(now, next) == OfferDecision::ServeFromEdge {
                            core.session_playing(now, next);
                        }
                        live.push(next);
                        next += 1;
                    }
                    3 if !live.is_empty() => {
                        let id = live.remove(rng.random_range(0..live.len()));
                        core.session_closed(now, id);
                    }
                    _ => {
                        timers.sort_unstable();
                        if let Some(&(due, token)) = timers.first() {
                            timers.remove(0);
                            now = now.max(due);
                            core.timer_fired(now, token);
                        }
                    }
                }
            }
            for output in drain(&mut core) {
                match output {
                    HostCall::SetTimer { token, after_ms: after } => timers.push((now + after, token)),
                    HostCall::ServeFromEdge(id) => core.session_playing(now, id),
                    HostCall::Send(to, text) => {
                        let m: Value = serde_json::from_str(&text).unwrap();
                        let peer = m["peer_id"].as_u64().unwrap() as u32;
                        let srflx = "candidate:1 1 udp 1 198.51.100.9 9 typ srflx";
                        let reply = match m["command"].as_str().unwrap_or("") {
                            "request_offer_p2p" if rng.random_bool(0.9) => json!({"command": "offer_p2p", "id": to, "peer_id": peer, "sdp": {"type": "offer", "sdp": format!("v=0\r\na={srflx}\r\n")}}),
                            "offer" if peer != 0 && rng.random_bool(0.9) => json!({"command": "answer", "id": to, "peer_id": peer, "sdp": {"type": "answer", "sdp": format!("v=0\r\na={srflx}\r\n")}, "link_reports": true}),
                            "answer_p2p" => {
                                let state = if rng.random_bool(0.85) { "connected" } else { "failed" };
                                inbox.push((peer, json!({"command": "p2p_link_state", "id": peer, "peer_id": to, "state": state}).to_string()));
                                continue;
                            }
                            "stop" => {
                                inbox.push((to, json!({"command": "request_offer"}).to_string()));
                                continue;
                            }
                            _ => continue,
                        };
                        inbox.push((to, reply.to_string()));
                    }
                    _ => {}
                }
            }
            // A player told to stop asks again (the host calls the hook, not a message).
            inbox.retain(|(from, m)| {
                if m.contains("request_offer") && !m.contains("p2p") {
                    if live.contains(from) && core.offer_requested(now, *from) == OfferDecision::ServeFromEdge {
                        core.session_playing(now, *from);
                    }
                    return false;
                }
                true
            });
            core.check_invariants().unwrap_or_else(|e| panic!("seed {seed}, depth {depth}, step {step}: {e}"));
            for &id in &live {
                let (mut hops, mut at) = (0, id);
                while let Some(up) = core.delivery(at).map(|d| d.upstream).filter(|&u| u != 0) {
                    (hops, at) = (hops + 1, up);
                    assert!(hops <= depth, "seed {seed}: {id} is {hops} hops from the edge (bound {depth})");
                }
                deepest = deepest.max(hops);
            }
        }
        eprintln!("seed {seed}, depth {depth}, {pairing}: deepest {deepest}");
        assert!(deepest >= 1, "seed {seed} ({pairing}): P2P happened at all");
        deepest_of_all = deepest_of_all.max(deepest);
    }
    assert!(deepest_of_all >= 2, "trees grew past one level somewhere (deepest {deepest_of_all})");
}

/// Every timer the outputs arm, fired at `now` (in the order armed).
fn fire_timers(core: &mut P2pCore, now: u64, outputs: &[HostCall]) {
    for token in outputs.iter().filter_map(|o| if let HostCall::SetTimer { token, .. } = o { Some(*token) } else { None }) {
        core.timer_fired(now, token);
    }
}

/// A relaying client that misses an offer deadline is retired like a host: the viewers moved to
/// it and not yet asked are given up at once (they asked a retired relay to offer before).
#[test]
fn a_relaying_client_that_misses_an_offer_deadline_gives_up_the_viewers_moving_to_it() {
    let xml = "<P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>3</MaxClientPeersPerHostPeer><MaxDepth>2</MaxDepth><PairNewViewers>any</PairNewViewers><MoveAfterMs>1000</MoveAfterMs></P2P>";
    let mut core = P2pCore::new(P2pConfig::parse(xml).unwrap());
    let phone = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36";
    let open_phone = |core: &mut P2pCore, id| {
        core.session_opened(0, Arrival { id, kind: SessionKind::Play, stream: "default/app/s", app: "app", stream_name: "s", user_agent: phone, query: "", remote: "198.51.100.1:40000" });
    };
    open(&mut core, 1);
    assert_eq!(core.offer_requested(0, 1), OfferDecision::ServeFromEdge);
    core.session_playing(0, 1);
    drain(&mut core);
    // 2, 3 and 8 fill host 1; phones 4 and 5 play from the edge and wait to be moved.
    for id in [2, 3, 8] {
        open(&mut core, id);
        assert_eq!(core.offer_requested(100, id), OfferDecision::Handled);
        drain(&mut core);
    }
    for id in [4, 5] {
        open_phone(&mut core, id);
        assert_eq!(core.offer_requested(200, id), OfferDecision::ServeFromEdge, "host 1 is full");
        core.session_playing(200, id);
        let out = drain(&mut core);
        fire_timers(&mut core, 1300, &out);
        drain(&mut core);
    }
    // 2's link plays: it relays further; phone 6 joins it and proves it; 4 and 5 are moved to it.
    exchange(&mut core, 1400, 1, 2);
    open_phone(&mut core, 6);
    assert_eq!(core.offer_requested(1500, 6), OfferDecision::Handled);
    assert_eq!(core.role(6), Some(&Role::Client { host: 2, stage: Stage::AwaitingOffer }));
    exchange(&mut core, 1600, 2, 6);
    for id in [4, 5] {
        assert_eq!(core.role(id), Some(&Role::Client { host: 2, stage: Stage::Moving }), "{id} is moved to relay 2");
    }
    // 4 asks; relay 2 never offers.
    assert_eq!(core.offer_requested(1700, 4), OfferDecision::Handled);
    let out = drain(&mut core);
    fire_timers(&mut core, 60_000, &out);
    drain(&mut core);
    assert_eq!(core.role(5), Some(&Role::Viewer), "5 is not left moving to a retired relay");
    assert_eq!(core.offer_requested(60_100, 5), OfferDecision::ServeFromEdge, "nor is 2 asked to offer for it");
    core.check_invariants().unwrap();
}

/// `host` offers to `client`, which answers.
fn exchange(core: &mut P2pCore, now: u64, host: u32, client: u32) {
    let offer = json!({"command": "offer_p2p", "id": host, "peer_id": client, "sdp": {"type": "offer", "sdp": "v=0"}});
    assert_eq!(core.message_received(now, host, &offer.to_string()), MessageVerdict::Handled);
    let answer = json!({"command": "answer", "id": client, "peer_id": host, "sdp": {"type": "answer", "sdp": "v=0"}});
    assert_eq!(core.message_received(now, client, &answer.to_string()), MessageVerdict::Handled);
    drain(core);
}
