//! P2P on real networks (issue 22): viewers behind two home routers, the host on its own public
//! address, OvenPlayer 0.10.38 in real Chromium (one per LAN machine, in its network namespace).
//! The topology is `tests::nat` (`../shared/TESTING.md`, "Real networks"); the browsers are
//! driven by `tests/browser/nat.mjs`, which reports what the pages played as JSON; this file
//! asserts on it.
//!
//! OvenPlayer 0.10.38's relay has no STUN: its candidates are LAN addresses or mDNS names. A
//! viewer behind the same router as a host peer plays from it; one behind the other router must
//! play from the edge at once, never be moved into that host, and not be paired into the same
//! failure again when its page reloads. `/metrics` counts as P2P only the viewers whose page
//! really plays from a peer.
//!
//! The project's player (`host/assets/player.js`, imported from the host by the pages of
//! `tests/browser/nat-player.mjs`) uses the host's STUN on its P2P connections: with it a pair
//! across the routers connects by hole punching (the `the_project_player` tests at the end; by
//! hand, `PLAYER_OPTIONS='{"iceServers": []}'` takes its STUN away and they fail).
//!
//! Needs root (named network namespaces), `ip`, `nft`, Chromium and Node.js (`.ci/run` installs
//! them); prints SKIPPED and returns when not root or without `ip`.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use tests::harness::{browser_dir, build_artifacts, ensure_node_packages, library};
use tests::nat::{unavailable, NamespacedHost, Topology, SRV_ADDRESS};

/// One topology at a time (nextest runs this binary in the browser group, one at a time).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const PORT: u16 = 3333;
const API_PORT: u16 = 8081;
/// An edge viewer becomes movable after this: short, so that moves would happen during the test.
const MOVE_AFTER_MS: u64 = 2000;
/// How soon a viewer must see its first frame, and the longest it may go without one.
const FIRST_FRAME_WITHIN_MS: u64 = 3000;
const LONGEST_GAP_MS: u64 = 3500;

/// The host: its public address announced, the built-in test stream, the P2P plugin with k = 1,
/// MoveAfterMs short and `settings` (more children of `<P2P>`). By hand, to compare:
/// `NAT_P2P_SETTINGS` adds children to its `<P2P>`, `NAT_P2P_PLUGIN` names another build of the
/// plugin's library.
fn host_xml(settings: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<Server version="8">
  <Name>nat</Name>
  <Bind>
    <Publishers><WebRTC>
      <Signalling><Port>{PORT}</Port></Signalling>
      <IceCandidates>
        <IceCandidate>*:10000-10004/udp</IceCandidate>
        <PublicAddress>{SRV_ADDRESS}</PublicAddress>
      </IceCandidates>
    </WebRTC></Publishers>
    <Managers><API><Port>{API_PORT}</Port></API></Managers>
  </Bind>
  <Applications><Application><Name>app</Name><Stream><Name>stream</Name><TestPattern/></Stream></Application></Applications>
  <Plugins><Plugin><Path>{plugin}</Path></Plugin></Plugins>
  <Modules><P2P>
    <Enable>true</Enable>
    <MaxClientPeersPerHostPeer>1</MaxClientPeersPerHostPeer>
    <MoveAfterMs>{MOVE_AFTER_MS}</MoveAfterMs>{settings}{extra}
  </P2P></Modules>
</Server>
"#,
        plugin = std::env::var("NAT_P2P_PLUGIN").map_or_else(|_| library("plugin_p2p"), PathBuf::from).display(),
        extra = std::env::var("NAT_P2P_SETTINGS").unwrap_or_default()
    )
}

/// What one run varies.
#[derive(Clone, Copy)]
struct Scenario {
    /// Chromium's mDNS host candidates (its default) or raw LAN addresses.
    mdns: bool,
    /// lan2 and lan1b say Linux Chrome (clients only: never hosts, may be moved), else every page
    /// is a desktop Windows Chrome (may host).
    clients_only: bool,
    /// More children of `<P2P>`.
    settings: &'static str,
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = if self.clients_only { "lan2 and lan1b clients only" } else { "every page may host" };
        write!(f, "mDNS {}, {who}, <P2P> settings {:?}", if self.mdns { "on" } else { "off" }, self.settings)
    }
}

