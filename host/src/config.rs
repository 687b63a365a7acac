//! `Server.xml`: the host's configuration, read with quick-xml + serde into typed values.
//!
//! The layout follows OvenMediaEngine's names where we have the same thing:
//!
//! ```xml
//! <Server version="8">
//!   <Name>p2p-host</Name>
//!   <Bind><Publishers><WebRTC>
//!     <Signalling><Port>3333</Port></Signalling>
//!     <IceCandidates><IceCandidate>*:10000-10004/udp</IceCandidate></IceCandidates>
//!   </WebRTC></Publishers></Bind>
//!   <Applications>
//!     <Application><Name>app</Name>
//!       <Stream><Name>stream</Name><TestPattern /></Stream>
//!       <Stream><Name>cam</Name><RtpIngest><VideoPort>5004</VideoPort></RtpIngest></Stream>
//!     </Application>
//!   </Applications>
//!   <Plugins><Plugin><Path>../target/release/libplugin_p2p.so</Path></Plugin></Plugins>
//!   <Modules><P2P><Enable>true</Enable></P2P></Modules>
//! </Server>
//! ```
//!
//! Plugin sections: every child of `<Modules>`, and any other child of `<Server>` the host does not
//! know (OME's older `<Server><P2P>` form), is cut out before the host's own part is parsed and
//! handed, as XML text, to the loaded plugin whose section name it is. An unknown `<Server>` child
//! that no plugin claims is an error; an unclaimed `<Modules>` child is ignored with a warning (OME
//! configs carry modules we do not have). A section given in both forms is an error.
//!
//! Every error names the file, the line and column, and what was expected.

use quick_xml::events::Event;
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use ome_signalling::{names, query, StreamName};

/// Elements of `<Server>` the host itself understands.
const HOST_ELEMENTS: &[&str] = &["Name", "IP", "Bind", "Managers", "VirtualHosts", "Origins", "Applications", "Plugins", "Modules"];

/// A refused configuration: where and what.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", position.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// Line and column (1-based), when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong and what was expected.
    pub message: String,
}

/// The whole host configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// The server's name, for logs.
    pub name: String,
    /// The signalling server's bounds.
    pub limits: SignallingLimits,
    /// Where WebRTC media binds and what candidates it offers.
    pub ice_candidates: Vec<IceCandidate>,
    /// Addresses announced instead of the bound ones (a host behind 1:1 NAT or in a container).
    pub public_addresses: Vec<IpAddr>,
    /// How long an edge offer waits for the player's answer before it is withdrawn.
    pub answer_timeout: std::time::Duration,
    /// The bounds of each stream's keyframe cache.
    pub keyframe_cache: crate::media::gop::GopLimits,
    /// The streams this host serves, by application.
    pub applications: Vec<Application>,
    /// The plugins to load, in order.
    pub plugins: Vec<PluginEntry>,
    /// Plugin config sections cut out of the file.
    pub sections: Vec<Section>,
    /// Where streams this host does not have are pulled from.
    pub origins: Origins,
    /// The stats API (OME's), if a port is configured.
    pub api: Option<ApiConfig>,
    /// Where the signalling and API listeners bind (OME's `<Server><IP>`, repeatable; `*`, the
    /// default, is 0.0.0.0, `::` every IPv6 address).
    pub listen: Vec<IpAddr>,
    /// The signalling port's certificate (OME's `<VirtualHosts><VirtualHost><Host><TLS>`), for
    /// its `<TLSPort>`.
    pub tls: Option<TlsFiles>,
    /// The token of the stats API, `/metrics` and the P2P page (OME's `<Managers><API><AccessToken>`):
    /// asked for as HTTP Basic credentials; without one they answer on loopback only.
    pub access_token: Option<String>,
    text: String,
}

/// The stats API's listeners (OME's `<Bind><Managers><API>`): at least one of the ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Its plain HTTP port (OME's examples use 8081).
    pub port: Option<u16>,
    /// Its HTTPS port, with the certificate of `<Managers><Host><TLS>`.
    pub tls_port: Option<u16>,
    /// The certificate of `<Managers><Host><TLS>`.
    pub tls: Option<TlsFiles>,
}

/// A certificate's PEM files (OME's `<TLS>`), relative paths taken from the config file's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `<CertPath>`: the certificate, and after it any intermediates (Let's Encrypt's `fullchain.pem`).
    pub cert: PathBuf,
    /// `<KeyPath>`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `<ChainCertPath>`: intermediates kept in a file of their own (Let's Encrypt's `chain.pem`
    /// beside `cert.pem`).
    pub chain: Option<PathBuf>,
    /// Where the `<TLS>` element starts in the config file, for errors about the files.
    pub offset: usize,
}

/// One `<IceCandidate>`: `ADDRESS:PORT[-PORT][/udp|/tcp]`, with `*` for every IPv4 interface and
/// `[::]` for every IPv6 one (as in OME: list both for both, on the same ports if you like) and
/// port `0` for any free port. `/udp` when the transport is left out; `/tcp` is ICE over
/// TCP (RFC 6544 passive candidates, as OME since v0.21) for viewers whose network blocks UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    /// `None` for `*`: every non-loopback IPv4 interface address.
    pub address: Option<IpAddr>,
    /// The ports to use: on UDP one socket each, on TCP one listener each.
    pub ports: RangeInclusive<u16>,
    /// Its transport.
    pub transport: IceTransport,
}

/// The transport of an `<IceCandidate>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceTransport {
    Udp,
    Tcp,
}

impl std::str::FromStr for IceCandidate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected ADDRESS:PORT[-PORT][/udp|/tcp], e.g. *:10000-10004/udp";
        let s = s.trim();
        let (s, transport) = match s.rsplit_once('/') {
            Some((rest, proto)) if proto.eq_ignore_ascii_case("udp") => (rest, IceTransport::Udp),
            Some((rest, proto)) if proto.eq_ignore_ascii_case("tcp") => (rest, IceTransport::Tcp),
            Some((_, proto)) => return Err(format!("transport {proto:?} is not supported (udp or tcp); {expected}")),
            None => (s, IceTransport::Udp),
        };
        let (addr, ports) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} has no port; {expected}"))?;
        let address = match addr.trim_matches(['[', ']']) {
            "*" => None,
            a => Some(a.parse::<IpAddr>().map_err(|_| format!("{a:?} is not an IP address or *; {expected}"))?),
        };
        let port = |p: &str| p.parse::<u16>().map_err(|_| format!("{p:?} is not a port number; {expected}"));
        let ports = match ports.split_once('-') {
            Some((lo, hi)) => port(lo)?..=port(hi)?,
            None => port(ports)?..=port(ports)?,
        };
        if ports.is_empty() || (*ports.start() == 0 && *ports.end() != 0) {
            return Err(format!("port range {}-{} is empty or starts at 0 (0 alone means any free port); {expected}", ports.start(), ports.end()));
        }
        Ok(Self { address, ports, transport })
    }
}

