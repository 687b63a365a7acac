//! Small swarms under `cargo test`: the real P2P plugin (the cdylib through `plugin-api`) under
//! churn on the virtual clock of `tests::swarm`, with the invariants asserted over whole runs.

use plugin_api::PluginLibrary;
use plugin_p2p::reparent::MAX_MOVES_PER_VIEWER;
use tests::swarm::{Summary, Swarm, SwarmConfig};

fn library() -> PluginLibrary {
    tests::harness::build_artifacts();
    PluginLibrary::open(&tests::harness::library("plugin_p2p")).expect("the P2P plugin loads")
}

/// 400 viewers watching ~2 minutes each, for 20 virtual minutes.
fn small(seed: u64) -> SwarmConfig {
    SwarmConfig { viewers: 400, streams: 2, median_watch_s: 60.0, duration_s: 1200, sample_s: 5, seed, ..SwarmConfig::default() }
}

fn run(config: SwarmConfig) -> Summary {
    let library = library();
    let summary = Swarm::new(config, &library).expect("the swarm starts").run();
    eprintln!("{summary:#?}");
    summary
}

fn assert_nobody_was_failed(s: &Summary) {
    assert_eq!(s.stranded_max, 0, "a client fed by a host that is gone");
    assert_eq!(s.unfed_past_deadline, 0, "a viewer unfed past every deadline (longest {} ms)", s.unfed_max_ms);
    assert_eq!(s.over_capacity_max, 0, "a host fed more than k clients");
    assert_eq!(s.errors, 0, "the plugin logged errors");
    assert!(s.max_moves_per_viewer <= u32::from(MAX_MOVES_PER_VIEWER), "a viewer was moved {} times", s.max_moves_per_viewer);
    // What the plugin reports to the host (metrics, the P2P page) is what the swarm sees, but for
    // pairs answered and still connecting at the sample.
    assert!(s.misreported <= 0.01, "{:.2} % of viewers misreported", 100.0 * s.misreported);
}

#[test]
fn under_churn_no_client_is_stranded_nobody_waits_past_the_deadlines_and_moves_are_bounded() {
    for seed in 1..=3 {
        let s = run(small(seed));
        assert_nobody_was_failed(&s);
        assert!(s.moves > 0, "seed {seed}: edge viewers were moved into hosts");
        assert!(s.of_optimum >= 0.9, "seed {seed}: {:.1} % of the optimum", 100.0 * s.of_optimum);
    }
}

#[test]
fn moving_edge_viewers_into_hosts_brings_the_swarm_closer_to_the_optimum() {
    let with = run(small(7));
    let without = run(SwarmConfig { move_edge_viewers: false, ..small(7) });
    assert_nobody_was_failed(&without);
    assert_eq!(without.moves, 0);
    assert!(with.of_optimum > without.of_optimum + 0.03, "moves: {:.3} of the optimum, none: {:.3}", with.of_optimum, without.of_optimum);
    assert!(with.passed_over < without.passed_over, "fewer viewers who could be clients left on the edge");
}

#[test]
fn a_client_gets_a_host_of_its_own_network_more_often_when_locality_is_on() {
    let sites = |prefer| SwarmConfig { sites: 6, prefer_same_network: prefer, ..small(11) };
    let on = run(sites(true));
    let off = run(sites(false));
    assert_nobody_was_failed(&on);
    assert!(on.local_pairs > off.local_pairs + 0.05, "local pairs: {:.3} with locality, {:.3} without", on.local_pairs, off.local_pairs);
}

#[test]
fn players_that_never_offer_are_given_up_on_and_the_rest_of_the_swarm_still_relays() {
    let s = run(SwarmConfig { relaying_share: 0.5, ..small(5) });
    assert_nobody_was_failed(&s);
    assert!(s.offload > 0.2, "offload {:.3} with half the hosts unable to relay", s.offload);
}
