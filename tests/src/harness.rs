//! Runs the real `host` binary with a generated config and reads its logs and `/stats`.

use anyhow::{bail, Context};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The address of the private network namespace that [`in_network_namespace`] sets up.
pub const NAMESPACE_ADDRESS: &str = "192.0.2.1";

/// Brings up loopback and a veth pair carrying [`NAMESPACE_ADDRESS`], then runs the program.
const NAMESPACE_SETUP: &str = "set -e
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 192.0.2.1/24 dev v0
ip link set v0 up
ip link set v1 up
ip route add default dev v0
exec \"$@\"";

/// A command running `program` in a fresh network namespace with one non-loopback address
/// ([`NAMESPACE_ADDRESS`], interface `v0`): browsers and Janus do no ICE on loopback alone, and
/// nothing reaches outside the namespace. Add the program's arguments and environment to it.
/// Needs root, or unprivileged user namespaces (then `unshare -r` maps us to root inside).
pub fn in_network_namespace(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut command = Command::new("unshare");
    command.args(if root { &["-n"][..] } else { &["-r", "-n"][..] }).args(["sh", "-c", NAMESPACE_SETUP, "sh"]).arg(program);
    command
}

/// [`in_network_namespace`] with an nftables ruleset (`nft -f -` syntax, e.g. a firewall opening
/// only some UDP ports) loaded in the namespace once its veth is up, before `program` starts.
/// Needs `nft` (Debian's `nftables`).
pub fn in_firewalled_network_namespace(program: impl AsRef<std::ffi::OsStr>, nft_ruleset: &str) -> Command {
    let mut command = in_network_namespace("sh");
    command.args(["-c", "printf '%s\\n' \"$1\" | nft -f - || exit 1; shift; exec \"$@\"", "sh", nft_ruleset]).arg(program);
    command
}

/// `tests/browser`: the browser scripts and their node packages.
pub fn browser_dir() -> PathBuf {
    workspace_dir().join("tests").join("browser")
}

/// Installs the pinned node packages (playwright-core, both OvenPlayer releases, OvenLiveKit) if
/// missing.
pub fn ensure_node_packages() {
    let dir = browser_dir();
    if dir.join("node_modules/playwright-core").exists()
        && dir.join("node_modules/ovenplayer-0.10.38/dist/ovenplayer.js").exists()
        && dir.join("node_modules/ovenplayer-0.10.54/dist/ovenplayer.js").exists()
        && dir.join("node_modules/ovenlivekit/dist/OvenLiveKit.min.js").exists()
    {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .expect("running npm (install Node.js and npm: apt-get install -y nodejs npm)");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

/// Runs `node` (a command from [`in_network_namespace`] or [`in_firewalled_network_namespace`]
/// whose program is node, its environment set) on `tests/browser/<script>` with `args`, against
/// the host binary (`HOST_BIN`) with `config` (`HOST_CONFIG`). Prints its output; panics with
/// both streams unless it exits 0 and prints `passed`. Returns its output.
pub fn run_browser_script(mut node: Command, script: &str, args: &[&str], config: &Path, passed: &str) -> String {
    let output = node
        .arg(browser_dir().join(script))
        .args(args)
        .env("HOST_BIN", target_dir().join("host"))
        .env("HOST_CONFIG", config)
        .output()
        .expect("running unshare");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{stdout}");
    assert!(output.status.success() && stdout.contains(passed), "{script} {args:?} failed ({}):\n{stdout}\n{stderr}", output.status);
    stdout.into_owned()
}

/// Encodes a benchmark clip once with ffmpeg: a noisy test pattern (so the encoder really spends
/// its 1 Mbit/s) in VP8 at `fps` with a keyframe every `gop` frames, a 440 Hz tone in Opus at
/// 64 kbit/s, `seconds` long; `video_args` are extra libvpx options.
pub fn encode_clip(clip: &Path, fps: u32, gop: u32, seconds: u32, video_args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc2=size=640x360:rate={fps},noise=alls=12:allf=t")])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", &seconds.to_string()])
        .args(["-c:v", "libvpx", "-b:v", "1M", "-minrate", "1M", "-maxrate", "1M", "-g", &gop.to_string()])
        .args(video_args)
        .args(["-c:a", "libopus", "-b:a", "64k"])
        .arg(clip)
        .status()
        .context("running ffmpeg (apt-get install ffmpeg)")?;
    if !status.success() {
        bail!("ffmpeg could not encode the clip");
    }
    Ok(())
}