/// OME's pairing rule: a new viewer gets any host with a free slot at once, so the cross-router
/// pair is tried and must be given up (the rule the pairing tests use, see `harness::p2p_xml`).
const ANY: &str = "<PairNewViewers>any</PairNewViewers>";
/// The plugin's defaults (new viewers only with proven hosts).
const DEFAULTS: &str = "";

/// Builds the topology, starts the host in `srv`, runs `nat.mjs` and returns its report and the
/// host's log; None when skipped.
fn run(scenario: Scenario) -> Option<(Value, String)> {
    let env = [
        ("MDNS", if scenario.mdns { "on" } else { "off" }),
        ("CLIENTS_ONLY", if scenario.clients_only { "1" } else { "0" }),
    ];
    run_script("nat.mjs", scenario.settings, &env, &["lan1", "lan1b", "lan2"])
}

/// Builds the topology, starts the host in `srv` with `<P2P>` `settings`, runs the browser script
/// `script` with `env` and a Chromium wrapper for each of `machines` (`CHROMIUM_LAN1`, ...), and
/// returns the JSON report it prints last and the host's log; None when skipped.
fn run_script(script: &str, settings: &str, env: &[(&str, &str)], machines: &[&str]) -> Option<(Value, String)> {
    if let Some(why) = unavailable() {
        println!("SKIPPED: the NAT topology needs named network namespaces: {why}");
        return None;
    }
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for tool in ["/usr/bin/chromium", "/usr/sbin/nft"] {
        assert!(std::path::Path::new(tool).exists(), "{tool} is missing: apt-get install -y chromium nftables (or run .ci/run)");
    }
    build_artifacts();
    ensure_node_packages();
    let topology = Topology::create().expect("building the NAT topology");
    // The plugin logs every decision at debug (`plugin_p2p`/`plugin` lines, with session ids and
    // addresses): kept for the report of a failure.
    let host = NamespacedHost::start(&topology, "srv", &host_xml(settings), "debug,webrtc=warn,rtc=warn,tungstenite=info,tokio_tungstenite=info")
        .expect("starting the host in srv");
    let mut command = Command::new("node");
    command
        .arg(browser_dir().join(script))
        .env("HOST_ADDR", SRV_ADDRESS)
        .env("HOST_PORT", PORT.to_string())
        .env("API_PORT", API_PORT.to_string())
        .env("SRV_NS", topology.ns("srv"))
        .env("MOVE_AFTER_MS", MOVE_AFTER_MS.to_string())
        .envs(env.iter().copied());
    for machine in machines {
        command.env(format!("CHROMIUM_{}", machine.to_uppercase()), topology.chromium_wrapper(machine).expect("writing the Chromium wrapper"));
    }
    let output = command.output().expect("running node (apt-get install -y nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    let log = host.log();
    let report: Value = match stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok()) {
        Some(report) => report,
        None => panic!("{script} printed no report ({}):\n{stdout}\n{stderr}\n--- the plugin's decisions ---\n{}", output.status, plugin_lines(&log)),
    };
    drop(host);
    drop(topology);
    Some((report, log))
}

/// The host's log lines about P2P decisions (the plugin's, at debug).
fn plugin_lines(log: &str) -> String {
    log.lines().filter(|l| l.contains("plugin")).collect::<Vec<_>>().join("\n")
}

fn ms(v: &Value) -> Option<u64> {
    v.as_f64().map(|f| f.max(0.0) as u64)
}

/// A browser script's own failure, if `report` says it had one: the first of its problems.
fn script_failure(report: &Value) -> Vec<String> {
    report["error"].as_str().map(|error| format!("the browser script failed: {error}")).into_iter().collect()
}

