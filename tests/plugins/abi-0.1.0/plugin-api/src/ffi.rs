//! The raw FFI layer: the root module a plugin library exports and the two vtables that cross the
//! boundary. Neither host nor plugin authors use these directly; the safe [`crate::Plugin`] trait,
//! [`crate::Host`] handle, [`crate::LoadedPlugin`] and [`crate::export_plugin!`] sit on top.
//!
//! Growing the ABI: a new hook or host call goes after the `#[sabi(last_prefix_field)]` marker of
//! its table, so libraries built against the older table still load (the host sees the new entry
//! as missing and must not call it). Anything else (a changed signature, a new enum variant, a new
//! field) changes the layout and needs a new minor version of `plugin-api` (major while 0.x).

// The `sabi_trait` expansion defines trait impls inside generated items.
#![allow(non_local_definitions)]

use crate::types::{
    CloseReason, ConfigError, LogLevel, MessageVerdict, OfferDecision, SessionId, SessionInfo,
};
use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, ROption, RResult, RStr, RString};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};

/// Hooks the host calls on a plugin instance. `Err` carries a caught panic's message.
#[sabi_trait]
pub trait FfiHooks: Send {
    /// A session was accepted.
    fn session_opened(&mut self, session: &SessionInfo) -> RResult<(), RString>;
    /// The session sent `request_offer`.
    fn offer_requested(&mut self, id: SessionId) -> RResult<OfferDecision, RString>;
    /// The session sent a message the host does not handle (raw JSON text).
    fn message_received(&mut self, id: SessionId, json: RStr<'_>) -> RResult<MessageVerdict, RString>;
    /// The session's edge connection is up and media flows to it.
    fn session_playing(&mut self, id: SessionId) -> RResult<(), RString>;
    /// The session ended.
    fn session_closed(&mut self, id: SessionId, reason: CloseReason) -> RResult<(), RString>;
    /// A timer the plugin set is due.
    #[sabi(last_prefix_field)]
    fn timer_fired(&mut self, token: u64) -> RResult<(), RString>;
}

/// Calls a plugin makes on the host.
#[sabi_trait]
pub trait FfiHost: Send + Sync {
    /// The host's monotonic clock in milliseconds.
    fn now_ms(&self) -> u64;
    /// Queue a JSON text message to a session.
    fn send(&self, id: SessionId, json: RStr<'_>);
    /// Answer a session's pending `request_offer` with the edge's offer.
    fn serve_from_edge(&self, id: SessionId);
    /// Send the protocol's error message to a session and close it.
    fn close(&self, id: SessionId, code: u16, reason: RStr<'_>);
    /// Call `timer_fired(token)` after `after_ms` milliseconds.
    fn set_timer(&self, token: u64, after_ms: u64);
    /// Log a line, tagged with the plugin's name.
    fn log(&self, level: LogLevel, message: RStr<'_>);
    /// Add `delta` to the metric `name`.
    #[sabi(last_prefix_field)]
    fn count(&self, name: RStr<'_>, delta: i64);
}

/// An owned plugin instance behind its vtable.
pub type FfiHooksBox = FfiHooks_TO<'static, RBox<()>>;
/// An owned host handle behind its vtable.
pub type FfiHostBox = FfiHost_TO<'static, RBox<()>>;

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The plugin's name, used in logs and to match `<Plugin><Name>` in the config.
    pub name: RStr<'static>,
    /// The plugin's own version.
    pub version: RStr<'static>,
    /// The element name of the plugin's config section (under `<Modules>`), if it has one.
    pub config_section: ROption<RStr<'static>>,
    /// Creates the plugin instance from its config section's XML text (absent if not in the file).
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(host: FfiHostBox, config: ROption<RStr<'_>>) -> RResult<FfiHooksBox, ConfigError>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "plugin";
    const NAME: &'static str = "streaming-host plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
