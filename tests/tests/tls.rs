//! TLS on the signalling and API ports, and where the listeners bind (issue 24, items 1 and 5),
//! against the real host: wss signalling and a viewer playing over it, the page and the API over
//! https, certificates swapped on disk and through OME's API while a viewer plays, the
//! connection bounds of the plain port on the TLS port, config mistakes refused, `<Server><IP>`.
//!
//! A test CA and its leaf certificates are made here (rcgen) and written to a temporary folder;
//! the clients trust that CA only. The Rust viewer (`PeerAgent`) connects with
//! tokio-tungstenite's own TLS, which reads its roots from `SSL_CERT_FILE`: set once, to the CA.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tests::harness::{free_port, run_to_exit, write_config, HostProcess, ONE_ADDRESS_CAP};
use tests::peer::{wait_until, PeerAgent};
use tests::signal::{request_offer, Signal, CHROME_WINDOWS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const T: Duration = Duration::from_secs(10);

/// The test CA, one per test process (`SSL_CERT_FILE` names it).
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    client: Arc<rustls::ClientConfig>,
}

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "p2p-host test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let file = folder().join("ca.pem");
        std::fs::write(&file, issuer.pem()).unwrap();
        // Set once, before any client of this process reads it.
        std::env::set_var("SSL_CERT_FILE", &file);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ca { issuer, client: Arc::new(client) }
    })
}

/// A leaf certificate for 127.0.0.1 and localhost, signed by the test CA.
struct Leaf {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

fn leaf(name: &str) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca().issuer).unwrap();
    Leaf { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().clone() }
}

/// A fresh temporary folder.
fn folder() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2p-host-tls-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where a certificate lives on disk: `cert.pem` and `key.pem` in a folder of its own.
struct CertFiles {
    dir: PathBuf,
}

impl CertFiles {
    fn new(leaf: &Leaf) -> Self {
        let files = Self { dir: folder() };
        files.install(leaf);
        files
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// Writes `leaf` as a renewal does: each file replaced whole (written aside, renamed).
    fn install(&self, leaf: &Leaf) {
        for (path, text) in [(self.cert(), &leaf.cert), (self.key(), &leaf.key)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, &path).unwrap();
        }
    }

    /// Writes `contents` over the files in place, padded to `SIZE` bytes, and puts their
    /// modification time back: a change the host's file watch cannot see (same file, size and
    /// time), so only a reload through the API picks it up.
    fn overwrite_unseen(&self, cert: &str, key: &str) {
        const SIZE: usize = 4096;
        for (path, text) in [(self.cert(), cert), (self.key(), key)] {
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            let padded = format!("{text}{}", "\n".repeat(SIZE - text.len()));
            let mut file = std::fs::File::options().write(true).truncate(false).open(&path).unwrap();
            std::io::Write::write_all(&mut file, padded.as_bytes()).unwrap();
            file.set_modified(modified).unwrap();
        }
    }

    /// The `<TLS>` element naming these files.
    fn tls_xml(&self) -> String {
        format!("<TLS><CertPath>{}</CertPath><KeyPath>{}</KeyPath></TLS>", self.cert().display(), self.key().display())
    }
}

/// A config: the built-in stream, loopback ICE, the signalling `<Port>`/`<TLSPort>` given (each
/// optional), `signalling_extra` in `<Signalling>`, `server_extra` in `<Server>`, and the
/// virtual host's certificate if given.
fn config(port: Option<u16>, tls_port: Option<u16>, vhost: Option<&CertFiles>, signalling_extra: &str, server_extra: &str) -> String {
    let port = port.map(|p| format!("<Port>{p}</Port>")).unwrap_or_default();
    let tls_port = tls_port.map(|p| format!("<TLSPort>{p}</TLSPort>")).unwrap_or_default();
    let vhost = vhost
        .map(|f| format!("<VirtualHosts><VirtualHost><Name>default</Name><Host><Names><Name>*</Name></Names>{}</Host></VirtualHost></VirtualHosts>", f.tls_xml()))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0"?>
<Server version="8">
  <Name>tls-test</Name>
  {server_extra}
  <Bind><Publishers><WebRTC>
    <Signalling>{port}{tls_port}{signalling_extra}</Signalling>
    <IceCandidates><IceCandidate>127.0.0.1:0/udp</IceCandidate></IceCandidates>
  </WebRTC></Publishers></Bind>
  {vhost}
  <Applications><Application><Name>app</Name><Stream><Name>stream</Name><TestPattern/></Stream></Application></Applications>
</Server>
"#
    )
}

