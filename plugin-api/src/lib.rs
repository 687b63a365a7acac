//! The stable ABI between the streaming host and its session plugins.
//!
//! A plugin is a shared library (`cdylib`) that the host loads at run time. The host calls the
//! plugin at each moment of a viewer session's life; the plugin acts only through the [`Host`]
//! handle it was given when it was loaded. Janus's `plugin.h` is the model: one table of hooks,
//! each named for the moment it is called.
//!
//! | hook (plugin side)  | called when                                   | the plugin may                          |
//! |---------------------|-----------------------------------------------|-----------------------------------------|
//! | [`Plugin::load`]    | the library is loaded, with its config section| parse config; refuse with [`ConfigError`]|
//! | `session_opened`    | a WebSocket session is accepted               | remember the session                    |
//! | `offer_requested`   | a player sends `request_offer`                | answer [`OfferDecision`]                |
//! | `message_received`  | a message the host does not handle arrives    | answer [`MessageVerdict`]               |
//! | `session_playing`   | the session's edge WebRTC connection is up    | count it as a source of the stream      |
//! | `session_closed`    | the session ended (socket closed, stop, error)| forget it                               |
//! | `timer_fired`       | a timer asked for with [`Host::set_timer`] is due | act on a deadline                   |
//!
//! | host call (context)        | effect                                                      |
//! |----------------------------|-------------------------------------------------------------|
//! | [`Host::now_ms`]           | the host's monotonic clock, in milliseconds                 |
//! | [`Host::send`]             | send a JSON text message to a session                       |
//! | [`Host::serve_from_edge`]  | answer the session's pending `request_offer` from the edge  |
//! | [`Host::close`]            | send the protocol's error `{code, error}`, close the socket |
//! | [`Host::set_timer`]        | call `timer_fired(token)` after a delay                     |
//! | [`Host::log`]              | log through the host's logger, tagged with the plugin name  |
//! | [`Host::count`]            | add to a named metric (counter or gauge) the host reports   |
//! | [`Host::report_delivery`]  | (0.1.1) how a viewer gets the stream: edge, or which peer    |
//!
//! The calls whose effect comes after the hook (`send`, `serve_from_edge`, `close`, `set_timer`,
//! `count`, `report_delivery`) are also data, [`HostCall`]: the host queues them and carries them out in one place,
//! in order; simulators and benches queue them the same way. (`now_ms` and `log` act at once.)
//!
//! **Threading.** The host makes one call at a time into a plugin (it holds the plugin behind a
//! mutex), so a plugin needs `Send` but not `Sync`, and needs no locks of its own. Host calls never
//! re-enter the plugin: their effects are queued and carried out, in order, after the hook returns.
//! A plugin has no async runtime and must not block; its clock and timers come from the host.
//!
//! **Failure.** A panic inside a hook is caught at the boundary ([`export_plugin!`] does it); the
//! host logs it with the plugin's name and disables the plugin, serving every session from the
//! edge. A library built against an incompatible `plugin-api` is refused at load with a message
//! naming the library and what differs (see [`LoadError`]).
//!
//! **Versions.** A library records the `plugin-api` version it was built against; the host
//! refuses one of another minor version (0.1 vs 0.2), naming both. Within a minor version:
//! - a patch release (0.1.0 -> 0.1.1) may only *add* hooks and host calls at the end of their
//!   table, each with a default body ([`ffi`] says how); it may add new types used only by them;
//! - an old plugin on a new host works unchanged: an added hook it lacks runs its default (the
//!   host never panics on a missing entry), an added host call it never makes;
//! - a new plugin on an old host loads too: an added host call it makes does nothing there.
//!
//! Anything else (a changed signature, a new enum variant or struct field in an existing type, a
//! removed or reordered entry) is a new minor version. `tests/plugins/abi-0.1.0` keeps a plugin
//! built against the 0.1.0 tables, which every host of 0.1 must load and run.
//!
//! | version | added                                                                   |
//! |---------|-------------------------------------------------------------------------|
//! | 0.1.0   | the hooks and host calls above, up to `timer_fired` and `count`          |
//! | 0.1.1   | host call `report_delivery`, type [`Delivery`]                           |
//!
//! A plugin crate implements [`Plugin`] and calls [`export_plugin!`] once. It must list
//! `abi_stable` among its dependencies (the export macro's expansion names that crate), but it
//! never touches abi_stable types.

pub mod ffi;
mod host_side;
mod plugin_side;
mod types;

pub use host_side::{HostServices, LoadError, LoadedPlugin, PluginFailure, PluginLibrary};
pub use plugin_side::{Host, Plugin};
pub use types::{
    CloseReason, ConfigError, Delivery, HostCall, LogLevel, MessageVerdict, OfferDecision, SessionId, SessionInfo,
    SessionKind,
};

/// The version of this interface; a plugin built against an incompatible one is refused.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Items the [`export_plugin!`] macro expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::plugin_side::root_module_of;
}

/// Exports `$plugin` (a type implementing [`Plugin`]) as this library's plugin.
///
/// Use once, at the root of a `cdylib` crate: `plugin_api::export_plugin!(MyPlugin);`
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        /// The root module the host looks up when it loads this library.
        #[::abi_stable::export_root_module]
        pub fn plugin_root_module() -> $crate::ffi::PluginModuleRef {
            $crate::__private::root_module_of::<$plugin>()
        }
    };
}
