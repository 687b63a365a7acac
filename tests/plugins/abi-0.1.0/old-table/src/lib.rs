//! Test fixture: a plugin built against plugin-api 0.1.0, whose hook and host-call tables end at
//! their `last_prefix_field`. Today's host must load it and run it: it uses every 0.1.0 hook and
//! every 0.1.0 host call, so a host that calls a hook this table lacks, or moves an entry, fails
//! the test that loads it (tests/tests/plugins.rs).
//!
//! What it does: it takes every offer request and serves it from the edge 50 ms later, from a
//! timer, and counts each moment under its own name.

use plugin_api::{
    CloseReason, ConfigError, Host, LogLevel, MessageVerdict, OfferDecision, Plugin, SessionId, SessionInfo,
};

/// Serves every viewer from the edge, late, through a timer.
pub struct OldTable {
    host: Host,
}

/// How long it holds an offer request before serving it from the edge.
const HOLD_MS: u64 = 50;

impl Plugin for OldTable {
    const NAME: &'static str = "old-table";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn load(host: Host, config: Option<&str>) -> Result<Self, ConfigError> {
        if config.is_some() {
            return Err(ConfigError::new(Some(0), "old-table takes no configuration"));
        }
        host.log(LogLevel::Info, &format!("old-table loaded at {} ms", host.now_ms()));
        Ok(Self { host })
    }

    fn session_opened(&mut self, _session: &SessionInfo) {
        self.host.count("opened", 1);
    }

    fn offer_requested(&mut self, id: SessionId) -> OfferDecision {
        self.host.set_timer(u64::from(id), HOLD_MS);
        OfferDecision::Handled
    }

    fn message_received(&mut self, id: SessionId, _json: &str) -> MessageVerdict {
        self.host.close(id, 400, "old-table takes no messages");
        MessageVerdict::Handled
    }

    fn session_playing(&mut self, id: SessionId) {
        self.host.send(id, &format!(r#"{{"command":"notice","id":{id}}}"#));
        self.host.count("playing", 1);
    }

    fn session_closed(&mut self, _id: SessionId, _reason: CloseReason) {
        self.host.count("closed", 1);
    }

    fn timer_fired(&mut self, token: u64) {
        self.host.serve_from_edge(token as SessionId);
        self.host.count("served_late", 1);
    }
}

plugin_api::export_plugin!(OldTable);
