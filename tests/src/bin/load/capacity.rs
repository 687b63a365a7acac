//! `load capacity`: the most viewers one host sustains without stalls, P2P off and on, with the
//! host held to a fixed share of one core: pinned to core 0 (`sched_setaffinity` on every thread)
//! and capped by a cgroup v1 CPU quota, while the viewers (the Rust test peers, which as host
//! peers relay to their clients) run in this process on the other cores. Everyone is
//! host-eligible (desktop Chrome), k = 2, the built-in clip: the ratio of the two capacities is
//! what P2P buys the edge, end to end.
//!
//! Viewers join `step` at a time; after each step, over the window, every viewer must receive at
//! least 95 % of the video packets the source sent it (distinct sequence numbers received in order,
//! and lost ones resent for a NACK within `tests::nack::REPAIR_DEADLINE` of their gap, over the
//! sequence numbers they advanced: packets lost for good or repaired late count as missing; the
//! edge and the relaying test peers answer NACKs, within the same budget), at a rate of at least
//! 80 % of the median viewer's (a viewer served late falls behind; the clip's packet rate varies
//! by 15-20 % over time, and viewers a few hundred ms apart, e.g. behind a relay, see different
//! parts of it, so a tighter bound flags healthy viewers), and the host's fan-out must drop
//! nothing; the first step that fails ends the run. The viewers' own CPU is printed too: a run
//! whose viewers' cores are saturated measures the test peers, not the host.
//! Needs root (the cgroup); prints one table row per setting.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tests::harness::{config_xml_with_ice, p2p_xml, HostProcess};
use tests::peer::PeerAgent;
use tests::procstat;
use tests::signal::CHROME_WINDOWS;

/// The tool's settings.
pub struct Options {
    /// The host's CPU cap, as a share of one core.
    pub cpu_share: f64,
    /// MaxClientPeersPerHostPeer with P2P on.
    pub k: u16,
    /// `<MaxDepth>` with P2P on.
    pub max_depth: u8,
    /// Viewers added per step.
    pub step: usize,
    /// Stop here even without a stall.
    pub max: usize,
    /// Measurement window per step.
    pub window: Duration,
}

/// A viewer counts as stalled below this share of its packets delivered...
const MIN_DELIVERED: f64 = 0.95;
/// ... or below this share of the median viewer's packet rate.
const MIN_RATE_SHARE: f64 = 0.8;
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
const EDGE_PORTS: &str = "127.0.0.1:42000-42004/udp";

pub async fn run(o: Options) -> anyhow::Result<()> {
    pin_this_process_away_from_core_0()?;
    println!("| P2P | host CPU cap | viewers sustained | from the edge at that point | from host peers | host CPU at that point | first failing step |");
    println!("|:--|--:|--:|--:|--:|--:|:--|");
    let edge = one_setting(&o, false).await?;
    let p2p = one_setting(&o, true).await?;
    println!();
    println!("capacity with P2P / without: {:.2}x ({} / {} viewers, k = {}, MaxDepth {})", p2p as f64 / edge.max(1) as f64, p2p, edge, o.k, o.max_depth);
    Ok(())
}

