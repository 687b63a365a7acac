//! The unmodified OvenPlayer from npm (0.10.38 and 0.10.54) and our own page, in real headless
//! Chromium, against the real host, inside a private network namespace
//! ([`in_network_namespace`], as `../shared/TESTING.md` describes): Chromium needs a non-loopback
//! address to gather ICE candidates, and nothing leaves the machine.
//!
//! Each test runs one scenario of `tests/browser/scenario.mjs` (playwright-core drives
//! `/usr/bin/chromium`) and fails with the scenario's reason and the host's log. Needs Chromium,
//! Node.js, `ip` and `unshare` (root, or unprivileged user namespaces), and `nft` for the
//! firewalled scenario; `.ci/run` installs them.
//! The node packages are installed from the committed lock file on first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use tests::harness::{
    build_artifacts, config_xml_with_ice, ensure_node_packages, in_firewalled_network_namespace, in_network_namespace,
    library, p2p_xml, run_browser_script, write_config,
};

/// Browser scenarios are heavy (a host and up to eight Chromium pages on two cores): one at a
/// time within this test binary (nextest runs them one at a time too, see `.config/nextest.toml`).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The signalling port inside the namespace (each scenario has its own namespace: no clashes).
const PORT: u16 = 3333;
/// ICE candidates: every interface (the veth address), a small port range as in OME.
const ICE: &str = "*:10000-10019/udp";
/// The firewalled scenario's ICE ports: `conf/Server.xml`'s five, fewer than its eight viewers.
const FIREWALLED_ICE_PORTS: &str = "10000-10004";

/// A firewall like a real deployment's (`../shared/TESTING.md`): UDP passes the namespace's input
/// hook (loopback and veth alike) only when one end uses `ports`; any other UDP is dropped.
/// One statement a line: Debian's nft 1.0.6 refuses TESTING.md's one-line form (`} }` needs a
/// newline or `;` between the braces).
fn firewall_opening_only(ports: &str) -> String {
    format!(
        "table inet fw {{
  chain input {{
    type filter hook input priority 0; policy accept;
    udp dport {ports} accept
    udp sport {ports} accept
    meta l4proto udp drop
  }}
}}"
    )
}

/// Waits for this binary's other browser tests ([`ONE_AT_A_TIME`]), checks that Chromium and
/// `unshare` are there, builds the host and installs the node packages. Hold the guard.
fn prepare() -> MutexGuard<'static, ()> {
    let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for tool in ["/usr/bin/chromium", "/usr/bin/unshare"] {
        assert!(Path::new(tool).exists(), "{tool} is missing: apt-get install -y chromium util-linux (or run .ci/run)");
    }
    build_artifacts();
    ensure_node_packages();
    serial
}

/// Asserts that `nft` is there (for the firewalled namespaces).
fn assert_nft_exists() {
    assert!(Path::new("/usr/sbin/nft").exists(), "/usr/sbin/nft is missing: apt-get install -y nftables (or run .ci/run)");
}

/// `node` told where the host's signalling is (`HOST_PORT`: [`PORT`]).
fn node_with_host_port(mut node: Command) -> Command {
    node.env("HOST_PORT", PORT.to_string());
    node
}

/// A namespace running `node`, behind `firewall` (an nftables ruleset) if given.
fn node_in_namespace(firewall: Option<&str>) -> Command {
    match firewall {
        Some(ruleset) => in_firewalled_network_namespace("node", ruleset),
        None => in_network_namespace("node"),
    }
}

/// Runs `scenario` with `extra` config (plugins, modules); panics with its output if it fails.
fn run_scenario(scenario: &str, extra: &str) {
    run_scenario_in(scenario, ICE, extra, None);
}

/// [`run_scenario`] with ICE candidates `ice`, and `firewall` (an nftables ruleset) loaded in the
/// namespace before anything starts.
fn run_scenario_in(scenario: &str, ice: &str, extra: &str, firewall: Option<&str>) {
    run_scenario_with_config(scenario, &config_xml_with_ice(PORT, ice, extra), ice, firewall);
}