/// For a tool that must run inside a private network namespace: unless `marker` is set in the
/// environment (we are the copy inside), builds the artifacts, re-runs this executable with the
/// same arguments inside [`in_network_namespace`] and exits with its status.
pub fn rerun_in_network_namespace(marker: &str) -> anyhow::Result<()> {
    if std::env::var_os(marker).is_some() {
        return Ok(());
    }
    build_artifacts();
    let status = in_network_namespace(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(marker, "1")
        .status()
        .context("running unshare")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// `target/debug` (or whichever profile the tests were built with).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    if deps.ends_with("deps") { deps.parent().expect("profile dir").to_path_buf() } else { deps.to_path_buf() }
}

/// Builds the host and every plugin the tests load (once per test process; cargo makes it a
/// no-op when they are up to date), so `cargo test --workspace` needs no other step.
pub fn build_artifacts() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = cargo_build();
        cmd.args(["-p", "host", "-p", "plugin-p2p", "-p", "test-plugin-panicky", "-p", "test-plugin-abi-mismatch", "-p", "test-plugin-flooder"]);
        let status = cmd.current_dir(workspace_dir()).status().expect("running cargo build");
        assert!(status.success(), "building the host and test plugins failed");
    });
}

/// `cargo build -q` in the profile the tests run in, without the test's own package variables:
/// passed on, they would make build scripts that watch them (ring watches CARGO_MANIFEST_DIR)
/// rebuild the whole stack.
pub fn cargo_build() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-q"]);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_") || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&&*key) {
            cmd.env_remove(&*key);
        }
    }
    if target_dir().ends_with("release") {
        cmd.arg("--release");
    }
    cmd
}

/// The workspace root.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// A shared library built by the workspace, e.g. `plugin_p2p` -> `target/debug/libplugin_p2p.so`.
pub fn library(name: &str) -> PathBuf {
    target_dir().join(format!("lib{name}.so"))
}

/// A free TCP port on loopback (a race is possible but unlikely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `Server.xml` for tests: the built-in stream at `app/stream`, loopback ICE, the given extra
/// `<Server>` children (plugins, modules, more applications).
pub fn config_xml(port: u16, extra: &str) -> String {
    config_xml_with_ice(port, "127.0.0.1:0/udp", extra)
}

/// Every test client connects from one address (loopback or the namespace's): lift the
/// connection caps so that thousands of test viewers fit (tests of the caps replace them).
pub const ONE_ADDRESS_CAP: &str = "<MaxConnections>100000</MaxConnections><MaxConnectionsPerAddress>100000</MaxConnectionsPerAddress>";

/// [`config_xml`] with another `<IceCandidate>` (OME's form, e.g. `*:10000-10019/udp`).
pub fn config_xml_with_ice(port: u16, ice: &str, extra: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<Server version="8">
  <Name>test</Name>
  <Bind><Publishers><WebRTC>
    <Signalling><Port>{port}</Port>{ONE_ADDRESS_CAP}</Signalling>
    <IceCandidates><IceCandidate>{ice}</IceCandidate></IceCandidates>
  </WebRTC></Publishers></Bind>
  <Applications><Application><Name>app</Name><Stream><Name>stream</Name><TestPattern/></Stream></Application></Applications>
{extra}
</Server>
"#
    )
}

/// The `<Plugins>` element loading the P2P plugin, and a `<Modules><P2P>` enabling it with k.
/// New viewers are paired with any host at once (`<PairNewViewers>any`, OME's rule): these tests
/// are about the pairing itself; the default (only proven hosts) has its own tests.
pub fn p2p_xml(k: u16, offer_timeout_ms: u64) -> String {
    format!(
        "<Plugins><Plugin><Path>{}</Path></Plugin></Plugins>\n<Modules><P2P><Enable>true</Enable><MaxClientPeersPerHostPeer>{k}</MaxClientPeersPerHostPeer><OfferTimeoutMs>{offer_timeout_ms}</OfferTimeoutMs><PairNewViewers>any</PairNewViewers></P2P></Modules>",
        library("plugin_p2p").display()
    )
}

