//! RTP over UDP ingest (e.g. `ffmpeg ... -f rtp rtp://127.0.0.1:5004`): one socket per track.
//! A source silent for longer than its timeout is reported stopped; its viewers are told.

use super::{counters, Feed, MediaKind};
use crate::config::RtpIngest;
use rtc::rtp;
use rtc::shared::marshal::Unmarshal;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;


/// Binds the ingest sockets of `config` (so that a busy port fails at start) and returns the task
/// that feeds its stream until the host stops.
pub async fn start(config: &RtpIngest, feed: Feed) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let hub = feed.hub().clone();
    let bind = |port: u16| {
        let addr = SocketAddr::new(config.address, port);
        async move {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot bind RTP ingest socket {addr}: {e}"))?;
            // A 1 Mbit/s keyframe arrives as ~100 datagrams back to back: the default buffer
            // (208 KiB) overflowed and lost parts of keyframes (BENCHMARKS.md, join time).
            let got = crate::sockets::grow_receive_buffer(&socket, crate::sockets::MEDIA_SOCKET_BUFFER);
            tracing::debug!(%addr, bytes = got, "RTP ingest receive buffer");
            Ok::<_, anyhow::Error>(socket)
        }
    };
    let video = bind(config.video_port).await?;
    let audio = match config.audio_port {
        Some(port) => Some(bind(port).await?),
        None => None,
    };
    tracing::info!(stream = %hub.name, video = %video.local_addr()?, audio = ?audio.as_ref().and_then(|a| a.local_addr().ok()), "waiting for RTP");
    let silence = Duration::from_secs(config.silence_timeout.max(1));
    Ok(async move {
        let mut video_buf = vec![0u8; 2048];
        let mut audio_buf = vec![0u8; 2048];
        let mut live = false;
        let mut losses = [counters::LossCounter::default(), counters::LossCounter::default()];
        loop {
            let received = tokio::time::timeout(silence, async {
                tokio::select! {
                    r = video.recv(&mut video_buf) => r.map(|n| (MediaKind::Video, n)),
                    r = async {
                        match &audio {
                            Some(a) => a.recv(&mut audio_buf).await,
                            None => std::future::pending().await,
                        }
                    } => r.map(|n| (MediaKind::Audio, n)),
                }
            })
            .await;
            match received {
                Err(_elapsed) => {
                    if live {
                        feed.stopped();
                        live = false;
                    }
                }
                Ok(Err(e)) => tracing::warn!(stream = %hub.name, "RTP ingest receive error: {e}"),
                Ok(Ok((kind, n))) => {
                    let buf = if kind == MediaKind::Video { &video_buf[..n] } else { &audio_buf[..n] };
                    match rtp::Packet::unmarshal(&mut &buf[..]) {
                        Ok(mut packet) => {
                            // Viewers negotiate no header extensions: drop the source's.
                            packet.header.extension = false;
                            packet.header.extensions.clear();
                            live = true;
                            let lost = losses[usize::from(kind == MediaKind::Audio)].arrived(packet.header.sequence_number);
                            hub.counters.ingest_lost.fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
                            feed.packet(kind, packet);
                        }
                        Err(e) => tracing::debug!(stream = %hub.name, "not an RTP packet ({n} bytes): {e}"),
                    }
                }
            }
        }
    })
}