/// A TLS connection to `127.0.0.1:port` (from `source` when given), after `prefix` (a PROXY
/// header) in the clear.
async fn tls_connect(port: u16, source: Option<&str>, prefix: &[u8]) -> anyhow::Result<TlsStream<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source.parse()?, 0))?;
    }
    let mut tcp = socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    tcp.write_all(prefix).await?;
    let connector = tokio_rustls::TlsConnector::from(ca().client.clone());
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    Ok(tokio::time::timeout(T, connector.connect(name, tcp)).await??)
}

/// The leaf certificate a new TLS connection to `port` gets.
async fn served_leaf(port: u16) -> CertificateDer<'static> {
    let stream = tls_connect(port, None, b"").await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// `method path` over `stream` (HTTP/1.0): the status and the body.
async fn request(mut stream: TlsStream<TcpStream>, method: &str, path: &str, headers: &str) -> anyhow::Result<(u16, String)> {
    stream.write_all(format!("{method} {path} HTTP/1.0\r\nHost: test\r\n{headers}\r\n").as_bytes()).await?;
    let mut response = Vec::new();
    // A peer closing without close_notify still gave its whole answer (HTTP/1.0 ends at the close).
    let _ = tokio::time::timeout(T, stream.read_to_end(&mut response)).await?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).ok_or_else(|| anyhow::anyhow!("no status line: {response:?}"))?.parse()?;
    Ok((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// GET or POST `path` over https on `port`.
async fn https(port: u16, method: &str, path: &str) -> (u16, String) {
    request(tls_connect(port, None, b"").await.unwrap(), method, path, "").await.unwrap()
}

/// wss signalling gets the edge's offer and a viewer plays over it; the page and the API answer
/// over https, the API with its own certificate (`<Managers><Host><TLS>`); the plain ports stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_signalling_plays_and_the_page_and_the_api_answer_over_https() {
    let (vhost, api) = (leaf("vhost.test"), leaf("api.test"));
    let (vhost_files, api_files) = (CertFiles::new(&vhost), CertFiles::new(&api));
    let (tls_port, api_port, api_tls_port) = (free_port(), free_port(), free_port());
    let managers = format!(
        "<Managers><Host><Names><Name>*</Name></Names>{}</Host></Managers>",
        api_files.tls_xml()
    );
    let host = HostProcess::start(|port| {
        config(Some(port), Some(tls_port), Some(&vhost_files), ONE_ADDRESS_CAP, &managers)
            .replace("</WebRTC></Publishers>", &format!("</WebRTC></Publishers><Managers><API><Port>{api_port}</Port><TLSPort>{api_tls_port}</TLSPort></API></Managers>"))
    })
    .unwrap();

    let url = format!("wss://127.0.0.1:{tls_port}/app/stream");
    let mut signal = Signal::connect_tls(&url, CHROME_WINDOWS, ca().client.clone()).await.unwrap();
    let offer = request_offer(&mut signal).await.unwrap();
    assert_eq!(offer["code"], 200, "{offer}");
    assert!(offer["sdp"]["sdp"].as_str().unwrap().contains("m=video"), "{offer}");
    signal.close().await;

    let viewer = PeerAgent::join(&url, CHROME_WINDOWS).await.unwrap();
    viewer.wait_for(T, "video over a wss-signalled session", |s| s.video() > 50).await.unwrap();

    let (status, page) = https(tls_port, "GET", "/").await;
    assert_eq!(status, 200);
    assert!(page.to_ascii_lowercase().contains("<html"), "the test page: {page:.200}");
    assert_eq!(served_leaf(tls_port).await, vhost.der, "the virtual host's certificate on the signalling port");

    let (status, version) = https(api_tls_port, "GET", "/v1/version").await;
    assert_eq!(status, 200, "{version}");
    assert!(version.contains("\"statusCode\":200"), "{version}");
    assert_eq!(served_leaf(api_tls_port).await, api.der, "the API's own certificate");

    assert_eq!(host.get("/", "").unwrap().0, 200, "the plain signalling port stays");
    assert_eq!(tests::harness::http("GET", api_port, "/v1/version", "").unwrap().0, 200, "the plain API port stays");
    viewer.leave().await;
}

/// A renewal written to disk is served to new connections within a few seconds; the viewer
/// playing meanwhile plays on; a bad file keeps the certificate being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_on_disk_reaches_new_connections_while_a_viewer_plays_on() {
    let (first, second) = (leaf("first.test"), leaf("second.test"));
    let files = CertFiles::new(&first);
    let tls_port = free_port();
    let host = HostProcess::start(|port| config(Some(port), Some(tls_port), Some(&files), ONE_ADDRESS_CAP, "")).unwrap();
    assert_eq!(served_leaf(tls_port).await, first.der);
    let viewer = PeerAgent::join(&format!("wss://127.0.0.1:{tls_port}/app/stream"), CHROME_WINDOWS).await.unwrap();
    viewer.wait_for(T, "video", |s| s.video() > 50).await.unwrap();

    files.install(&second);
    let started = Instant::now();
    while served_leaf(tls_port).await != second.der {
        assert!(started.elapsed() < T, "the renewal was not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = viewer.stats.video();
    viewer.wait_for(T, "video after the renewal", |s| s.video() > before + 100).await.unwrap();
    assert_eq!(viewer.stats.source(), Some(0), "still playing from the edge, in the same session");
    let id = viewer.stats.id();
    assert!(host.session_egress(u64::from(id)).unwrap().is_some(), "its session lives");

    // A broken renewal (not PEM): logged, and the certificate being served stays.
    std::fs::write(files.cert(), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served_leaf(tls_port).await, second.der, "the old certificate stays");
    let before = viewer.stats.video();
    viewer.wait_for(T, "video", |s| s.video() > before + 50).await.unwrap();
    viewer.leave().await;
}

/// OME's `POST /v1/vhosts:reloadAllCertificates` reads the files again: a change the file
/// watch does not see is served after it; a bad file gets a 500 and keeps the old certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omes_reload_all_certificates_reloads_and_keeps_the_old_one_on_a_bad_file() {
    let (first, second) = (leaf("first.test"), leaf("second.test"));
    let files = CertFiles::new(&first);
    files.overwrite_unseen(&first.cert, &first.key);
    let (tls_port, api_port) = (free_port(), free_port());
    let api = format!("</WebRTC></Publishers><Managers><API><Port>{api_port}</Port></API></Managers>");
    let _host = HostProcess::start(|port| config(Some(port), Some(tls_port), Some(&files), ONE_ADDRESS_CAP, "").replace("</WebRTC></Publishers>", &api)).unwrap();
    assert_eq!(served_leaf(tls_port).await, first.der);

    files.overwrite_unseen(&second.cert, &second.key);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served_leaf(tls_port).await, first.der, "unseen by the file watch (the test's premise)");
    let (status, _, body) = tests::harness::http("POST", api_port, "/v1/vhosts:reloadAllCertificates", "").unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"message":"OK","statusCode":200}"#));
    assert_eq!(served_leaf(tls_port).await, second.der, "reloaded");

    let garbage = "x".repeat(100);
    files.overwrite_unseen(&garbage, &garbage);
    let (status, _, body) = tests::harness::http("POST", api_port, "/v1/vhosts:reloadAllCertificates", "").unwrap();
    assert_eq!(status, 500, "{body}");
    assert_eq!(served_leaf(tls_port).await, second.der, "the old certificate stays");
    let (status, _, _) = tests::harness::http("POST", api_port, "/v1/vhosts/default:reloadCertificate", "").unwrap();
    assert_eq!(status, 500, "OME's per-vhost form, same files");

    files.overwrite_unseen(&first.cert, &first.key);
    let (status, _, _) = tests::harness::http("POST", api_port, "/v1/vhosts/default:reloadCertificate", "").unwrap();
    assert_eq!(status, 200);
    assert_eq!(served_leaf(tls_port).await, first.der);
    let (status, _, _) = tests::harness::http("GET", api_port, "/v1/vhosts:reloadAllCertificates", "").unwrap();
    assert_eq!(status, 404, "POST only, as in OME");
}

