//! A process's CPU time and resident memory, read from `/proc` (Linux), and a server measured
//! over a window while its viewers play: what the load tools report.

use crate::peer::PeerStats;
use anyhow::{bail, Context};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CPU time (user + system) and resident set size of a process at one instant.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// User + system CPU time consumed so far.
    pub cpu: Duration,
    /// Resident set size, in bytes.
    pub rss: u64,
}

/// Reads `/proc/PID/stat` (utime, stime) and `/proc/PID/status` (VmRSS).
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let after = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(ProcSample { cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64), rss: rss_kib * 1024 })
}

/// `getconf CLK_TCK` (100 on Linux unless the kernel says otherwise).
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Waits until every viewer has video (or fails after `timeout`), then 2 s more so that the joins'
/// one-off work (ICE, DTLS) is over before a steady state is measured.
pub async fn all_playing(viewers: &[Arc<PeerStats>], timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while viewers.iter().any(|s| s.video() < 30) {
        if started.elapsed() > timeout {
            let waiting = viewers.iter().filter(|s| s.video() < 30).count();
            bail!("{waiting} of {} viewers have no video after {timeout:?}", viewers.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// A measurement window over a server process and its viewers.
pub struct Window {
    pid: u32,
    viewers: Vec<Arc<PeerStats>>,
    before: ProcSample,
    packets: u64,
    opened: Instant,
}

/// What a [`Window`] saw.
#[derive(Debug, Clone, Copy)]
pub struct WindowFigures {
    /// The process when the window opened.
    pub before: ProcSample,
    /// The process when it closed.
    pub after: ProcSample,
    /// How long it was open.
    pub elapsed: Duration,
    /// Video packets each viewer received per second meanwhile.
    pub video_packets_per_viewer_s: f64,
}

impl WindowFigures {
    /// The share of one core the process used.
    pub fn cpu_share(&self) -> f64 {
        (self.after.cpu - self.before.cpu).as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

impl Window {
    /// Starts measuring process `pid` and what `viewers` receive.
    pub fn open(pid: u32, viewers: &[Arc<PeerStats>]) -> anyhow::Result<Self> {
        let packets = viewers.iter().map(|s| s.video()).sum();
        Ok(Self { pid, viewers: viewers.to_vec(), before: sample(pid)?, packets, opened: Instant::now() })
    }

    /// Stops measuring.
    pub fn close(self) -> anyhow::Result<WindowFigures> {
        let (after, elapsed) = (sample(self.pid)?, self.opened.elapsed());
        let received = self.viewers.iter().map(|s| s.video()).sum::<u64>() - self.packets;
        let per_viewer = received as f64 / elapsed.as_secs_f64() / self.viewers.len().max(1) as f64;
        Ok(WindowFigures { before: self.before, after, elapsed, video_packets_per_viewer_s: per_viewer })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let before = super::sample(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        let after = super::sample(std::process::id()).unwrap();
        assert!(before.rss > 1 << 20, "a Rust test process holds more than 1 MiB: {before:?}");
        assert!(after.cpu > before.cpu, "CPU time grows with work: {before:?} -> {after:?}");
    }
}
