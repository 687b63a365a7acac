//! The signalling port's TCP server: accepts connections within the configured caps (in total and
//! per remote address: the client's, as a trusted load balancer's PROXY header names it), gives
//! each request header a deadline, keeps counting a connection while it is a WebSocket session,
//! and stops gracefully.
//!
//! axum's own `serve` has neither caps nor a header deadline: 2,000 half-sent requests were held
//! for as long as their senders liked. Here a connection over a cap is closed at once, and a
//! request header not complete within `HeaderTimeoutMs` is dropped by hyper.

use crate::config::SignallingLimits;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

/// Open connections, in total and per remote address.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    /// Open connections per remote address; the total is their sum, kept beside it.
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

/// One admitted connection; dropping the last clone frees its place. A WebSocket session keeps
/// a clone for as long as it lives (see [`Admitted`] in the request's extensions).
#[derive(Debug)]
pub struct ConnectionGuard {
    counts: Arc<ConnectionCounts>,
    address: IpAddr,
}

/// The guard of the connection a request came on, in the request's extensions.
pub type Admitted = Arc<ConnectionGuard>;

impl ConnectionCounts {
    /// Admits a connection from `address` if both caps allow it.
    pub fn admit(self: &Arc<Self>, address: IpAddr, limits: &SignallingLimits) -> Option<ConnectionGuard> {
        let mut open = self.open.lock().expect("counts lock");
        let mine = open.by_address.get(&address).copied().unwrap_or(0);
        if open.total >= limits.max_connections || mine >= limits.max_connections_per_address {
            return None;
        }
        open.total += 1;
        open.by_address.insert(address, mine + 1);
        Some(ConnectionGuard { counts: self.clone(), address })
    }

    /// Connections open now.
    pub fn total(&self) -> usize {
        self.open.lock().expect("counts lock").total
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().expect("counts lock");
        open.total -= 1;
        if let Some(n) = open.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true; then stops accepting and asks every
/// open HTTP connection to finish (sessions are ended by the caller).
pub async fn serve(
    listener: TcpListener,
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
        let connection = Connection { router: router.clone(), limits: limits.clone(), counts: counts.clone(), metrics: metrics.clone(), stop: stop.clone() };
        if limits.trusted_proxies.iter().any(|p| p.contains(peer.ip())) {
            tokio::spawn(connection.behind_proxy(stream, peer));
        } else {
            connection.admit(stream, peer);
        }
    }
}

/// What serving one connection needs.
struct Connection {
    router: axum::Router,
    limits: Arc<SignallingLimits>,
    counts: Arc<ConnectionCounts>,
    metrics: Arc<crate::metrics::Metrics>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    /// A trusted proxy's connection: its PROXY header first (within the header deadline), then
    /// the client it names is admitted.
    async fn behind_proxy(self, mut stream: tokio::net::TcpStream, proxy: SocketAddr) {
        let deadline = Duration::from_millis(self.limits.header_timeout_ms);
        match tokio::time::timeout(deadline, crate::proxy_protocol::read_header(&mut stream)).await {
            Ok(Ok(client)) => self.admit(stream, client.unwrap_or(proxy)),
            Ok(Err(e)) => {
                tracing::debug!(%proxy, "{e}");
                self.metrics.add("proxy_headers_refused", 1);
            }
            Err(_) => self.metrics.add("proxy_headers_refused", 1),
        }
    }

    /// Serves a connection from `remote` if the caps allow it (else closes it at once).
    fn admit(self, stream: tokio::net::TcpStream, remote: SocketAddr) {
        let Some(guard) = self.counts.admit(remote.ip(), &self.limits) else {
            self.metrics.add("connections_refused_over_cap", 1);
            return;
        };
        let guard: Admitted = Arc::new(guard);
        let (router, mut stop, header_timeout) = (self.router, self.stop, Duration::from_millis(self.limits.header_timeout_ms));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request.extensions_mut().insert(guard.clone());
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
                () = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
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
        let a1 = counts.admit(a, &limits).unwrap();
        let _a2 = counts.admit(a, &limits).unwrap();
        assert!(counts.admit(a, &limits).is_none(), "per address");
        let _b1 = counts.admit(b, &limits).unwrap();
        assert!(counts.admit(b, &limits).is_none(), "in total");
        drop(a1);
        assert_eq!(counts.total(), 2);
        assert!(counts.admit(b, &limits).is_some(), "a freed place is free again");
    }
}
