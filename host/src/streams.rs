//! The streams a host serves: those its config names with a source (the built-in clip, RTP
//! ingest), fixed for its life, and those publishers bring (OvenLiveKit, WHIP), which come and go.
//!
//! A published stream's name is claimed by one publisher at a time ([`Streams::claim`]): a
//! second one is refused (409), or takes over if the application allows it. Its hub exists once
//! the negotiation said what it carries ([`Streams::activate`]); viewers find it from then on.
//! When the publisher leaves, its viewers are told and the name is free; with a grace time the
//! hub waits that long for the publisher to come back, its viewers waiting with it.

use crate::config::{PublishConfig, VideoCodec};
use crate::media::gop::GopLimits;
use crate::media::StreamHub;
use plugin_api::SessionId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Why a publisher may not publish a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The application takes no publishers, or not this stream name.
    #[error("{0} cannot be published here")]
    NotPublishable(String),
    /// Another publisher has it.
    #[error("{0} is already being published")]
    Taken(String),
}

/// A published stream's state.
struct Published {
    /// The publisher that holds the name, if any.
    publisher: Option<SessionId>,
    /// Its hub, once active (kept through the grace time).
    hub: Option<Arc<StreamHub>>,
    /// Bumped at every claim: a grace timer of an earlier publisher does nothing.
    generation: u64,
}

/// What became of a stream its publisher left.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    /// It ended.
    Ended,
    /// It waits this long for a publisher; then [`Streams::grace_over`] with this generation.
    Waiting {
        /// The grace time.
        grace: std::time::Duration,
        /// The claim it belongs to.
        generation: u64,
    },
    /// Another publisher holds it (it took over): nothing happened.
    NotHeld,
}

/// What a successful claim displaced.
#[derive(Debug, PartialEq, Eq)]
pub enum Claimed {
    /// The name was free.
    Free,
    /// This publisher had it (it was taken over): it must be closed.
    TookOver(SessionId),
}

/// Every stream, by `app/stream`.
pub struct Streams {
    configured: HashMap<String, Arc<StreamHub>>,
    published: Mutex<HashMap<String, Published>>,
    /// Each application's publishing rules, by name.
    publishing: HashMap<String, PublishConfig>,
    gop: GopLimits,
}

impl Streams {
    /// The configured streams, and the rules for published ones.
    pub fn new(configured: HashMap<String, Arc<StreamHub>>, publishing: HashMap<String, PublishConfig>, gop: GopLimits) -> Self {
        Self { configured, published: Mutex::default(), publishing, gop }
    }

    /// The hub of `name`, if it is configured or being published.
    pub fn get(&self, name: &str) -> Option<Arc<StreamHub>> {
        self.configured.get(name).cloned().or_else(|| self.published.lock().expect("streams lock").get(name).and_then(|p| p.hub.clone()))
    }

    /// Every hub now, configured ones first, each list by name.
    pub fn all(&self) -> Vec<Arc<StreamHub>> {
        let mut configured: Vec<_> = self.configured.values().cloned().collect();
        configured.sort_by(|a, b| a.name.cmp(&b.name));
        let mut published: Vec<_> = self.published.lock().expect("streams lock").values().filter_map(|p| p.hub.clone()).collect();
        published.sort_by(|a, b| a.name.cmp(&b.name));
        configured.extend(published);
        configured
    }

    /// The publishing rules of application `app`, if it takes publishers.
    pub fn publishing(&self, app: &str) -> Option<&PublishConfig> {
        self.publishing.get(app)
    }

    /// `publisher` wants to publish `app/stream`.
    pub fn claim(&self, app: &str, stream: &str, publisher: SessionId) -> Result<Claimed, ClaimError> {
        let name = format!("{app}/{stream}");
        let rules = self.publishing.get(app).filter(|r| r.allows(stream) && !self.configured.contains_key(&name));
        let Some(rules) = rules else { return Err(ClaimError::NotPublishable(name)) };
        let mut published = self.published.lock().expect("streams lock");
        let entry = published.entry(name.clone()).or_insert(Published { publisher: None, hub: None, generation: 0 });
        let claimed = match entry.publisher {
            None => Claimed::Free,
            Some(other) if rules.take_over => Claimed::TookOver(other),
            Some(_) => return Err(ClaimError::Taken(name)),
        };
        entry.publisher = Some(publisher);
        entry.generation += 1;
        Ok(claimed)
    }

    /// `publisher`'s negotiation is done: the hub its media goes to. One kept from its last
    /// publisher (in the grace time) is reused if it carries the same codecs; else a new one.
    pub fn activate(&self, name: &str, publisher: SessionId, video: VideoCodec, audio: bool) -> Option<Arc<StreamHub>> {
        let mut published = self.published.lock().expect("streams lock");
        let entry = published.get_mut(name).filter(|p| p.publisher == Some(publisher))?;
        if let Some(old) = entry.hub.take() {
            if old.video_codec == video && old.has_audio == audio {
                entry.hub = Some(old);
            } else {
                old.source_stopped();
            }
        }
        let hub = entry.hub.get_or_insert_with(|| Arc::new(StreamHub::new(name.to_string(), video, audio, self.gop)));
        Some(hub.clone())
    }

    /// `publisher` left `name`: the stream ends (its viewers are told, the name is free), or
    /// waits for a publisher in its grace time. Nothing if another publisher has it now.
    pub fn release(&self, name: &str, publisher: SessionId) -> Released {
        let mut published = self.published.lock().expect("streams lock");
        let Some(entry) = published.get_mut(name).filter(|p| p.publisher == Some(publisher)) else { return Released::NotHeld };
        entry.publisher = None;
        if let Some(hub) = &entry.hub {
            hub.set_keyframe_sink(None);
        }
        let grace = self.publishing.get(name.split('/').next().unwrap_or_default()).map_or(0, |r| r.grace_ms);
        if grace > 0 && entry.hub.is_some() {
            return Released::Waiting { grace: std::time::Duration::from_millis(grace), generation: entry.generation };
        }
        if let Some(hub) = published.remove(name).and_then(|p| p.hub) {
            hub.source_stopped();
        }
        Released::Ended
    }

    /// The grace time of `name`'s publisher of `generation` is over: if nobody published since,
    /// the stream ends.
    pub fn grace_over(&self, name: &str, generation: u64) {
        let mut published = self.published.lock().expect("streams lock");
        if published.get(name).is_some_and(|p| p.publisher.is_none() && p.generation == generation) {
            if let Some(hub) = published.remove(name).and_then(|p| p.hub) {
                hub.source_stopped();
            }
        }
    }
}