/// [`run_scenario_in`] with the whole config given (`xml`, whose ICE candidates are `ice`).
fn run_scenario_with_config(scenario: &str, xml: &str, ice: &str, firewall: Option<&str>) {
    let _serial = prepare();
    if firewall.is_some() {
        assert_nft_exists();
    }
    let mut node = node_with_host_port(node_in_namespace(firewall));
    node.env("ICE_PORTS", ice.rsplit_once(':').map_or(ice, |(_, ports)| ports).trim_end_matches("/udp"));
    run_browser_script(node, "scenario.mjs", &[scenario], &write_config(xml), &format!("scenario {scenario}: passed"));
}

#[test]
fn ovenplayer_0_10_54_and_0_10_38_and_our_page_play_from_the_edge() {
    run_scenario("edge-play", "");
}

#[test]
fn ovenplayer_0_10_38_viewers_relay_to_each_other_and_fall_back_to_the_edge() {
    run_scenario("p2p-relay", &p2p_xml(2, 4000));
}

#[test]
fn a_client_of_an_ovenplayer_0_10_54_host_is_rescued_by_the_offer_deadline() {
    run_scenario("p2p-rescue", &p2p_xml(2, 4000));
}

/// The P2P plugin with `settings` (children of `<P2P>`) and nothing else set: every other setting,
/// the offer deadline's included, at the plugin's defaults (unlike [`p2p_xml`], which fixes
/// `OfferTimeoutMs`).
fn p2p_xml_with(settings: &str) -> String {
    format!(
        "<Plugins><Plugin><Path>{}</Path></Plugin></Plugins>\n<Modules><P2P><Enable>true</Enable>{settings}</P2P></Modules>",
        library("plugin_p2p").display()
    )
}

/// Re-parenting, k = 1: C (Linux Chrome: may not host) plays from the edge while host A is full
/// with B; when B leaves, C is told `stop {peer_id: 0}`, asks again and plays from A. The scenario
/// logs the playback gap (`MOVE_GAP_MS`). `MoveAfterMs` is 2000 (default 5000) to keep it short;
/// the scenario reads it from the config.
#[test]
fn an_ovenplayer_0_10_38_viewer_on_the_edge_is_moved_into_a_host_when_a_slot_opens() {
    run_scenario("p2p-move", &p2p_xml_with("<MaxClientPeersPerHostPeer>1</MaxClientPeersPerHostPeer><MoveAfterMs>2000</MoveAfterMs><PairNewViewers>any</PairNewViewers>"));
}

/// The offer deadline at its defaults (3 x the p99 offer latency, within 1000-4000 ms): once a
/// 0.10.38 host has offered to ten clients, a client of a 0.10.54 host (which never offers) plays
/// from the edge within 2 s of the host being asked, and that host is never asked again.
#[test]
fn once_offers_are_measured_a_client_of_an_ovenplayer_0_10_54_host_plays_from_the_edge_within_2_s() {
    run_scenario("p2p-fast-rescue", &p2p_xml_with("<PairNewViewers>any</PairNewViewers>"));
}

/// Eight viewers at once (our page and OvenPlayer 0.10.54), edge only, with five ICE ports and a
/// firewall that drops every other UDP port: a viewer offered a port outside the range never
/// connects, so all eight must share the five ports (and no candidate may name another port).
#[test]
fn eight_viewers_behind_a_firewall_that_opens_only_the_configured_ports_all_play() {
    let ice = format!("*:{FIREWALLED_ICE_PORTS}/udp");
    run_scenario_in("firewalled-edge", &ice, "", Some(&firewall_opening_only(FIREWALLED_ICE_PORTS)));
}

