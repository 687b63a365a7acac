//! Publishing: what both ways in (OME's WebSocket signalling, WHIP) share. A publisher is
//! authorized by its application's token, claims the stream's name, negotiates its edge
//! connection, and its media then goes into the stream's hub; when it leaves, the stream ends or
//! waits out its grace time. Publishers are not signalling sessions of the viewers' kind: plugins
//! never see them (P2P never applies to publishing).

use crate::config::PublishConfig;
use crate::edge::ingest::Tracks;
use crate::edge::EdgeConnection;
use crate::media::Feed;
use crate::metrics::Metrics;
use crate::shares::{Caps, Refused, Shares};
use crate::streams::{ClaimError, Claimed, Released, Streams};
use ome_signalling::StreamName;
use plugin_api::SessionId;
use std::net::IpAddr;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Why a publisher was refused or stopped, with the HTTP status that says it (WHIP's status, the
/// `code` of OME's error message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The application takes no publishers, or not this name (403: the name exists or not,
    /// publishing it is not allowed).
    #[error("{0}")]
    NotPublishable(String),
    /// No token presented where one is needed.
    #[error("publishing to {0} needs its token")]
    Unauthorized(String),
    /// A wrong token.
    #[error("the token is not {0}'s")]
    Forbidden(String),
    /// Another publisher has the stream.
    #[error("{0}")]
    Taken(String),
    /// The offer or answer cannot be used.
    #[error("{0}")]
    BadSdp(String),
    /// The edge could not make the connection.
    #[error("cannot create the WebRTC connection")]
    Edge,
    /// As many publishers as `<MaxPublishers>` publish already.
    #[error("this host takes no more publishers now")]
    Full,
    /// As many publishers as `<MaxPublishersPerAddress>` publish from this address already.
    #[error("no more publishers from this address now")]
    AddressShare,
}

impl PublishError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotPublishable(_) => 403,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::Taken(_) => 409,
            Self::BadSdp(_) => 400,
            Self::Edge => 500,
            Self::Full => 503,
            Self::AddressShare => 429,
        }
    }
}

impl From<ClaimError> for PublishError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::NotPublishable(_) => Self::NotPublishable(e.to_string()),
            ClaimError::Taken(_) => Self::Taken(e.to_string()),
        }
    }
}

/// Checks `presented` against the application's token (none configured: anyone may publish).
pub fn authorize(app: &str, rules: Option<&PublishConfig>, presented: Option<&str>) -> Result<(), PublishError> {
    let Some(rules) = rules else { return Err(PublishError::NotPublishable(format!("application {app} takes no publishers"))) };
    match (&rules.token, presented) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(PublishError::Unauthorized(app.to_string())),
        (Some(token), Some(p)) if crate::api::access::constant_time_eq(token.as_bytes(), p.as_bytes()) => Ok(()),
        (Some(_), Some(_)) => Err(PublishError::Forbidden(app.to_string())),
    }
}

/// The live publications: how a take-over or a WHIP `DELETE` stops one, and what a publisher
/// needs to take its stream's name (the streams, the caps, the counts).
pub struct Publishers {
    live: Mutex<Live>,
    streams: Arc<Streams>,
    metrics: Arc<Metrics>,
    /// `<MaxPublishers>` and `<MaxPublishersPerAddress>`.
    caps: Caps,
}

/// The publications, by id, and the places their addresses hold.
#[derive(Default)]
struct Live {
    by_id: HashMap<SessionId, LivePublisher>,
    shares: Shares,
}

impl Live {
    /// Publication `id` is over: its place is given back.
    fn remove(&mut self, id: SessionId) {
        if let Some(p) = self.by_id.remove(&id) {
            self.shares.give_back(p.client);
        }
    }
}

struct LivePublisher {
    name: String,
    stop: Arc<Notify>,
    /// Its WHIP resource key, if it came by WHIP.
    whip_key: Option<String>,
    /// Where it publishes from (the client a trusted proxy names).
    client: IpAddr,
}

impl Publishers {
    /// No publisher yet; they publish into `streams`, at most `max` at once and `per_address` from
    /// one address.
    pub fn new(streams: Arc<Streams>, metrics: Arc<Metrics>, max: usize, per_address: usize) -> Self {
        Self { live: Mutex::default(), streams, metrics, caps: Caps { total: max, per_address } }
    }