/// Checks the report against issue 22's expectations; every broken one is listed.
fn problems(report: &Value, either_way: bool) -> Vec<String> {
    let mut problems = script_failure(report);
    let mut check = |ok: bool, what: String| problems.extend((!ok).then_some(what));
    // Behind router 1, one page relays to the other: lan1 (the first) to lan1b, or, where both
    // may host and a move paired them (`either_way`), whichever was moved into the other.
    let (lan1, lan1b) = (&report["lan1"], &report["lan1b"]);
    let flipped = either_way && lan1["source_at_end"] != 0 && lan1["source_at_end"] == lan1b["session"];
    let (host, client) = if flipped { (lan1b, lan1) } else { (lan1, lan1b) };
    let (host_name, client_name) = if flipped { ("lan1b", "lan1") } else { ("lan1", "lan1b") };
    let host_id = host["session"].as_u64();
    check(host_id.is_some(), format!("{host_name} got an offer (a session)"));
    check(host["source_at_end"] == 0, format!("{host_name} plays from the edge at the end (source {})", host["source_at_end"]));
    check(host["offers"].as_array().is_some_and(|o| o.iter().all(|o| o["peer_id"] == 0)), format!("every offer {host_name} got came from the edge"));
    check(host_id.is_some() && client["source_at_end"].as_u64() == host_id, format!("{client_name} (same router) plays from {host_name} ({host_id:?}) at the end (source {})", client["source_at_end"]));
    check(client["frames_from_peers"].as_u64().unwrap_or(0) > 0, format!("{client_name} decoded frames from a peer connection"));
    check(client["p2p_mode"].as_array().and_then(|m| m.last()).is_some_and(|m| m["on"] == true), format!("{client_name}'s OvenPlayer says p2pMode true ({})", client["p2p_mode"]));

    for (name, reloaded) in [("lan2", false), ("lan2_reloaded", true)] {
        let v = &report[name];
        // Joining is the page's request_offer (what it does once OvenPlayer has loaded): from
        // there on, how soon it plays is the server's doing. Times in the report are from the
        // page's opening (or reload); `first_frame_after_request_ms` from its request_offer.
        let first = ms(&v["first_frame_after_request_ms"]);
        check(first.is_some_and(|f| f <= FIRST_FRAME_WITHIN_MS), format!("{name} presents its first frame within {FIRST_FRAME_WITHIN_MS} ms of joining (its request_offer): {first:?} ms"));
        let edge = ms(&v["first_edge_frame_ms"]).zip(ms(&v["request_offer_ms"])).map(|(f, asked)| f.saturating_sub(asked));
        check(edge.is_some_and(|f| f <= FIRST_FRAME_WITHIN_MS), format!("{name} decodes frames from the edge (peer_id 0) within {FIRST_FRAME_WITHIN_MS} ms of joining: {edge:?} ms"));
        let first = ms(&v["first_frame_ms"]);
        check(v["frames_from_peers"] == 0, format!("{name} decoded no frame over a peer connection ({})", v["frames_from_peers"]));
        check(v["source_at_end"] == 0, format!("{name} plays from the edge at the end (source {})", v["source_at_end"]));
        let gap = ms(&v["max_gap_ms"]);
        check(gap.is_some_and(|g| g <= LONGEST_GAP_MS), format!("{name} never goes {LONGEST_GAP_MS} ms without a frame once playing (longest gap {gap:?} ms over {} ms)", v["observed_ms"]));
        let stops = v["stops"].as_array().cloned().unwrap_or_default();
        check(!stops.iter().any(|s| s["peer_id"] == 0), format!("{name} is never moved (no stop {{peer_id: 0}}): stops {}", v["stops"]));
        let p2p_on_after_first = v["p2p_mode"].as_array().into_iter().flatten().filter(|m| m["on"] == true && first.is_some_and(|f| ms(&m["at_ms"]).unwrap_or(0) >= f)).count();
        check(p2p_on_after_first == 0, format!("{name}'s OvenPlayer never turns p2pMode on once playing ({})", v["p2p_mode"]));
        if reloaded {
            // Not paired into the failure again: the reloaded page is offered by the edge only.
            check(v["offers"].as_array().is_some_and(|o| !o.is_empty() && o.iter().all(|o| o["peer_id"] == 0)), format!("the reloaded lan2 is offered by the edge only: offers from {:?}", v["offers"].as_array().map(|o| o.iter().map(|o| o["peer_id"].clone()).collect::<Vec<_>>())));
            check(stops.is_empty(), format!("the reloaded lan2 is told no stop ({})", v["stops"]));
        }
    }

    let metrics = &report["metrics"];
    let playing_from_peers = report["playing_from_peers_at_metrics"].as_u64();
    check(playing_from_peers == Some(1), format!("exactly one page plays from a peer when /metrics is read ({})", report["sources_at_metrics"]));
    check(metrics["viewers_p2p"].as_u64().is_some() && metrics["viewers_p2p"].as_u64() == playing_from_peers, format!("/metrics viewers{{delivery=\"p2p\"}} {} equals the pages really playing from a peer {playing_from_peers:?}", metrics["viewers_p2p"]));
    check(metrics["viewers_edge"] == 2, format!("/metrics viewers{{delivery=\"edge\"}} is 2 (lan1, lan2): {}", metrics["viewers_edge"]));
    problems
}

