//! Our host and Janus's streaming plugin side by side: the same pre-encoded 1 Mbit/s VP8 + Opus
//! clip fed over RTP by ffmpeg to each, N WebRTC viewers (the same Rust player, `tests::peer`)
//! against each, one server at a time on a freshly started process; prints server CPU seconds per
//! viewer-minute and memory per viewer, and our/Janus ratios.
//!
//!   cargo run --release -p tests --bin versus_janus
//!
//! Janus does no ICE on loopback alone: the tool re-runs itself in a private network namespace
//! (`harness::in_network_namespace`; root or unprivileged user namespaces). Needs `janus` (Debian
//! 1.1.x) and `ffmpeg`.

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::harness::{config_xml_with_ice, HostProcess, NAMESPACE_ADDRESS};
use tests::peer::{answer_offer, PeerAgent, PeerStats};
use tests::procstat::{self, ProcSample, Window};
use tests::signal::CHROME_WINDOWS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Our host against Janus's streaming plugin, same input, same viewers.
#[derive(Parser)]
#[command(verbatim_doc_comment)]
struct Cli {
    /// Viewer counts, one fresh server each.
    #[arg(long, value_delimiter = ',', default_value = "25,50,100")]
    viewers: Vec<usize>,
    /// Measurement window once every viewer plays, seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Janus's `event_loops` (0: its default, a thread per viewer).
    #[arg(long, default_value_t = 2)]
    event_loops: u32,
}

