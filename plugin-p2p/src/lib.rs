//! P2P delivery for live WebRTC streams, as a plugin of the streaming host: viewers relay the
//! stream to each other, so the edge carries a fraction of the traffic.
//!
//! The logic is a sans-IO state machine ([`core::P2pCore`]; time is an input) made of these
//! concepts: [`classify`] (who may host, by User-Agent), [`matching`] (which host a new viewer
//! gets), [`locality`] (which viewers are near each other), [`broker`] (relaying the
//! player-to-player signalling between partners only), [`fallback`] (deadlines, the offer deadline
//! from measured latency, and the edge taking over when a host goes) and [`reparent`] (moving
//! edge viewers into hosts' free slots). [`P2pPlugin`] wraps it: it turns hooks
//! into core inputs and core outputs into host calls, and does nothing else.
//!
//! Enable it in `Server.xml` (see [`config`] for every setting):
//! `<Plugins><Plugin><Path>libplugin_p2p.so</Path></Plugin></Plugins>` and
//! `<Modules><P2P><Enable>true</Enable></P2P></Modules>`.

pub mod broker;
pub mod classify;
pub mod config;
pub mod counts;
pub mod failed_links;
pub mod core;
pub mod fallback;
pub mod locality;
pub mod matching;
pub mod pair_end;
pub mod reach;
pub mod reparent;

use crate::config::P2pConfig;
use crate::core::{Arrival, P2pCore};
use plugin_api::{
    CloseReason, ConfigError, Host, HostCall, LogLevel, MessageVerdict, OfferDecision, Plugin, SessionId, SessionInfo,
};

/// The plugin: the core plus the host handle its outputs go to.
pub struct P2pPlugin {
    host: Host,
    core: P2pCore,
}

impl P2pPlugin {
    /// Carries out what the core asked for, and logs its decisions.
    fn flush(&mut self) {
        for call in self.core.drain_outputs() {
            match call {
                HostCall::Send(id, json) => self.host.send(id, &json),
                HostCall::ServeFromEdge(id) => self.host.serve_from_edge(id),
                HostCall::Close(id, code, reason) => self.host.close(id, code, &reason),
                HostCall::SetTimer { token, after_ms } => self.host.set_timer(token, after_ms),
                HostCall::Count(name, delta) => self.host.count(&name, delta),
                HostCall::ReportDelivery(id, delivery) => self.host.report_delivery(id, delivery),
            }
        }
        for decision in self.core.drain_logs() {
            self.host.log(LogLevel::Debug, &decision);
        }
    }
}

impl Plugin for P2pPlugin {
    const NAME: &'static str = "p2p";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CONFIG_SECTION: Option<&'static str> = Some("P2P");

    fn load(host: Host, config: Option<&str>) -> Result<Self, ConfigError> {
        let config = config.map(P2pConfig::parse).transpose()?.unwrap_or_default();
        host.log(LogLevel::Info, &config.summary());
        Ok(Self { host, core: P2pCore::new(config) })
    }

    fn session_opened(&mut self, s: &SessionInfo) {
        let stream = format!("{}/{}/{}", s.vhost(), s.app(), s.stream());
        self.core.session_opened(self.host.now_ms(), Arrival {
            id: s.id(),
            kind: s.kind(),
            stream: &stream,
            app: s.app(),
            stream_name: s.stream(),
            user_agent: s.user_agent(),
            query: s.query(),
            remote: s.remote_addr(),
        });
    }

    fn offer_requested(&mut self, id: SessionId) -> OfferDecision {
        let decision = self.core.offer_requested(self.host.now_ms(), id);
        self.flush();
        decision
    }

    fn message_received(&mut self, id: SessionId, json: &str) -> MessageVerdict {
        let verdict = self.core.message_received(self.host.now_ms(), id, json);
        self.flush();
        verdict
    }

    fn session_playing(&mut self, id: SessionId) {
        self.core.session_playing(self.host.now_ms(), id);
        self.flush();
    }

    fn session_closed(&mut self, id: SessionId, _reason: CloseReason) {
        self.core.session_closed(self.host.now_ms(), id);
        self.flush();
    }

    fn timer_fired(&mut self, token: u64) {
        self.core.timer_fired(self.host.now_ms(), token);
        self.flush();
    }
}

plugin_api::export_plugin!(P2pPlugin);
