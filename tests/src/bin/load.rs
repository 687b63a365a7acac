//! Load tool: real WebRTC viewers (the test peer of `tests::peer`) against the real host binary,
//! printing the figures recorded in BENCHMARKS.md.
//!
//!   load edge --viewers 10,50,100      host CPU and memory per viewer, edge only
//!   load offload --peers 30 --k 2      share of viewers and of bytes the P2P plugin takes off the edge
//!   load failover --rounds 20          host peer leaves -> its clients' first edge packet
//!   load signalling --sessions 1000,10000   WebSocket sessions held open (no media): joins/s, memory
//!   load connections --connections 2000   viewer connections up (ICE + DTLS, no media) on five
//!                                      shared ports: set-up rate, memory and descriptors each
//!   load soak --sessions 1000 --minutes 30   churn, dying hosts, bad clients: RSS and descriptors
//!   load join --rounds 10 --gop-seconds 4 [--browser]   request_offer -> first video frame with an
//!                                      ffmpeg ingest, keyframe cache off and on, side by side
//!   load capacity --cpu-share 0.1      the most viewers a host held to 10 % of one core sustains
//!                                      without stalls, P2P off and on (root: a cgroup CPU quota)
//!
//! Build with `--release` for figures (`cargo run --release -p tests --bin load -- ...`); the tool
//! builds the host and plugin of the same profile itself.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::time::{Duration, Instant};
use tests::harness::{config_xml, config_xml_with_ice, free_port, p2p_xml, HostProcess};
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
    /// N viewer connections brought up (ICE + DTLS) on a stream that sends nothing: set-up rate,
    /// host memory and descriptors per connection.
    Connections {
        /// Connection counts to run, one fresh host each.
        #[arg(long, value_delimiter = ',', default_value = "2000")]
        connections: Vec<usize>,
        /// Joins in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Churning sessions, dying P2P hosts and bad clients for a while: RSS and descriptors over
    /// time, every session freed at the end.
    Soak {
        /// Signalling sessions kept churning.
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Real WebRTC peers (host peers and clients) churning.
        #[arg(long, default_value_t = 12)]
        peers: usize,
        /// How long, in minutes.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
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
    /// The most viewers the host sustains without stalls with its CPU capped (pinned to core 0,
    /// a cgroup v1 quota), P2P off and then on (everyone host-eligible): what P2P buys the edge.
    /// Needs root and two cores.
    Capacity {
        /// The host's CPU cap, as a share of one core.
        #[arg(long, default_value_t = 0.1)]
        cpu_share: f64,
        /// MaxClientPeersPerHostPeer with P2P on.
        #[arg(long, default_value_t = 2)]
        k: u16,
        /// `<MaxDepth>` with P2P on (2: clients relay what they receive from their host peer).
        #[arg(long, default_value_t = 1)]
        max_depth: u8,
        /// Viewers added per step.
        #[arg(long, default_value_t = 10)]
        step: usize,
        /// The most viewers to try.
        #[arg(long, default_value_t = 600)]
        max: usize,
        /// Measurement window per step, in seconds.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Join time with an ffmpeg RTP ingest (VP8 at 1 Mbit/s, a keyframe every `gop-seconds`):
    /// request_offer -> first video frame, with the keyframe cache off (`MaxBytes` 0: the viewer
    /// waits for the source's next keyframe) and on (the default), two hosts fed by one ffmpeg,
    /// each viewer joining at a random moment within the GOP. Also how far behind live the first
    /// frame is. Re-runs itself in a private network namespace (root or unprivileged user
    /// namespaces); needs ffmpeg, and for `--browser` node, playwright-core
    /// (tests/browser/node_modules) and /usr/bin/chromium.
    Join {
        /// Rust viewers per configuration.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Seconds between the source's keyframes.
        #[arg(long, default_value_t = 4)]
        gop_seconds: u32,
        /// The source's frame rate.
        #[arg(long, default_value_t = 25)]
        fps: u32,
        /// Send Opus audio too (the edge's cache holds video only).
        #[arg(long)]
        audio: bool,
        /// How long each Rust viewer plays after its first packet, seconds.
        #[arg(long, default_value_t = 3)]
        watch_seconds: u64,
        /// Also time Chromium on the host's own page (tests/browser/join-time.mjs).
        #[arg(long)]
        browser: bool,
        /// Chromium viewers per configuration.
        #[arg(long, default_value_t = 5)]
        browser_rounds: usize,
        /// How long each Chromium viewer plays, from its page's load (and request_offer), seconds.
        #[arg(long, default_value_t = 16)]
        browser_watch_seconds: u64,
    },
}

#[path = "load/capacity.rs"]
mod capacity;

const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The edge's ports in the runs that measure it: five, as in `conf/Server.xml`.
const EDGE_PORTS: &str = "127.0.0.1:41000-41004/udp";

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
        Command::Connections { connections: counts, concurrency } => {
            println!("| connections | set-up time | connections/s | RSS idle | RSS with connections | RSS per connection | descriptors per connection |");
            println!("|--:|--:|--:|--:|--:|--:|--:|");
            for n in counts {
                connections(n, concurrency).await?;
            }
        }
        Command::Soak { sessions, peers, minutes } => soak(sessions, peers, minutes).await?,
        Command::Offload { peers, k, seconds } => offload(peers, k, Duration::from_secs(seconds)).await?,
        Command::Failover { rounds, k } => failover(rounds, k).await?,
        Command::Signalling { sessions, concurrency } => {
            println!("| sessions | joins/s | host CPU per join | RSS idle | RSS with sessions | RSS per session | still open after 5 s |");
            println!("|--:|--:|--:|--:|--:|--:|--:|");
            for n in sessions {
                signalling(n, concurrency).await?;
            }
        }
        Command::Capacity { cpu_share, k, max_depth, step, max, seconds } => {
            capacity::run(capacity::Options { cpu_share, k, max_depth, step, max, window: Duration::from_secs(seconds) }).await?
        }
        Command::Join { rounds, gop_seconds, fps, audio, watch_seconds, browser, browser_rounds, browser_watch_seconds } => {
            let browser_rounds = if browser { browser_rounds } else { 0 };
            join_time::run(join_time::Options {
                rounds,
                gop_seconds,
                fps,
                audio,
                watch: Duration::from_secs(watch_seconds),
                browser_rounds,
                browser_watch: Duration::from_secs(browser_watch_seconds),
            })
            .await?
        }
    }
    Ok(())
}

