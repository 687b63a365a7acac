//! `host`: a minimal WebRTC streaming host with OvenMediaEngine-compatible signalling and session
//! plugins loaded at run time. It knows nothing about P2P: that is a plugin's business.

mod api;
mod config;
mod edge;
mod effects;
mod media;
mod metrics;
mod plugins;
mod proxy_protocol;
mod publish;
mod pull;
mod server;
mod sessions;
mod streams;
mod signalling;
mod state;
mod udp;

/// The WebRTC plumbing shared with the test peers (the `host` library).
pub(crate) use host::plumbing;

use anyhow::Context;
use clap::Parser;
use config::Config;
use media::StreamHub;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// A minimal WebRTC streaming host.
///
/// Serves the streams named in its config (the built-in test clip, or RTP ingest from ffmpeg or
/// GStreamer) to WebRTC viewers over OvenMediaEngine's WebSocket signalling, so the unmodified
/// OvenPlayer plays from it. Plugins named in the config (shared libraries built against
/// `plugin-api`) see every session and may serve viewers another way, e.g. from each other (P2P).
///
/// On the signalling port: ws://HOST:PORT/{app}/{stream} (signalling), http://HOST:PORT/ (a test
/// player that also relays to other viewers), http://HOST:PORT/p2p (the live P2P tree),
/// http://HOST:PORT/stats (sessions, egress bytes, metrics as JSON).
/// On the API port, if configured (<Bind><Managers><API><Port>): OME's stats API
/// (/v1/stats/current/vhosts/default/apps/{app}/streams/{stream}, ...) and /metrics (Prometheus).
/// The API, /metrics and /p2p ask for <Managers><API><AccessToken> as HTTP Basic credentials (as
/// OME does); without a token they answer on loopback only.
///
/// Logging: RUST_LOG (e.g. RUST_LOG=debug, RUST_LOG=host=debug,webrtc=warn); default info.
/// Colours only on a terminal (and never with NO_COLOR set).
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// The configuration file (OME-style Server.xml; see conf/Server.xml for every element).
    #[arg(short, long, default_value = "conf/Server.xml")]
    config: PathBuf,
    /// Log lines as text for people, or as one JSON object per line for log collectors
    /// (journald, Loki, Elasticsearch): {"timestamp", "level", "fields": {"message", ...}, "target"}.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written (to standard output).
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Installs the log subscriber: RUST_LOG's filter, the chosen format, colour only on a terminal.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn,rtc_ice=warn,rtc_dtls=warn".into());
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(colour).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// After a stop signal: every session is told to close (the protocol's close frame, plugins told
/// through `session_closed`), as is any that registers later (an upgrade in flight at the
/// signal), then sessions and HTTP connections get `DrainTimeoutMs` to finish.
async fn drain(state: &Arc<state::HostState>, counts: &server::ConnectionCounts) {
    let sessions = state.sessions.len();
    state.sessions.shut_down_all();
    state.publishers.stop_all();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(state.config.limits.drain_timeout_ms);
    while (state.sessions.len() > 0 || counts.total() > 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tracing::info!(
        sessions,
        left_open = state.sessions.len(),
        connections_left = counts.total(),
        "stopped"
    );
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(cli.log_format);
    let config = Config::load(&cli.config)?;
    let clock = Instant::now();
    let metrics = Arc::new(metrics::Metrics::default());
    let (actions_tx, actions_rx) = tokio::sync::mpsc::unbounded_channel();
    let plugins = plugins::PluginSet::load(&config, actions_tx, clock, metrics.clone())?;
    if plugins.names().is_empty() {
        tracing::info!("no plugin loaded: every viewer is served from the edge");
    }

    let mut streams = HashMap::new();
    let mut sources = Vec::new();
    for app in &config.applications {
        for stream in &app.streams {
            let name = format!("{}/{}", app.name, stream.name);
            if stream.test_pattern.is_some() {
                let clip = Arc::new(media::test_pattern::Clip::builtin().context("loading the built-in clip")?);
                let hub = Arc::new(StreamHub::new(name.clone(), media::SourceKind::TestPattern, config::VideoCodec::Vp8, true, config.keyframe_cache));
                tracing::info!(stream = %name, loop_seconds = clip.duration().as_secs_f32(), "built-in test stream");
                sources.push(tokio::spawn(media::test_pattern::play(clip, hub.clone())));
                streams.insert(name, hub);
            } else if let Some(rtp) = &stream.rtp_ingest {
                let hub = Arc::new(StreamHub::new(name.clone(), media::SourceKind::Rtp, rtp.video_codec, rtp.audio_port.is_some(), config.keyframe_cache));
                let feed = media::rtp_ingest::start(rtp, hub.clone()).await.with_context(|| format!("stream {name}"))?;
                sources.push(tokio::spawn(feed));
                streams.insert(name, hub);
            }
        }
    }

    let port = config.limits.port;
    let publishing = config.applications.iter().filter_map(|a| Some((a.name.clone(), a.publish.clone()?))).collect();
    let streams = streams::Streams::new(streams, publishing, config.keyframe_cache);
    let state = Arc::new(state::HostState {
        edge: edge::Edge::start(&config, metrics.clone())?,
        config,
        streams,
        sessions: Default::default(),
        plugins,
        metrics,
        book: Default::default(),
        tree: Default::default(),
        publishers: Default::default(),
        pulls: Default::default(),
    });
    tokio::spawn(effects::run(actions_rx, state.clone()));
    tokio::spawn(api::tree::feed(state.clone()));
    if state.config.api.is_some() {
        // Only the stats API reads the book (its throughputs and maxima need every second).
        tokio::spawn(api::sample_every_second(state.clone()));
    }

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
        .await
        .with_context(|| format!("cannot listen on signalling port {port}"))?;
    let candidates: Vec<String> = state.config.ice_candidates.iter().map(ToString::to_string).collect();
    let names: Vec<String> = state.streams.all().iter().map(|h| h.name.clone()).collect();
    tracing::info!(
        server = %state.config.name,
        streams = ?names,
        ice = ?candidates,
        "signalling on ws://0.0.0.0:{port}/{{app}}/{{stream}}; waiting for viewers"
    );
    println!("Open http://127.0.0.1:{port}/ in a browser to watch {}", names.first().map(|s| s.as_str()).unwrap_or("(no stream)"));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let counts = Arc::new(server::ConnectionCounts::default());
    let serving = tokio::spawn(server::serve(
        listener,
        signalling::router(state.clone()),
        state.config.limits.clone(),
        counts.clone(),
        state.metrics.clone(),
        stop,
    ));
    let api_server = match &state.config.api {
        Some(api) => {
            let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], api.port)))
                .await
                .with_context(|| format!("cannot listen on the API port {}", api.port))?;
            let access = if state.config.access_token.is_some() { "HTTP Basic with <AccessToken>" } else { "loopback only" };
            tracing::info!(access, "stats API (OME's /v1/stats/current/...) and /metrics on http://0.0.0.0:{}/", api.port);
            let counts = Arc::new(server::ConnectionCounts::default());
            let limits = state.config.limits.clone();
            Some(tokio::spawn(server::serve(listener, api::router(state.clone()), limits, counts, state.metrics.clone(), stop_tx.subscribe())))
        }
        None => None,
    };
    server::shutdown_signal().await;
    stop_tx.send_replace(true);
    drain(&state, &counts).await;
    serving.abort();
    api_server.iter().for_each(|s| s.abort());
    sources.iter().for_each(|s| s.abort());
    Ok(())
}