/// The figures of each page, for the log.
fn figures(report: &Value) -> String {
    ["lan1", "lan2", "lan1b", "lan2_reloaded"]
        .iter()
        .map(|name| {
            let v = &report[*name];
            format!(
                "{name}: first frame {} ms after its request_offer, {} ms after the page opened (first from the edge at {} ms, from a peer at {} ms), longest gap {} ms, stops {}, offers from {}, source at end {}",
                v["first_frame_after_request_ms"],
                v["first_frame_ms"],
                v["first_edge_frame_ms"],
                v["first_peer_frame_ms"],
                v["max_gap_ms"],
                v["stops"],
                v["offers"].as_array().map(|o| o.iter().map(|o| o["peer_id"].to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                v["source_at_end"]
            )
        })
        .chain(["lan2", "lan1b"].map(|name| format!("candidates {name} was shown by host peers: {}", peer_candidates(&report[name]))))
        .chain([format!("/metrics: {}; pages playing from a peer: {}", report["metrics"]["p2p_lines"], report["playing_from_peers_at_metrics"])])
        .collect::<Vec<_>>()
        .join("\n")
}

/// The candidates a page got from host peers (in their offers and trickled), as `ADDRESS typ
/// TYPE`, once each.
fn peer_candidates(v: &Value) -> String {
    let offered = v["offers"].as_array().into_iter().flatten().filter(|o| o["peer_id"] != 0).flat_map(|o| o["candidates"].as_array().cloned().unwrap_or_default());
    let trickled = v["candidates_from_peers"].as_array().cloned().unwrap_or_default();
    let mut shown: Vec<String> = offered
        .chain(trickled)
        .filter_map(|c| {
            let fields: Vec<String> = c.as_str()?.split_whitespace().map(str::to_string).collect();
            let kind = fields.iter().position(|f| f == "typ").and_then(|i| fields.get(i + 1))?;
            Some(format!("{} typ {kind}", fields.get(4)?))
        })
        .collect();
    shown.sort();
    shown.dedup();
    if shown.is_empty() { "none".into() } else { shown.join(", ") }
}

fn assert_behaves(scenario: Scenario) {
    let Some((report, log)) = run(scenario) else { return };
    println!("NAT figures ({scenario}):\n{}", figures(&report));
    // With the defaults every desktop page may be moved into another (PairNewViewers proven).
    let either_way = !scenario.clients_only && scenario.settings == DEFAULTS;
    let problems = problems(&report, either_way);
    assert!(
        problems.is_empty(),
        "behind two home routers ({scenario}):\n- {}\n\n{}\n\nreport: {}\n\n--- the plugin's decisions (host log, debug) ---\n{}",
        problems.join("\n- "),
        figures(&report),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
        plugin_lines(&log)
    );
}

#[test]
fn behind_two_home_routers_a_client_plays_from_its_lan_host_and_a_cross_router_viewer_from_the_edge_at_once() {
    assert_behaves(Scenario { mdns: true, clients_only: false, settings: ANY });
}

#[test]
fn behind_two_home_routers_with_mdns_off_a_client_plays_from_its_lan_host_and_a_cross_router_viewer_from_the_edge_at_once() {
    assert_behaves(Scenario { mdns: false, clients_only: false, settings: ANY });
}

/// The plugin's defaults (`<PairNewViewers>proven`): lan1b, behind lan1's router, gets lan1 at
/// once (a LAN link); lan2, behind the other, plays from the edge and is never moved into lan1
/// (an OvenPlayer relay, which shows only LAN candidates). Failed with the plugin of 938e871,
/// where an audience whose every viewer may host never paired.
#[test]
fn behind_two_home_routers_with_the_default_settings_a_client_plays_from_its_lan_host_and_a_cross_router_viewer_from_the_edge() {
    assert_behaves(Scenario { mdns: true, clients_only: false, settings: DEFAULTS });
}

/// The defaults with client-only pages: lan1b plays from lan1, lan2 is never moved across the
/// routers. Failed with the plugin of 938e871: lan2 was moved into lan1, whose reach was unknown,
/// and went 1.5 s without a picture; lan1b was then never moved into lan1.
#[test]
fn behind_two_home_routers_with_the_default_settings_a_client_only_viewer_is_moved_into_its_lan_host_and_never_across_routers() {
    assert_behaves(Scenario { mdns: true, clients_only: true, settings: DEFAULTS });
}

// ---------------------------------------------------------------------------------------------
// The project's player (host/assets/player.js, issues 22 and 23): a cross-router pair connects
// P2P through the host's STUN. Driven by `tests/browser/nat-player.mjs`, which reports as JSON.

/// How long a moved viewer may go without a frame, from the last frame of the edge to the first
/// of its host peer.
const MOVE_GAP_MS: u64 = 1500;

/// Builds the topology, starts the host in `srv` with the plugin's defaults (k = 1, MoveAfterMs
/// short), runs `nat-player.mjs` and returns its report and the host's log; None when skipped.
/// `lan2_hosts`: lan2's page is a desktop Windows Chrome too (may host), else a client only.
fn run_player(lan2_hosts: bool) -> Option<(Value, String)> {
    run_script("nat-player.mjs", DEFAULTS, &[("LAN2_HOSTS", if lan2_hosts { "1" } else { "0" })], &["lan1", "lan2"])
}

/// A candidate type learnt through STUN: server-reflexive, or peer-reflexive (learnt from a
/// check that came through the other side's router).
fn reflexive(kind: &Value) -> bool {
    kind == "srflx" || kind == "prflx"
}

/// Which page relays to which: (host, client) names. lan2 is the client unless, both pages being
/// allowed to host, lan1 is the one playing from a peer.
fn player_roles(report: &Value) -> (&'static str, &'static str) {
    if report["lan2_hosts"] == true && report["lan1"]["plays_from_peer"] == true && report["lan2"]["plays_from_peer"] != true {
        ("lan2", "lan1")
    } else {
        ("lan1", "lan2")
    }
}

/// Checks the player report: the cross-router pair plays P2P through the host's STUN.
fn player_problems(report: &Value) -> Vec<String> {
    let mut problems = script_failure(report);
    let mut check = |ok: bool, what: String| problems.extend((!ok).then_some(what));
    let (host_name, client_name) = player_roles(report);
    let (host, client) = (&report[host_name], &report[client_name]);
    for name in ["lan1", "lan2"] {
        let v = &report[name];
        check(v["load_error"].is_null(), format!("{name}'s page imported player.js from the host ({})", v["load_error"]));
        check(v["socket_url"].as_str().is_some_and(|u| u.contains("p2p_stun=1")), format!("{name}'s player says it uses STUN (?p2p_stun=1): {}", v["socket_url"]));
        // The edge's offer announces the host's STUN, at the host's public address.
        let edge_offer = v["offers"].as_array().and_then(|o| o.iter().find(|o| o["peer_id"] == 0));
        let announced = edge_offer.map(|o| o["p2p_ice_servers"].to_string()).unwrap_or_default();
        check(announced.contains(&format!("stun:{SRV_ADDRESS}:")), format!("{name}'s edge offer announces the host's STUN (p2p_ice_servers {announced})"));
        // Nobody frozen.
        check(v["presented_in_last_second"] == true, format!("{name} presents frames at the end (state {}, source {})", v["state"], v["source"]));
        let gap = ms(&v["max_gap_ms"]);
        check(gap.is_some_and(|g| g <= LONGEST_GAP_MS), format!("{name} never goes {LONGEST_GAP_MS} ms without a frame once playing (longest gap {gap:?} ms over {} ms)", v["observed_ms"]));
        let first = ms(&v["first_frame_after_request_ms"]);
        check(first.is_some_and(|f| f <= FIRST_FRAME_WITHIN_MS), format!("{name} presents its first frame within {FIRST_FRAME_WITHIN_MS} ms of joining (its request_offer): {first:?} ms"));
        let edge = ms(&v["first_edge_frame_ms"]).zip(ms(&v["request_offer_ms"])).map(|(f, asked)| f.saturating_sub(asked));
        check(edge.is_some_and(|f| f <= FIRST_FRAME_WITHIN_MS), format!("{name} plays from the edge first, within {FIRST_FRAME_WITHIN_MS} ms of joining: {edge:?} ms"));
    }

    // The host page plays from the edge and says it relays to one.
    let host_id = host["session"].as_u64();
    check(host["source"]["from"] == "edge", format!("{host_name} plays from the edge at the end ({})", host["source"]));
    check(host["relaying_events"].as_array().and_then(|e| e.last()).is_some_and(|e| e["count"] == 1), format!("{host_name}'s player says it relays to 1 ({})", host["relaying_events"]));

    // The client decodes frames from the host over its peer connection, which uses the host's STUN.
    check(client["plays_from_peer"] == true, format!("{client_name} decodes frames over its peer connection at the end (source {}, current connection {})", client["source"], client["current_connection"]));
    check(host_id.is_some() && client["source"]["peerId"].as_u64() == host_id, format!("{client_name}'s player says its source is {host_name} ({host_id:?}): {}", client["source"]));
    let connection = &client["current_connection"];
    let ice_servers = connection["ice_servers"].to_string();
    check(ice_servers.contains(&format!("stun:{SRV_ADDRESS}:")), format!("{client_name}'s peer connection uses the host's STUN (iceServers {ice_servers})"));
    let selected = &connection["selected"];
    check(
        selected["state"] == "succeeded" && (reflexive(&selected["localType"]) || reflexive(&selected["remoteType"])),
        format!("{client_name}'s peer connection's selected pair is server- or peer-reflexive on a side: {selected}"),
    );
    check(
        client["link_reports"].as_array().is_some_and(|r| r.iter().any(|r| r["state"] == "connected" && r["peer_id"].as_u64() == host_id)),
        format!("{client_name}'s player reported its link connected ({})", client["link_reports"]),
    );
    // Moved from the edge into the host: the gap the move costs.
    let gap = ms(&client["move_gap_ms"]);
    check(gap.is_some_and(|g| g < MOVE_GAP_MS), format!("{client_name} goes under {MOVE_GAP_MS} ms without a frame when moved (stops {}): {gap:?} ms", client["stops"]));

    // The server counts it: a confirmed link, one P2P viewer (the page that plays from a peer).
    let metrics = &report["metrics"];
    check(metrics["links_confirmed"].as_u64().is_some_and(|n| n >= 1), format!("/metrics p2p_links_confirmed_total >= 1: {}", metrics["links_confirmed"]));
    check(report["playing_from_peers_at_metrics"] == 1, format!("exactly one page plays from a peer when /metrics is read ({})", report["from_peer_at_metrics"]));
    check(metrics["viewers_p2p"] == 1, format!("/metrics viewers{{delivery=\"p2p\"}} is 1: {}", metrics["viewers_p2p"]));
    check(metrics["viewers_edge"] == 1, format!("/metrics viewers{{delivery=\"edge\"}} is 1: {}", metrics["viewers_edge"]));
    problems
}

/// The figures of the run, for the log: time to P2P, the selected pair, the move's gap.
fn player_figures(report: &Value) -> String {
    let (host_name, client_name) = player_roles(report);
    let client = &report[client_name];
    let mut lines: Vec<String> = ["lan1", "lan2"]
        .iter()
        .map(|name| {
            let v = &report[*name];
            format!(
                "{name} ({}): first frame {} ms after its request_offer (from the edge at {} ms, from a peer at {} ms after the page opened), longest gap {} ms, stops {}, offers from {}, source at end {}, relaying {}",
                v["user_agent"],
                v["first_frame_after_request_ms"],
                v["first_edge_frame_ms"],
                v["first_peer_frame_ms"],
                v["max_gap_ms"],
                v["stops"],
                v["offers"].as_array().map(|o| o.iter().map(|o| o["peer_id"].to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                v["source"],
                v["relaying_events"].as_array().and_then(|e| e.last()).map_or("0".into(), |e| e["count"].to_string()),
            )
        })
        .collect();
    lines.push(format!(
        "{client_name} from {host_name}: moved at {} ms; first frame decoded from the peer {} ms after the move, {} ms after its first request_offer ({} ms after the page opened); gap during the move {} ms",
        client["move_at_ms"], client["first_peer_frame_after_move_ms"], client["first_peer_frame_after_request_ms"], client["first_peer_frame_ms"], client["move_gap_ms"]
    ));
    let selected = &client["current_connection"]["selected"];
    lines.push(format!("{client_name}'s selected pair: local {} <-> remote {} ({}, nominated {})", selected["local"], selected["remote"], selected["state"], selected["nominated"]));
    lines.push(format!("/metrics: {}", report["metrics"]["p2p_lines"]));
    lines.join("\n")
}

/// ICE as every peer connection of both pages saw it (states, candidates, pairs): the finding
/// when the link does not form.
fn player_ice(report: &Value) -> String {
    let mut out = Vec::new();
    for name in ["lan1", "lan2"] {
        for c in report[name]["connections"].as_array().into_iter().flatten().filter(|c| c["peer"] != 0 || c["role"] == "relay") {
            out.push(format!(
                "{name} {} connection (peer {}), iceServers {}: ice {} | connection {} | gathered {} | remote {} | pairs {}",
                c["role"], c["peer"], c["ice_servers"], c["ice"], c["states"], c["gathered"], c["remote_candidates"], c["pairs"]
            ));
        }
    }
    out.join("\n")
}

fn assert_player_connects(lan2_hosts: bool) {
    let Some((report, log)) = run_player(lan2_hosts) else { return };
    println!("NAT figures (player.js, lan2 {}):\n{}", if lan2_hosts { "may host" } else { "client only" }, player_figures(&report));
    let problems = player_problems(&report);
    assert!(
        problems.is_empty(),
        "player.js behind two home routers:\n- {}\n\n{}\n\n--- ICE ---\n{}\n\nreport: {}\n\n--- the plugin's decisions (host log, debug) ---\n{}",
        problems.join("\n- "),
        player_figures(&report),
        player_ice(&report),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
        plugin_lines(&log)
    );
}

/// The plugin's defaults, k = 1, MoveAfterMs 2 s: lan1 (may host) plays from the edge; lan2,
/// behind the other router and a client only, plays from the edge at once and is moved into
/// lan1 (its player says it uses STUN). Both P2P connections use the host's STUN, so the link
/// forms by hole punching through the two port-restricted routers: lan2 decodes from lan1 over a
/// reflexive pair, its link is confirmed, /metrics counts it, the move costs under 1.5 s.
#[test]
fn behind_two_home_routers_the_project_player_connects_a_cross_router_pair_through_the_host_stun() {
    assert_player_connects(false);
}

/// The same with both pages allowed to host: whichever is moved into the other plays from it
/// through the host's STUN.
#[test]
fn behind_two_home_routers_the_project_player_connects_a_cross_router_pair_either_way_when_both_may_host() {
    assert_player_connects(true);
}
