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
use crate::media::{Feed, SourceKind, StreamHub};
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
    /// Its stream's feed, once active (kept through the grace time).
    feed: Option<Feed>,
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
    /// Streams pulled from an origin (see [`crate::pull`]).
    pulled: Mutex<HashMap<String, Arc<StreamHub>>>,
    /// Each application's publishing rules, by name.
    publishing: HashMap<String, PublishConfig>,
    gop: GopLimits,
}

impl Streams {
    /// The configured streams, and the rules for published ones.
    pub fn new(configured: HashMap<String, Arc<StreamHub>>, publishing: HashMap<String, PublishConfig>, gop: GopLimits) -> Self {
        Self { configured, published: Mutex::default(), pulled: Mutex::default(), publishing, gop }
    }

    /// The hub of `name`, if it is configured, published or pulled.
    pub fn get(&self, name: &str) -> Option<Arc<StreamHub>> {
        self.configured
            .get(name)
            .cloned()
            .or_else(|| self.published.lock().expect("streams lock").get(name).and_then(|p| p.feed.as_ref().map(|f| f.hub().clone())))
            .or_else(|| self.pulled.lock().expect("streams lock").get(name).cloned())
    }

    /// The hub a pull from an origin feeds `name` with (`None`: the pull is over).
    pub fn set_pulled(&self, name: &str, hub: Option<Arc<StreamHub>>) {
        let mut pulled = self.pulled.lock().expect("streams lock");
        match hub {
            Some(hub) => pulled.insert(name.to_string(), hub),
            None => pulled.remove(name),
        };
    }

    /// Every hub now, configured ones first, then published and pulled ones, each list by name.
    pub fn all(&self) -> Vec<Arc<StreamHub>> {
        let mut configured: Vec<_> = self.configured.values().cloned().collect();
        configured.sort_by(|a, b| a.name.cmp(&b.name));
        let mut published: Vec<_> = self.published.lock().expect("streams lock").values().filter_map(|p| Some(p.feed.as_ref()?.hub().clone())).collect();
        published.extend(self.pulled.lock().expect("streams lock").values().cloned());
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
        let entry = published.entry(name.clone()).or_insert(Published { publisher: None, feed: None, generation: 0 });
        let claimed = match entry.publisher {
            None => Claimed::Free,
            Some(other) if rules.take_over => Claimed::TookOver(other),
            Some(_) => return Err(ClaimError::Taken(name)),
        };
        entry.publisher = Some(publisher);
        entry.generation += 1;
        Ok(claimed)
    }

    /// `publisher`'s negotiation is done: the stream its media goes to. One kept from its last
    /// publisher (in the grace time) is reused if it carries the same codecs; else a new one.
    pub fn activate(&self, name: &str, publisher: SessionId, video: VideoCodec, audio: bool) -> Option<Feed> {
        let mut published = self.published.lock().expect("streams lock");
        let entry = published.get_mut(name).filter(|p| p.publisher == Some(publisher))?;
        if let Some(old) = entry.feed.take() {
            if old.hub().video_codec == video && old.hub().has_audio == audio {
                entry.feed = Some(old);
            } else {
                old.stopped();
            }
        }
        let feed = entry.feed.get_or_insert_with(|| Feed::new(name.to_string(), SourceKind::WebRtc, video, audio, self.gop));
        Some(feed.clone())
    }

    /// `publisher` left `name`: the stream ends (its viewers are told, the name is free), or
    /// waits for a publisher in its grace time. Nothing if another publisher has it now.
    pub fn release(&self, name: &str, publisher: SessionId) -> Released {
        let mut published = self.published.lock().expect("streams lock");
        let Some(entry) = published.get_mut(name).filter(|p| p.publisher == Some(publisher)) else { return Released::NotHeld };
        entry.publisher = None;
        if let Some(feed) = &entry.feed {
            feed.take_keyframe_requests(None);
        }
        let grace = self.publishing.get(name.split('/').next().unwrap_or_default()).map_or(0, |r| r.grace_ms);
        if grace > 0 && entry.feed.is_some() {
            return Released::Waiting { grace: std::time::Duration::from_millis(grace), generation: entry.generation };
        }
        if let Some(feed) = published.remove(name).and_then(|p| p.feed) {
            feed.stopped();
        }
        Released::Ended
    }