/// The host's own page (`host/assets/player.html`) in both P2P roles, k = 2: the first tab (a
/// desktop Windows Chrome) relays to the two others (Linux Chrome: clients only), whose pages say
/// they play from it; when it closes, both play from the edge again without a click, within 3 s
/// (the scenario logs `BACK_TO_EDGE_MS`).
#[test]
fn three_tabs_of_the_hosts_page_relay_two_from_the_first_and_return_to_the_edge_when_it_closes() {
    run_scenario("own-p2p-relay", &p2p_xml(2, 4000));
}

/// The API's access token in OME's `user:password` form (`<Managers>` is a child of `<Server>`):
/// the P2P page then answers HTTP Basic credentials whose decoded text is the token, from any
/// address.
const API_ACCESS_TOKEN: &str = "<Managers><API><AccessToken>user:secret</AccessToken></API></Managers>";

/// The live P2P page (`/p2p`, pushed by Server-Sent Events), k = 2, behind the access token and
/// opened from the namespace's address (not loopback): without credentials or with wrong ones it
/// answers 401; with the token as HTTP Basic credentials it shows OvenPlayer 0.10.38 viewer A
/// under the edge relaying to B and C (connected), then, once A's page closes, B and C under the
/// edge and A gone, without a reload. The scenario logs how long that took (`TREE_UPDATE_MS`) and
/// until the session count above the tree dropped to 2 (`SESSION_COUNT_MS`), and saves both
/// screenshots (`tests/results/p2p-tree.png`, `tests/results/p2p-tree-after.png`).
#[test]
fn the_live_p2p_page_shows_one_host_with_two_clients_then_both_on_the_edge_when_the_host_leaves() {
    run_scenario("p2p-tree", &format!("{}\n{API_ACCESS_TOKEN}", p2p_xml(2, 4000)));
}

/// The application that takes publishers in the publishing scenarios: `live`, token [`PUBLISH_TOKEN`].
const PUBLISH_TOKEN: &str = "s3cret";

/// The harness's config (application `app` with the built-in stream, and `extra`) with a second
/// application, `live`, that takes publishers presenting [`PUBLISH_TOKEN`].
fn config_with_live_application(extra: &str) -> String {
    config_xml_with_ice(PORT, ICE, extra).replace(
        "</Applications>",
        &format!("<Application><Name>live</Name><Publish><Token>{PUBLISH_TOKEN}</Token></Publish></Application></Applications>"),
    )
}

/// Runs a publishing `scenario` with [`config_with_live_application`].
fn run_publish_scenario(scenario: &str, extra: &str) {
    run_scenario_with_config(scenario, &config_with_live_application(extra), ICE, None);
}

/// OvenLiveKit 1.5.8 publishes Chromium's fake camera and microphone over OME's WebSocket
/// signalling (`?direction=send&token=`): a wrong token gets its error callback with the host's
/// 403 message, none the 401 one; with the token OvenPlayer 0.10.54 plays `live/cam`, and is told
/// the stream ended when the publisher's page closes.
#[test]
fn ovenlivekit_publishes_over_omes_signalling_and_ovenplayer_plays_it() {
    run_publish_scenario("olk-publish", "");
}

/// OvenLiveKit 1.5.8 in WHIP mode (`?direction=whip`, `Authorization: Bearer` from its
/// `httpHeaders`): 201 with a Location, OvenPlayer 0.10.54 plays the stream; a second publisher of
/// the name gets `Failed to fetch 409` (plain POSTs: 401 without the token, 403 with a wrong one);
/// `stopStreaming()` DELETEs the resource, the viewer is told the stream ended and the name is
/// free again; a publisher whose page closes without a DELETE ends its stream too, once the host
/// notices (the scenario logs `WHIP_GONE_MS`).
#[test]
fn ovenlivekit_publishes_over_whip_and_a_second_publisher_of_the_name_gets_409() {
    run_publish_scenario("olk-whip", "");
}

