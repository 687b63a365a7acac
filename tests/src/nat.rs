//! Homes on the internet, on one machine: named network namespaces joined by veth pairs, as
//! `../shared/TESTING.md` ("Real networks: two home routers and a LAN") describes.
//!
//! ```text
//!   srv 198.51.100.1 ── wan ──┬── nat1 203.0.113.2 ── br0 10.1.0.1/24 ── lan1 10.1.0.2, lan1b 10.1.0.3
//!   (the host, one interface) └── nat2 192.0.2.2   ── br0 10.2.0.1/24 ── lan2 10.2.0.2
//! ```
//!
//! `wan` routes between the host and the two home routers; it has no default route, nor have the
//! routers or `srv`, and nothing is linked to the root namespace, so no packet leaves the machine.
//! The LAN machines have one, via their router: Chromium gathers ICE candidates only on the
//! interface of the default route, and shows none at all without one. Each home router
//! masquerades its LAN behind its wan address (nftables) and drops what comes from the wan
//! unsolicited, in its input and forward chains (a port-restricted home router: without the input
//! drop the router's own conntrack entry changes the mapping and hole punching breaks). Chromium
//! runs in a LAN machine through a wrapper script ([`Topology::chromium_wrapper`]) that
//! playwright-core starts as its `executablePath` and talks to over a pipe.
//!
//! Every namespace name starts with `p2pnat-<pid>-<n>-`: the topology is deleted on drop, and
//! one left by a run that crashed (its process gone) is deleted by the next [`Topology::create`].

use crate::harness::{capture_log, target_dir, wait_until_serving, write_config};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The host's "public" address (a documentation range), its only interface.
pub const SRV_ADDRESS: &str = "198.51.100.1";
/// The home routers' wan addresses: what the host sees as the address of every machine behind them.
/// In two /24s, as homes of two ISPs (the plugin's locality takes one /24 for one network).
pub const NAT1_WAN: &str = "203.0.113.2";
pub const NAT2_WAN: &str = "192.0.2.2";
/// The LAN machines and their addresses.
pub const LAN_MACHINES: [(&str, &str, &str); 3] = [("lan1", "nat1", "10.1.0.2"), ("lan1b", "nat1", "10.1.0.3"), ("lan2", "nat2", "10.2.0.2")];

/// Every namespace of the topology, by its short name.
const NAMESPACES: [&str; 7] = ["srv", "wan", "nat1", "nat2", "lan1", "lan1b", "lan2"];
/// What every namespace name of a topology starts with (then the pid and a counter).
const PREFIX: &str = "p2pnat-";

/// A home router's nftables: masquerade on the wan side; from the wan only replies (conntrack
/// established/related) pass, to the router itself (input) and through it (forward).
/// One statement a line (Debian's nft 1.0.6 refuses `} }` on one line).
const HOME_ROUTER_RULES: &str = "table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan0\" masquerade
  }
}
table inet home {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname \"wan0\" ct state established,related accept
    iifname \"wan0\" drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname \"wan0\" ct state established,related accept
    iifname \"wan0\" drop
  }
}
";

/// Why the topology cannot be built here (not root, no `ip` or `nft`), or None when it can.
pub fn unavailable() -> Option<String> {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        return Some("not root: named network namespaces need root (CI runs as root)".into());
    }
    if !Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success()) {
        return Some("no `ip` binary: apt-get install iproute2 (or run .ci/run)".into());
    }
    None
}

/// The topology; deleted on drop (every process left in it killed first).
pub struct Topology {
    prefix: String,
    dir: PathBuf,
}

