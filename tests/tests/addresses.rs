//! The edge on a host with several addresses (issue 24, items 3 and 4): each test runs the real
//! host and its viewers inside a private network namespace where the host has two interfaces,
//! `v0` (192.0.2.1/24 and 2001:db8::1/64, the default route) and `w0` (198.51.100.1/24 and
//! 2001:db8:1::1/64), and the edge's sockets are bound to every interface (`*`, and `[::]` for
//! IPv6).
//!
//! A socket bound to the wildcard sends from the address of the route to its destination unless
//! told otherwise: a viewer that reached the edge at 198.51.100.1 from 192.0.2.1 would get its
//! answers from 192.0.2.1, which its ICE agent drops (RFC 8445 7.2.5.2.1: a response must come
//! from where the request went). Every reply must leave from the address its viewer talks to.
//!
//! Each test re-runs itself inside the namespace (`unshare -n`: root, or unprivileged user
//! namespaces) and passes or fails there.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;
use tests::harness::{build_artifacts, config_xml_with_ice, HostProcess};
use tests::peer::PeerAgent;
use tests::signal::{request_offer, Signal, CHROME_WINDOWS};
use tests::stun::{binding_success, mapped_address, plain_binding_request};

const T: Duration = Duration::from_secs(10);

/// The address the default route leaves from: where viewers send from in these tests.
const DEFAULT_ROUTE_ADDRESS: &str = "192.0.2.1";
/// The host's other address: what the viewers reach.
const OTHER_ADDRESS: &str = "198.51.100.1";
/// The host's IPv6 address on the default route's interface: where IPv6 viewers send from.
const DEFAULT_ROUTE_ADDRESS_V6: &str = "2001:db8::1";
/// The host's other IPv6 address.
const OTHER_ADDRESS_V6: &str = "2001:db8:1::1";
/// The edge's UDP port inside the namespace (each test has its own namespace: no clashes).
const ICE_PORT: u16 = 10000;

/// Set in the copy of the test that runs inside the namespace.
const INSIDE: &str = "EDGE_ADDRESSES_TEST_INSIDE_NAMESPACE";

/// Two interfaces, the default route on the first; IPv6 without duplicate address detection (it
/// would keep the address tentative, unusable, for a second or two).
const SETUP: &str = "set -e
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 192.0.2.1/24 dev v0
ip -6 addr add 2001:db8::1/64 dev v0 nodad
ip link set v0 up
ip link set v1 up
ip route add default dev v0
ip link add w0 type veth peer name w1
ip addr add 198.51.100.1/24 dev w0
ip -6 addr add 2001:db8:1::1/64 dev w0 nodad
ip link set w0 up
ip link set w1 up
exec \"$@\"";

/// Outside the namespace: re-runs test `name` of this binary inside it and returns false (the
/// caller returns; this asserts the inner run passed). Inside: true, run the test.
fn inside_namespace(name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    build_artifacts();
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let output = Command::new("unshare")
        .args(if root { &["-n"][..] } else { &["-r", "-n"][..] })
        .args(["sh", "-c", SETUP, "sh"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(INSIDE, "1")
        .output()
        .expect("running unshare");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{name} failed in its namespace ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("1 passed"), "{name} did not run in its namespace:\n{stdout}\n{stderr}");
    false
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The ICE candidate addresses of an edge offer (its SDP's `a=candidate` lines).
fn offered_addresses(offer: &serde_json::Value) -> Vec<SocketAddr> {
    let sdp = offer["sdp"]["sdp"].as_str().unwrap();
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|c| {
            let fields: Vec<&str> = c.split_whitespace().collect();
            SocketAddr::new(fields[4].parse().unwrap(), fields[5].parse().unwrap())
        })
        .collect()
}

/// Sends a plain Binding request from `from` to `to`; the answer's source and the address it
/// says it saw.
async fn stun_from(from: IpAddr, to: SocketAddr) -> (SocketAddr, SocketAddr) {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(from, 0)).await.unwrap();
    let request = plain_binding_request();
    socket.send_to(&request.raw, to).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, source) = tokio::time::timeout(T, socket.recv_from(&mut buf)).await.expect("an answer").unwrap();
    (source, mapped_address(&binding_success(&buf[..n], &request)))
}