    /// The grace time of `name`'s publisher of `generation` is over: if nobody published since,
    /// the stream ends.
    pub fn grace_over(&self, name: &str, generation: u64) {
        let mut published = self.published.lock().expect("streams lock");
        if published.get(name).is_some_and(|p| p.publisher.is_none() && p.generation == generation) {
            if let Some(feed) = published.remove(name).and_then(|p| p.feed) {
                feed.stopped();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams(rules: PublishConfig) -> Streams {
        let configured = HashMap::from([("live/fixed".to_string(), Feed::new("live/fixed".into(), SourceKind::TestPattern, VideoCodec::Vp8, true, GopLimits::default()).hub().clone())]);
        Streams::new(configured, HashMap::from([("live".to_string(), rules)]), GopLimits::default())
    }

    #[test]
    fn a_name_is_published_by_one_publisher_at_a_time_and_freed_when_it_leaves() {
        let s = streams(PublishConfig::default());
        assert_eq!(s.claim("live", "cam", 1), Ok(Claimed::Free));
        assert_eq!(s.claim("live", "cam", 2), Err(ClaimError::Taken("live/cam".into())));
        assert!(matches!(s.claim("live", "fixed", 3), Err(ClaimError::NotPublishable(_))), "a configured stream");
        assert!(matches!(s.claim("other", "cam", 3), Err(ClaimError::NotPublishable(_))), "an application without <Publish>");
        assert!(s.get("live/cam").is_none(), "no hub before the negotiation");
        let hub = s.activate("live/cam", 1, VideoCodec::H264, true).unwrap().hub().clone();
        assert!(Arc::ptr_eq(&s.get("live/cam").unwrap(), &hub));
        assert_eq!(s.release("live/cam", 2), Released::NotHeld, "not 2's to release");
        assert_eq!(s.release("live/cam", 1), Released::Ended);
        assert_eq!(*hub.state().borrow(), crate::media::SourceState::Stopped, "its viewers are told");
        assert!(s.get("live/cam").is_none());
        assert_eq!(s.claim("live", "cam", 2), Ok(Claimed::Free));
    }

    #[test]
    fn only_listed_names_are_published_and_a_take_over_names_the_publisher_to_close() {
        let s = streams(PublishConfig { streams: vec!["cam".into()], take_over: true, ..PublishConfig::default() });
        assert!(matches!(s.claim("live", "other", 1), Err(ClaimError::NotPublishable(_))));
        assert_eq!(s.claim("live", "cam", 1), Ok(Claimed::Free));
        let first = s.activate("live/cam", 1, VideoCodec::Vp8, true).unwrap().hub().clone();
        assert_eq!(s.claim("live", "cam", 2), Ok(Claimed::TookOver(1)));
        assert!(s.activate("live/cam", 1, VideoCodec::Vp8, true).is_none(), "the old publisher's negotiation is void");
        let second = s.activate("live/cam", 2, VideoCodec::Vp8, true).unwrap().hub().clone();
        assert!(Arc::ptr_eq(&first, &second), "same codecs: viewers keep their hub");
        assert_eq!(s.release("live/cam", 1), Released::NotHeld, "the old publisher leaving changes nothing");
    }

    #[test]
    fn in_the_grace_time_the_hub_waits_for_its_publisher_and_a_new_codec_gets_a_new_hub() {
        let s = streams(PublishConfig { grace_ms: 5000, ..PublishConfig::default() });
        s.claim("live", "cam", 1).unwrap();
        let hub = s.activate("live/cam", 1, VideoCodec::Vp8, true).unwrap().hub().clone();
        let Released::Waiting { generation, .. } = s.release("live/cam", 1) else { panic!("a grace time") };
        assert!(s.get("live/cam").is_some(), "viewers still find it");
        s.claim("live", "cam", 2).unwrap();
        s.grace_over("live/cam", generation);
        assert!(s.get("live/cam").is_some(), "republished in time: the old grace timer does nothing");
        let h264 = s.activate("live/cam", 2, VideoCodec::H264, true).unwrap().hub().clone();
        assert!(!Arc::ptr_eq(&hub, &h264), "another codec: another hub");
        assert_eq!(*hub.state().borrow(), crate::media::SourceState::Stopped, "the old hub's viewers are told");
        let Released::Waiting { generation, .. } = s.release("live/cam", 2) else { panic!("a grace time") };
        s.grace_over("live/cam", generation);
        assert!(s.get("live/cam").is_none(), "nobody came back");
        assert_eq!(*h264.state().borrow(), crate::media::SourceState::Stopped);
    }
}
