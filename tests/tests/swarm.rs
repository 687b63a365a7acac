//! Small swarms under `cargo test`: the real P2P plugin (the cdylib through `plugin-api`) under
//! churn on the virtual clock of `tests::swarm`, with the invariants asserted over whole runs.

use plugin_api::PluginLibrary;
use plugin_p2p::reparent::MAX_MOVES_PER_VIEWER;
use tests::swarm::{NetworkModel, Summary, Swarm, SwarmConfig};

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

#[test]
fn spreading_the_audience_over_edges_keeps_every_invariant_on_each_edge_and_offload_is_measured_against_one_pool() {
    let library = library();
    let mut swarm = Swarm::new(SwarmConfig { edges: 4, ..small(3) }, &library).expect("the swarm starts");
    let cluster = swarm.run();
    let edges = swarm.edge_summaries();
    eprintln!("{cluster:#?}");
    assert_eq!(edges.len(), 4);
    assert_nobody_was_failed(&cluster);
    for (i, edge) in edges.iter().enumerate() {
        eprintln!("edge {i}: {:.1} % offload, {:.1} % of its own optimum", 100.0 * edge.offload, 100.0 * edge.of_unrestricted);
        assert_nobody_was_failed(edge);
        // The load balancer spreads arrivals evenly, and P2P works within every edge.
        let share = edge.arrivals as f64 / cluster.arrivals as f64;
        assert!((0.2..0.3).contains(&share), "edge {i} got {:.1} % of the arrivals", 100.0 * share);
        assert!(edge.offload > 0.2, "edge {i}: offload {:.3}", edge.offload);
    }
    // The cluster's offload is over the cluster-wide optimum, one pool per stream and browser kind
    // over every edge, which per-edge pools cannot reach (100 viewers an edge).
    assert!(cluster.offload > 0.2, "offload {:.3}", cluster.offload);
    assert!(
        cluster.optimum_unrestricted > cluster.optimum_unrestricted_edge_pools,
        "cluster-wide optimum {:.3}, per-edge pools {:.3}",
        cluster.optimum_unrestricted,
        cluster.optimum_unrestricted_edge_pools
    );
}

#[test]
fn one_edge_is_the_whole_cluster_and_a_seed_replays_the_same_run() {
    let library = library();
    let run = |config: SwarmConfig| {
        let mut swarm = Swarm::new(config, &library).expect("the swarm starts");
        swarm.run();
        swarm
    };
    let one = run(small(1));
    assert_eq!(one.edge_samples(0), one.samples(), "with one edge, the edge is the cluster");
    assert!(one.samples().iter().all(|s| s.optimum_edge_pools == s.optimum && s.optimum_unrestricted_edge_pools == s.optimum_unrestricted));
    assert_eq!(run(SwarmConfig { edges: 1, ..small(1) }).samples(), one.samples(), "the same seed, the same run");
    let four = run(SwarmConfig { edges: 4, ..small(1) });
    assert_eq!(run(SwarmConfig { edges: 4, ..small(1) }).samples(), four.samples(), "the same seed, the same run over 4 edges");
    assert_ne!(four.samples(), one.samples());
}

/// Viewers behind home routers (`NetworkModel`'s defaults: a fifth join a home with a viewer in
/// it, a tenth of routers symmetric, half the players OvenPlayer without STUN): with the plugin's
/// default pairing nobody goes a second without a picture when joining or when its host leaves,
/// and what the plugin reports as P2P is what plays; OME's rule (`any`) keeps joiners waiting on
/// links that never form.
#[test]
fn behind_home_routers_nobody_waits_a_second_for_a_picture_and_only_links_that_play_count() {
    let homes = |pairing: &str| SwarmConfig { networks: Some(NetworkModel::default()), pair_new_viewers: pairing.into(), ..small(13) };
    let proven = run(homes("proven"));
    assert_nobody_was_failed(&proven);
    assert!(proven.unfed_ms.2 <= 1000, "longest without a picture (not a move): {} ms", proven.unfed_ms.2);
    assert!(proven.offload > 0.0 && proven.local_pairs < 1.0, "P2P across homes happens: offload {:.3}, within homes {:.3}", proven.offload, proven.local_pairs);
    let any = run(homes("any"));
    assert_nobody_was_failed(&any);
    assert!(any.unfed_ms.2 > 1000, "OME's rule: a joiner waits on a link that fails ({} ms)", any.unfed_ms.2);
}