impl IceCandidate {
    /// The address its sockets bind: `*` is IPv4's wildcard, as in OME (`[::]` is IPv6's).
    pub fn bind_ip(&self) -> IpAddr {
        self.address.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }
}

impl fmt::Display for IceCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            Some(IpAddr::V6(a)) => write!(f, "[{a}]")?,
            Some(a) => write!(f, "{a}")?,
            None => f.write_str("*")?,
        }
        let transport = match self.transport {
            IceTransport::Udp => "udp",
            IceTransport::Tcp => "tcp",
        };
        write!(f, ":{}-{}/{transport}", self.ports.start(), self.ports.end())
    }
}

/// An application and its streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Application {
    /// The first path segment of the signalling URL.
    pub name: String,
    /// The application's streams.
    #[serde(rename = "Stream", default)]
    pub streams: Vec<StreamConfig>,
    /// Whether, and how, publishers (OvenLiveKit, WHIP) may bring streams to it.
    #[serde(default)]
    pub publish: Option<PublishConfig>,
}

/// `<Publish>`: who may publish to an application over WebRTC (OME's WebSocket signalling with
/// `?direction=send`, or WHIP with `?direction=whip`), and what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct PublishConfig {
    /// The publish token: `?token=` on the signalling URL, `Authorization: Bearer` for WHIP.
    /// Without one, anyone who reaches the port may publish.
    pub token: Option<String>,
    /// The stream names that may be published; none listed: any name (but a configured
    /// stream's).
    #[serde(rename = "Stream", default)]
    pub streams: Vec<String>,
    /// A second publisher of a stream takes it over (the first is closed); else it gets 409.
    #[serde(default)]
    pub take_over: bool,
    /// How long a stream whose publisher left waits for it to come back (its viewers wait with
    /// it); 0: the stream ends at once.
    #[serde(default)]
    pub grace_ms: u64,
}

impl PublishConfig {
    /// Whether `stream` may be published.
    pub fn allows(&self, stream: &str) -> bool {
        self.streams.is_empty() || self.streams.iter().any(|s| s == stream)
    }
}

/// A stream and where its media comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct StreamConfig {
    /// The second path segment of the signalling URL.
    pub name: String,
    /// The built-in looping test clip (VP8 + Opus), needing nothing installed.
    pub test_pattern: Option<TestPattern>,
    /// RTP over UDP, e.g. from ffmpeg or GStreamer.
    pub rtp_ingest: Option<RtpIngest>,
}

/// The built-in test stream's settings (none yet: the element's presence selects it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestPattern {}

/// A video codec the RTP ingest accepts.
pub use crate::plumbing::VideoCodec;

/// RTP over UDP ingest: one port for video, one for audio (Opus).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct RtpIngest {
    /// The address to bind (default 127.0.0.1).
    #[serde(default = "RtpIngest::default_address")]
    pub address: IpAddr,
    /// The UDP port receiving video RTP.
    pub video_port: u16,
    /// The video codec (default VP8).
    #[serde(default = "RtpIngest::default_video_codec")]
    pub video_codec: VideoCodec,
    /// The UDP port receiving Opus RTP, if the stream has audio.
    pub audio_port: Option<u16>,
    /// Seconds without any packet after which the stream is reported gone and viewers told
    /// (default 5).
    #[serde(default = "RtpIngest::default_silence_timeout")]
    pub silence_timeout: u64,
}

impl RtpIngest {
    fn default_address() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }
    fn default_video_codec() -> VideoCodec {
        VideoCodec::Vp8
    }
    fn default_silence_timeout() -> u64 {
        5
    }
}

/// A plugin library to load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct PluginEntry {
    /// The library's path; a relative path is taken from the config file's folder.
    pub path: PathBuf,
    /// If true (the default), a library that fails to load stops the host; if false, the host
    /// logs the error and runs without it.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// A plugin's config section, cut out of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The element name, e.g. `P2P`.
    pub name: String,
    /// The section's XML text, from `<Name` to `</Name>`.
    pub xml: String,
    /// Byte offset of the section in the file.
    pub offset: usize,
    /// True for the legacy form (a direct child of `<Server>`), false under `<Modules>`.
    pub legacy: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawServer {
    #[serde(rename = "@version", default)]
    _version: Option<String>,
    #[serde(default = "RawServer::default_name")]
    name: String,
    #[serde(default)]
    bind: RawBind,
    #[serde(default)]
    applications: RawApplications,
    #[serde(default)]
    plugins: RawPlugins,
    // Its children were cut out as plugin sections; what is left is whitespace.
    #[serde(rename = "Modules", default)]
    _modules: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    managers: Option<RawManagers>,
    #[serde(default)]
    origins: Option<Origins>,
    /// Parsed after deserialization, so that an error points at its own element.
    #[serde(rename = "IP", default)]
    ip: Vec<String>,
    #[serde(default)]
    virtual_hosts: Option<RawVirtualHosts>,
}

/// `<VirtualHosts>`: one `<VirtualHost>` (its `<Name>`, conventionally `default`, is what OME's
/// API paths name; this host serves it under `default` whatever it is called).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawVirtualHosts {
    #[serde(rename = "VirtualHost", default)]
    virtual_host: Vec<RawVirtualHost>,
}

/// OME's `<VirtualHost>`: its `<Host>` (names and certificate) and, in OME's full form, its
/// `<Origins>` and `<Applications>` (else they are the top-level ones).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawVirtualHost {
    #[serde(rename = "Name", default)]
    _name: Option<String>,
    #[serde(default)]
    host: Option<RawHost>,
    #[serde(default)]
    origins: Option<Origins>,
    #[serde(default)]
    applications: Option<RawApplications>,
}

/// OME's `<Host>`: the names it answers to (every certificate is served whatever the name, so
/// they are kept for OME files only) and its certificate.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawHost {
    #[serde(rename = "Names", default)]
    _names: Option<serde::de::IgnoredAny>,
    #[serde(rename = "TLS", default)]
    tls: Option<RawTls>,
}

/// OME's `<TLS>`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    #[serde(default)]
    chain_cert_path: Option<PathBuf>,
}

/// `<Origins>` (OME's, which nests it in a `<VirtualHost>`): where the streams this host does not
/// have come from. A viewer of such a stream makes the host pull it from its origin over WebRTC,
/// as a player of the origin's OME signalling (`ws://ORIGIN/{app}/{stream}?p2p=0`: an edge is
/// never a P2P peer), for as long as anyone watches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Origins {
    /// The timeouts of every pull.
    #[serde(default)]
    pub properties: OriginProperties,
    /// The origins, by location; the longest matching location wins.
    #[serde(rename = "Origin", default)]
    pub origin: Vec<Origin>,
}