/// Writes `xml` to a fresh temporary config file.
pub fn write_config(xml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2p-host-test-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("Server.xml");
    std::fs::write(&path, xml).unwrap();
    path
}

/// Runs the host on `config` to completion (for configs it must refuse); returns its exit
/// success and everything it printed.
pub fn run_to_exit(config: &Path, timeout: Duration) -> (bool, String) {
    build_artifacts();
    let mut child = Command::new(target_dir().join("host"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting host");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
            return (status.success(), strip_ansi(&out));
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("host did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host's output (stdout and stderr, colour codes stripped), collected as it comes; echoed with
/// `HOST_ECHO` set.
pub fn capture_log(child: &mut Child) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    for pipe in [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())] {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if std::env::var_os("HOST_ECHO").is_some() {
                    eprintln!("[host] {line}");
                }
                let mut log = log.lock().unwrap();
                log.push_str(&strip_ansi(&line));
                log.push('\n');
            }
        });
    }
    log
}

/// Waits until the host says it serves; an error with its log if it exits or takes over 20 s.
pub fn wait_until_serving(child: &mut Child, log: &Mutex<String>) -> anyhow::Result<()> {
    let started = Instant::now();
    while !log.lock().unwrap().contains("waiting for viewers") {
        if let Some(status) = child.try_wait()? {
            bail!("host exited ({status}) before serving:\n{}", log.lock().unwrap());
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("host did not start in 20 s:\n{}", log.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A running host; killed on drop.
pub struct HostProcess {
    child: Child,
    /// The signalling port.
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl HostProcess {
    /// Starts the host on a config made by `make_xml(port)` and waits until it serves.
    pub fn start(make_xml: impl FnOnce(u16) -> String) -> anyhow::Result<Self> {
        Self::start_on(free_port(), make_xml)
    }

    /// [`Self::start`] on a given signalling port (a host restarted where it was).
    pub fn start_on(port: u16, make_xml: impl FnOnce(u16) -> String) -> anyhow::Result<Self> {
        build_artifacts();
        let config = write_config(&make_xml(port));
        let mut child = Command::new(target_dir().join("host"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", std::env::var("HOST_LOG").unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()))
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting host")?;
        let log = capture_log(&mut child);
        wait_until_serving(&mut child, &log)?;
        let host = Self { child, port, log };
        Ok(host)
    }

    /// Everything the host logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://127.0.0.1:PORT/{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}/{path}", self.port)
    }

    /// GET `/stats` as JSON.
    pub fn stats(&self) -> anyhow::Result<Value> {
        let (_, body) = self.get("/stats", "")?;
        Ok(serde_json::from_str(&body)?)
    }

    /// The edge egress bytes of session `id` (None if it is not live).
    pub fn session_egress(&self, id: u64) -> anyhow::Result<Option<u64>> {
        let stats = self.stats()?;
        Ok(stats["sessions"].as_array().into_iter().flatten().find(|s| s["id"] == id).and_then(|s| s["egress_bytes"].as_u64()))
    }
}

impl HostProcess {
    /// Sends the host SIGTERM (what systemd and Docker send) and waits up to `timeout` for it to
    /// exit; its exit status, or `None` if it is still running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// GET `path` on the signalling port with extra request `headers` from loopback: the status
    /// code and the body.
    pub fn get(&self, path: &str, headers: &str) -> anyhow::Result<(u16, String)> {
        let (status, _, body) = http("GET", self.port, path, headers)?;
        Ok((status, body))
    }
}

/// Sends `method path` to `127.0.0.1:port` with extra request `headers` (each ending in `\r\n`):
/// the status code, the response's headers and its body.
pub fn http(method: &str, port: u16, path: &str, headers: &str) -> anyhow::Result<(u16, String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: test\r\n{headers}\r\n")?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).context("no status line")?.parse()?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((status, head.to_string(), body.to_string()))
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
