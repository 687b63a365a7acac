//! The signalling port's TCP server: accepts connections within the configured caps (in total and
//! per remote address: the client's, as a trusted load balancer's PROXY header names it), gives
//! each request header a deadline, keeps counting a connection while it is a WebSocket session,
//! lets a handler close its connection ([`Closer`]), and stops gracefully.
//!
//! axum's own `serve` has neither caps nor a header deadline: 2,000 half-sent requests were held
//! for as long as their senders liked. Here a connection over a cap is closed at once, and a
//! request header not complete within `HeaderTimeoutMs` is dropped by hyper.
//!
//! A trusted proxy's connection is counted from its accept, under the proxy's address, while its
//! PROXY header is read (bounded, within `HeaderTimeoutMs`: [`crate::proxy_protocol`]); then its
//! place moves to the client the header names. A header naming no client (LOCAL, UNKNOWN: the
//! proxy's health check) keeps it under the proxy's address, and its requests carry
//! [`crate::proxy_protocol::NO_CLIENT`] as their remote address: never loopback, nobody's.
//!
//! A TLS port is served the same way, with the same caps (one [`ConnectionCounts`] for a plain
//! port and its TLS port): the PROXY header comes first, in the clear, then the TLS handshake,
//! which must end within `HeaderTimeoutMs` too, then HTTP as on the plain port.

use crate::config::SignallingLimits;
use crate::shares::{Caps, Place, Places};
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// Open connections, in total and per remote address.
pub type ConnectionCounts = Places;

/// One admitted connection; dropping the last clone frees its place. A WebSocket session keeps
/// a clone for as long as it lives (see [`Admitted`] in the request's extensions).
pub type ConnectionGuard = Place;

/// The guard of the connection a request came on, in the request's extensions.
pub type Admitted = Arc<ConnectionGuard>;

/// A place for a connection from `address`, if both caps allow it.
fn admit(counts: &Arc<ConnectionCounts>, address: IpAddr, limits: &SignallingLimits) -> Option<ConnectionGuard> {
    counts.take(address, Caps { total: limits.max_connections, per_address: limits.max_connections_per_address }).ok()
}

/// Closes the connection a request came on, from its handler (in the request's extensions): a
/// streamed response whose reader stopped reading is no longer polled by hyper, so only this
/// ends it. Closing a connection that has become a WebSocket does nothing.
#[derive(Debug, Clone, Default)]
pub struct Closer(Arc<Notify>);

