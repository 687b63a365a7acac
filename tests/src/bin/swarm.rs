//! Swarm simulator: the real P2P plugin under churn on a virtual clock, against the optimum (the
//! driver is `tests::swarm`; this tool sets it up, runs it and prints one table row).
//!
//!   swarm --viewers 10000 --csv swarm-10k.csv
//!   swarm --viewers 10000 --sites 2000 --prefer-same-network false   # locality off, for comparison
//!   swarm --viewers 10000 --edges 8   # the audience over 8 edges, each its own plugin and pools
//!
//! The User-Agent mix is `tests::swarm::UA_MIX`.

use anyhow::Context;
use clap::Parser;
use plugin_api::PluginLibrary;
use std::io::Write;
use std::time::Instant;
use tests::swarm::{NetworkModel, Sample, Summary, Swarm, SwarmConfig};

/// Swarm simulation of the P2P plugin under churn, on a virtual clock.
#[derive(Parser)]
#[command(verbatim_doc_comment)]
struct Cli {
    /// Target concurrent viewers (arrival rate = viewers / mean watch time).
    #[arg(long, default_value_t = 10_000)]
    viewers: usize,
    /// Streams the viewers spread over (Zipf-like: stream i gets weight 1/(i+1)).
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// MaxClientPeersPerHostPeer.
    #[arg(long, default_value_t = 2)]
    k: u16,
    /// The plugin's `<Matching>`: balanced (default) or greedy (OME's rule).
    #[arg(long, default_value = "balanced")]
    matching: String,
    /// The plugin's `<PairNewViewers>`: any (OME's rule: any host at once; the swarm's figures
    /// so far) or proven (the plugin's default: only hosts that have relayed, the edge first).
    #[arg(long, default_value = "any")]
    pair_new_viewers: String,
    /// The plugin's `<MaxDepth>`: 1 (OME's rule: clients never relay) or more.
    #[arg(long, default_value_t = 1)]
    max_depth: u8,
    /// Median watch time, seconds (log-normal, sigma 1: heavy-tailed, mean = median * 1.65).
    #[arg(long, default_value_t = 300.0)]
    median_watch_s: f64,
    /// Exponential watch times with the same mean instead of log-normal.
    #[arg(long)]
    exponential: bool,
    /// Host deaths per host peer per hour (crash: its socket drops, on top of normal departures).
    #[arg(long, default_value_t = 2.0)]
    host_deaths_per_hour: f64,
    /// Share of host-eligible players whose relay works (OvenPlayer <= 0.10.38); the rest never
    /// send `offer_p2p` (>= 0.10.39) and must be rescued by the offer deadline.
    #[arg(long, default_value_t = 0.9)]
    relaying_share: f64,
    /// Networks (one /24 each) the viewers come from, Zipf-like; 0 = everyone at one address.
    #[arg(long, default_value_t = 0)]
    sites: usize,
    /// The plugin's `<PreferSameNetwork>`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    prefer_same_network: bool,
    /// The plugin's `<MoveEdgeViewers>`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    move_edge_viewers: bool,
    /// The plugin's `<MoveAfterMs>`.
    #[arg(long, default_value_t = 5_000)]
    move_after_ms: u64,
    /// The plugin's `<MoveFormerClients>` (false: OME's once-a-client rule for good).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    move_former_clients: bool,
    /// Edges the audience is spread over (a load balancer sends each arriving viewer to one at
    /// random); each runs its own instance of the plugin, so its own pools. The optimum stays
    /// the cluster-wide one.
    #[arg(long, default_value_t = 1)]
    edges: usize,
    /// Viewers behind home routers (the network model; see tests/src/swarm.rs): without it every
    /// P2P link forms.
    #[arg(long)]
    networks: bool,
    /// With --networks: share of viewers joining a home that already has one (one public
    /// address and LAN).
    #[arg(long, default_value_t = 0.2)]
    same_home_share: f64,
    /// With --networks: share of homes behind a symmetric NAT (no hole punching).
    #[arg(long, default_value_t = 0.1)]
    symmetric_share: f64,
    /// With --networks: share of players with STUN on both connections that report their links
    /// (the project's player); the rest are OvenPlayer (no STUN on its relay).
    #[arg(long, default_value_t = 0.5)]
    stun_share: f64,
    /// Virtual duration, seconds.
    #[arg(long, default_value_t = 3600)]
    duration_s: u64,
    /// Sample interval of the time series, seconds.
    #[arg(long, default_value_t = 10)]
    sample_s: u64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the time series here.
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
    /// The plugin library (default: the one built beside this binary).
    #[arg(long)]
    plugin: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let path = cli.plugin.clone().unwrap_or_else(|| tests::harness::library("plugin_p2p"));
    if cli.plugin.is_none() {
        tests::harness::build_artifacts();
    }
    let library = PluginLibrary::open(&path).with_context(|| format!("loading {}", path.display()))?;
    let config = SwarmConfig {
        viewers: cli.viewers,
        streams: cli.streams,
        k: cli.k,
        matching: cli.matching.clone(),
        pair_new_viewers: cli.pair_new_viewers.clone(),
        max_depth: cli.max_depth,
        median_watch_s: cli.median_watch_s,
        exponential: cli.exponential,
        host_deaths_per_hour: cli.host_deaths_per_hour,
        relaying_share: cli.relaying_share,
        duration_s: cli.duration_s,
        sample_s: cli.sample_s,
        seed: cli.seed,
        sites: cli.sites,
        prefer_same_network: cli.prefer_same_network,
        move_edge_viewers: cli.move_edge_viewers,
        move_after_ms: cli.move_after_ms,
        move_former_clients: cli.move_former_clients,
        edges: cli.edges,
        networks: cli.networks.then_some(NetworkModel { same_home_share: cli.same_home_share, symmetric_share: cli.symmetric_share, stun_share: cli.stun_share }),
    };
    let wall = Instant::now();
    let mut swarm = Swarm::new(config, &library)?;
    let summary = swarm.run();
    if let Some(path) = &cli.csv {
        write_csv(path, swarm.samples())?;
    }
    report(&cli, &summary, wall.elapsed());
    if cli.edges > 1 {
        report_edges(&summary, &swarm.edge_summaries());
    }
    Ok(())
}