/// `<Origins><Properties>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase", default)]
pub struct OriginProperties {
    /// A pull that brings nothing for this long is made again (ms; OME's name).
    pub no_input_failover_timeout: u64,
    /// A pulled stream nobody has watched for this long is released (ms; OME's name).
    pub unused_stream_deletion_timeout: u64,
}

impl Default for OriginProperties {
    fn default() -> Self {
        Self { no_input_failover_timeout: 3000, unused_stream_deletion_timeout: 60_000 }
    }
}

/// One `<Origin>`: a location (`/app/` for a whole application, `/app/stream` for one stream) and
/// where to pull it from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Origin {
    /// `/app/` or `/app/stream`.
    pub location: String,
    /// How and from where.
    pub pass: OriginPass,
}

/// `<Pass>`: the scheme (`webrtc`: OME's WebSocket signalling) and the origins' addresses, tried
/// in order (`HOST:PORT/app/` for a location `/app/`; the rest of the stream's path is appended).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct OriginPass {
    /// `webrtc`.
    pub scheme: String,
    /// The origins.
    pub urls: OriginUrls,
}

/// `<Urls>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct OriginUrls {
    /// `HOST:PORT/path`.
    #[serde(rename = "Url")]
    pub url: Vec<String>,
}

impl Origins {
    /// The signalling URLs to pull `name` from, in order (none if no origin has it); the
    /// query says the puller is an edge named `edge` and takes no part in P2P. The part of the
    /// name past the origin's `<Location>` is added to each URL escaped, one segment per name,
    /// and the query's values are escaped: no name or edge name adds a segment or a parameter.
    pub fn urls_for(&self, name: &StreamName, edge: &str) -> Vec<String> {
        let path = format!("/{name}");
        let matches = |o: &&Origin| o.location == path || (o.location.ends_with('/') && path.starts_with(&o.location));
        let Some(origin) = self.origin.iter().filter(matches).max_by_key(|o| o.location.len()) else { return Vec::new() };
        let rest: Vec<String> = path[origin.location.len()..].split('/').filter(|s| !s.is_empty()).map(names::segment).collect();
        let query = query::encode(&[(query::P2P, "0"), (query::EDGE, edge)]);
        origin
            .pass
            .urls
            .url
            .iter()
            .map(|url| {
                let base = url.trim_end_matches('/');
                if rest.is_empty() { format!("ws://{base}?{query}") } else { format!("ws://{base}/{}?{query}", rest.join("/")) }
            })
            .collect()
    }
}
/// `<Managers>`: OME's `<Host>` (the API's certificate, for `<Bind><Managers><API><TLSPort>`)
/// and `<API><AccessToken>`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawManagers {
    #[serde(default)]
    host: Option<RawHost>,
    #[serde(rename = "API", default)]
    api: Option<RawManagersApi>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawManagersApi {
    access_token: Option<String>,
}

/// `<Bind><Managers><API><Port>`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawBindManagers {
    #[serde(rename = "API")]
    api: RawBindApi,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawBindApi {
    #[serde(default)]
    port: Option<u16>,
    #[serde(rename = "TLSPort", default)]
    tls_port: Option<u16>,
}