/// Join time on a stream OvenLiveKit publishes (Chrome's encoder sends keyframes only when asked):
/// a viewer joining 15 s after the last keyframe (the cache has aged out) makes the host send the
/// publisher a PLI, and still plays; one joining right after starts from the keyframe cache. The
/// scenario logs both (`JOIN_MS`, `JOIN_MS_CACHE`: request_offer -> first frame presented).
#[test]
fn a_viewer_joining_a_published_stream_long_after_its_last_keyframe_gets_one_by_pli() {
    run_publish_scenario("olk-join", "");
}

/// P2P on a stream OvenLiveKit publishes, k = 2: OvenPlayer 0.10.38 viewer A (desktop Windows
/// Chrome) relays `live/p2p` to B and C (Linux Chrome), whom the edge sends nothing; when A's page
/// closes both play from the edge again. The publisher is never asked to relay.
#[test]
fn ovenplayer_0_10_38_viewers_of_an_ovenlivekit_stream_relay_to_each_other_and_fall_back_to_the_edge() {
    run_publish_scenario("olk-p2p", &p2p_xml(2, 4000));
}

/// The host's own page publishes over WHIP (plain fetch, `Authorization: Bearer` from its token
/// field): Chromium's fake camera from one tab (a wrong token first: the page says 403), two more
/// tabs of the page play it from the edge and are told it ended when the first stops (DELETE);
/// a tab without a camera publishes its canvas test pattern, which another tab plays.
#[test]
fn the_hosts_page_publishes_the_camera_over_whip_and_two_tabs_of_it_play_the_stream() {
    run_publish_scenario("page-publish", "");
}

/// H.264 from a browser: OvenLiveKit publishes with `preferredVideoFormat: 'H264'` over OME's
/// signalling, Chromium sends H.264, and OvenPlayer 0.10.54 and 0.10.38 and our page play it.
#[test]
fn ovenlivekit_publishes_h264_and_both_ovenplayer_releases_and_our_page_play_it() {
    run_publish_scenario("olk-h264", "");
}

// ---------------------------------------------------------------------------------------------
// The P2P player library (host/assets/player.js, issue 23), driven by tests/browser/player.mjs:
// a page of another origin embeds it from the host's `/player.js`, as README.md shows.

/// The API port of the player scenarios' host (its `/metrics`), inside the namespace.
const PLAYER_API_PORT: u16 = 8081;

/// The harness's config with `extra`, and the API (`/metrics`) on [`PLAYER_API_PORT`].
fn player_config(extra: &str) -> String {
    player_config_with_ice(ICE, extra)
}

/// [`player_config`] with the ICE candidates `ice`.
fn player_config_with_ice(ice: &str, extra: &str) -> String {
    config_xml_with_ice(PORT, ice, extra).replace(
        "</WebRTC></Publishers></Bind>",
        &format!("</WebRTC></Publishers><Managers><API><Port>{PLAYER_API_PORT}</Port></API></Managers></Bind>"),
    )
}

/// Runs `scenario` of `player.mjs` against a host with `xml` (behind `firewall`, an nftables
/// ruleset, if given) and `env`; panics with its output unless it passed. Returns its output.
fn run_player_scenario(scenario: &str, xml: &str, firewall: Option<&str>, env: &[(&str, &str)]) -> String {
    let _serial = prepare();
    let mut node = node_with_host_port(node_in_namespace(firewall));
    node.env("API_PORT", PLAYER_API_PORT.to_string()).envs(env.iter().copied());
    run_browser_script(node, "player.mjs", &[scenario], &write_config(xml), &format!("scenario {scenario}: passed"))
}

/// A site's page (another origin) imports `/player.js` from the host (text/javascript, CORS `*`)
/// and plays from the edge: `source` says the edge, state `playing`, frames decoded on its
/// connection, its answer to the edge carries no `link_reports`.
#[test]
fn the_player_library_embedded_in_another_site_plays_from_the_edge() {
    run_player_scenario("edge", &player_config(&p2p_xml(2, 4000)), None, &[]);
}