fn write_csv(path: &std::path::Path, samples: &[Sample]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    writeln!(f, "t_s,viewers,from_peers,optimum,optimum_unrestricted,offload,optimum_offload,optimum_unrestricted_offload,stranded,unfed,passed_over,local_pairs,optimum_edge_pools,optimum_unrestricted_edge_pools,optimum_deep,optimum_unrestricted_deep")?;
    for s in samples {
        let share = |x: usize| if s.viewers == 0 { 0.0 } else { x as f64 / s.viewers as f64 };
        writeln!(
            f,
            "{},{},{},{},{},{:.4},{:.4},{:.4},{},{},{},{},{},{},{},{}",
            s.t_s,
            s.viewers,
            s.from_peers,
            s.optimum,
            s.optimum_unrestricted,
            share(s.from_peers),
            share(s.optimum),
            share(s.optimum_unrestricted),
            s.stranded,
            s.unfed,
            s.passed_over,
            s.local_pairs,
            s.optimum_edge_pools,
            s.optimum_unrestricted_edge_pools,
            s.optimum_deep,
            s.optimum_unrestricted_deep
        )?;
    }
    Ok(())
}

fn report(cli: &Cli, s: &Summary, wall: std::time::Duration) {
    let pct = |x: f64| 100.0 * x;
    println!("| target viewers | mean present | offload | optimum, once-a-client rule | offload / that optimum (mean, min) | optimum, no once-a-client rule | offload / that optimum | moves per viewer-hour | move gap median, max | pairs within one network | stranded max | unfed past deadlines | longest unfed | host deaths | arrivals | decisions/s (wall) | µs per hook |");
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    println!(
        "| {} | {:.0} | {:.1} % | {:.1} % | {:.1} %, {:.1} % | {:.1} % | {:.1} % | {:.2} | {:.2} s, {:.2} s | {:.1} % | {} | {} | {:.1} s | {} | {} | {:.0} | {:.2} |",
        cli.viewers,
        s.mean_present,
        pct(s.offload),
        pct(s.optimum),
        pct(s.of_optimum),
        pct(s.of_optimum_min),
        pct(s.optimum_unrestricted),
        pct(s.of_unrestricted),
        s.moves_per_viewer_hour,
        s.move_gap_ms.0 as f64 / 1000.0,
        s.move_gap_ms.1 as f64 / 1000.0,
        pct(s.local_pairs),
        s.stranded_max,
        s.unfed_past_deadline,
        s.unfed_max_ms as f64 / 1000.0,
        s.host_deaths,
        s.arrivals,
        s.hook_calls as f64 / s.hook_time.as_secs_f64(),
        s.hook_time.as_secs_f64() * 1e6 / s.hook_calls as f64,
    );
    println!(
        "optimum at MaxDepth {} (trees up to that depth; the depth-1 one at 1), once-a-client rule: {:.1} %, offload / it {:.1} % (min {:.1} %); no once-a-client rule: {:.1} %, offload / it {:.1} %",
        cli.max_depth.max(1),
        pct(s.optimum_deep),
        pct(s.of_optimum_deep),
        pct(s.of_optimum_deep_min),
        pct(s.optimum_unrestricted_deep),
        pct(s.of_unrestricted_deep)
    );
    println!(
        "without a picture (joining, host gone; moves apart): median {:.2} s, p99 {:.2} s, max {:.2} s",
        s.unfed_ms.0 as f64 / 1000.0,
        s.unfed_ms.1 as f64 / 1000.0,
        s.unfed_ms.2 as f64 / 1000.0
    );
    eprintln!(
        "(steady state: {:.1} % of viewers could only be clients yet play from the edge; {} moves, at most {} per viewer; hosts over k: {}; {} hook calls in {:.1} s of hook time, {:.1} s wall; plugin errors logged: {})",
        pct(s.passed_over),
        s.moves,
        s.max_moves_per_viewer,
        s.over_capacity_max,
        s.hook_calls,
        s.hook_time.as_secs_f64(),
        wall.as_secs_f64(),
        s.errors
    );
}