    /// The streams they publish into (an application's publishing rules are there).
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// Admits a publisher of `name` from `client` if fewer than the cap publish, and fewer than
    /// the per-address share from `client`: its id (never 0, never one in use) and what stops it.
    fn admit(&self, name: &str, whip_key: Option<String>, client: IpAddr) -> Result<(SessionId, Arc<Notify>), PublishError> {
        let mut live = self.live.lock().expect("publishers lock");
        live.shares.take(client, self.caps).map_err(|refused| match refused {
            Refused::Full => PublishError::Full,
            Refused::AddressShare => PublishError::AddressShare,
        })?;
        let id = loop {
            let id = rand::random_range(1..=i32::MAX as u32);
            if !live.by_id.contains_key(&id) {
                break id;
            }
        };
        let stop = Arc::new(Notify::new());
        live.by_id.insert(id, LivePublisher { name: name.to_string(), stop: stop.clone(), whip_key, client });
        Ok((id, stop))
    }

    /// Stops publisher `id`, if it is live.
    fn stop(&self, id: SessionId) {
        if let Some(live) = self.live.lock().expect("publishers lock").by_id.get(&id) {
            live.stop.notify_one();
        }
    }

    /// Stops the WHIP publication of `name` with resource `key`; false if there is none.
    pub fn stop_whip(&self, name: &str, key: &str) -> bool {
        let live = self.live.lock().expect("publishers lock");
        let found = live.by_id.values().find(|l| l.name == name && l.whip_key.as_deref() == Some(key));
        found.inspect(|l| l.stop.notify_one()).is_some()
    }

    /// The host is stopping: every publisher stops.
    pub fn stop_all(&self) {
        self.live.lock().expect("publishers lock").by_id.values().for_each(|l| l.stop.notify_one());
    }
}

/// A publisher that holds its stream's name.
pub struct Publication {
    /// Its id (the `id` of OME's messages).
    pub id: SessionId,
    /// `app/stream`.
    pub name: String,
    /// Notified when it must stop (taken over, or a WHIP `DELETE`).
    pub stop: Arc<Notify>,
    publishers: Arc<Publishers>,
}

impl Publication {
    /// Claims `name` for a new publisher from `client` (stopping the one it takes over, if the
    /// application allows that). `whip_key` names its WHIP resource.
    pub fn claim(publishers: &Arc<Publishers>, name: &StreamName, whip_key: Option<String>, client: IpAddr) -> Result<Self, PublishError> {
        let (id, stop) = publishers.admit(&name.to_string(), whip_key, client).inspect_err(|_| {
            publishers.metrics.counts.publishers_refused_over_cap.inc();
        })?;
        match publishers.streams.claim(name.app(), name.stream(), id) {
            Ok(Claimed::Free) => {}
            Ok(Claimed::TookOver(old)) => {
                tracing::info!(stream = %name, old, new = id, "publisher taken over");
                publishers.stop(old);
            }
            Err(e) => {
                publishers.live.lock().expect("publishers lock").remove(id);
                return Err(e.into());
            }
        }
        Ok(Self { id, name: name.to_string(), stop, publishers: publishers.clone() })
    }

    /// The negotiation said what it sends: its media feeds the stream from now on.
    pub async fn activate(&self, edge: &EdgeConnection, tracks: Tracks) -> Result<Feed, PublishError> {
        let feed = self.publishers.streams.activate(&self.name, self.id, tracks.video, tracks.audio).ok_or_else(|| PublishError::Taken(format!("{} was taken over", self.name)))?;
        edge.publish_to(&feed).await.map_err(|_| PublishError::Edge)?;
        tracing::info!(stream = %self.name, publisher = self.id, video = ?tracks.video, audio = tracks.audio, "publishing");
        self.publishers.metrics.counts.publishers_started.inc();
        Ok(feed)
    }
}

impl Drop for Publication {
    /// The publisher left: the stream ends, or waits out its grace time.
    fn drop(&mut self) {
        self.publishers.live.lock().expect("publishers lock").remove(self.id);
        match self.publishers.streams.release(&self.name, self.id) {
            Released::Ended => tracing::info!(stream = %self.name, publisher = self.id, "publisher left; the stream ended"),
            Released::Waiting { grace, generation } => {
                tracing::info!(stream = %self.name, publisher = self.id, grace_ms = grace.as_millis() as u64, "publisher left; the stream waits for it");
                let (publishers, name) = (self.publishers.clone(), self.name.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    publishers.streams.grace_over(&name, generation);
                });
            }
            Released::NotHeld => {}
        }
    }
}