/// k = 2, three pages embedding the player with a desktop Windows User-Agent: the first plays
/// from the edge and relays to the two others (frames decoded on their connections to it, the
/// edge sends them nothing), its `relaying` event says 2, the host's `/metrics` counts 2 P2P
/// viewers, and every connection of the host page has the server's STUN, never relay-only.
#[test]
fn the_player_library_relays_to_two_pages_and_the_host_counts_two_p2p_viewers() {
    run_player_scenario("relay-two", &player_config(&p2p_xml(2, 4000)), None, &[]);
}

/// The host SIGKILLed and started again on the same port, three times: the page plays again
/// each time without a reload, within 3 s of the host serving again (`PLAYS_AGAIN_MS`).
#[test]
fn the_player_library_plays_again_within_3_s_of_the_host_being_killed_and_restarted() {
    run_player_scenario("restart", &player_config(&p2p_xml(2, 4000)), None, &[]);
}

/// A P2P link that cannot form (a firewall drops UDP off the ICE ports, so every path between
/// players): the client answers its host with `link_reports: true`, reports `failed` and plays
/// from the edge within 1 s of its report (`FALLBACK_MS`); the server counts one failed link.
#[test]
fn the_player_library_reports_a_failed_p2p_link_and_plays_from_the_edge_within_1_s() {
    let ports = ICE.rsplit_once(':').map_or(ICE, |(_, ports)| ports).trim_end_matches("/udp");
    run_player_scenario("failed-link", &player_config(&p2p_xml(2, 4000)), Some(&firewall_opening_only(ports)), &[]);
}

/// BENCHMARKS.md, "The P2P player (issue 23)": first frame from page creation (navigation start
/// -> first presented frame), the player library and OvenPlayer 0.10.54 alternately on one host,
/// 20 runs each (`FIRST_FRAME_MS`: median, p90). Measures; asserts nothing but that both play.
#[test]
#[ignore = "a benchmark: cargo test -p tests --test browser benchmark -- --ignored --nocapture"]
fn benchmark_first_frame_of_the_player_library_against_ovenplayer_0_10_54() {
    run_player_scenario("bench-first-frame", &player_config(""), None, &[("RUNS", "20")]);
}

/// BENCHMARKS.md, "The P2P player (issue 23)": CPU of the relaying Chromium (its process tree,
/// from /proc, 20 s windows) while its one tab relays to 0, 1 and 2 clients (`RELAY_CPU`).
#[test]
#[ignore = "a benchmark: cargo test -p tests --test browser benchmark -- --ignored --nocapture"]
fn benchmark_cpu_of_a_tab_relaying_to_0_1_and_2_clients() {
    run_player_scenario("bench-relay-cpu", &player_config(&p2p_xml(2, 4000)), None, &[("WINDOW_S", "20")]);
}

/// A firewall that drops every UDP packet (a network that lets only TCP out): ICE works only over
/// TCP. Loaded in the scenario's namespace.
const FIREWALL_DROPPING_ALL_UDP: &str = "table inet fw {
  chain input {
    type filter hook input priority 0; policy accept;
    meta l4proto udp drop
  }
}";

/// Issue 24, item 2: OvenPlayer 0.10.54 in Chromium, in a namespace whose firewall drops all UDP,
/// plays from the edge over ICE-TCP (`tests/browser/ice-tcp.mjs`): the offer carries the TCP
/// port's passive candidate beside the UDP ones, the player passes it to Chromium as it is,
/// Chromium's selected pair is TCP and frames are shown (the scenario logs `FIRST_FRAME_MS`).
#[test]
fn an_ovenplayer_0_10_54_viewer_whose_network_drops_all_udp_plays_over_ice_tcp() {
    let _serial = prepare();
    assert_nft_exists();
    let node = node_with_host_port(node_in_namespace(Some(FIREWALL_DROPPING_ALL_UDP)));
    run_browser_script(node, "ice-tcp.mjs", &[], &ice_tcp_config(), "scenario ice-tcp: passed");
}