impl RawServer {
    fn default_name() -> String {
        "p2p-host".into()
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawBind {
    #[serde(default)]
    publishers: RawPublishers,
    #[serde(default)]
    managers: Option<RawBindManagers>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublishers {
    #[serde(rename = "WebRTC", default)]
    webrtc: RawWebRtc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawWebRtc {
    #[serde(default)]
    signalling: SignallingLimits,
    #[serde(default)]
    ice_candidates: RawIceCandidates,
    #[serde(default = "RawWebRtc::default_answer_timeout_ms")]
    answer_timeout_ms: u64,
    #[serde(default)]
    keyframe_cache: RawKeyframeCache,
}

impl RawWebRtc {
    fn default_answer_timeout_ms() -> u64 {
        10_000
    }
}

impl Default for RawWebRtc {
    fn default() -> Self {
        Self {
            signalling: SignallingLimits::default(),
            ice_candidates: RawIceCandidates::default(),
            answer_timeout_ms: Self::default_answer_timeout_ms(),
            keyframe_cache: RawKeyframeCache::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawKeyframeCache {
    #[serde(default = "RawKeyframeCache::default_max_bytes")]
    max_bytes: usize,
    #[serde(default = "RawKeyframeCache::default_max_age_ms")]
    max_age_ms: u64,
}

impl RawKeyframeCache {
    fn default_max_bytes() -> usize {
        crate::media::gop::GopLimits::default().max_bytes
    }
    fn default_max_age_ms() -> u64 {
        crate::media::gop::GopLimits::default().max_age.as_millis() as u64
    }
}

impl Default for RawKeyframeCache {
    fn default() -> Self {
        Self { max_bytes: Self::default_max_bytes(), max_age_ms: Self::default_max_age_ms() }
    }
}

/// The signalling server (`<Signalling>`): its port and bounds; every one has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase", default)]
pub struct SignallingLimits {
    /// The WebSocket signalling (and web page) port; 3333 unless only `<TLSPort>` is given.
    #[serde(default)]
    pub port: Option<u16>,
    /// The same router over TLS (wss, https), with the virtual host's certificate.
    #[serde(rename = "TLSPort", default)]
    pub tls_port: Option<u16>,
    /// TCP connections open at once (HTTP requests and WebSocket sessions).
    pub max_connections: usize,
    /// TCP connections open at once from one IP address.
    pub max_connections_per_address: usize,
    /// Time for a client to send a whole HTTP request header (the WebSocket handshake included).
    pub header_timeout_ms: u64,
    /// The largest signalling message (and WebSocket frame) read, in bytes.
    pub max_message_bytes: usize,
    /// Bytes queued for one session's socket before the session is closed as a slow reader.
    pub max_outgoing_bytes: usize,
    /// A session whose socket takes a write for this long is closed.
    pub write_timeout_ms: u64,
    /// Messages one session may send per second (averaged; bursts of twice this pass).
    pub max_messages_per_second: u32,
    /// SDP bytes in one message.
    pub max_sdp_bytes: usize,
    /// ICE candidates in one message.
    pub max_candidates_per_message: usize,
    /// Bytes of one candidate line.
    pub max_candidate_bytes: usize,
    /// ICE candidates one session may send in all.
    pub max_candidates_per_session: usize,
    /// Bytes of the User-Agent kept (and given to plugins to classify).
    pub max_user_agent_bytes: usize,
    /// `/stats` answers with this token only (`Authorization: Bearer TOKEN`); without one
    /// configured it answers on loopback only, and lists no User-Agent to anyone without it.
    pub stats_access_token: Option<String>,
    /// On SIGTERM/SIGINT: how long sessions and requests get to finish before the host exits.
    pub drain_timeout_ms: u64,
    /// WebRTC publishers (OvenLiveKit, WHIP) at once; past it a publisher gets 503.
    pub max_publishers: usize,
    /// WebRTC publishers at once from one address (a share of `max_publishers`: one client,
    /// token or not, cannot take them all); past it a publisher gets 429.
    pub max_publishers_per_address: usize,
    /// Load balancers whose connections start with a PROXY protocol header (v1 or v2) naming
    /// the client: the caps, the loopback rule and plugins see the client's address.
    #[serde(rename = "TrustedProxy")]
    pub trusted_proxies: Vec<crate::proxy_protocol::Cidr>,
}

impl Default for SignallingLimits {
    fn default() -> Self {
        Self {
            port: Some(3333),
            tls_port: None,
            max_connections: 4096,
            max_connections_per_address: 256,
            header_timeout_ms: 5000,
            max_message_bytes: 256 * 1024,
            max_outgoing_bytes: 1 << 20,
            write_timeout_ms: 10_000,
            max_messages_per_second: 50,
            max_sdp_bytes: 64 * 1024,
            max_candidates_per_message: 64,
            max_candidate_bytes: 512,
            max_candidates_per_session: 512,
            max_user_agent_bytes: 512,
            stats_access_token: None,
            drain_timeout_ms: 5000,
            max_publishers: 64,
            max_publishers_per_address: 8,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawIceCandidates {
    /// Parsed after deserialization, so that an error points at its own element (quick-xml reads
    /// ahead in a sequence, past the element that failed).
    #[serde(rename = "IceCandidate", default)]
    ice_candidate: Vec<String>,
    #[serde(rename = "PublicAddress", default)]
    public_address: Vec<IpAddr>,
}

impl Default for RawIceCandidates {
    fn default() -> Self {
        Self { ice_candidate: vec!["*:10000-10004/udp".into()], public_address: Vec::new() }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawApplications {
    #[serde(rename = "Application", default)]
    application: Vec<Application>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawPlugins {
    #[serde(rename = "Plugin", default)]
    plugin: Vec<PluginEntry>,
}

impl Config {
    /// Reads and checks the file at `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_owned(),
            position: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::parse(file, text)
    }

    /// Parses `text` as the contents of `file`.
    pub fn parse(file: &Path, text: String) -> Result<Self, ConfigError> {
        let err_at = |offset: Option<usize>, message: String| ConfigError {
            file: file.to_owned(),
            position: offset.map(|o| line_col(&text, o)),
            message,
        };
        let sections = split_sections(&text).map_err(|(offset, message)| err_at(Some(offset), message))?;
        for (i, s) in sections.iter().enumerate() {
            if let Some(first) = sections[..i].iter().find(|f| f.name == s.name) {
                let (l, c) = line_col(&text, first.offset);
                return Err(err_at(
                    Some(s.offset),
                    format!(
                        "<{}> is configured twice (first at {l}:{c}); use one of <Modules><{0}> or the legacy <Server><{0}>, not both",
                        s.name
                    ),
                ));
            }
        }
        let mut host_text = text.clone();
        for s in &sections {
            blank(&mut host_text, s.offset..s.offset + s.xml.len());
        }

        let mut de = quick_xml::de::Deserializer::from_str(&host_text);
        let raw: RawServer = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let offset = de.get_ref().get_ref().buffer_position() as usize;
            let path = e.path().to_string();
            let what = describe_serde_error(&e.into_inner().to_string());
            err_at(Some(offset), if path == "." { what } else { format!("{path}: {what}") })
        })?;

        let (managers_host, managers_api) = raw.managers.map(|m| (m.host, m.api)).unwrap_or_default();
        let access_token = managers_api.and_then(|a| a.access_token);
        if access_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            let at = host_text.find("<AccessToken");
            return Err(err_at(at, "an empty <AccessToken> is not allowed (leave the element out to answer on loopback only)".into()));
        }
        let listen = parse_listen(&raw.ip, &host_text).map_err(|(offset, message)| err_at(offset, message))?;
        let VirtualHost { host: vhost, applications, origins } = merge_virtual_host(raw.virtual_hosts, raw.applications, raw.origins, &host_text)
            .map_err(|(offset, message)| err_at(offset, message))?;
        let tls_files = |raw: RawTls, path: &[&str]| TlsFiles {
            cert: relative_to(file, &raw.cert_path),
            key: relative_to(file, &raw.key_path),
            chain: raw.chain_cert_path.map(|c| relative_to(file, &c)),
            offset: element_offsets(&host_text, path).first().copied().unwrap_or(0),
        };
        let tls = vhost.and_then(|h| h.tls).map(|t| tls_files(t, &["Server", "VirtualHosts", "VirtualHost", "Host", "TLS"]));
        let api_tls = managers_host.and_then(|h| h.tls).map(|t| tls_files(t, &["Server", "Managers", "Host", "TLS"]));
        let mut limits = raw.bind.publishers.webrtc.signalling.clone();
        if limits.port.is_none() && limits.tls_port.is_none() {
            limits.port = SignallingLimits::default().port;
        }
        if limits.tls_port.is_some() && tls.is_none() {
            let at = element_offsets(&host_text, &["Server", "Bind", "Publishers", "WebRTC", "Signalling", "TLSPort"]).first().copied();
            return Err(err_at(at, "<TLSPort> needs a certificate: <VirtualHosts><VirtualHost><Host><TLS> with <CertPath> and <KeyPath>".into()));
        }
        let api = match raw.bind.managers {
            None => None,
            Some(RawBindManagers { api: RawBindApi { port: None, tls_port: None } }) => {
                let at = element_offsets(&host_text, &["Server", "Bind", "Managers", "API"]).first().copied();
                return Err(err_at(at, "<API> needs a <Port>, a <TLSPort> or both".into()));
            }
            Some(RawBindManagers { api: RawBindApi { tls_port: Some(_), .. } }) if api_tls.is_none() => {
                let at = element_offsets(&host_text, &["Server", "Bind", "Managers", "API", "TLSPort"]).first().copied();
                return Err(err_at(at, "the API's <TLSPort> needs a certificate: <Managers><Host><TLS> with <CertPath> and <KeyPath>".into()));
            }
            Some(RawBindManagers { api: RawBindApi { port, tls_port } }) => Some(ApiConfig { port, tls_port, tls: api_tls }),
        };
        let config = Self {
            api,
            listen,
            tls,
            origins,
            access_token,
            file: file.to_owned(),
            name: raw.name,
            limits,
            ice_candidates: parse_ice_candidates(&raw.bind.publishers.webrtc.ice_candidates.ice_candidate, &host_text)
                .map_err(|(offset, message)| err_at(offset, message))?,
            public_addresses: raw.bind.publishers.webrtc.ice_candidates.public_address,
            answer_timeout: std::time::Duration::from_millis(raw.bind.publishers.webrtc.answer_timeout_ms),
            keyframe_cache: crate::media::gop::GopLimits {
                max_bytes: raw.bind.publishers.webrtc.keyframe_cache.max_bytes,
                max_age: std::time::Duration::from_millis(raw.bind.publishers.webrtc.keyframe_cache.max_age_ms),
            },
            applications,
            plugins: raw.plugins.plugin,
            sections,
            text,
        };
        config.check_streams()?;
        Ok(config)
    }

    fn check_streams(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for app in &self.applications {
            for stream in &app.streams {
                let key = format!("{}/{}", app.name, stream.name);
                let problem = match (&stream.test_pattern, &stream.rtp_ingest) {
                    (Some(_), Some(_)) => Some("has both <TestPattern> and <RtpIngest>; expected one source"),
                    (None, None) => Some("has no source; expected <TestPattern /> or <RtpIngest>"),
                    _ => None,
                };
                let problem = problem.map(str::to_string).or_else(|| {
                    (!seen.insert(key.clone())).then(|| "is configured twice".to_string())
                });
                if let Some(problem) = problem {
                    let offset = self.find_stream(&app.name, &stream.name);
                    return Err(ConfigError {
                        file: self.file.clone(),
                        position: offset.map(|o| line_col(&self.text, o)),
                        message: format!("stream {key} {problem}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Where the `<Stream>` named `stream` of application `app` starts, for error messages.
    fn find_stream(&self, app: &str, stream: &str) -> Option<usize> {
        let app_at = self.text.find(&format!("<Name>{app}</Name>"))?;
        let name_at = app_at + self.text[app_at..].find(&format!("<Name>{stream}</Name>"))?;
        self.text[..name_at].rfind("<Stream")
    }

    /// The section named `name`, if the file has one.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// An error at `offset` bytes into the file.
    pub fn error_at(&self, offset: Option<usize>, message: String) -> ConfigError {
        ConfigError { file: self.file.clone(), position: offset.map(|o| line_col(&self.text, o)), message }
    }

    /// Checks that every legacy section (an unknown `<Server>` child) was claimed by a plugin;
    /// returns the unclaimed `<Modules>` children, to be reported as ignored.
    pub fn check_claimed<'a>(&'a self, claimed: &[&str]) -> Result<Vec<&'a Section>, ConfigError> {
        let unclaimed = self.sections.iter().filter(|s| !claimed.contains(&s.name.as_str()));
        let (legacy, modules): (Vec<&Section>, Vec<&Section>) = unclaimed.partition(|s| s.legacy);
        if let Some(s) = legacy.first() {
            return Err(self.error_at(
                Some(s.offset),
                format!(
                    "unknown element <{}> in <Server>: expected one of {} (or the section of a loaded plugin)",
                    s.name,
                    HOST_ELEMENTS.join(", ")
                ),
            ));
        }
        Ok(modules)
    }

    /// The path of a plugin library: a relative `<Path>` is taken from the config file's folder,
    /// made absolute (the current folder joined to the config's path as given, symbolic links
    /// kept), so that it is that folder also when the config is a bare file name (`--config
    /// Server.xml`, whose parent is ""). The result always holds a `/`: a bare library name would
    /// make dlopen search `LD_LIBRARY_PATH` and the system folders instead.
    pub fn plugin_path(&self, entry: &PluginEntry) -> PathBuf {
        relative_to(&self.file, &entry.path)
    }
}

/// `path` as named in the config `file`: a relative one is taken from the file's folder, made
/// absolute (see [`Config::plugin_path`]).
fn relative_to(file: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    match std::path::absolute(file) {
        Ok(file) => file.parent().unwrap_or(Path::new("/")).join(path),
        // No current folder (deleted since the config was read): still a path, not a name.
        Err(_) => Path::new(".").join(file.parent().unwrap_or(Path::new(""))).join(path),
    }
}

/// The `<Server><IP>` values: `*` (the default) is 0.0.0.0, `::` (or `[::]`) every IPv6 address,
/// anything else one address; an error names the offset of the element that holds it.
fn parse_listen(values: &[String], text: &str) -> Result<Vec<IpAddr>, (Option<usize>, String)> {
    if values.is_empty() {
        return Ok(vec![IpAddr::from([0, 0, 0, 0])]);
    }
    let mut listen: Vec<IpAddr> = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let at = || element_offsets(text, &["Server", "IP"]).get(i).copied();
        let address = match value.trim() {
            "*" => IpAddr::from([0, 0, 0, 0]),
            v => v.trim_matches(['[', ']']).parse().map_err(|_| (at(), format!("IP[{i}]: {v:?} is not an IP address; expected *, :: or an address such as 127.0.0.1")))?,
        };
        if listen.contains(&address) {
            return Err((at(), format!("IP[{i}]: {address} is given twice")));
        }
        listen.push(address);
    }
    Ok(listen)
}

/// The one `<VirtualHost>`'s `<Host>`, and the applications and origins of the file.
struct VirtualHost {
    host: Option<RawHost>,
    applications: Vec<Application>,
    origins: Origins,
}

/// The one `<VirtualHost>`, with the file's applications and origins: the top-level ones and
/// those of OME's full form (inside the `<VirtualHost>`) together.
fn merge_virtual_host(
    virtual_hosts: Option<RawVirtualHosts>,
    applications: RawApplications,
    origins: Option<Origins>,
    text: &str,
) -> Result<VirtualHost, (Option<usize>, String)> {
    let mut hosts = virtual_hosts.map(|v| v.virtual_host).unwrap_or_default();
    if hosts.len() > 1 {
        let at = element_offsets(text, &["Server", "VirtualHosts", "VirtualHost"]).get(1).copied();
        return Err((at, "a second <VirtualHost>: this host serves one (its certificate answers every name)".into()));
    }
    let Some(vhost) = hosts.pop() else {
        return Ok(VirtualHost { host: None, applications: applications.application, origins: origins.unwrap_or_default() });
    };
    let origins = match (origins, vhost.origins) {
        (Some(_), Some(_)) => {
            let at = element_offsets(text, &["Server", "VirtualHosts", "VirtualHost", "Origins"]).first().copied();
            return Err((at, "<Origins> is given both in <Server> and in its <VirtualHost>; keep one".into()));
        }
        (top, inner) => top.or(inner).unwrap_or_default(),
    };
    let mut all = applications.application;
    all.extend(vhost.applications.map(|a| a.application).unwrap_or_default());
    Ok(VirtualHost { host: vhost.host, applications: all, origins })
}

/// Where each element at `path` (from the root, e.g. `["Server", "IP"]`) starts in `text`, in order.
fn element_offsets(text: &str, path: &[&str]) -> Vec<usize> {
    let mut reader = quick_xml::Reader::from_str(text);
    let (mut open, mut found) = (Vec::<String>::new(), Vec::new());
    loop {
        let before = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(Event::Eof) | Err(_) => return found,
            Ok(event) => event,
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                open.push(AsRef::<str>::as_ref(&e.name()).to_string());
                if open.iter().map(String::as_str).eq(path.iter().copied()) {
                    found.push(before + text[before..].find('<').unwrap_or(0));
                }
                if matches!(event, Event::Empty(_)) {
                    open.pop();
                }
            }
            Event::End(_) => {
                open.pop();
            }
            _ => {}
        }
    }
}

/// Makes serde's messages say what was expected in XML terms.
fn describe_serde_error(message: &str) -> String {
    let message = message.trim_start_matches("custom: ");
    if let Some(field) = message.strip_prefix("unknown field `") {
        let field = field.split('`').next().unwrap_or(field);
        let expected = message.split_once("expected ").map(|(_, e)| e).unwrap_or("");
        return format!("unknown element <{field}>; expected {expected}");
    }
    if let Some(field) = message.strip_prefix("missing field `") {
        return format!("missing element <{}>", field.trim_end_matches('`'));
    }
    message.to_string()
}

/// Finds the plugin sections: children of `<Server><Modules>`, and children of `<Server>` the
/// host does not know. Returns `(offset, message)` for malformed XML.
fn split_sections(text: &str) -> Result<Vec<Section>, (usize, String)> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut sections = Vec::new();
    // The element path from the root, and where an open section started.
    let mut path: Vec<String> = Vec::new();
    let mut open: Option<(usize, String, bool)> = None;
    let mut root_seen = false;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|e| (reader.error_position() as usize, format!("malformed XML: {e}")))?;
        let after = reader.buffer_position() as usize;
        let start = before + text[before..after].find('<').unwrap_or(0);
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = AsRef::<str>::as_ref(&e.name()).to_string();
                let is_empty = matches!(event, Event::Empty(_));
                if path.is_empty() {
                    if root_seen || name != "Server" {
                        return Err((start, format!("unexpected root element <{name}>; expected one <Server>")));
                    }
                    root_seen = true;
                }
                if open.is_none() {
                    let legacy = path.len() == 1 && !HOST_ELEMENTS.contains(&name.as_str());
                    let module = path.len() == 2 && path[1] == "Modules";
                    if legacy || module {
                        if is_empty {
                            sections.push(Section { name: name.clone(), xml: text[start..after].into(), offset: start, legacy });
                        } else {
                            open = Some((start, name.clone(), legacy));
                        }
                    }
                }
                if !is_empty {
                    path.push(name);
                }
            }
            Event::End(_) => {
                let closed = path.pop();
                if let Some((offset, name, legacy)) = open.take() {
                    if closed.as_deref() == Some(name.as_str()) && path.len() == if legacy { 1 } else { 2 } {
                        sections.push(Section { name, xml: text[offset..after].into(), offset, legacy });
                    } else {
                        open = Some((offset, name, legacy));
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        return Err((0, "no <Server> element".into()));
    }
    Ok(sections)
}

/// Parses the `<IceCandidate>` values; an error names the offset of the element that holds it.
fn parse_ice_candidates(values: &[String], text: &str) -> Result<Vec<IceCandidate>, (Option<usize>, String)> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            value.parse().map_err(|e| {
                let offset = text.match_indices("<IceCandidate>").nth(i).map(|(o, _)| o);
                (offset, format!("Bind.Publishers.WebRTC.IceCandidates.IceCandidate[{i}]: {e}"))
            })
        })
        .collect()
}

/// Replaces `range` with spaces, keeping newlines so that positions stay put.
fn blank(text: &mut String, range: std::ops::Range<usize>) {
    let replaced: String = text[range.clone()].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
    // Multi-byte characters become one space each: pad to keep byte offsets after the range.
    let pad = range.len() - replaced.len();
    text.replace_range(range, &(replaced + &" ".repeat(pad)));
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_map_an_application_or_a_stream_to_their_urls_the_longest_location_first() {
        let c = parse(
            "<Server><Origins><Properties><UnusedStreamDeletionTimeout>2000</UnusedStreamDeletionTimeout></Properties>\
             <Origin><Location>/app/</Location><Pass><Scheme>webrtc</Scheme><Urls><Url>10.0.0.1:3333/app/</Url><Url>10.0.0.2:3333/app</Url></Urls></Pass></Origin>\
             <Origin><Location>/app/special</Location><Pass><Scheme>webrtc</Scheme><Urls><Url>10.0.0.9:3333/other/s</Url></Urls></Pass></Origin>\
             </Origins></Server>",
        )
        .unwrap();
        assert_eq!(c.origins.properties, OriginProperties { no_input_failover_timeout: 3000, unused_stream_deletion_timeout: 2000 });
        let name = |app, stream| StreamName::new(app, stream).unwrap();
        assert_eq!(
            c.origins.urls_for(&name("app", "cam"), "e1"),
            ["ws://10.0.0.1:3333/app/cam?p2p=0&edge=e1", "ws://10.0.0.2:3333/app/cam?p2p=0&edge=e1"]
        );
        assert_eq!(c.origins.urls_for(&name("app", "special"), "e1"), ["ws://10.0.0.9:3333/other/s?p2p=0&edge=e1"]);
        assert!(c.origins.urls_for(&name("other", "cam"), "e1").is_empty());
        assert_eq!(
            c.origins.urls_for(&name("app", "Ü b&p2p=1"), "edge one"),
            ["ws://10.0.0.1:3333/app/%C3%9C%20b%26p2p%3D1?p2p=0&edge=edge%20one", "ws://10.0.0.2:3333/app/%C3%9C%20b%26p2p%3D1?p2p=0&edge=edge%20one"],
            "a name is one escaped segment; the edge's p2p=0 stays a parameter"
        );
    }

    fn parse(xml: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("conf/Test.xml"), xml.to_string())
    }

    const MINIMAL: &str = "<Server>\n  <Applications><Application><Name>app</Name>\n    <Stream><Name>stream</Name><TestPattern/></Stream>\n  </Application></Applications>\n</Server>\n";

    #[test]
    fn public_addresses_answer_timeout_and_keyframe_cache_are_read_with_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert!(c.public_addresses.is_empty());
        assert_eq!(c.answer_timeout, std::time::Duration::from_secs(10));
        assert_eq!(c.keyframe_cache, crate::media::gop::GopLimits::default());
        let c = parse("<Server><Bind><Publishers><WebRTC>\n<IceCandidates><IceCandidate>*:10000/udp</IceCandidate><PublicAddress>203.0.113.7</PublicAddress><PublicAddress>2001:db8::7</PublicAddress></IceCandidates>\n<AnswerTimeoutMs>2500</AnswerTimeoutMs><KeyframeCache><MaxBytes>0</MaxBytes></KeyframeCache>\n</WebRTC></Publishers></Bind></Server>").unwrap();
        assert_eq!(c.public_addresses, vec!["203.0.113.7".parse::<IpAddr>().unwrap(), "2001:db8::7".parse().unwrap()]);
        assert_eq!(c.answer_timeout, std::time::Duration::from_millis(2500));
        assert_eq!(c.keyframe_cache.max_bytes, 0);
        assert_eq!(c.keyframe_cache.max_age, std::time::Duration::from_secs(10));
        let err = parse("<Server><Bind><Publishers><WebRTC>\n<IceCandidates><PublicAddress>not-an-ip</PublicAddress></IceCandidates>\n</WebRTC></Publishers></Bind></Server>").unwrap_err();
        assert!(err.to_string().contains("PublicAddress"), "{err}");
    }

    #[test]
    fn signalling_limits_have_defaults_and_are_read() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.limits, SignallingLimits::default());
        assert_eq!(c.limits.port, Some(3333), "the signalling port is read with its limits");
        let c = parse("<Server><Bind><Publishers><WebRTC><Signalling><Port>1</Port><MaxConnectionsPerAddress>3</MaxConnectionsPerAddress><StatsAccessToken>s3cret</StatsAccessToken></Signalling></WebRTC></Publishers></Bind></Server>").unwrap();
        assert_eq!(c.limits.max_connections_per_address, 3);
        assert_eq!(c.limits.stats_access_token.as_deref(), Some("s3cret"));
        assert_eq!(c.limits.max_connections, SignallingLimits::default().max_connections);
        assert!(parse("<Server><Bind><Publishers><WebRTC><Signalling><Port>1</Port><MaxConections>3</MaxConections></Signalling></WebRTC></Publishers></Bind></Server>").is_err(), "a misspelt limit is refused");
    }

    #[test]
    fn defaults_follow_ome() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.limits.port, Some(3333));
        assert_eq!(c.ice_candidates, vec!["*:10000-10004/udp".parse::<IceCandidate>().unwrap()]);
        assert!(c.plugins.is_empty());
        assert_eq!(c.applications[0].streams[0].name, "stream");
    }

    #[test]
    fn a_relative_plugin_path_is_taken_from_the_config_folder_made_absolute() {
        let plugins = "<Server><Plugins><Plugin><Path>libplugin_p2p.so</Path></Plugin><Plugin><Path>/opt/libx.so</Path></Plugin></Plugins></Server>";
        let cwd = std::env::current_dir().unwrap();
        // A bare file name (`--config Server.xml`): its parent is "", which must not leave a bare
        // library name that dlopen would look up in LD_LIBRARY_PATH and the system folders.
        for (file, folder) in [("Server.xml", cwd.clone()), ("conf/Test.xml", cwd.join("conf")), ("/etc/p2p/Server.xml", "/etc/p2p".into())] {
            let c = Config::parse(Path::new(file), plugins.to_string()).unwrap();
            let path = c.plugin_path(&c.plugins[0]);
            assert!(path.is_absolute(), "{file}: {}", path.display());
            assert_eq!(path, folder.join("libplugin_p2p.so"), "{file}");
            assert_eq!(c.plugin_path(&c.plugins[1]), Path::new("/opt/libx.so"), "an absolute path is kept");
        }
    }

    #[test]
    fn shipped_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/Server.xml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.plugins.len(), 1);
        assert!(c.section("P2P").is_some());
        assert!(c.check_claimed(&["P2P"]).unwrap().is_empty());
    }

    #[test]
    fn modules_and_legacy_sections_are_cut_out() {
        let modern = parse("<Server><Modules><P2P><Enable>true</Enable></P2P><HTTP2/></Modules></Server>").unwrap();
        assert_eq!(modern.section("P2P").unwrap().xml, "<P2P><Enable>true</Enable></P2P>");
        assert!(!modern.section("P2P").unwrap().legacy);
        assert_eq!(modern.check_claimed(&["P2P"]).unwrap()[0].name, "HTTP2");

        let legacy = parse("<Server>\n<P2P><MaxClientPeersPerHostPeer>2</MaxClientPeersPerHostPeer></P2P></Server>").unwrap();
        let s = legacy.section("P2P").unwrap();
        assert!(s.legacy);
        assert_eq!(line_col(&legacy.text, s.offset), (2, 1));
        let err = legacy.check_claimed(&[]).unwrap_err();
        assert_eq!(err.position, Some((2, 1)));
        assert!(err.message.contains("unknown element <P2P>"), "{err}");
    }

    #[test]
    fn both_forms_are_refused_at_the_second() {
        let err = parse("<Server>\n  <P2P/>\n  <Modules>\n    <P2P><Enable>true</Enable></P2P>\n  </Modules>\n</Server>").unwrap_err();
        assert_eq!(err.position, Some((4, 5)), "{err}");
        assert!(err.message.contains("configured twice (first at 2:3)"), "{err}");
    }

    #[test]
    fn unknown_element_names_line_and_column() {
        let err = parse("<Server>\n  <Bind>\n    <Publishers><WebRTC><Signaling><Port>1</Port></Signaling></WebRTC></Publishers>\n  </Bind>\n</Server>").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("conf/Test.xml:3:"), "{text}");
        assert!(text.contains("unknown element <Signaling>"), "{text}");
        assert!(text.contains("Signalling"), "expected elements are listed: {text}");
    }

    #[test]
    fn bad_values_name_line_and_what_was_expected() {
        let err = parse("<Server>\n<Bind><Publishers><WebRTC>\n<Signalling><Port>70000</Port></Signalling>\n</WebRTC></Publishers></Bind></Server>").unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(3), "{err}");
        assert!(err.message.contains("Port"), "{err}");

        let err = parse("<Server>\n<Bind><Publishers><WebRTC><IceCandidates>\n<IceCandidate>*:10000-10004/sctp</IceCandidate>\n</IceCandidates></WebRTC></Publishers></Bind></Server>").unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(3), "{err}");
        assert!(err.message.contains("udp or tcp"), "{err}");
    }

    #[test]
    fn malformed_xml_and_missing_file() {
        let err = parse("<Server>\n  <Name>x</Nam>\n</Server>").unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(2), "{err}");
        let err = Config::load(Path::new("/nonexistent/Server.xml")).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/Server.xml: cannot read"), "{err}");
    }

    #[test]
    fn streams_need_exactly_one_source() {
        let err = parse("<Server><Applications><Application><Name>a</Name>\n<Stream><Name>s</Name></Stream></Application></Applications></Server>").unwrap_err();
        assert_eq!(err.position, Some((2, 1)), "{err}");
        assert!(err.message.contains("a/s has no source"), "{err}");
    }

    const TLS: &str = "<TLS><CertPath>cert.pem</CertPath><KeyPath>/etc/tls/key.pem</KeyPath><ChainCertPath>chain.pem</ChainCertPath></TLS>";

    #[test]
    fn tls_ports_and_omes_certificate_elements_are_read() {
        let c = parse(&format!(
            "<Server><Bind><Publishers><WebRTC><Signalling><TLSPort>3334</TLSPort></Signalling></WebRTC></Publishers>\
             <Managers><API><Port>8081</Port><TLSPort>8082</TLSPort></API></Managers></Bind>\
             <Managers><Host><Names><Name>*</Name></Names>{TLS}</Host></Managers>\
             <VirtualHosts><VirtualHost><Name>default</Name><Host><Names><Name>*</Name></Names>{}</Host></VirtualHost></VirtualHosts>{}",
            TLS.replace("cert.pem", "vhost.pem"),
            &MINIMAL["<Server>".len()..]
        ))
        .unwrap();
        assert_eq!((c.limits.port, c.limits.tls_port), (None, Some(3334)), "only TLSPort: only TLS");
        let folder = std::path::absolute("conf").unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert_eq!((&tls.cert, &tls.key), (&folder.join("vhost.pem"), &PathBuf::from("/etc/tls/key.pem")), "relative to the config's folder");
        assert_eq!(tls.chain.as_ref(), Some(&folder.join("chain.pem")));
        assert!(c.text[tls.offset..].starts_with("<TLS>") && c.text[..tls.offset].contains("<VirtualHost>"), "errors point at the vhost's <TLS>");
        let api = c.api.as_ref().unwrap();
        assert_eq!((api.port, api.tls_port), (Some(8081), Some(8082)));
        assert_eq!(api.tls.as_ref().unwrap().cert, folder.join("cert.pem"));
        assert_eq!(c.applications[0].name, "app", "the top-level <Applications> beside the minimal <VirtualHost>");

        let plain = parse(MINIMAL).unwrap();
        assert_eq!((plain.limits.port, plain.limits.tls_port, plain.tls), (Some(3333), None, None));
        let both = parse("<Server><Bind><Publishers><WebRTC><Signalling><Port>80</Port><TLSPort>443</TLSPort></Signalling></WebRTC></Publishers></Bind>\
            <VirtualHosts><VirtualHost><Host><TLS><CertPath>c</CertPath><KeyPath>k</KeyPath></TLS></Host></VirtualHost></VirtualHosts></Server>").unwrap();
        assert_eq!((both.limits.port, both.limits.tls_port), (Some(80), Some(443)));
    }

    #[test]
    fn omes_full_virtual_host_form_brings_its_applications_and_origins() {
        let c = parse(
            "<Server><VirtualHosts><VirtualHost><Name>default</Name>\
             <Host><Names><Name>*</Name></Names><TLS><CertPath>c</CertPath><KeyPath>k</KeyPath></TLS></Host>\
             <Origins><Origin><Location>/edge/</Location><Pass><Scheme>webrtc</Scheme><Urls><Url>10.0.0.1:3333/app/</Url></Urls></Pass></Origin></Origins>\
             <Applications><Application><Name>live</Name><Stream><Name>s</Name><TestPattern/></Stream></Application></Applications>\
             </VirtualHost></VirtualHosts></Server>",
        )
        .unwrap();
        assert_eq!(c.applications.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["live"]);
        assert_eq!(c.origins.origin[0].location, "/edge/");
        assert!(c.tls.is_some());
    }

    #[test]
    fn tls_mistakes_are_refused_where_they_are() {
        let err = parse("<Server>\n<Bind><Publishers><WebRTC><Signalling>\n  <TLSPort>3334</TLSPort></Signalling></WebRTC></Publishers></Bind></Server>").unwrap_err();
        assert_eq!(err.position, Some((3, 3)), "{err}");
        assert!(err.message.contains("<TLSPort> needs a certificate: <VirtualHosts><VirtualHost><Host><TLS>"), "{err}");

        let vhost = "<VirtualHosts><VirtualHost><Host><TLS><CertPath>c</CertPath><KeyPath>k</KeyPath></TLS></Host></VirtualHost></VirtualHosts>";
        let err = parse(&format!("<Server>\n<Bind><Managers><API>\n <TLSPort>8082</TLSPort></API></Managers></Bind>{vhost}</Server>")).unwrap_err();
        assert_eq!(err.position, Some((3, 2)), "the vhost's certificate is not the API's: {err}");
        assert!(err.message.contains("<Managers><Host><TLS>"), "{err}");

        let err = parse("<Server>\n<Bind><Managers>\n<API></API></Managers></Bind></Server>").unwrap_err();
        assert_eq!(err.position, Some((3, 1)), "{err}");

        let err = parse("<Server><VirtualHosts><VirtualHost><Host>\n<TLS><CertPath>c</CertPath></TLS></Host></VirtualHost></VirtualHosts></Server>").unwrap_err();
        assert!(err.message.contains("missing element <KeyPath>"), "{err}");

        let err = parse("<Server><VirtualHosts><VirtualHost/>\n  <VirtualHost/></VirtualHosts></Server>").unwrap_err();
        assert_eq!(err.position, Some((2, 3)), "{err}");
    }

    #[test]
    fn server_ip_chooses_where_the_listeners_bind() {
        assert_eq!(parse(MINIMAL).unwrap().listen, ["0.0.0.0".parse::<IpAddr>().unwrap()], "OME's default, *");
        let c = parse("<Server><IP>*</IP><IP>::</IP><IP>[::1]</IP><IP>127.0.0.1</IP></Server>").unwrap();
        let expected: Vec<IpAddr> = ["0.0.0.0", "::", "::1", "127.0.0.1"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(c.listen, expected);
        let err = parse("<Server><IP>*</IP>\n  <IP>localhost</IP></Server>").unwrap_err();
        assert_eq!(err.position, Some((2, 3)), "{err}");
        assert!(err.message.contains("\"localhost\" is not an IP address"), "{err}");
        assert!(parse("<Server><IP>*</IP><IP>0.0.0.0</IP></Server>").unwrap_err().message.contains("twice"));
    }

    #[test]
    fn ice_candidate_forms() {
        let c: IceCandidate = "192.0.2.1:10000/udp".parse().unwrap();
        assert_eq!(c.address, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(c.ports, 10000..=10000);
        assert!("*:0-4/udp".parse::<IceCandidate>().is_err());
        assert_eq!("127.0.0.1:0/udp".parse::<IceCandidate>().unwrap().ports, 0..=0);
        assert!("*:5-4".parse::<IceCandidate>().is_err());
        assert!("nohost".parse::<IceCandidate>().is_err());
        assert_eq!(c.transport, IceTransport::Udp);
        assert_eq!("*:10000".parse::<IceCandidate>().unwrap().transport, IceTransport::Udp, "udp when left out");
        let tcp: IceCandidate = "*:10005/TCP".parse().unwrap();
        assert_eq!((tcp.address, tcp.ports.clone(), tcp.transport), (None, 10005..=10005, IceTransport::Tcp));
        assert_eq!(tcp.to_string(), "*:10005-10005/tcp");
    }
}