/// Set in the copy of this tool that runs inside the namespace.
const INSIDE_NAMESPACE: &str = "VERSUS_JANUS_IN_NAMESPACE";
const JANUS_HTTP: u16 = 8088;
const JANUS_VIDEO_PORT: u16 = 5104;
const JANUS_AUDIO_PORT: u16 = 5106;
const HOST_VIDEO_PORT: u16 = 5004;
const HOST_AUDIO_PORT: u16 = 5006;
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// One server's figures for N viewers.
struct Figures {
    cpu_share: f64,
    rss_per_viewer: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tests::harness::rerun_in_network_namespace(INSIDE_NAMESPACE)?;
    // Janus gathers on the namespace's interface only (`ice_enforce_list`): so do the viewers.
    tests::peer::bind_to(NAMESPACE_ADDRESS.parse()?);
    let dir = std::env::temp_dir().join(format!("versus_janus-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let clip = encode_clip(&dir)?;
    println!("| viewers | ours: CPU s per viewer-minute | Janus | ours / Janus | ours: RSS per viewer | Janus | ours / Janus |");
    println!("|--:|--:|--:|--:|--:|--:|--:|");
    for &n in &cli.viewers {
        let janus = run_janus(&dir, &clip, n, &cli).await.context("Janus")?;
        let ours = run_ours(&clip, n, cli.seconds).await.context("our host")?;
        let per_minute = |f: &Figures| f.cpu_share * 60.0 / n as f64;
        println!(
            "| {n} | {:.3} | {:.3} | {:.2} | {:.2} MiB | {:.2} MiB | {:.2} |",
            per_minute(&ours),
            per_minute(&janus),
            ours.cpu_share / janus.cpu_share,
            ours.rss_per_viewer / MIB,
            janus.rss_per_viewer / MIB,
            ours.rss_per_viewer / janus.rss_per_viewer,
        );
    }
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

/// A 10 s clip at 1 Mbit/s (a noisy pattern, so the encoder really spends the bitrate).
fn encode_clip(dir: &Path) -> anyhow::Result<PathBuf> {
    let clip = dir.join("clip.webm");
    tests::harness::encode_clip(&clip, 30, 30, 10, &["-deadline", "good", "-cpu-used", "4"])?;
    Ok(clip)
}

/// Loops `clip` over RTP to a video and an audio port on loopback (no re-encoding).
fn feed(clip: &Path, video_port: u16, audio_port: u16) -> anyhow::Result<Child> {
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(clip)
        .args(["-map", "0:v", "-c", "copy", "-payload_type", "100", "-f", "rtp", &format!("rtp://127.0.0.1:{video_port}")])
        .args(["-map", "0:a", "-c", "copy", "-payload_type", "111", "-f", "rtp", &format!("rtp://127.0.0.1:{audio_port}")])
        .stdout(Stdio::null())
        .spawn()
        .context("starting ffmpeg")
}

/// Once every viewer plays, measures `pid` over `window`; RSS growth is counted from `idle`.
async fn measure(pid: u32, idle: ProcSample, stats: &[Arc<PeerStats>], window: Duration) -> anyhow::Result<Figures> {
    procstat::all_playing(stats, JOIN_TIMEOUT).await?;
    let measuring = Window::open(pid, stats)?;
    tokio::time::sleep(window).await;
    let seen = measuring.close()?;
    eprintln!("  {} viewers: {:.0} video packets/s each", stats.len(), seen.video_packets_per_viewer_s);
    Ok(Figures { cpu_share: seen.cpu_share(), rss_per_viewer: seen.after.rss.saturating_sub(idle.rss) as f64 / stats.len() as f64 })
}

async fn run_ours(clip: &Path, n: usize, seconds: u64) -> anyhow::Result<Figures> {
    let host = HostProcess::start(|port| {
        config_xml_with_ice(port, "*:10000-10004/udp", "").replace(
            "<Stream><Name>stream</Name><TestPattern/></Stream>",
            &format!("<Stream><Name>stream</Name><RtpIngest><VideoPort>{HOST_VIDEO_PORT}</VideoPort><AudioPort>{HOST_AUDIO_PORT}</AudioPort></RtpIngest></Stream>"),
        )
    })?;
    let mut ffmpeg = feed(clip, HOST_VIDEO_PORT, HOST_AUDIO_PORT)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = procstat::sample(host.pid())?;
    let mut viewers = Vec::new();
    for _ in 0..n {
        viewers.push(PeerAgent::join(&host.ws_url("app/stream"), CHROME_WINDOWS).await?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats: Vec<Arc<PeerStats>> = viewers.iter().map(|v| v.stats.clone()).collect();
    let figures = measure(host.pid(), idle, &stats, Duration::from_secs(seconds)).await;
    for v in viewers {
        v.leave().await;
    }
    let _ = ffmpeg.kill();
    figures
}

async fn run_janus(dir: &Path, clip: &Path, n: usize, cli: &Cli) -> anyhow::Result<Figures> {
    let config = dir.join("janus");
    write_janus_config(&config, cli.event_loops)?;
    let mut janus = Command::new("janus")
        .arg("-F")
        .arg(&config)
        .args(["-C"])
        .arg(config.join("janus.jcfg"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("janus.log"))?)
        .spawn()
        .context("starting janus (apt-get install janus)")?;
    let result = async {
        let started = Instant::now();
        while http("GET", "/janus/info", None).await.is_err() {
            if started.elapsed() > Duration::from_secs(15) {
                bail!("Janus did not answer on port {JANUS_HTTP}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut ffmpeg = feed(clip, JANUS_VIDEO_PORT, JANUS_AUDIO_PORT)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = procstat::sample(janus.id())?;
        let mut viewers = Vec::new();
        for _ in 0..n {
            viewers.push(JanusViewer::watch().await?);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats: Vec<Arc<PeerStats>> = viewers.iter().map(|v| v.stats.clone()).collect();
        let figures = measure(janus.id(), idle, &stats, Duration::from_secs(cli.seconds)).await;
        for v in viewers {
            v.leave().await;
        }
        let _ = ffmpeg.kill();
        figures
    }
    .await;
    let _ = janus.kill();
    let _ = janus.wait();
    result
}

fn write_janus_config(dir: &Path, event_loops: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let lib = "/usr/lib/x86_64-linux-gnu/janus";
    let loops = if event_loops > 0 { format!("event_loops = {event_loops}") } else { String::new() };
    std::fs::write(
        dir.join("janus.jcfg"),
        format!(
            r#"general: {{
  configs_folder = "{dir}"
  plugins_folder = "{lib}/plugins"
  transports_folder = "{lib}/transports"
  events_folder = "{lib}/events"
  loggers_folder = "{lib}/loggers"
  debug_level = 2
  {loops}
}}
nat: {{
  ignore_mdns = true
  ice_enforce_list = "v0"
}}
media: {{
  rtp_port_range = "20000-40000"
}}
plugins: {{
  disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so"
}}
transports: {{
  disable = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so,libjanus_websockets.so"
}}
events: {{
  broadcast = false
  disable = "libjanus_gelfevh.so,libjanus_mqttevh.so,libjanus_nanomsgevh.so,libjanus_rabbitmqevh.so,libjanus_sampleevh.so,libjanus_wsevh.so"
}}
loggers: {{
  disable = "libjanus_jsonlog.so"
}}
"#,
            dir = dir.display()
        ),
    )?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!("general: {{\n  json = \"compact\"\n  base_path = \"/janus\"\n  http = true\n  port = {JANUS_HTTP}\n  ip = \"127.0.0.1\"\n  https = false\n}}\nadmin: {{\n  admin_http = false\n  admin_https = false\n}}\n"),
    )?;
    std::fs::write(
        dir.join("janus.plugin.streaming.jcfg"),
        format!(
            r#"general: {{
  events = false
}}
clip: {{
  type = "rtp"
  id = 1
  description = "the benchmark clip"
  media = (
    {{ type = "video" mid = "v" label = "video" port = {JANUS_VIDEO_PORT} pt = 100 codec = "vp8" iface = "127.0.0.1" }},
    {{ type = "audio" mid = "a" label = "audio" port = {JANUS_AUDIO_PORT} pt = 111 codec = "opus" iface = "127.0.0.1" }}
  )
}}
"#
        ),
    )?;
    Ok(())
}

/// One request to Janus's HTTP API (HTTP/1.0, one connection each); the JSON reply.
async fn http(method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", JANUS_HTTP)).await?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response)?;
    let (_, body) = response.split_once("\r\n\r\n").context("no HTTP body from Janus")?;
    Ok(serde_json::from_str(body)?)
}

/// A viewer of Janus's mountpoint 1: create, attach, watch, wait for the offer, start with our answer;
/// a long poll keeps the session alive.
struct JanusViewer {
    stats: Arc<PeerStats>,
    pc: Arc<dyn webrtc::peer_connection::PeerConnection>,
    keepalive: tokio::task::JoinHandle<()>,
}

impl JanusViewer {
    async fn watch() -> anyhow::Result<Self> {
        let transaction = || format!("{:x}", rand::random::<u64>());
        let created = http("POST", "/janus", Some(&json!({"janus": "create", "transaction": transaction()}))).await?;
        let session = created["data"]["id"].as_u64().with_context(|| format!("create: {created}"))?;
        let attach = json!({"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": transaction()});
        let attached = http("POST", &format!("/janus/{session}"), Some(&attach)).await?;
        let handle = attached["data"]["id"].as_u64().with_context(|| format!("attach: {attached}"))?;
        let handle_path = format!("/janus/{session}/{handle}");
        let watch = json!({"janus": "message", "body": {"request": "watch", "id": 1}, "transaction": transaction()});
        http("POST", &handle_path, Some(&watch)).await?;
        let offer = loop {
            let event = http("GET", &format!("/janus/{session}?maxev=1"), None).await?;
            if let Some(sdp) = event["jsep"]["sdp"].as_str() {
                break sdp.to_string();
            }
            if event["janus"] == "error" || event["plugindata"]["data"]["error"].is_string() {
                bail!("Janus refused to stream: {event}");
            }
        };
        let (pc, answer, stats) = answer_offer(&offer).await?;
        let start = json!({"janus": "message", "body": {"request": "start"}, "jsep": {"type": "answer", "sdp": answer}, "transaction": transaction()});
        http("POST", &handle_path, Some(&start)).await?;
        let keepalive = tokio::spawn(async move {
            while http("GET", &format!("/janus/{session}?maxev=1"), None).await.is_ok() {}
        });
        Ok(Self { stats, pc, keepalive })
    }

    async fn leave(self) {
        self.keepalive.abort();
        let _ = self.pc.close().await;
    }
}