/// The plain port's bounds hold on the TLS port: the PROXY header of a trusted balancer comes
/// before the TLS handshake and names the client; one cap per client over both ports; a
/// handshake not done within the header deadline is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_ports_bounds_hold_on_the_tls_port() {
    let files = CertFiles::new(&leaf("bounds.test"));
    let tls_port = free_port();
    let limits = "<MaxConnectionsPerAddress>2</MaxConnectionsPerAddress><HeaderTimeoutMs>1000</HeaderTimeoutMs><TrustedProxy>127.0.0.2/32</TrustedProxy>";
    let host = HostProcess::start(|port| config(Some(port), Some(tls_port), Some(&files), limits, "")).unwrap();

    let far = b"PROXY TCP4 198.51.100.7 127.0.0.1 50000 443\r\n";
    let stream = tls_connect(tls_port, Some("127.0.0.2"), far).await.unwrap();
    assert_eq!(request(stream, "GET", "/stats", "").await.unwrap().0, 403, "the client the header names is far: not loopback");
    let near = b"PROXY TCP4 127.0.0.1 127.0.0.1 50001 443\r\n";
    let stream = tls_connect(tls_port, Some("127.0.0.2"), near).await.unwrap();
    assert_eq!(request(stream, "GET", "/stats", "").await.unwrap().0, 200, "a client on this machine");
    assert!(tls_connect(tls_port, Some("127.0.0.2"), b"").await.is_err(), "the balancer's connection must carry the header");

    // Client 198.51.100.8 holds its two places on the plain port: its TLS connection is refused.
    let mut held = Vec::new();
    for source_port in [50002, 50003] {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(SocketAddr::from(([127, 0, 0, 1], host.port))).await.unwrap();
        let header = format!("PROXY TCP4 198.51.100.8 127.0.0.1 {source_port} 3333\r\nGET / HTTP/1.1\r\nHost: t\r\n");
        stream.write_all(header.as_bytes()).await.unwrap();
        held.push(stream);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let same = b"PROXY TCP4 198.51.100.8 127.0.0.1 50005 443\r\n";
    assert!(tls_connect(tls_port, Some("127.0.0.2"), same).await.is_err(), "over its cap, counted across both ports");
    let other = b"PROXY TCP4 198.51.100.9 127.0.0.1 50004 443\r\n";
    let stream = tls_connect(tls_port, Some("127.0.0.2"), other).await.unwrap();
    assert_eq!(request(stream, "GET", "/", "").await.unwrap().0, 200, "another client through the same balancer");
    drop(held);

    // A client that never starts its handshake is let go at the header deadline.
    let mut silent = TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(T, silent.read(&mut buf)).await.expect("held past the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, nothing sent: {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(800) && started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

/// A config with only `<TLSPort>` serves only TLS on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_tls_port_serves_only_tls() {
    let files = CertFiles::new(&leaf("only.test"));
    let host = HostProcess::start(|port| config(None, Some(port), Some(&files), ONE_ADDRESS_CAP, "")).unwrap();
    assert_eq!(https(host.port, "GET", "/").await.0, 200);
    assert!(host.get("/", "").is_err(), "plain HTTP on the TLS port gets no answer");
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap() + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    let inodes = socket_inodes(host.pid());
    let ports: Vec<u16> = listening
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            (*state == "0A" && inodes.contains(&inode.to_string())).then(|| u16::from_str_radix(local.rsplit(':').next()?, 16).ok())?
        })
        .collect();
    assert_eq!(ports, [host.port], "no plain port (3333 by default) is opened");
}