/// Issue 24, item 2, with the project's player (`player.mjs ice-tcp`): the same firewall, the
/// same host; the player plays from the edge over a TCP pair.
#[test]
fn the_player_library_whose_network_drops_all_udp_plays_over_ice_tcp() {
    assert_nft_exists();
    let xml = player_config_with_ice(ICE_WITH_TCP, "");
    run_player_scenario("ice-tcp", &xml, Some(FIREWALL_DROPPING_ALL_UDP), &[]);
}

/// Five UDP ICE ports and one TCP one (the harness writes the first element's tags around it).
const ICE_WITH_TCP: &str = "*:10000-10004/udp</IceCandidate><IceCandidate>*:10005/tcp";

/// The host with five UDP ICE ports and one TCP one.
fn ice_tcp_config() -> PathBuf {
    write_config(&config_xml_with_ice(PORT, ICE_WITH_TCP, ""))
}

/// The host's IPv6 address in the IPv6 scenarios' namespace (on `v0`, beside its IPv4 one).
const HOST_ADDRESS_V6: &str = "2001:db8::1";

/// Gives `v0` [`HOST_ADDRESS_V6`] (without duplicate address detection, which would keep it
/// unusable for a second or two) and an IPv6 default route, then runs the program.
const IPV6_SETUP: &str = "ip -6 addr add 2001:db8::1/64 dev v0 nodad && ip -6 route add default dev v0 && exec \"$@\"";

/// A firewall that drops every IPv4 packet: only IPv6 works (signalling, page and ICE alike).
const FIREWALL_DROPPING_ALL_IPV4: &str = "table inet fw {
  chain input {
    type filter hook input priority 0; policy accept;
    meta nfproto ipv4 drop
  }
}";

/// The host as OME does IPv6: `*` and `[::]` ICE candidates on the same ports, signalling on
/// `<IP>*</IP><IP>::</IP>`.
fn dual_stack_config() -> PathBuf {
    let ice = "*:10000-10004/udp</IceCandidate><IceCandidate>[::]:10000-10004/udp";
    write_config(&config_xml_with_ice(PORT, ice, "").replace("<Name>test</Name>", "<Name>test</Name><IP>*</IP><IP>::</IP>"))
}

/// Issue 24, item 4: OvenPlayer 0.10.54 in Chromium plays from the edge over an IPv6-only path
/// (`tests/browser/ipv6.mjs`): the namespace drops all IPv4, the page and the signalling are at
/// `[2001:db8::1]`, the offer names both families' addresses, Chromium's selected pair is IPv6 to
/// the host's address and frames are shown.
#[test]
fn an_ovenplayer_0_10_54_viewer_plays_over_an_ipv6_only_path() {
    let _serial = prepare();
    assert_nft_exists();
    let mut node = node_with_host_port(in_firewalled_network_namespace("sh", FIREWALL_DROPPING_ALL_IPV4));
    node.args(["-c", IPV6_SETUP, "sh", "node"]).env("HOST_ADDR6", HOST_ADDRESS_V6);
    run_browser_script(node, "ipv6.mjs", &[], &dual_stack_config(), "scenario ipv6: passed");
}

/// BENCHMARKS.md, issue 24: the host's CPU per viewer over ICE-TCP against UDP
/// (`tests/browser/bench-transport-cpu.mjs`): Chromium viewers of OvenPlayer 0.10.54 with
/// `?transport=tcp`, then `?transport=udp`, on a fresh host each (`TRANSPORT_CPU`). Run it in
/// release (`cargo test --release -p tests --test browser benchmark_host_cpu -- --ignored --nocapture`).
/// Measures; asserts nothing but that every page plays over the transport it asked for.
#[test]
#[ignore = "a benchmark: cargo test --release -p tests --test browser benchmark_host_cpu -- --ignored --nocapture"]
fn benchmark_host_cpu_per_viewer_over_ice_tcp_against_udp() {
    let _serial = prepare();
    let node = node_with_host_port(node_in_namespace(None));
    run_browser_script(node, "bench-transport-cpu.mjs", &[], &ice_tcp_config(), "benchmark transport-cpu: done");
}