/// With several edges: what per-edge pools cost (the optimum if each edge keeps its own pools,
/// against the cluster-wide one the table above measures by), and each edge's own figures.
fn report_edges(cluster: &Summary, edges: &[Summary]) {
    let pct = |x: f64| 100.0 * x;
    println!(
        "{} edges: optimum with per-edge pools {:.1} % (cluster-wide {:.1} %), without the once-a-client rule {:.1} % (cluster-wide {:.1} %)",
        edges.len(),
        pct(cluster.optimum_edge_pools),
        pct(cluster.optimum),
        pct(cluster.optimum_unrestricted_edge_pools),
        pct(cluster.optimum_unrestricted)
    );
    println!("| edge | mean present | offload | its own optimum, no once-a-client rule | offload / it | stranded max | unfed past deadlines | hosts over k | most moves of a viewer | misreported | plugin errors |");
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (i, s) in edges.iter().enumerate() {
        println!(
            "| {i} | {:.0} | {:.1} % | {:.1} % | {:.1} % | {} | {} | {} | {} | {:.2} % | {} |",
            s.mean_present,
            pct(s.offload),
            pct(s.optimum_unrestricted),
            pct(s.of_unrestricted),
            s.stranded_max,
            s.unfed_past_deadline,
            s.over_capacity_max,
            s.max_moves_per_viewer,
            pct(s.misreported),
            s.errors
        );
    }
}
