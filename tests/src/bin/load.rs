//! Load tool: real WebRTC viewers (the test peer of `tests::peer`) against the real host binary,
//! printing the figures recorded in BENCHMARKS.md.
//!
//!   load edge --viewers 10,50,100      host CPU and memory per viewer, edge only
//!   load offload --peers 30 --k 2      share of viewers and of bytes the P2P plugin takes off the edge
//!   load failover --rounds 20          host peer leaves -> its clients' first edge packet
//!   load signalling --sessions 1000,10000   WebSocket sessions held open (no media): joins/s, memory
//!
//! Build with `--release` for figures (`cargo run --release -p tests --bin load -- ...`); the tool
//! builds the host and plugin of the same profile itself.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::time::{Duration, Instant};
use tests::harness::{config_xml, p2p_xml, HostProcess};
use tests::peer::PeerAgent;
use tests::procstat::{self, Window};
use tests::signal::CHROME_WINDOWS;

/// Real WebRTC viewers against the real host; prints figures.
#[derive(Parser)]
#[command(verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N viewers from the edge (no plugin): the host's CPU time and memory per viewer.
    Edge {
        /// Viewer counts to run, one fresh host each.
        #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
        viewers: Vec<usize>,
        /// Measurement window once every viewer plays, in seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// N host-eligible peers joining one by one with the P2P plugin on: how much the edge is spared.
    Offload {
        /// Peers.
        #[arg(long, default_value_t = 30)]
        peers: usize,
        /// MaxClientPeersPerHostPeer.
        #[arg(long, default_value_t = 2)]
        k: u16,
        /// Measurement window once every peer plays, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Repeatedly: a host peer and its k clients; the host leaves; time to the clients' first
    /// packet from the edge.
    Failover {
        /// Host departures to time.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Clients per host peer.
        #[arg(long, default_value_t = 2)]
        k: u16,
    },
    /// N signalling sessions (WebSocket upgrade, session opened in the host and the P2P plugin,
    /// which classifies the User-Agent) held open without media: joins per second and memory per
    /// session. Needs `ulimit -n` above N.
    Signalling {
        /// Session counts to run, one fresh host each.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        sessions: Vec<usize>,
        /// Connections being opened at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
}

const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Edge { viewers, seconds } => {
            println!("| viewers | host CPU, % of one core | CPU per viewer, % of a core | RSS idle | RSS loaded | RSS per viewer | egress per viewer |");
            println!("|--:|--:|--:|--:|--:|--:|--:|");
            for n in viewers {
                edge(n, Duration::from_secs(seconds)).await?;
            }
        }
        Command::Offload { peers, k, seconds } => offload(peers, k, Duration::from_secs(seconds)).await?,
        Command::Failover { rounds, k } => failover(rounds, k).await?,
        Command::Signalling { sessions, concurrency } => {
            println!("| sessions | joins/s | host CPU per join | RSS idle | RSS with sessions | RSS per session | still open after 5 s |");
            println!("|--:|--:|--:|--:|--:|--:|--:|");
            for n in sessions {
                signalling(n, concurrency).await?;
            }
        }
    }
    Ok(())
}

