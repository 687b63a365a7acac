//! `host`: a minimal WebRTC streaming host with OvenMediaEngine-compatible signalling and session
//! plugins loaded at run time. It knows nothing about P2P: that is a plugin's business.

mod api;
mod config;
mod deadline;
mod edge;
mod effects;
mod media;
mod metrics;
mod plugins;
mod proxy_protocol;
mod publish;
mod pull;
mod server;
mod shares;
mod sockets;
mod sessions;
mod streams;
mod signalling;
mod tls;

/// The WebRTC plumbing shared with the test peers (the `host` library).
pub(crate) use host::plumbing;

use clap::Parser;
use config::Config;
use std::net::{IpAddr, SocketAddr};
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
/// http://HOST:PORT/stats (sessions, egress bytes, metrics as JSON); the same over wss and https
/// on its <TLSPort>, with the certificate of <VirtualHosts><VirtualHost><Host><TLS>.
/// On the API port, if configured (<Bind><Managers><API><Port>, <TLSPort>): OME's stats API
/// (/v1/stats/current/vhosts/default/apps/{app}/streams/{stream}, ...) and /metrics (Prometheus).
/// Certificates are reloaded when their files change, and on POST /v1/vhosts:reloadAllCertificates.
/// Every listener binds the addresses of <Server><IP> (default *: every IPv4 address).
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
async fn drain(state: &signalling::Signalling, counts: &server::ConnectionCounts) {
    let sessions = state.sessions.len();
    state.sessions.shut_down_all();
    state.publishers.stop_all();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(state.limits.drain_timeout_ms);
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
    let certificates = tls::Certificates::load(&config)?;
    let clock = Instant::now();
    let metrics = Arc::new(metrics::Metrics::default());
    let (actions_tx, actions_rx) = tokio::sync::mpsc::unbounded_channel();
    let sessions = Arc::new(sessions::Sessions::default());
    let plugins = Arc::new(plugins::PluginSet::load(&config, actions_tx, clock, metrics.clone(), sessions.clone())?);
    if plugins.names().is_empty() {
        tracing::info!("no plugin loaded: every viewer is served from the edge");
    }

    let configured = media::configured::Configured::start(&config).await?;
    let publishing = config.applications.iter().filter_map(|a| Some((a.name.clone(), a.publish.clone()?))).collect();
    let streams = Arc::new(streams::Streams::new(configured.hubs, publishing, config.keyframe_cache));
    let edge = Arc::new(edge::Edge::start(&config, metrics.clone())?);
    let limits = &config.limits;
    let publishers = Arc::new(publish::Publishers::new(streams.clone(), metrics.clone(), limits.max_publishers, limits.max_publishers_per_address));
    let pulls = Arc::new(pull::Pulls::new(config.origins.clone(), config.name.clone(), streams.clone(), edge.clone(), metrics.clone(), config.keyframe_cache));
    let state = Arc::new(signalling::Signalling {
        limits: config.limits.clone(),
        answer_timeout: config.answer_timeout,
        sessions: sessions.clone(),
        plugins: plugins.clone(),
        metrics: metrics.clone(),
        edge: edge.clone(),
        pulls,
        publishers,
    });
    tokio::spawn(effects::run(actions_rx, effects::Effects { sessions: sessions.clone(), plugins: plugins.clone(), metrics: metrics.clone() }));
    let tree = Arc::new(api::tree::TreeFeed::new(sessions.clone(), streams.clone(), metrics.clone(), config.access_token.clone()));
    tokio::spawn(api::tree::feed(tree.clone()));
    let api = config.api.is_some().then(|| {
        let api = Arc::new(api::Api {
            applications: config.applications.clone(),
            access_token: config.access_token.clone(),
            streams: streams.clone(),
            sessions: sessions.clone(),
            plugins: plugins.clone(),
            metrics: metrics.clone(),
            book: Default::default(),
        });
        // Only the stats API reads the book (its throughputs and maxima need every second).
        tokio::spawn(api::sample_every_second(api.clone()));
        api
    });

    let (limits, listen) = (config.limits.clone(), config.listen.clone());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    // Serves `router` on a plain port and a TLS port (each optional) at every <Server><IP>, its
    // connections counted together; the addresses bound, TLS or not.
    let mut listen_on = |ports: [(Option<u16>, Option<tokio_rustls::TlsAcceptor>); 2], router: axum::Router, counts: &Arc<server::ConnectionCounts>| {
        let mut bound = Vec::new();
        for (port, tls) in ports.into_iter().filter_map(|(port, tls)| Some((port?, tls))) {
            for listener in server::bind(&listen, port)? {
                bound.push((tls.is_some(), listener.local_addr()?));
                let serving = server::serve(listener, tls.clone(), router.clone(), limits.clone(), counts.clone(), metrics.clone(), stop.clone());
                servers.push(tokio::spawn(serving));
            }
        }
        anyhow::Ok(bound)
    };
    let counts = Arc::new(server::ConnectionCounts::default());
    let signalling_ports = [(limits.port, None), (limits.tls_port, certificates.signalling.clone().map(tls::acceptor))];
    let urls: Vec<String> = listen_on(signalling_ports, signalling::router(state.clone()).merge(tree.routes()), &counts)?
        .iter()
        .map(|(tls, at)| format!("{}://{at}/{{app}}/{{stream}}", if *tls { "wss" } else { "ws" }))
        .collect();
    if let (Some(ports), Some(api)) = (&config.api, api) {
        let access = if config.access_token.is_some() { "HTTP Basic with <AccessToken>" } else { "loopback only" };
        let api_ports = [(ports.port, None), (ports.tls_port, certificates.api.clone().map(tls::acceptor))];
        for (tls, at) in listen_on(api_ports, api::router(api, certificates.clone()), &Default::default())? {
            let scheme = if tls { "https" } else { "http" };
            tracing::info!(access, "stats API (OME's /v1/stats/current/...) and /metrics on {scheme}://{at}/");
        }
    }
    if certificates.signalling.is_some() || certificates.api.is_some() {
        tokio::spawn(tls::watch(certificates));
    }
    let candidates: Vec<String> = config.ice_candidates.iter().map(ToString::to_string).collect();
    let names: Vec<String> = streams.all().iter().map(|h| h.name.clone()).collect();
    tracing::info!(server = %config.name, streams = ?names, ice = ?candidates, "signalling on {}; waiting for viewers", urls.join(", "));
    let page = limits.port.map(|p| ("http", p)).or(limits.tls_port.map(|p| ("https", p)));
    if let Some((scheme, port)) = page {
        let at = SocketAddr::new(local_address(listen[0]), port);
        println!("Open {scheme}://{at}/ in a browser to watch {}", names.first().map(|s| s.as_str()).unwrap_or("(no stream)"));
    }
    server::shutdown_signal().await;
    stop_tx.send_replace(true);
    drain(&state, &counts).await;
    servers.iter().for_each(|s| s.abort());
    configured.tasks.iter().for_each(|s| s.abort());
    Ok(())
}

/// An address of this machine that reaches a listener bound to `ip`: loopback for a wildcard.
fn local_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}