/// Issue 24, item 3: the host behind `<PublicAddress>` naming its second interface's address (a
/// host on a router between two networks, announcing the one viewers reach). A viewer sending
/// from the default route's address to the announced one plays: every answer, DTLS record and
/// media packet leaves from the announced address. And the port's plain STUN answers leave from
/// whichever address each request went to.
#[test]
fn a_viewer_reaching_the_hosts_non_default_address_gets_its_replies_from_there_and_plays() {
    if !inside_namespace("a_viewer_reaching_the_hosts_non_default_address_gets_its_replies_from_there_and_plays") {
        return;
    }
    runtime().block_on(async {
        let public = format!("<PublicAddress>{OTHER_ADDRESS}</PublicAddress></IceCandidates>");
        let host = HostProcess::start(|p| config_xml_with_ice(p, &format!("*:{ICE_PORT}/udp"), "").replace("</IceCandidates>", &public))
            .unwrap();
        let viewer_ip: IpAddr = DEFAULT_ROUTE_ADDRESS.parse().unwrap();
        let other = SocketAddr::new(OTHER_ADDRESS.parse().unwrap(), ICE_PORT);
        for to in [other, SocketAddr::new(viewer_ip, ICE_PORT)] {
            let (source, _) = stun_from(viewer_ip, to).await;
            assert_eq!(source, to, "a STUN answer to a request sent to {to}");
        }

        let mut s = Signal::connect(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
        assert_eq!(offered_addresses(&request_offer(&mut s).await.unwrap()), [other], "the announced address only");
        drop(s);
        tests::peer::bind_to(viewer_ip);
        let viewer = PeerAgent::join(&host.ws_url("app/stream"), CHROME_WINDOWS).await.unwrap();
        viewer.wait_for(T, "first video packet", |s| s.video() > 0).await.map_err(|e| anyhow::anyhow!("{e}\n{}", host.log())).unwrap();
        assert_eq!(viewer.stats.source(), Some(0), "it plays from the edge");
    });
}

/// Issue 24, item 4: IPv6 end to end, configured as OvenMediaEngine has it: `*` and `[::]` ICE
/// candidates on one port, `<Server><IP>*</IP><IP>::</IP>` for signalling. Offers name the
/// host's IPv6 addresses beside the IPv4 ones; a STUN request from one IPv6 address to the other
/// is answered from the address it went to (IPV6_PKTINFO) with the IPv6 address it came from
/// (XOR-MAPPED-ADDRESS); a viewer that has only an IPv6 address (its signalling over IPv6 too)
/// plays.
#[test]
fn an_ipv6_viewer_plays_over_ipv6() {
    if !inside_namespace("an_ipv6_viewer_plays_over_ipv6") {
        return;
    }
    runtime().block_on(async {
        let both = format!("*:{ICE_PORT}/udp</IceCandidate><IceCandidate>[::]:{ICE_PORT}/udp");
        let host = HostProcess::start(|p| config_xml_with_ice(p, &both, "").replace("<Name>test</Name>", "<Name>test</Name><IP>*</IP><IP>::</IP>"))
            .unwrap();
        let viewer_ip: IpAddr = DEFAULT_ROUTE_ADDRESS_V6.parse().unwrap();
        let other = SocketAddr::new(OTHER_ADDRESS_V6.parse().unwrap(), ICE_PORT);
        let (source, mapped) = stun_from(viewer_ip, other).await;
        assert_eq!(source, other, "the STUN answer leaves from the IPv6 address the request went to");
        assert_eq!(mapped.ip(), viewer_ip, "XOR-MAPPED-ADDRESS is the IPv6 source");

        let url = format!("ws://[{DEFAULT_ROUTE_ADDRESS_V6}]:{}/app/stream", host.port);
        let mut s = Signal::connect(&url, CHROME_WINDOWS).await.unwrap();
        let mut offered = offered_addresses(&request_offer(&mut s).await.unwrap());
        offered.sort();
        let expected: Vec<SocketAddr> = [DEFAULT_ROUTE_ADDRESS, OTHER_ADDRESS, DEFAULT_ROUTE_ADDRESS_V6, OTHER_ADDRESS_V6]
            .iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), ICE_PORT))
            .collect();
        assert_eq!(offered, expected, "each family's addresses on its own socket of the one port");
        drop(s);
        // Bound to an IPv6 address, the viewer has IPv6 candidates only: if it plays, it plays over IPv6.
        tests::peer::bind_to(viewer_ip);
        let viewer = PeerAgent::join(&url, CHROME_WINDOWS).await.unwrap();
        viewer.wait_for(T, "first video packet", |s| s.video() > 0).await.map_err(|e| anyhow::anyhow!("{e}\n{}", host.log())).unwrap();
        assert_eq!(viewer.stats.source(), Some(0), "it plays from the edge");
    });
}
