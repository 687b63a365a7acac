//! The sources a config names (`<Stream>` with `<TestPattern>` or `<RtpIngest>`): made and
//! started with the host, fixed for its life. Sources that come and go (WebRTC publishers, pulls
//! from an origin) are made by [`crate::streams`] and [`crate::pull`].

use super::{rtp_ingest, test_pattern, Feed, SourceKind, StreamHub};
use crate::config::{Config, VideoCodec};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The configured streams, by `app/stream`, and their sources' tasks (feeding until aborted).
pub struct Configured {
    pub hubs: HashMap<String, Arc<StreamHub>>,
    pub tasks: Vec<JoinHandle<()>>,
}

impl Configured {
    /// Makes every configured stream and starts its source; an RTP port that cannot be bound
    /// fails the start.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let mut started = Self { hubs: HashMap::new(), tasks: Vec::new() };
        for app in &config.applications {
            for stream in &app.streams {
                let name = format!("{}/{}", app.name, stream.name);
                if stream.test_pattern.is_some() {
                    let clip = Arc::new(test_pattern::Clip::builtin().context("loading the built-in clip")?);
                    let feed = Feed::new(name.clone(), SourceKind::TestPattern, VideoCodec::Vp8, true, config.keyframe_cache);
                    tracing::info!(stream = %name, loop_seconds = clip.duration().as_secs_f32(), "built-in test stream");
                    started.hubs.insert(name, feed.hub().clone());
                    started.tasks.push(tokio::spawn(test_pattern::play(clip, feed)));
                } else if let Some(rtp) = &stream.rtp_ingest {
                    let feed = Feed::new(name.clone(), SourceKind::Rtp, rtp.video_codec, rtp.audio_port.is_some(), config.keyframe_cache);
                    started.hubs.insert(name.clone(), feed.hub().clone());
                    let task = rtp_ingest::start(rtp, feed).await.with_context(|| format!("stream {name}"))?;
                    started.tasks.push(tokio::spawn(task));
                }
            }
        }
        Ok(started)
    }
}