/// The inodes of the sockets process `pid` holds.
fn socket_inodes(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| Some(target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_string()))
        .collect()
}

/// Missing or bad certificate files refuse the start, naming the config line of the `<TLS>`.
#[test]
fn certificate_mistakes_refuse_the_start_at_the_tls_element() {
    let files = CertFiles::new(&leaf("mistakes.test"));
    std::fs::remove_file(files.key()).unwrap();
    let path = write_config(&config(Some(free_port()), Some(free_port()), Some(&files), "", ""));
    let (ok, out) = run_to_exit(&path, T);
    assert!(!ok, "{out}");
    let tls_line = std::fs::read_to_string(&path).unwrap().lines().position(|l| l.contains("<TLS>")).unwrap() + 1;
    let at = format!("{}:{tls_line}:", path.display());
    assert!(out.contains(&at) && out.contains("cannot read") && out.contains("key.pem"), "{out}");

    std::fs::write(files.key(), "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n").unwrap();
    let (ok, out) = run_to_exit(&path, T);
    assert!(!ok && out.contains(&at) && out.contains("private key"), "{out}");

    let path = write_config(&config(Some(free_port()), Some(free_port()), None, "", ""));
    let (ok, out) = run_to_exit(&path, T);
    assert!(!ok && out.contains("<TLSPort> needs a certificate"), "{out}");
}

