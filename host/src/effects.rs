//! What plugins asked for, carried out in one place: each [`HostCall`] queued while a hook ran
//! (see [`crate::plugins`]) becomes a command to its session, a timer that calls the plugin back,
//! or a count in the host's metrics, in the order the plugins made them.

use crate::metrics::Metrics;
use crate::plugins::{PluginAction, PluginSet};
use crate::sessions::{SessionCommand, Sessions};
use plugin_api::HostCall;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Where the plugins' calls land: the sessions they name, the plugins' timers, the counts.
pub struct Effects {
    pub sessions: Arc<Sessions>,
    pub plugins: Arc<PluginSet>,
    pub metrics: Arc<Metrics>,
}

/// Carries out the plugins' actions, in order, until the host stops.
pub async fn run(mut actions: mpsc::UnboundedReceiver<PluginAction>, state: Effects) {
    while let Some(action) = actions.recv().await {
        match action {
            PluginAction::Call { plugin, call } => carry_out(&state, plugin, call),
            PluginAction::Disabled => state.sessions.command_all(|| SessionCommand::PluginDisabled),
        }
    }
}

/// One host call of plugin number `plugin`.
fn carry_out(state: &Effects, plugin: usize, call: HostCall) {
    match call {
        HostCall::Send(id, json) => {
            // Its bytes were reserved in the session's budget when the plugin sent it.
            if !state.sessions.send_reserved(id, SessionCommand::Send(json)) {
                tracing::debug!(session = id, "plugin message to a session that is gone");
            }
        }
        HostCall::ServeFromEdge(id) => {
            state.sessions.command(id, SessionCommand::ServeFromEdge);
        }
        HostCall::Close(id, code, reason) => {
            state.sessions.command(id, SessionCommand::Close { code, reason });
        }
        HostCall::SetTimer { token, after_ms } => {
            let plugins = state.plugins.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                plugins.timer_fired(plugin, token);
            });
        }
        HostCall::Count(name, delta) => state.metrics.add_plugin_count(state.plugins.name(plugin), name, delta),
        HostCall::ReportDelivery(id, delivery) => state.sessions.set_delivery(id, delivery),
    }
}
