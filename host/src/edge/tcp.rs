//! ICE over TCP (RFC 6544) for viewers whose network blocks UDP, as OvenMediaEngine has it since
//! v0.21: each `<IceCandidate>ADDRESS:PORT/tcp</IceCandidate>` port is offered as a passive TCP
//! candidate beside the UDP ones; the player's browser connects (an active candidate) and sends
//! its checks, DTLS and SRTCP on the stream, and gets the edge's, each packet framed with its
//! length ([`super::framing`], RFC 4571). Chromium falls back to such a pair when no UDP pair
//! works.
//!
//! One port for every viewer, as on UDP: the first framed check's USERNAME names the connection
//! (its ufrag; [`Routes`] says which worker holds it) and from then on the stream belongs to that
//! connection. Its path is the stream's address pair, like a UDP path; the worker sends what the
//! connection sends on that pair down the stream.
//!
//! The stream is the socket layer, so each has a small task ([`serve`]) that reads frames into
//! its worker and writes the worker's frames out, through a bounded queue: a viewer whose TCP
//! window is full loses packets (as a full UDP buffer loses them), and never stalls the worker
//! or anyone else. Every bound of the UDP path holds: streams per remote address and in all
//! ([`Admission`]), a deadline for the first check, frames no longer than a datagram, streams
//! per connection (the worker's).

use super::framing::{self, Decoder};
use super::net::{announced_ips, MAX_DATAGRAM};
use crate::config::IceCandidate;
use crate::shares::{Caps, Places};
use bytes::BytesMut;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a new stream has to send its first check: a browser sends it as soon as it is
/// connected; a stream that sends nothing only holds a descriptor.
pub const FIRST_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Streams open at once from one IP address: a browser opens one per pair it checks (one or
/// two), and a network's NAT puts many viewers behind one address.
pub const STREAMS_PER_ADDRESS: usize = 64;

/// Streams open at once in all: each holds a descriptor and a task.
pub const STREAMS: usize = 8192;

/// Frames queued for one stream before the edge drops its packets: about 2 s of a 1 Mbit/s
/// stream's packets; a viewer whose TCP window stays full that long is not keeping up.
pub const WRITE_QUEUE: usize = 256;
/// A write to a viewer's stream that has not gone through in this long (its TCP window shut)
/// ends the stream: a stalled writer never holds its place under the caps.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// Bytes written to a stream in one call at most (frames queued meanwhile go out together).
const WRITE_CHUNK: usize = 64 * 1024;

/// One TCP ICE port, bound once at start.
pub struct TcpPort {
    listener: TcpListener,
    /// Where it is bound (the wildcard for `*`).
    pub bound: SocketAddr,
    /// The addresses offered to viewers for it (same port).
    pub announced: Vec<SocketAddr>,
}

/// Binds every port of every TCP candidate (`public` replaces the announced addresses); the
/// ports by candidate, in the order of the configuration's TCP candidates.
pub fn bind_all(candidates: &[IceCandidate], public: &[IpAddr]) -> anyhow::Result<Vec<Vec<TcpPort>>> {
    let mut per_candidate = Vec::new();
    let mut seen = HashSet::new();
    for c in candidates.iter().filter(|c| c.transport == crate::config::IceTransport::Tcp) {
        let local_ips = announced_ips(c, public)?;
        let mut ports = Vec::new();
        for port in c.ports.clone() {
            let bind = SocketAddr::new(c.bind_ip(), port);
            if port != 0 && !seen.insert(bind) {
                continue;
            }
            // An IPv6 port v6-only, as the UDP ones ([`crate::sockets::bind`] says why).
            let std = crate::sockets::tcp_listener(bind, bind.is_ipv6(), LISTEN_BACKLOG)
                .map_err(|e| anyhow::anyhow!("cannot bind ICE candidate port {bind}/tcp: {e}"))?;
            let bound = std.local_addr()?;
            let announced = local_ips.iter().map(|ip| SocketAddr::new(*ip, bound.port())).collect();
            ports.push(TcpPort { listener: TcpListener::from_std(std)?, bound, announced });
        }
        per_candidate.push(ports);
    }
    Ok(per_candidate)
}

/// Queued connections the kernel holds for a port before `accept` (std's listen backlog).
const LISTEN_BACKLOG: i32 = 128;

/// Which worker holds each viewer connection, by its ufrag: where a new stream's first check goes.
#[derive(Default)]
pub struct Routes(Mutex<HashMap<Box<str>, usize>>);

impl Routes {
    /// `ufrag`'s connection is on `worker`.
    pub fn insert(&self, ufrag: &str, worker: usize) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(ufrag.into(), worker);
    }

    /// `ufrag`'s connection is gone.
    pub fn remove(&self, ufrag: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(ufrag);
    }

    fn get(&self, ufrag: &str) -> Option<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(ufrag).copied()
    }
}

/// Open streams per remote address and in all, bounded ([`CAPS`]).
pub type Admission = Places;

/// The caps on streams.
const CAPS: Caps = Caps { total: STREAMS, per_address: STREAMS_PER_ADDRESS };