/// Whether a TCP connection to `address` is accepted.
fn accepts(address: &str) -> bool {
    std::net::TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(2)).is_ok()
}

/// `<Server><IP>` chooses the listeners' address: bound to 127.0.0.2, the host takes no
/// connection to 127.0.0.1 (another address of the same machine), on any of its ports; bound to
/// `*` (the default) it takes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_ip_binds_every_listener_to_its_address() {
    let files = CertFiles::new(&leaf("ip.test"));
    let (tls_port, api_port) = (free_port(), free_port());
    let api = format!("</WebRTC></Publishers><Managers><API><Port>{api_port}</Port></API></Managers>");
    for (ip, on_1, on_2) in [("", true, true), ("<IP>127.0.0.2</IP>", false, true), ("<IP>127.0.0.1</IP><IP>::1</IP>", true, false)] {
        let host = HostProcess::start(|port| config(Some(port), Some(tls_port), Some(&files), ONE_ADDRESS_CAP, ip).replace("</WebRTC></Publishers>", &api)).unwrap();
        for port in [host.port, tls_port, api_port] {
            assert_eq!(accepts(&format!("127.0.0.1:{port}")), on_1, "{ip:?}: 127.0.0.1:{port}");
            assert_eq!(accepts(&format!("127.0.0.2:{port}")), on_2, "{ip:?}: 127.0.0.2:{port}");
        }
        if ip.contains("::1") {
            assert!(accepts(&format!("[::1]:{}", host.port)), "and IPv6 loopback beside it");
            let (status, _) = https(tls_port, "GET", "/").await;
            assert_eq!(status, 200);
        }
        drop(host);
        wait_until(T, "the ports to be free", || !accepts(&format!("127.0.0.1:{api_port}"))).await.ok();
    }
}

/// OvenPlayer 0.10.54 in Chromium, on an https page, plays over wss; the certificate is renewed
/// on disk while it plays: it plays on, new connections get the new certificate, a new page plays
/// (`tests/browser/tls.mjs`; Chromium ignores certificate errors, Node's client checks the CA).
#[test]
fn ovenplayer_0_10_54_plays_over_wss_from_an_https_page_across_a_renewal() {
    assert!(Path::new("/usr/bin/chromium").exists(), "/usr/bin/chromium is missing: apt-get install -y chromium (or run .ci/run)");
    tests::harness::ensure_node_packages();
    tests::harness::build_artifacts();
    let (first, next) = (leaf("first.test"), leaf("next.test"));
    let files = CertFiles::new(&first);
    let renewal = CertFiles::new(&next);
    let ca_file = folder().join("ca.pem");
    std::fs::write(&ca_file, ca().issuer.pem()).unwrap();
    let tls_port = 3334;
    let xml = config(Some(3333), Some(tls_port), Some(&files), ONE_ADDRESS_CAP, "").replace("127.0.0.1:0/udp", "*:10000-10004/udp");
    let mut node = tests::harness::in_network_namespace("node");
    node.env("TLS_PORT", tls_port.to_string())
        .env("CA", &ca_file)
        .env("CERT", files.cert())
        .env("KEY", files.key())
        .env("NEXT_CERT", renewal.cert())
        .env("NEXT_KEY", renewal.key());
    tests::harness::run_browser_script(node, "tls.mjs", &[], &write_config(&xml), "scenario tls: passed");
}