/// Joins `n` viewers, waits until each receives video, measures the host over `window`.
async fn edge(n: usize, window: Duration) -> anyhow::Result<()> {
    let host = HostProcess::start(|port| config_xml_with_ice(port, EDGE_PORTS, ""))?;
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

/// `load join`: request_offer -> first video frame with a long GOP, keyframe cache off and on.
mod join_time {
    use super::mib;
    use anyhow::{bail, Context};
    use serde_json::{json, Value};
    use std::io::BufRead;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use tests::harness::{config_xml_with_ice, workspace_dir, HostProcess, NAMESPACE_ADDRESS};
    use tests::signal::{Signal, CHROME_WINDOWS};
    use tokio::sync::watch;
    use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
    use webrtc::peer_connection::{PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState};

    /// Set in the copy of the tool that runs inside the namespace.
    const INSIDE_NAMESPACE: &str = "LOAD_JOIN_IN_NAMESPACE";

    pub struct Options {
        pub rounds: usize,
        pub gop_seconds: u32,
        pub fps: u32,
        pub audio: bool,
        pub watch: Duration,
        pub browser_rounds: usize,
        pub browser_watch: Duration,
    }

    /// One host: its name in the tables, its `<KeyframeCache>` (None: the element left out, i.e.
    /// the defaults), its ICE ports and its ingest ports.
    struct Setup {
        name: &'static str,
        max_bytes: Option<usize>,
        ice: &'static str,
        video_port: u16,
        audio_port: u16,
    }

    const SETUPS: [Setup; 2] = [
        Setup { name: "before (cache off, MaxBytes 0)", max_bytes: Some(0), ice: "*:10000-10004/udp", video_port: 5004, audio_port: 5006 },
        Setup { name: "after (cache on, defaults)", max_bytes: None, ice: "*:10010-10014/udp", video_port: 5014, audio_port: 5016 },
    ];

    pub async fn run(o: Options) -> anyhow::Result<()> {
        tests::harness::rerun_in_network_namespace(INSIDE_NAMESPACE)?;
        let dir = std::env::temp_dir().join(format!("load-join-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let clip = encode_clip(&dir, o.gop_seconds, o.fps)?;
        let hosts: Vec<HostProcess> = SETUPS
            .iter()
            .map(|s| HostProcess::start(|port| config(port, s, o.audio)))
            .collect::<anyhow::Result<_>>()?;
        let _feed = Feed(feed(&clip, o.audio)?);
        // The stream is live and each cache holds a GOP before the first viewer.
        tokio::time::sleep(Duration::from_secs(o.gop_seconds as u64 + 2)).await;
        for (host, setup) in hosts.iter().zip(&SETUPS) {
            if host.stats().is_err() {
                bail!("host {} is not serving:\n{}", setup.name, host.log());
            }
        }
        let gop = Duration::from_secs(o.gop_seconds as u64);

        let mut rust: Vec<Vec<RustSample>> = vec![Vec::new(), Vec::new()];
        for round in 0..o.rounds {
            // Alternate which configuration goes first.
            for i in [round % 2, 1 - round % 2] {
                let wait = gop.mul_f64(rand::random::<f64>());
                tokio::time::sleep(wait).await;
                let url = format!("ws://{NAMESPACE_ADDRESS}:{}/app/stream", hosts[i].port);
                let sample = rust_join(&url, o.watch).await.with_context(|| format!("{}, round {round}", SETUPS[i].name))?;
                eprintln!("rust {} round {round} (waited {:.0} ms): {sample:?}", SETUPS[i].name, ms(wait));
                rust[i].push(sample);
            }
        }
        println!(
            "\nRust viewer (webrtc 0.21, in this process): request_offer -> first video RTP packet; {} rounds, GOP {} s, {} fps{}",
            o.rounds,
            o.gop_seconds,
            o.fps,
            if o.audio { ", with audio" } else { "" }
        );
        println!("| cache | samples | min | median | p90 | max | request -> offer | offer -> answer sent | answer -> connected | connected -> first packet | first frame behind live: min / median / max | burst: packets in the first 50 ms, median | packets never received (sum) | kernel receive-buffer drops (sum) |");
        println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for (setup, samples) in SETUPS.iter().zip(&rust) {
            let first = Stat::of(samples.iter().map(|s| ms(s.first)));
            let median = |f: &dyn Fn(&RustSample) -> Option<f64>| Stat::of(samples.iter().filter_map(f)).median_ms();
            let behind = Stat::of(samples.iter().map(|s| s.behind_live_ms));
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} / {:.0} ms | {} | {} | {} |",
                setup.name,
                samples.len(),
                fmt_ms(first.min),
                fmt_ms(first.median),
                fmt_ms(first.p90),
                fmt_ms(first.max),
                median(&|s| Some(ms(s.offer))),
                median(&|s| Some(ms(s.answer - s.offer))),
                median(&|s| s.connected.map(|c| ms(c - s.answer))),
                median(&|s| s.connected.map(|c| ms(s.first - c))),
                behind.min,
                behind.median,
                behind.max,
                Stat::of(samples.iter().map(|s| s.burst_packets as f64)).median,
                samples.iter().map(|s| s.lost).sum::<u64>(),
                samples.iter().map(|s| s.rcvbuf_errors).sum::<u64>(),
            );
            let not_key = samples.iter().filter(|s| !s.first_is_keyframe).count();
            if not_key > 0 {
                println!("  ({not_key} viewers' first video packet did not start a keyframe)");
            }
        }

        if o.browser_rounds > 0 {
            browser(&hosts, &o).await?;
        }
        for (host, setup) in hosts.iter().zip(&SETUPS) {
            let stats = host.stats()?;
            eprintln!(
                "host {}: metrics {} lagged packets {}, RSS {:.1} MiB",
                setup.name,
                stats["metrics"],
                stats["lagged_packets"],
                mib(tests::procstat::sample(host.pid())?.rss)
            );
        }
        // Which sockets of the namespace lost datagrams for a full receive buffer over the run:
        // the hosts' ingest (5004/5014...), their edge ports (100xx), or the viewers' (ephemeral).
        for (addr, drops) in udp_socket_drops() {
            eprintln!("UDP socket {addr}: {drops} datagrams dropped (receive buffer full) over the run");
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// The namespace's IPv4 UDP sockets with drops, from /proc/net/udp (address:port, drops).
    fn udp_socket_drops() -> Vec<(String, u64)> {
        let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let drops: u64 = fields.last()?.parse().ok()?;
                let (ip, port) = fields.get(1)?.split_once(':')?;
                let ip = std::net::Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.swap_bytes());
                let port = u16::from_str_radix(port, 16).ok()?;
                (drops > 0).then(|| (format!("{ip}:{port}"), drops))
            })
            .collect()
    }

    /// The test config with an RTP ingest at `app/stream` (so the host's own page plays it) and the
    /// setup's keyframe cache.
    fn config(port: u16, setup: &Setup, audio: bool) -> String {
        let audio = if audio { format!("<AudioPort>{}</AudioPort>", setup.audio_port) } else { String::new() };
        let cache = setup.max_bytes.map(|b| format!("<KeyframeCache><MaxBytes>{b}</MaxBytes></KeyframeCache>")).unwrap_or_default();
        let xml = config_xml_with_ice(port, setup.ice, "");
        assert!(xml.contains("<TestPattern/>") && xml.contains("</IceCandidates>"), "harness::config_xml_with_ice changed: {xml}");
        xml.replace("<TestPattern/>", &format!("<RtpIngest><VideoPort>{}</VideoPort>{audio}</RtpIngest>", setup.video_port))
            .replace("</IceCandidates>", &format!("</IceCandidates>{cache}"))
    }

    /// A clip of 5 GOPs (so that looping it keeps the keyframe spacing): a noisy test pattern at
    /// 1 Mbit/s (plain testsrc compresses far below its target), VP8 with a keyframe every
    /// `gop_seconds * fps` frames and no others, Opus 64 kbit/s. Encoded once, then looped with
    /// `-c copy`, so no encoder competes with the viewers for the 2 cores while measuring.
    fn encode_clip(dir: &Path, gop_seconds: u32, fps: u32) -> anyhow::Result<PathBuf> {
        let clip = dir.join("clip.webm");
        let gop = (gop_seconds * fps).to_string();
        let realtime = ["-keyint_min", &gop, "-deadline", "realtime", "-cpu-used", "4", "-lag-in-frames", "0", "-auto-alt-ref", "0"];
        tests::harness::encode_clip(&clip, fps, gop_seconds * fps, gop_seconds * 5, &realtime)?;
        let keyframes = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v", "-skip_frame", "nokey", "-show_entries", "frame=pts_time", "-of", "csv=p=0"])
            .arg(&clip)
            .output()
            .context("running ffprobe")?;
        let keyframes = String::from_utf8_lossy(&keyframes.stdout).split_whitespace().collect::<Vec<_>>().join(", ");
        eprintln!("clip {}: {} s, keyframes at {keyframes} s", clip.display(), gop_seconds * 5);
        Ok(clip)
    }

    /// One ffmpeg looping the clip to both hosts' ingest ports (tee muxer: the same packets).
    fn feed(clip: &Path, audio: bool) -> anyhow::Result<Child> {
        let tee = |port: fn(&Setup) -> u16| SETUPS.iter().map(|s| format!("[f=rtp]rtp://127.0.0.1:{}", port(s))).collect::<Vec<_>>().join("|");
        let mut ffmpeg = Command::new("ffmpeg");
        ffmpeg.args(["-v", "error", "-re", "-stream_loop", "-1", "-i"]).arg(clip);
        ffmpeg.args(["-map", "0:v", "-c", "copy", "-f", "tee", &tee(|s| s.video_port)]);
        if audio {
            ffmpeg.args(["-map", "0:a", "-c", "copy", "-f", "tee", &tee(|s| s.audio_port)]);
        }
        ffmpeg.stdin(Stdio::null()).stdout(Stdio::null()).spawn().context("starting ffmpeg")
    }

    /// Kills the feed when dropped.
    struct Feed(Child);

    impl Drop for Feed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// One Rust viewer's join, times from the moment its request_offer went out.
    #[derive(Debug)]
    struct RustSample {
        offer: Duration,
        answer: Duration,
        connected: Option<Duration>,
        first: Duration,
        first_is_keyframe: bool,
        /// How far behind live the first packet's picture is: 0 when sent live, up to a GOP when
        /// it comes from the cache (what a player rendering from it at the source's pace lags by).
        behind_live_ms: f64,
        /// Video packets received within 50 ms of the first (the cache burst).
        burst_packets: usize,
        /// Sequence-number gaps in what it received.
        lost: u64,
        /// UDP datagrams the namespace's kernel dropped for a full receive buffer meanwhile
        /// (`RcvbufErrors` in /proc/net/snmp; the namespace holds only the hosts and this viewer).
        rcvbuf_errors: u64,
    }

    /// `Udp: ... RcvbufErrors` of this network namespace.
    fn udp_rcvbuf_errors() -> u64 {
        let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
        names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == "RcvbufErrors").and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
    }

    /// What the viewer's connection saw: each video packet (arrival, RTP timestamp, sequence
    /// number, starts a VP8 keyframe), and when it came up.
    #[derive(Default)]
    struct Seen {
        video: Mutex<Vec<(Instant, u32, u16, bool)>>,
        connected: Mutex<Option<Instant>>,
    }

    struct Handler {
        gathered: watch::Sender<bool>,
        seen: Arc<Seen>,
    }

    #[async_trait::async_trait]
    impl PeerConnectionEventHandler for Handler {
        async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
            if state == RTCIceGatheringState::Complete {
                self.gathered.send_replace(true);
            }
        }

        async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
            if state == RTCPeerConnectionState::Connected {
                self.seen.connected.lock().unwrap().get_or_insert_with(Instant::now);
            }
        }

        async fn on_track(&self, track: Arc<dyn TrackRemote>) {
            let seen = self.seen.clone();
            tokio::spawn(async move {
                if track.kind().await != rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video {
                    while track.poll().await.is_some() {}
                    return;
                }
                while let Some(event) = track.poll().await {
                    if let TrackRemoteEvent::OnRtpPacket(p) = event {
                        let entry = (Instant::now(), p.header.timestamp, p.header.sequence_number, host::plumbing::is_keyframe_start(host::plumbing::VideoCodec::Vp8, &p.payload));
                        seen.video.lock().unwrap().push(entry);
                    }
                }
            });
        }
    }

    /// A player's peer connection on the namespace's address (the edge announces only
    /// non-loopback addresses for `*`), as `tests::peer` builds them.
    async fn connection(seen: Arc<Seen>) -> anyhow::Result<(Arc<dyn PeerConnection>, watch::Receiver<bool>)> {
        let (gathered_tx, gathered) = watch::channel(false);
        let pc = tests::peer::build_connection(Handler { gathered: gathered_tx, seen }, NAMESPACE_ADDRESS.parse()?).await?;
        Ok((pc, gathered))
    }

    /// Joins `url` (request_offer, offer, answer with every candidate), waits for the first video
    /// packet, plays `watch` longer (to see the live edge), leaves.
    async fn rust_join(url: &str, watch: Duration) -> anyhow::Result<RustSample> {
        let mut signal = Signal::connect(url, CHROME_WINDOWS).await?;
        let seen = Arc::new(Seen::default());
        let drops_before = udp_rcvbuf_errors();
        let t0 = Instant::now();
        signal.send(json!({"command": "request_offer"})).await?;
        let offer = loop {
            let m = signal.recv_json(Duration::from_secs(10)).await?;
            if m.get("error").is_some() {
                bail!("the host answered request_offer with {m}");
            }
            if m["command"] == "offer" {
                break m;
            }
        };
        let offered = t0.elapsed();
        let (pc, gathered) = connection(seen.clone()).await?;
        let sdp = tests::peer::answer_on(&pc, gathered, &offer).await?;
        let (id, peer) = (offer["id"].clone(), offer["peer_id"].clone());
        signal.send(json!({"command": "answer", "id": id, "peer_id": peer, "sdp": {"type": "answer", "sdp": sdp}})).await?;
        let answered = t0.elapsed();
        let deadline = t0 + Duration::from_secs(30);
        let first_at = loop {
            if let Some(first) = seen.video.lock().unwrap().first() {
                break first.0;
            }
            if Instant::now() > deadline {
                bail!("no video packet 30 s after request_offer");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        tokio::time::sleep((first_at + watch).saturating_duration_since(Instant::now())).await;
        let rcvbuf_errors = udp_rcvbuf_errors() - drops_before;
        let _ = pc.close().await;
        signal.close().await;

        let video = seen.video.lock().unwrap().clone();
        let (t_first, ts_first, seq_first, key) = video[0];
        // Arrival minus media time (both relative to the first packet), in ms: 0 for the first
        // packet; its minimum over what arrived is the live edge (packets sent as the source
        // sends them), so minus that minimum is how far behind live the first picture is.
        let late = |(t, ts, _, _): &(Instant, u32, u16, bool)| {
            ms(t.saturating_duration_since(t_first)) - ts.wrapping_sub(ts_first) as i32 as f64 / 90.0
        };
        let behind_live_ms = -video.iter().map(late).fold(f64::INFINITY, f64::min);
        let burst_packets = video.iter().filter(|p| p.0.saturating_duration_since(t_first) <= Duration::from_millis(50)).count();
        let last_seq = video.iter().map(|p| p.2.wrapping_sub(seq_first)).max().unwrap_or(0);
        let lost = (last_seq as u64 + 1).saturating_sub(video.len() as u64);
        let connected = seen.connected.lock().unwrap().map(|c| c.saturating_duration_since(t0));
        Ok(RustSample {
            offer: offered,
            answer: answered,
            connected,
            first: first_at.saturating_duration_since(t0),
            first_is_keyframe: key,
            behind_live_ms,
            burst_packets,
            lost,
            rcvbuf_errors,
        })
    }

    /// Chromium on each host's own page, `browser_rounds` times, by `tests/browser/join-time.mjs`.
    async fn browser(hosts: &[HostProcess], o: &Options) -> anyhow::Result<()> {
        let dir = workspace_dir().join("tests/browser");
        if !dir.join("node_modules/playwright-core").exists() {
            bail!("tests/browser/node_modules is missing: run `npm ci` in tests/browser (or `cargo test -p tests --test browser` once)");
        }
        let list: Vec<Value> = hosts
            .iter()
            .zip(&SETUPS)
            .map(|(h, s)| json!({"name": s.name, "url": format!("http://{NAMESPACE_ADDRESS}:{}/", h.port)}))
            .collect();
        let mut node = Command::new("node")
            .arg(dir.join("join-time.mjs"))
            .env("HOSTS", Value::Array(list).to_string())
            .env("ROUNDS", o.browser_rounds.to_string())
            .env("GOP_MS", (o.gop_seconds as u64 * 1000).to_string())
            .env("WATCH_MS", o.browser_watch.as_millis().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .context("running node")?;
        let stdout = node.stdout.take().unwrap();
        let samples = tokio::task::spawn_blocking(move || {
            let mut samples = Vec::new();
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                match line.strip_prefix("SAMPLE ") {
                    Some(json) => {
                        eprintln!("chromium {json}");
                        samples.push(serde_json::from_str::<Value>(json).unwrap_or(Value::Null));
                    }
                    None => eprintln!("[join-time.mjs] {line}"),
                }
            }
            samples
        })
        .await?;
        let status = node.wait()?;
        if !status.success() {
            bail!("join-time.mjs failed ({status})");
        }
        println!(
            "\nChromium (/usr/bin/chromium, the host's own page): request_offer -> first frame presented (requestVideoFrameCallback); {} rounds, GOP {} s, each viewer plays {} s",
            o.browser_rounds,
            o.gop_seconds,
            o.browser_watch.as_secs()
        );
        println!("| cache | samples | min | median | p90 | max | connected (median) | first frame behind live: min / median / max | within 100 ms of live at: min / median / max | behind live 10 s after the first frame: min / median / max | media played per second in the first second, median | frames dropped / packets lost / NACKs / freezes (sum) |");
        println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for setup in &SETUPS {
            let mine: Vec<&Value> = samples.iter().filter(|s| s["host"] == setup.name).collect();
            let field = |name: &str| Stat::of(mine.iter().filter_map(|s| s[name].as_f64()));
            let first = field("first_frame");
            let (behind, later) = (field("first_frame_behind_live"), field("behind_live_10s"));
            let caught = field("within_100ms_of_live");
            let sum = |name: &str| mine.iter().filter_map(|s| s["inbound"][name].as_f64()).sum::<f64>();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} / {:.0} ms | {} / {} / {} | {:.0} / {:.0} / {:.0} ms | {:.2} s | {:.0} / {:.0} / {:.0} / {:.0} |",
                setup.name,
                first.count,
                fmt_ms(first.min),
                fmt_ms(first.median),
                fmt_ms(first.p90),
                fmt_ms(first.max),
                field("connected").median_ms(),
                behind.min,
                behind.median,
                behind.max,
                fmt_ms(caught.min),
                fmt_ms(caught.median),
                fmt_ms(caught.max),
                later.min,
                later.median,
                later.max,
                field("playout_rate_first_s").median,
                sum("framesDropped"),
                sum("packetsLost"),
                sum("nackCount"),
                sum("freezeCount"),
            );
        }
        Ok(())
    }

    /// min / median / p90 / max (nearest rank) of some samples.
    struct Stat {
        count: usize,
        min: f64,
        median: f64,
        p90: f64,
        max: f64,
    }

    impl Stat {
        fn of(values: impl Iterator<Item = f64>) -> Self {
            let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
            v.sort_by(f64::total_cmp);
            if v.is_empty() {
                return Self { count: 0, min: f64::NAN, median: f64::NAN, p90: f64::NAN, max: f64::NAN };
            }
            let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
            Self { count: v.len(), min: v[0], median: pick(0.5), p90: pick(0.9), max: v[v.len() - 1] }
        }

        fn median_ms(&self) -> String {
            fmt_ms(self.median)
        }
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    fn fmt_ms(x: f64) -> String {
        if x.is_nan() { "-".into() } else { format!("{x:.0} ms") }
    }
}

