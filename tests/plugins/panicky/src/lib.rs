//! Test fixture: a plugin that takes every offer request and panics in it, so tests can show that
//! a panic is contained at the boundary, the plugin disabled and the session served by the edge.

use plugin_api::{ConfigError, Host, LogLevel, OfferDecision, Plugin, SessionId};

/// Panics in `offer_requested`; logs in `load` so tests can see it was loaded.
pub struct Panicky {
    host: Host,
}

impl Plugin for Panicky {
    const NAME: &'static str = "panicky";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn load(host: Host, config: Option<&str>) -> Result<Self, ConfigError> {
        if config.is_some() {
            return Err(ConfigError::new(Some(0), "panicky takes no configuration"));
        }
        host.log(LogLevel::Info, "panicky loaded; it will panic at the first request_offer");
        Ok(Self { host })
    }

    fn offer_requested(&mut self, id: SessionId) -> OfferDecision {
        self.host.count("offers_seen", 1);
        panic!("deliberate panic in offer_requested for session {id}");
    }
}

plugin_api::export_plugin!(Panicky);
