//! The plugin author's side: the [`Plugin`] trait, the [`Host`] handle, and the adapter that turns
//! a `Plugin` into the FFI vtable with every call guarded against panics.

use crate::ffi::{FfiHooks, FfiHooksBox, FfiHostBox, FfiHooks_TO, PluginModule, PluginModuleRef};
use crate::types::{
    CloseReason, ConfigError, Delivery, LogLevel, MessageVerdict, OfferDecision, SessionId, SessionInfo,
};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RStr, RString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A session plugin. Every hook has a default, so a plugin implements only what it needs.
///
/// The host calls one hook at a time; hooks must not block (no I/O, no sleeping).
pub trait Plugin: Send + Sized + 'static {
    /// The plugin's name: shown in logs and matched against `<Plugin><Name>` in the config.
    const NAME: &'static str;
    /// The plugin's own version, shown when it is loaded.
    const VERSION: &'static str;
    /// The element name of its config section, `<Modules><{CONFIG_SECTION}>` (or the legacy
    /// `<Server><{CONFIG_SECTION}>`), if it has one.
    const CONFIG_SECTION: Option<&'static str> = None;

    /// Called once when the library is loaded, with the XML text of its config section if the
    /// file has one; keep `host` for later calls. Refuse a bad config with a [`ConfigError`].
    fn load(host: Host, config: Option<&str>) -> Result<Self, ConfigError>;

    /// Called when a signalling session is accepted, before any of its messages.
    fn session_opened(&mut self, _session: &SessionInfo) {}

    /// Called when a player sends `request_offer`: serve it from the edge, or take it over.
    fn offer_requested(&mut self, _id: SessionId) -> OfferDecision {
        OfferDecision::ServeFromEdge
    }

    /// Called with a message the host does not handle itself (raw JSON text): a command it does
    /// not know, or an `answer`/`candidate` addressed to a peer other than the edge.
    fn message_received(&mut self, _id: SessionId, _json: &str) -> MessageVerdict {
        MessageVerdict::Unknown
    }

    /// Called when the session's edge connection is up (ICE and DTLS done) and media flows.
    fn session_playing(&mut self, _id: SessionId) {}

    /// Called once when the session ends, whatever the reason; no call names it afterwards.
    fn session_closed(&mut self, _id: SessionId, _reason: CloseReason) {}

    /// Called when a timer set with [`Host::set_timer`] is due.
    fn timer_fired(&mut self, _token: u64) {}
}

/// The plugin's handle on the host. Calls take effect after the current hook returns.
pub struct Host {
    inner: FfiHostBox,
}

impl Host {
    /// The host's monotonic clock, in milliseconds since an arbitrary start.
    pub fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }
    /// Sends `json` (one JSON object) to session `id` as a WebSocket text message.
    pub fn send(&self, id: SessionId, json: &str) {
        self.inner.send(id, json.into())
    }
    /// Answers session `id`'s pending `request_offer` with the edge's own offer.
    pub fn serve_from_edge(&self, id: SessionId) {
        self.inner.serve_from_edge(id)
    }
    /// Sends the protocol's error message `{code, error: reason}` to session `id` and closes it.
    pub fn close(&self, id: SessionId, code: u16, reason: &str) {
        self.inner.close(id, code, reason.into())
    }
    /// Asks for `timer_fired(token)` after `after_ms` milliseconds.
    pub fn set_timer(&self, token: u64, after_ms: u64) {
        self.inner.set_timer(token, after_ms)
    }
    /// Logs `message` at `level` through the host's logger.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.inner.log(level, message.into())
    }
    /// Adds `delta` to the metric `name` (a counter if it only grows, else a gauge).
    pub fn count(&self, name: &str, delta: i64) {
        self.inner.count(name.into(), delta)
    }
    /// Tells the host how session `id` gets the stream now (0.1.1; on a 0.1.0 host it does
    /// nothing). Call it whenever that changes, for every viewer it changes for; the host keeps
    /// the latest per session and forgets it when the session closes.
    pub fn report_delivery(&self, id: SessionId, delivery: Delivery) {
        self.inner.report_delivery(id, delivery)
    }
}

/// Runs `f`, turning a panic into an `Err` with its message, so no panic crosses the boundary.
fn guarded<T>(f: impl FnOnce() -> T) -> RResult<T, RString> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload).into()).into()
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_string())
}

/// A [`Plugin`] seen through the FFI vtable.
struct Guarded<P>(P);

impl<P: Plugin> FfiHooks for Guarded<P> {
    fn session_opened(&mut self, session: &SessionInfo) -> RResult<(), RString> {
        guarded(|| self.0.session_opened(session))
    }
    fn offer_requested(&mut self, id: SessionId) -> RResult<OfferDecision, RString> {
        guarded(|| self.0.offer_requested(id))
    }
    fn message_received(&mut self, id: SessionId, json: RStr<'_>) -> RResult<MessageVerdict, RString> {
        guarded(|| self.0.message_received(id, json.as_str()))
    }
    fn session_playing(&mut self, id: SessionId) -> RResult<(), RString> {
        guarded(|| self.0.session_playing(id))
    }
    fn session_closed(&mut self, id: SessionId, reason: CloseReason) -> RResult<(), RString> {
        guarded(|| self.0.session_closed(id, reason))
    }
    fn timer_fired(&mut self, token: u64) -> RResult<(), RString> {
        guarded(|| self.0.timer_fired(token))
    }
}

extern "C" fn create<P: Plugin>(
    host: FfiHostBox,
    config: ROption<RStr<'_>>,
) -> RResult<FfiHooksBox, ConfigError> {
    let config = config.into_option().map(|c| c.as_str());
    match guarded(|| P::load(Host { inner: host }, config)).into_result() {
        Ok(Ok(plugin)) => RResult::ROk(FfiHooks_TO::from_value(Guarded(plugin), TD_Opaque)),
        Ok(Err(refusal)) => RResult::RErr(refusal),
        Err(panic) => RResult::RErr(ConfigError::new(None, format!("panicked while loading: {panic}"))),
    }
}

/// The root module for plugin type `P`; what [`crate::export_plugin!`] exports.
pub fn root_module_of<P: Plugin>() -> PluginModuleRef {
    PluginModule {
        name: RStr::from_str(P::NAME),
        version: RStr::from_str(P::VERSION),
        config_section: P::CONFIG_SECTION.map(RStr::from_str).into(),
        create: create::<P>,
    }
    .leak_into_prefix()
}