/// N viewer connections brought up (ICE + DTLS) on five shared ports, on a stream that sends
/// nothing: how fast they come up, and what each costs the host in memory and descriptors.
async fn connections(n: usize, concurrency: usize) -> anyhow::Result<()> {
    raise_descriptor_limit(4 * n as u64 + 1024)?;
    let host = HostProcess::start(|port| {
        config_xml_with_ice(port, EDGE_PORTS, "").replace(
            "<TestPattern/>",
            &format!("<RtpIngest><Address>127.0.0.1</Address><VideoPort>{}</VideoPort></RtpIngest>", free_port()),
        )
    })?;
    let url = host.ws_url("app/stream");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle, idle_fds) = (procstat::sample(host.pid())?, open_descriptors(host.pid()));
    let started = Instant::now();
    let mut viewers = Vec::with_capacity(n);
    let mut joining = tokio::task::JoinSet::new();
    for _ in 0..n {
        while joining.len() >= concurrency {
            viewers.push(joining.join_next().await.context("a join")???);
        }
        let url = url.clone();
        joining.spawn(async move { PeerAgent::join(&url, CHROME_WINDOWS).await });
    }
    while let Some(joined) = joining.join_next().await {
        viewers.push(joined??);
    }
    let up = |host: &HostProcess| -> anyhow::Result<i64> {
        Ok(host.stats()?["metrics"]["edge_connections_up"].as_i64().unwrap_or(0))
    };
    let deadline = Instant::now() + Duration::from_secs(120 + n as u64 / 10);
    while up(&host)? < n as i64 {
        if Instant::now() > deadline {
            bail!("only {} of {n} connections came up", up(&host)?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let setup = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (loaded, fds) = (procstat::sample(host.pid())?, open_descriptors(host.pid()));
    println!(
        "| {n} | {:.1} s | {:.0} /s | {:.1} MiB | {:.1} MiB | {:.0} KiB | {:.2} |",
        setup.as_secs_f64(),
        n as f64 / setup.as_secs_f64(),
        mib(idle.rss),
        mib(loaded.rss),
        loaded.rss.saturating_sub(idle.rss) as f64 / 1024.0 / n as f64,
        (fds - idle_fds) as f64 / n as f64,
    );
    for v in viewers {
        v.leave().await;
    }
    Ok(())
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Raises this process's open-file limit (inherited by the host it starts) to at least `want`.
fn raise_descriptor_limit(want: u64) -> anyhow::Result<()> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on a stack value.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    anyhow::ensure!(limit.rlim_cur >= want, "open-file limit {} < {want}: raise the hard limit (ulimit -Hn)", limit.rlim_cur);
    Ok(())
}

/// `load soak`: `sessions` signalling sessions that keep churning (each asks for an offer, never
/// answers, is withdrawn at the answer deadline and comes back), `peers` real WebRTC peers with
/// the P2P plugin (host peers and their clients; one leaves and a new one joins every few
/// seconds), and bad clients mixed in (malformed JSON, oversized messages, half-sent requests).
/// Samples the host's RSS, descriptors and sessions; at the end, checks every session was freed.
async fn soak(sessions: usize, peers: usize, minutes: u64) -> anyhow::Result<()> {
    raise_descriptor_limit(4 * sessions as u64 + 1024)?;
    let host = HostProcess::start(|port| {
        config_xml_with_ice(port, EDGE_PORTS, &p2p_xml(2, 4000))
            .replace("</IceCandidates>", "</IceCandidates><AnswerTimeoutMs>10000</AnswerTimeoutMs>")
    })?;
    let url = host.ws_url("app/stream");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle, idle_fds) = (procstat::sample(host.pid())?, open_descriptors(host.pid()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..sessions {
        tasks.spawn(churning_session(url.clone(), stop.clone(), Duration::from_millis(i as u64 * 10)));
    }
    tasks.spawn(churning_peers(url.clone(), peers, stop.clone()));
    tasks.spawn(bad_clients(url.clone(), host.port, stop.clone()));
    println!("| minute | RSS | descriptors | live sessions | sessions opened | closed |");
    println!("|--:|--:|--:|--:|--:|--:|");
    let started = Instant::now();
    let mut minute = 0;
    while started.elapsed() < Duration::from_secs(minutes * 60) {
        tokio::time::sleep(Duration::from_secs(60)).await;
        minute += 1;
        let stats = host.stats()?;
        println!(
            "| {minute} | {:.1} MiB | {} | {} | {} | {} |",
            mib(procstat::sample(host.pid())?.rss),
            open_descriptors(host.pid()),
            stats["session_count"],
            stats["metrics"]["sessions_opened"],
            stats["metrics"]["sessions_closed"],
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = host.stats()?;
    let (end, fds) = (procstat::sample(host.pid())?, open_descriptors(host.pid()));
    println!(
        "after: {} live sessions ({} opened, {} closed), {fds} descriptors (idle {idle_fds}), RSS {:.1} MiB (idle {:.1} MiB)",
        stats["session_count"],
        stats["metrics"]["sessions_opened"],
        stats["metrics"]["sessions_closed"],
        mib(end.rss),
        mib(idle.rss)
    );
    anyhow::ensure!(stats["session_count"] == 0, "sessions left behind: {stats}");
    Ok(())
}

/// Joins, asks for an offer, never answers; after the host withdraws it, comes back.
async fn churning_session(url: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>, delay: Duration) {
    tokio::time::sleep(delay).await;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(mut s) = tests::signal::Signal::connect(&url, CHROME_WINDOWS).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let _ = tests::signal::request_offer(&mut s).await;
        // The withdrawal (408) and the close, or the end of the soak.
        for _ in 0..15 {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if matches!(s.recv(Duration::from_secs(1)).await, Ok(tests::signal::Received::Closed)) {
                break;
            }
        }
        s.close().await;
    }
}

/// `peers` WebRTC peers (host-eligible); every 5 s the oldest leaves (its clients fail over) and
/// a new one joins.
async fn churning_peers(url: String, peers: usize, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let mut live = std::collections::VecDeque::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if live.len() >= peers {
            if let Some(p) = live.pop_front() {
                PeerAgent::leave(p).await;
            }
        }
        if let Ok(p) = PeerAgent::join(&url, CHROME_WINDOWS).await {
            live.push_back(p);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    for p in live {
        p.leave().await;
    }
}

/// Every second: malformed JSON, an oversized message, and a half-sent HTTP request held 10 s.
async fn bad_clients(url: String, port: u16, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(mut s) = tests::signal::Signal::connect(&url, "junk").await {
            let _ = s.send_text("{not json").await;
            let _ = s.recv(Duration::from_secs(1)).await;
        }
        if let Ok(mut s) = tests::signal::Signal::connect(&url, "junk").await {
            let _ = s.send_text(&"x".repeat(300 * 1024)).await;
            let _ = s.recv(Duration::from_secs(1)).await;
        }
        if let Ok(mut half) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::AsyncWriteExt;
            let _ = half.write_all(b"GET /app/stream HTTP/1.1\r\nHost: x\r\n").await;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                drop(half);
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
