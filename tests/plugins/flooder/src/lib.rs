//! Test fixture: on a `flood` command it sends the session 400 messages of 64 KiB each (25 MiB),
//! as a P2P host peer relaying huge candidates to a client that stopped reading would. The host
//! must close the slow reader instead of buffering.

use plugin_api::{ConfigError, Host, MessageVerdict, Plugin, SessionId};

/// Floods the sender of a `flood` command.
pub struct Flooder {
    host: Host,
}

impl Plugin for Flooder {
    const NAME: &'static str = "flooder";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn load(host: Host, _config: Option<&str>) -> Result<Self, ConfigError> {
        Ok(Self { host })
    }

    fn message_received(&mut self, id: SessionId, json: &str) -> MessageVerdict {
        if !json.contains("\"flood\"") {
            return MessageVerdict::Unknown;
        }
        let filler = "x".repeat(64 * 1024);
        let message = format!(r#"{{"command":"notification","type":"filler","message":"{filler}"}}"#);
        for _ in 0..400 {
            self.host.send(id, &message);
        }
        MessageVerdict::Handled
    }
}

plugin_api::export_plugin!(Flooder);