impl Closer {
    /// Closes the connection now (or, if it is between polls, at once when polled).
    pub fn close(&self) {
        self.0.notify_one();
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop` turns true; then stops
/// accepting and asks every open HTTP connection to finish (sessions are ended by the caller).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    limits: SignallingLimits,
    counts: Arc<ConnectionCounts>,
    metrics: Arc<crate::metrics::Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, typically: wait rather than spin.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        // Counted from here: a proxy's connection too, under the proxy's address, while its header is read.
        let Some(guard) = admit(&counts, peer.ip(), &limits) else {
            metrics.counts.connections_refused_over_cap.inc();
            continue;
        };
        let connection = Connection { router: router.clone(), tls: tls.clone(), limits: limits.clone(), metrics: metrics.clone(), stop: stop.clone() };
        if limits.trusted_proxies.iter().any(|p| p.contains(peer.ip())) {
            tokio::spawn(connection.behind_proxy(stream, guard));
        } else {
            connection.serve(stream, peer, guard);
        }
    }
}

/// What serving one connection needs.
struct Connection {
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    limits: Arc<SignallingLimits>,
    metrics: Arc<crate::metrics::Metrics>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    /// A trusted proxy's connection, counted under the proxy's address: its PROXY header first
    /// (within the header deadline), then it is served as the client the header names, if that
    /// client is under its cap, or as nobody's (LOCAL, UNKNOWN).
    async fn behind_proxy(self, mut stream: TcpStream, guard: ConnectionGuard) {
        let deadline = Duration::from_millis(self.limits.header_timeout_ms);
        let client = match tokio::time::timeout(deadline, crate::proxy_protocol::read_header(&mut stream)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                tracing::debug!(proxy = %guard.address(), "{e}");
                return self.metrics.counts.proxy_headers_refused.inc();
            }
            Err(_) => return self.metrics.counts.proxy_headers_refused.inc(),
        };
        let Some(client) = client else {
            return self.serve(stream, crate::proxy_protocol::NO_CLIENT, guard);
        };
        match guard.move_to(client.ip(), self.limits.max_connections_per_address) {
            Some(guard) => self.serve(stream, client, guard),
            None => self.metrics.counts.connections_refused_over_cap.inc(),
        }
    }

    /// Serves an admitted connection from `remote` (its TLS handshake first, on a TLS port),
    /// until it ends, its handler closes it ([`Closer`]) or the host stops.
    fn serve(self, stream: TcpStream, remote: SocketAddr, guard: ConnectionGuard) {
        tokio::spawn(async move {
            let Some(acceptor) = self.tls.clone() else { return self.http(stream, remote, guard).await };
            let deadline = Duration::from_millis(self.limits.header_timeout_ms);
            match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => self.http(stream, remote, guard).await,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, "TLS handshake: {e}");
                    self.metrics.counts.tls_handshakes_failed.inc();
                }
                Err(_) => self.metrics.counts.tls_handshakes_failed.inc(),
            }
        });
    }

    /// Serves HTTP on an admitted connection's `stream`, the TLS session's on a TLS port.
    async fn http<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, stream: S, remote: SocketAddr, guard: ConnectionGuard) {
        let guard: Admitted = Arc::new(guard);
        let closer = Closer::default();
        let (router, mut stop, header_timeout) = (self.router, self.stop, Duration::from_millis(self.limits.header_timeout_ms));
        let closing = closer.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            request.extensions_mut().insert(guard.clone());
            request.extensions_mut().insert(closer.clone());
            router.clone().call(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, "HTTP connection: {e}");
                }
            }
            () = closing.0.notified() => {}
            () = stopped(&mut stop) => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}

/// A listening socket that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    /// The address and port.
    pub address: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// Connections the kernel queues for a listener before they are accepted.
const LISTEN_BACKLOG: i32 = 1024;

/// Listens on `port` at each of `addresses` (OME's `<Server><IP>`). An IPv6 address is
/// IPv6-only when an IPv4 address is listed too (OME's `<IP>*</IP><IP>::</IP>`); alone, `::`
/// takes IPv4 as well, as the system's default (`net.ipv6.bindv6only`) has it.
pub fn bind(addresses: &[IpAddr], port: u16) -> Result<Vec<TcpListener>, BindError> {
    let with_ipv4 = addresses.iter().any(IpAddr::is_ipv4);
    addresses
        .iter()
        .map(|&ip| {
            let address = SocketAddr::new(ip, port);
            // `[::]` alone takes IPv4 too (v4-mapped); beside an IPv4 address, IPv6 only.
            let listener = crate::sockets::tcp_listener(address, with_ipv4, LISTEN_BACKLOG).and_then(TcpListener::from_std);
            listener.map_err(|source| BindError { address, source })
        })
        .collect()
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Resolves on SIGTERM (systemd, Docker) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_total_and_per_address_and_free_on_drop() {
        let limits = SignallingLimits { max_connections: 3, max_connections_per_address: 2, ..Default::default() };
        let counts = Arc::new(ConnectionCounts::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = admit(&counts, a, &limits).unwrap();
        let _a2 = admit(&counts, a, &limits).unwrap();
        assert!(admit(&counts, a, &limits).is_none(), "per address");
        let _b1 = admit(&counts, b, &limits).unwrap();
        assert!(admit(&counts, b, &limits).is_none(), "in total");
        drop(a1);
        assert_eq!(counts.total(), 2);
        assert!(admit(&counts, b, &limits).is_some(), "a freed place is free again");
    }

    #[test]
    fn a_proxys_connection_is_counted_while_its_header_is_read_then_moves_to_its_client() {
        let limits = SignallingLimits { max_connections: 4, max_connections_per_address: 2, ..Default::default() };
        let counts = Arc::new(ConnectionCounts::default());
        let (proxy, client): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "198.51.100.7".parse().unwrap());
        let reading = admit(&counts, proxy, &limits).unwrap();
        let _also = admit(&counts, proxy, &limits).unwrap();
        assert!(admit(&counts, proxy, &limits).is_none(), "headers being read fill the proxy's share");
        let served = reading.move_to(client, limits.max_connections_per_address).unwrap();
        assert_eq!((served.address(), counts.total()), (client, 2), "moved, counted once");
        let _second = admit(&counts, client, &limits).unwrap();
        let another = admit(&counts, proxy, &limits).unwrap();
        assert!(another.move_to(client, limits.max_connections_per_address).is_none(), "a client at its cap: refused");
        assert_eq!(counts.total(), 3, "and its place freed");
    }
}