impl Topology {
    /// Builds the topology (deleting what a crashed earlier run left). Needs root, `ip` and `nft`.
    pub fn create() -> anyhow::Result<Self> {
        static RUN: AtomicU32 = AtomicU32::new(0);
        delete_leftovers();
        let prefix = format!("{PREFIX}{}-{}-", std::process::id(), RUN.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(format!("{}{}", prefix, rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        let topology = Self { prefix, dir };
        topology.build().context("building the NAT topology")?;
        Ok(topology)
    }

    /// The full name of namespace `short` (`srv`, `wan`, `nat1`, ...).
    pub fn ns(&self, short: &str) -> String {
        assert!(NAMESPACES.contains(&short), "no namespace {short} in the topology");
        format!("{}{short}", self.prefix)
    }

    /// A command running `program` in namespace `short` (`ip netns exec`).
    pub fn exec(&self, short: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(short)]).arg(program);
        command
    }

    /// Runs the shell `script` in namespace `short`; fails with its output unless it succeeds.
    pub fn sh(&self, short: &str, script: &str) -> anyhow::Result<String> {
        let output = self.exec(short, "sh").args(["-c", script]).output().context("running ip netns exec")?;
        if !output.status.success() {
            bail!("in {short}: `{script}` failed: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A script that runs Chromium in namespace `short` (`exec ip netns exec NS /usr/bin/chromium
    /// "$@"`), for playwright-core's `executablePath`.
    pub fn chromium_wrapper(&self, short: &str) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(format!("chromium-{short}"));
        std::fs::write(&path, format!("#!/bin/sh\nexec ip netns exec '{}' /usr/bin/chromium \"$@\"\n", self.ns(short)))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }

    /// A scratch folder deleted with the topology.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn build(&self) -> anyhow::Result<()> {
        for short in NAMESPACES {
            ip(&["netns", "add", &self.ns(short)])?;
            ip(&["-n", &self.ns(short), "link", "set", "lo", "up"])?;
        }
        // srv: one interface, its public address; it reaches the routers' wan addresses via wan.
        self.veth("srv", "eth0", "wan", "srv0")?;
        self.addr("srv", "eth0", &format!("{SRV_ADDRESS}/24"))?;
        self.addr("wan", "srv0", "198.51.100.254/24")?;
        self.route("srv", "203.0.113.0/24", "198.51.100.254")?;
        self.route("srv", "192.0.2.0/24", "198.51.100.254")?;
        // The home routers' wan links.
        for (router, wan_address, wan_side, other) in [("nat1", NAT1_WAN, "203.0.113.1", "192.0.2.0/24"), ("nat2", NAT2_WAN, "192.0.2.1", "203.0.113.0/24")] {
            self.veth(router, "wan0", "wan", router)?;
            self.addr(router, "wan0", &format!("{wan_address}/24"))?;
            self.addr("wan", router, &format!("{wan_side}/24"))?;
            self.route(router, "198.51.100.0/24", wan_side)?;
            self.route(router, other, wan_side)?;
            // The LAN: a bridge carrying the router's LAN address.
            let lan = if router == "nat1" { "10.1.0" } else { "10.2.0" };
            ip(&["-n", &self.ns(router), "link", "add", "br0", "type", "bridge"])?;
            self.addr(router, "br0", &format!("{lan}.1/24"))?;
            self.sh(router, "sysctl -qw net.ipv4.ip_forward=1")?;
            let rules = self.dir.join(format!("{router}.nft"));
            std::fs::write(&rules, HOME_ROUTER_RULES)?;
            self.sh(router, &format!("nft -f '{}'", rules.display())).context("loading the home router's nftables (apt-get install nftables)")?;
        }
        self.sh("wan", "sysctl -qw net.ipv4.ip_forward=1")?;
        for (machine, router, address) in LAN_MACHINES {
            self.veth(machine, "eth0", router, machine)?;
            ip(&["-n", &self.ns(router), "link", "set", machine, "master", "br0"])?;
            self.addr(machine, "eth0", &format!("{address}/24"))?;
            let gateway = if router == "nat1" { "10.1.0.1" } else { "10.2.0.1" };
            // A LAN machine's default route, via its router, as at home: Chromium gathers ICE
            // candidates only on the interface of the default route (without one it shows none at
            // all, mDNS on or off). The routers, wan and srv have none: nothing leaves the machine.
            ip(&["-n", &self.ns(machine), "route", "add", "default", "via", gateway])?;
        }
        Ok(())
    }

    /// A veth pair: `a_if` in namespace `a`, `b_if` in `b`, both up (created in place: no name
    /// ever appears in the root namespace).
    fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> anyhow::Result<()> {
        ip(&["-n", &self.ns(a), "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &self.ns(b)])?;
        ip(&["-n", &self.ns(a), "link", "set", a_if, "up"])?;
        ip(&["-n", &self.ns(b), "link", "set", b_if, "up"])
    }

    fn addr(&self, short: &str, interface: &str, cidr: &str) -> anyhow::Result<()> {
        ip(&["-n", &self.ns(short), "addr", "add", cidr, "dev", interface])?;
        ip(&["-n", &self.ns(short), "link", "set", interface, "up"])
    }

    fn route(&self, short: &str, to: &str, via: &str) -> anyhow::Result<()> {
        ip(&["-n", &self.ns(short), "route", "add", to, "via", via])
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for short in NAMESPACES {
            delete_namespace(&self.ns(short));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip").args(args).output().context("running ip")?;
    if !output.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Kills every process still in namespace `name` (only processes a test started live there),
/// then deletes it.
fn delete_namespace(name: &str) {
    if let Ok(output) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill(2) on a process inside our own test namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = Command::new("ip").args(["netns", "delete", name]).output();
}

/// Deletes the namespaces of topologies whose test process is gone (a run that crashed or was
/// killed before its drop).
fn delete_leftovers() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(name);
        }
    }
}

/// The real `host` binary running in a namespace of a [`Topology`]; killed on drop. Its output
/// (stdout and stderr) is kept ([`Self::log`]).
pub struct NamespacedHost {
    child: Child,
    log: Arc<Mutex<String>>,
    /// The config file it runs on.
    pub config: PathBuf,
}

impl NamespacedHost {
    /// Starts `target/<profile>/host --config <xml>` in namespace `short` with `RUST_LOG` =
    /// `rust_log`, and waits until it serves.
    pub fn start(topology: &Topology, short: &str, xml: &str, rust_log: &str) -> anyhow::Result<Self> {
        let config = write_config(xml);
        let mut child = topology
            .exec(short, target_dir().join("host"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the host with ip netns exec")?;
        let log = capture_log(&mut child);
        wait_until_serving(&mut child, &log)?;
        let host = Self { child, log, config };
        Ok(host)
    }

    /// Everything the host printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for NamespacedHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