/// Ramps viewers up on a fresh host; returns the most it sustained.
async fn one_setting(o: &Options, p2p: bool) -> anyhow::Result<usize> {
    let depth = format!("<MaxDepth>{}</MaxDepth></P2P>", o.max_depth);
    let extra = if p2p { p2p_xml(o.k, 4000).replace("</P2P>", &depth) } else { String::new() };
    let host = HostProcess::start(|port| config_xml_with_ice(port, EDGE_PORTS, &extra))?;
    let _cap = CpuCap::apply(host.pid(), o.cpu_share)?;
    let url = host.ws_url("app/stream");
    let mut viewers: Vec<PeerAgent> = Vec::new();
    let mut sustained = None;
    let mut failure = String::from("none (reached --max)");
    while viewers.len() + o.step <= o.max {
        if let Err(e) = join_step(&url, o.step, &mut viewers).await {
            failure = format!("{} viewers: {e:#}", viewers.len() + o.step);
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let step = measure(&host, &viewers, o.window).await?;
        eprintln!("  P2P {}: {step}", if p2p { "on" } else { "off" });
        if let Some(why) = step.stall() {
            failure = format!("{} viewers: {why}", viewers.len());
            break;
        }
        sustained = Some(step);
    }
    let n = sustained.as_ref().map_or(0, |s| s.rates.len());
    match &sustained {
        Some(s) => println!(
            "| {} | {:.0} % of a core | {n} | {} | {} | {:.0} % of a core | {failure} |",
            if p2p { "on" } else { "off" },
            o.cpu_share * 100.0,
            s.from_edge,
            n - s.from_edge,
            s.host_cpu * 100.0
        ),
        None => println!("| {} | {:.0} % of a core | 0 | - | - | - | {failure} |", if p2p { "on" } else { "off" }, o.cpu_share * 100.0),
    }
    for v in viewers {
        v.leave().await;
    }
    Ok(n)
}

/// Adds `step` viewers, each playing before the next joins (so the P2P plugin sees hosts playing).
async fn join_step(url: &str, step: usize, viewers: &mut Vec<PeerAgent>) -> anyhow::Result<()> {
    for _ in 0..step {
        let v = PeerAgent::join(url, CHROME_WINDOWS).await?;
        v.wait_for(JOIN_TIMEOUT, "video", |s| s.video() > 30).await?;
        viewers.push(v);
    }
    Ok(())
}

/// One step's window.
struct Step {
    /// Every viewer's video packets per second (each sequence number once, in order or repaired
    /// in time).
    rates: Vec<f64>,
    /// Every viewer's share of the video packets delivered (received in order or repaired in
    /// time / sent).
    delivered: Vec<f64>,
    /// The lowest share received in order (before repairs), over the viewers.
    worst_in_order: f64,
    /// Packets repaired in time, over every viewer.
    repaired: u64,
    /// Packets the relays resent for NACKs, and NACKed packets they did not (gone from the
    /// history, or over the budget).
    resent: u64,
    unanswered: u64,
    /// Whether each viewer plays from the edge (else from a host peer).
    on_edge: Vec<bool>,
    from_edge: usize,
    /// The host's CPU, as a share of one core.
    host_cpu: f64,
    /// This process's (the viewers') CPU, in cores.
    viewers_cpu: f64,
    /// Packets the host's fan-out dropped for lagging viewers during the window.
    lagged: u64,
}

impl Step {
    /// Why the step failed: a viewer that received less than 95 % of its packets in order, or
    /// under 80 % of the median viewer's packet rate, or packets dropped by the host's fan-out.
    /// (The median, not the best: a viewer that joined last may still be draining the keyframe
    /// cache's backlog, ahead of everyone.)
    fn stall(&self) -> Option<String> {
        let mut sorted = self.rates.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let lossy = self.delivered.iter().filter(|&&d| d < MIN_DELIVERED).count();
        let late = self.rates.iter().filter(|&&r| r < median * MIN_RATE_SHARE).count();
        if lossy + late == 0 && self.lagged == 0 {
            return None;
        }
        let worst = self.delivered.iter().copied().fold(1.0, f64::min);
        Some(format!(
            "{lossy} received under 95 % of their packets (worst {:.1} %), {late} under 80 % of the median rate ({median:.1}/s), {} packets dropped by the fan-out",
            worst * 100.0,
            self.lagged
        ))
    }
}

impl Step {
    /// Lowest and highest rate of the viewers fed by the edge (`true`) or by host peers.
    fn range(&self, edge: bool) -> String {
        let rates: Vec<f64> = self.rates.iter().zip(&self.on_edge).filter(|(_, &e)| e == edge).map(|(r, _)| *r).collect();
        if rates.is_empty() {
            return "-".into();
        }
        let (lo, hi) = rates.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        format!("{lo:.1}-{hi:.1}")
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} viewers ({} from the edge): host CPU {:.1} % of a core, viewers' CPU {:.2} cores, video packets/s from the edge {}, from host peers {}, worst delivery {:.1} % ({:.1} % in order), repaired {}, relays resent {} (not {}), fan-out drops {}",
            self.rates.len(),
            self.from_edge,
            self.host_cpu * 100.0,
            self.viewers_cpu,
            self.range(true),
            self.range(false),
            self.delivered.iter().copied().fold(1.0, f64::min) * 100.0,
            self.worst_in_order * 100.0,
            self.repaired,
            self.resent,
            self.unanswered,
            self.lagged
        )
    }
}