/// Joins `n` viewers, waits until each receives video, measures the host over `window`.
async fn edge(n: usize, window: Duration) -> anyhow::Result<()> {
    let host = HostProcess::start(|port| config_xml(port, ""))?;
    let url = host.ws_url("app/stream");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = procstat::sample(host.pid())?;
    let mut viewers = Vec::with_capacity(n);
    for _ in 0..n {
        viewers.push(PeerAgent::join(&url, CHROME_WINDOWS).await?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats: Vec<_> = viewers.iter().map(|v| v.stats.clone()).collect();
    procstat::all_playing(&stats, JOIN_TIMEOUT).await?;
    let (measuring, egress_before) = (Window::open(host.pid(), &stats)?, edge_egress(&host)?);
    tokio::time::sleep(window).await;
    let (seen, egress_after) = (measuring.close()?, edge_egress(&host)?);
    let (cpu_share, after) = (seen.cpu_share(), seen.after);
    let egress_bps = (egress_after - egress_before) as f64 * 8.0 / seen.elapsed.as_secs_f64();
    println!(
        "| {n} | {:.1} % | {:.2} % | {:.1} MiB | {:.1} MiB | {:.2} MiB | {:.0} kbit/s |",
        cpu_share * 100.0,
        cpu_share * 100.0 / n as f64,
        mib(idle.rss),
        mib(after.rss),
        mib(after.rss.saturating_sub(idle.rss)) / n as f64,
        egress_bps / n as f64 / 1000.0,
    );
    eprintln!(
        "  ({n} viewers: {:.0} video packets/s per viewer received, lagged packets at the host: {})",
        seen.video_packets_per_viewer_s,
        host.stats()?["lagged_packets"]
    );
    for v in viewers {
        v.leave().await;
    }
    Ok(())
}

/// Joins `peers` host-eligible peers one at a time (each playing before the next arrives).
async fn offload(peers: usize, k: u16, window: Duration) -> anyhow::Result<()> {
    let host = HostProcess::start(|port| config_xml(port, &p2p_xml(k, 4000)))?;
    let url = host.ws_url("app/stream");
    let mut agents = Vec::with_capacity(peers);
    for i in 0..peers {
        let peer = PeerAgent::join(&url, CHROME_WINDOWS).await?;
        peer.wait_for(JOIN_TIMEOUT, "video", |s| s.video() > 30).await.with_context(|| format!("peer {i}"))?;
        agents.push(peer);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (egress_before, t0) = (edge_egress(&host)?, Instant::now());
    let packets_before: Vec<u64> = agents.iter().map(|a| a.stats.video()).collect();
    tokio::time::sleep(window).await;
    let (egress_after, elapsed) = (edge_egress(&host)?, t0.elapsed());
    let from_edge = agents.iter().filter(|a| a.stats.source() == Some(0)).count();
    let from_peers = agents.iter().filter(|a| matches!(a.stats.source(), Some(h) if h != 0)).count();
    let starving: Vec<u32> =
        agents.iter().zip(&packets_before).filter(|(a, &b)| a.stats.video() <= b).map(|(a, _)| a.stats.id()).collect();
    if !starving.is_empty() {
        bail!("peers received no video during the window: {starving:?}");
    }
    // What the edge would have sent had it served everyone: each edge viewer's rate times N.
    let edge_bytes = (egress_after - egress_before) as f64;
    let per_edge_viewer = edge_bytes / from_edge as f64;
    let byte_offload = 1.0 - edge_bytes / (per_edge_viewer * peers as f64);
    let limit = k as f64 / (k as f64 + 1.0);
    // That counts only if the relayed viewers really get the whole stream: compare packet rates.
    let rate = |edge: bool| {
        let fed: Vec<u64> = agents
            .iter()
            .zip(&packets_before)
            .filter(|(a, _)| (a.stats.source() == Some(0)) == edge)
            .map(|(a, &b)| a.stats.video() - b)
            .collect();
        fed.iter().sum::<u64>() as f64 / fed.len().max(1) as f64 / elapsed.as_secs_f64()
    };
    let (edge_rate, peer_rate) = (rate(true), rate(false));
    println!("peers {peers}, k {k}: {from_peers} fed by a host peer, {from_edge} by the edge");
    println!(
        "edge egress {:.2} Mbit/s for {peers} viewers against {:.2} Mbit/s to serve them all ({:.0} kbit/s each), over {:.1} s",
        edge_bytes * 8.0 / elapsed.as_secs_f64() / 1e6,
        per_edge_viewer * peers as f64 * 8.0 / elapsed.as_secs_f64() / 1e6,
        per_edge_viewer * 8.0 / elapsed.as_secs_f64() / 1000.0,
        elapsed.as_secs_f64(),
    );
    println!(
        "offload: {:.1} % of viewers, {:.1} % of edge bytes; limit k/(k+1) = {:.1} %; relayed viewers got {:.1} video packets/s, edge viewers {:.1} ({:.1} %)",
        100.0 * from_peers as f64 / peers as f64,
        100.0 * byte_offload,
        100.0 * limit,
        peer_rate,
        edge_rate,
        100.0 * peer_rate / edge_rate,
    );
    for a in agents {
        a.leave().await;
    }
    Ok(())
}

/// Times `rounds` host departures, each with `k` fresh clients.
async fn failover(rounds: usize, k: u16) -> anyhow::Result<()> {
    let host = HostProcess::start(|port| config_xml(port, &p2p_xml(k, 4000)))?;
    let url = host.ws_url("app/stream");
    let mut samples = Vec::new();
    for round in 0..rounds {
        let relay = PeerAgent::join(&url, CHROME_WINDOWS).await?;
        relay.wait_for(JOIN_TIMEOUT, "edge video", |s| s.video() > 30).await?;
        let relay_id = relay.stats.id();
        let mut clients = Vec::new();
        for _ in 0..k {
            clients.push(PeerAgent::join(&url, CHROME_WINDOWS).await?);
        }
        for c in &clients {
            c.wait_for(JOIN_TIMEOUT, "video from the host peer", |s| s.source() == Some(relay_id) && s.video() > 30).await?;
        }
        let before: Vec<u64> = clients.iter().map(|c| c.stats.video()).collect();
        let left = Instant::now();
        relay.leave().await;
        let mut times = Vec::new();
        for (c, &b) in clients.iter().zip(&before) {
            c.wait_for(JOIN_TIMEOUT, "edge video after failover", |s| s.source() == Some(0) && s.video() > b).await?;
            // Clients are awaited in turn: one found ready late was ready no later than this.
            times.push(left.elapsed());
        }
        eprintln!("round {round}: clients back on the edge after {:?}", times);
        samples.extend(times);
        for c in clients {
            c.leave().await;
        }
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "failover over {rounds} host departures, {} clients (k={k}; host leaves -> the client's first packet from the edge): min {:.0} ms, median {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        samples.len(),
        ms(samples[0]),
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(pick(0.99)),
        ms(*samples.last().unwrap())
    );
    Ok(())
}

/// Opens `n` sessions, `concurrency` at a time, and holds them.
async fn signalling(n: usize, concurrency: usize) -> anyhow::Result<()> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let host = HostProcess::start(|port| config_xml(port, &p2p_xml(2, 4000)))?;
    let url = host.ws_url("app/stream");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = procstat::sample(host.pid())?;
    let started = Instant::now();
    let sockets: Vec<tests::signal::Signal> = stream::iter(0..n)
        .map(|_| tests::signal::Signal::connect(&url, CHROME_WINDOWS))
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let elapsed = started.elapsed();
    let joined = procstat::sample(host.pid())?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = host.stats()?["sessions"].as_array().map_or(0, Vec::len);
    println!(
        "| {n} | {:.0} | {:.0} µs | {:.1} MiB | {:.1} MiB | {:.1} KiB | {held} |",
        n as f64 / elapsed.as_secs_f64(),
        (joined.cpu - idle.cpu).as_secs_f64() * 1e6 / n as f64,
        mib(idle.rss),
        mib(joined.rss),
        joined.rss.saturating_sub(idle.rss) as f64 / 1024.0 / n as f64,
    );
    drop(sockets);
    Ok(())
}

fn edge_egress(host: &HostProcess) -> anyhow::Result<u64> {
    host.stats()?["edge_egress_bytes"].as_u64().context("edge_egress_bytes in /stats")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