/// A stream's number, unique on this edge.
pub type StreamId = u64;

/// What a stream tells its worker.
pub enum TcpEvent {
    /// A stream whose first frame (a check) names a connection on this worker; the worker sends
    /// the connection's frames into `outgoing`, and drops it to close the stream.
    Opened { id: StreamId, local: SocketAddr, remote: SocketAddr, first: BytesMut, outgoing: mpsc::Sender<BytesMut> },
    /// A frame from the stream.
    Frame { id: StreamId, data: BytesMut },
    /// The stream ended.
    Closed { id: StreamId },
}

/// Why a stream was closed before it reached a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many streams from the address, or in all")]
    OverBound,
    #[error("no check within the deadline")]
    NoCheck,
    #[error("the stream closed or failed before its first check")]
    Closed,
    #[error("the first frame is no check naming a connection")]
    UnknownUfrag,
    #[error(transparent)]
    Frame(#[from] framing::FrameError),
}

/// What every stream task of an edge shares.
pub struct Shared {
    pub routes: Arc<Routes>,
    pub admission: Arc<Admission>,
    /// Each worker's inbox for stream events, by worker index.
    pub workers: Vec<mpsc::Sender<TcpEvent>>,
    pub next_id: AtomicU64,
    /// Counts refused streams (`edge_tcp_streams_refused`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Accepts streams on `port` until the edge is gone, each served by its own task.
pub async fn accept(port: TcpPort, shared: Arc<Shared>) {
    loop {
        let (stream, remote) = match port.listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, mostly: wait instead of spinning.
                tracing::warn!(port = %port.bound, "edge TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(refused) = serve(stream, remote, shared.clone()).await {
                tracing::debug!(%remote, "edge TCP stream refused: {refused}");
                shared.metrics.counts.edge_tcp_streams_refused.inc();
            }
        });
    }
}

/// Serves one stream: admits it, routes it by its first check, then carries frames both ways
/// until either side ends it.
async fn serve(mut stream: TcpStream, remote: SocketAddr, shared: Arc<Shared>) -> Result<(), Refused> {
    let remote = super::net::normalise(remote);
    let _admitted = shared.admission.take(remote.ip(), CAPS).map_err(|_| Refused::OverBound)?;
    let local = super::net::normalise(stream.local_addr().map_err(|_| Refused::Closed)?);
    let _ = stream.set_nodelay(true);
    let mut decoder = Decoder::new(MAX_DATAGRAM);
    let first = tokio::time::timeout(FIRST_CHECK_TIMEOUT, read_frame(&mut stream, &mut decoder)).await.map_err(|_| Refused::NoCheck)??;
    let worker = super::demux::check_ufrag(&first).and_then(|ufrag| shared.routes.get(ufrag)).ok_or(Refused::UnknownUfrag)?;
    let inbox = shared.workers.get(worker).ok_or(Refused::UnknownUfrag)?.clone();
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (outgoing, mut queue) = mpsc::channel(WRITE_QUEUE);
    if inbox.send(TcpEvent::Opened { id, local, remote, first, outgoing }).await.is_err() {
        return Ok(()); // the edge is shutting down
    }
    let (mut reader, mut writer) = stream.split();
    let mut out = BytesMut::with_capacity(WRITE_CHUNK);
    loop {
        tokio::select! {
            frame = read_frame(&mut reader, &mut decoder) => match frame {
                Ok(data) => {
                    if inbox.send(TcpEvent::Frame { id, data }).await.is_err() {
                        break;
                    }
                }
                Err(_) => break,
            },
            frame = queue.recv() => {
                // The worker dropped its sender: the connection let the stream go.
                let Some(frame) = frame else { break };
                framing::encode(&frame, &mut out);
                while out.len() < WRITE_CHUNK {
                    match queue.try_recv() {
                        Ok(frame) => framing::encode(&frame, &mut out),
                        Err(_) => break,
                    }
                }
                if !matches!(tokio::time::timeout(WRITE_DEADLINE, writer.write_all(&out)).await, Ok(Ok(()))) {
                    break;
                }
                out.clear();
            }
        }
    }
    let _ = inbox.send(TcpEvent::Closed { id }).await;
    Ok(())
}

/// Reads until a whole frame is buffered; an error for an ended stream or a bad frame.
async fn read_frame(stream: &mut (impl AsyncReadExt + Unpin), decoder: &mut Decoder) -> Result<BytesMut, Refused> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(frame);
        }
        match stream.read_buf(decoder.buffer()).await {
            Ok(0) | Err(_) => return Err(Refused::Closed),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_per_address_and_their_places_come_back() {
        let admission = Arc::new(Admission::default());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        let held: Vec<crate::shares::Place> = (0..STREAMS_PER_ADDRESS).map(|_| admission.take(a, CAPS).expect("under the bound")).collect();
        assert!(admission.take(a, CAPS).ok().is_none(), "one more from the address is refused");
        let other = admission.take(b, CAPS).expect("another address is not");
        drop(held);
        drop(other);
        assert_eq!(admission.total(), 0, "nothing left behind");
        assert!(admission.take(a, CAPS).ok().is_some());
    }
}