/// Every viewer's video packets per second over `window`, and the CPU of both sides.
async fn measure(host: &HostProcess, viewers: &[PeerAgent], window: Duration) -> anyhow::Result<Step> {
    let counts = |v: &PeerAgent| {
        let r = &v.stats.resends;
        (v.stats.video_delivered(), v.stats.video_span(), v.stats.video_new(), v.stats.video_repaired(), r.resent.load(Relaxed), r.unanswered.load(Relaxed))
    };
    let before: Vec<_> = viewers.iter().map(counts).collect();
    let lagged_before = host.stats()?["lagged_packets"].as_u64().unwrap_or(0);
    let (host_before, own_before, t0) = (procstat::sample(host.pid())?.cpu, procstat::sample(std::process::id())?.cpu, Instant::now());
    tokio::time::sleep(window).await;
    let (host_after, own_after, elapsed) = (procstat::sample(host.pid())?.cpu, procstat::sample(std::process::id())?.cpu, t0.elapsed());
    let lagged = host.stats()?["lagged_packets"].as_u64().unwrap_or(0) - lagged_before;
    let secs = elapsed.as_secs_f64();
    let after: Vec<_> = viewers.iter().map(counts).collect();
    let change: Vec<_> = after.iter().zip(&before).map(|(a, b)| (a.0 - b.0, (a.1 - b.1).max(1), a.2 - b.2, a.3 - b.3, a.4 - b.4, a.5 - b.5)).collect();
    Ok(Step {
        rates: change.iter().map(|c| c.0 as f64 / secs).collect(),
        delivered: change.iter().map(|c| c.0 as f64 / c.1 as f64).collect(),
        worst_in_order: change.iter().map(|c| c.2 as f64 / c.1 as f64).fold(1.0, f64::min),
        repaired: change.iter().map(|c| c.3).sum(),
        resent: change.iter().map(|c| c.4).sum(),
        unanswered: change.iter().map(|c| c.5).sum(),
        on_edge: viewers.iter().map(|v| v.stats.source() == Some(0)).collect(),
        from_edge: viewers.iter().filter(|v| v.stats.source() == Some(0)).count(),
        host_cpu: (host_after - host_before).as_secs_f64() / secs,
        viewers_cpu: (own_after - own_before).as_secs_f64() / secs,
        lagged,
    })
}

/// This process's threads (and those it starts later) stay off core 0, which the host gets.
fn pin_this_process_away_from_core_0() -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()?.get();
    if cores < 2 {
        bail!("load capacity needs at least two cores: one for the host, the rest for the viewers");
    }
    let others = format!("1-{}", cores - 1);
    set_affinity(std::process::id(), &others)
}

/// `taskset -a -p -c CORES PID`: every thread of `pid`.
fn set_affinity(pid: u32, cores: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset -a -p -c {cores} {pid} failed");
    }
    Ok(())
}

/// The host pinned to core 0 and held to a share of it by a cgroup v1 CPU quota; removed on drop.
struct CpuCap {
    dir: PathBuf,
}

impl CpuCap {
    fn apply(pid: u32, share: f64) -> anyhow::Result<Self> {
        set_affinity(pid, "0")?;
        let dir = Path::new("/sys/fs/cgroup/cpu").join(format!("p2p-capacity-{pid}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {} (root and cgroup v1's cpu controller needed)", dir.display()))?;
        // A short period: the host runs at most 9 ms late, not 90 ms (a real-time server capped
        // with the default 100 ms period sends its packets in bursts).
        // (The kernel's smallest quota is 1 ms: below 10 % the period grows to keep the share.)
        let period = (1000.0 / share).max(10_000.0) as u64;
        std::fs::write(dir.join("cpu.cfs_period_us"), period.to_string())?;
        std::fs::write(dir.join("cpu.cfs_quota_us"), ((share * period as f64) as u64).to_string())?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).context("moving the host into its cgroup")?;
        Ok(Self { dir })
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // The host is gone by now (or leaves with its cgroup emptied by the kernel later).
        let _ = std::fs::remove_dir(&self.dir);
    }
}
