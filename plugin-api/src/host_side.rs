//! The host's side: loading a plugin library, giving it a context, and calling its hooks with
//! failures turned into values.

use crate::ffi::{FfiHooksBox, FfiHost, FfiHost_TO, PluginModuleRef};
use crate::plugin_side::panic_message;
use crate::types::{
    CloseReason, ConfigError, Delivery, HostCall, LogLevel, MessageVerdict, OfferDecision, SessionId, SessionInfo,
};
use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr, RString};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// What the host offers a plugin; the safe counterpart of [`crate::Host`], one value per plugin.
/// The plugin's `send`, `serve_from_edge`, `close`, `set_timer` and `count` arrive as one
/// [`HostCall`] each, in the order it made them.
///
/// Implementations must not call back into the plugin: queue the call and carry it out after
/// the hook returns. A panic here is caught and logged to stderr, never unwound into the plugin.
pub trait HostServices: Send + Sync + 'static {
    /// The host's monotonic clock, in milliseconds.
    fn now_ms(&self) -> u64;
    /// Log a line from the plugin (at once).
    fn log(&self, level: LogLevel, message: &str);
    /// Queue what the plugin asked for, to be carried out after the hook returns.
    fn queue(&self, call: HostCall);
}

/// Why a plugin library was refused at load.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be opened as a shared library (missing, unreadable, not ELF, ...).
    Open {
        /// The library's path.
        path: PathBuf,
        /// The loader's explanation.
        reason: String,
    },
    /// The library opened but exports no plugin root module.
    NotAPlugin {
        /// The library's path.
        path: PathBuf,
    },
    /// The library was built against an incompatible version of `plugin-api` (or abi_stable).
    Incompatible {
        /// The library's path.
        path: PathBuf,
        /// What differs, as the ABI checker reports it.
        details: String,
    },
    /// The library's plugin refused its configuration section, or panicked while loading.
    Config {
        /// The plugin's name.
        plugin: String,
        /// The plugin's refusal.
        error: ConfigError,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { path, reason } => {
                write!(f, "cannot open plugin library {}: {reason}", path.display())
            }
            Self::NotAPlugin { path } => write!(
                f,
                "{} is not a plugin library: it exports no plugin root module \
                 (was it built with plugin_api::export_plugin!?)",
                path.display()
            ),
            Self::Incompatible { path, details } => write!(
                f,
                "plugin library {} is incompatible with this host (plugin-api {}): {details}; \
                 rebuild it against plugin-api {}",
                path.display(),
                crate::ABI_VERSION,
                crate::ABI_VERSION
            ),
            Self::Config { plugin, error } => write!(f, "plugin {plugin} refused its configuration: {error}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Keeps the part of abi_stable's (very long) layout report a person needs: the first lines that
/// say what differs, without the dumps of both type layouts.
fn summarise_library_error(err: &LibraryError) -> String {
    match err {
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => format!(
            "it was built against plugin-api {actual_version}, this host needs a version compatible with {expected_version}"
        ),
        LibraryError::InvalidAbiHeader(header) => {
            format!("it was built with an incompatible abi_stable ({header:?})")
        }
        LibraryError::Many(errors) => {
            errors.iter().map(summarise_library_error).collect::<Vec<_>>().join("; ")
        }
        LibraryError::AbiInstability(_) => {
            // abi_stable prints both layouts whole; what differs is on the `Error:` lines, each
            // followed by its `Expected:` and `Found:` values.
            let full = err.to_string();
            let lines: Vec<&str> = full.lines().map(str::trim).collect();
            let differences: Vec<String> = lines
                .iter()
                .enumerate()
                .filter_map(|(i, line)| line.strip_prefix("Error:").map(|what| (i, what)))
                .take(3)
                .map(|(i, what)| {
                    let value = |label: &str| {
                        let at = lines[i..].iter().position(|l| *l == label)?;
                        lines.get(i + at + 1).copied()
                    };
                    format!("{what} (expected {}, found {})", value("Expected:").unwrap_or("?"), value("Found:").unwrap_or("?"))
                })
                .collect();
            if differences.is_empty() { "its types' layouts differ".to_string() } else { differences.join("; ") }
        }
        other => {
            let full = other.to_string();
            let wanted: Vec<&str> = full
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .filter(|line| {
                    let l = line.to_ascii_lowercase();
                    l.contains("error") || l.contains("mismatch") || l.contains("expected") || l.contains("found")
                })
                .take(6)
                .collect();
            if wanted.is_empty() {
                full.lines().take(6).collect::<Vec<_>>().join(" | ")
            } else {
                wanted.join(" | ")
            }
        }
    }
}

/// Whether the library was built against an earlier patch of this minor version: its tables end
/// sooner than ours and are otherwise the same.
///
/// abi_stable's own check accepts a library whose prefix types (the hook and host-call tables,
/// the root module) have *at least* the interface's fields: a plugin built against this
/// `plugin-api` or a later patch. A plugin built against an earlier patch has fewer, and abi_stable
/// refuses it ("too many fields"); the same check the other way round (the library's layout as the
/// interface, ours as the implementation) accepts exactly the libraries whose tables are prefixes
/// of ours. The version check (same minor) has already passed when this is asked.
fn built_by_an_earlier_patch(header: &abi_stable::library::LibHeader) -> bool {
    use abi_stable::abi_stability::abi_checking::check_layout_compatibility;
    let ours = <PluginModuleRef as abi_stable::StableAbi>::LAYOUT;
    header.layout().is_some_and(|theirs| check_layout_compatibility(theirs, ours).is_ok())
}

/// An opened plugin library whose ABI matched; [`PluginLibrary::instantiate`] makes the plugin.
pub struct PluginLibrary {
    module: PluginModuleRef,
    path: PathBuf,
    built_against: String,
}

impl PluginLibrary {
    /// Opens the shared library at `path` and checks that it is a plugin of this ABI.
    ///
    /// Libraries are never unloaded: replacing a plugin means restarting the host.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let header = lib_header_from_path(path).map_err(|err| match err {
            LibraryError::OpenError { err, .. } => {
                LoadError::Open { path: path.to_owned(), reason: err.to_string() }
            }
            LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin { path: path.to_owned() },
            other => LoadError::Incompatible { path: path.to_owned(), details: summarise_library_error(&other) },
        })?;
        let built_against = header.version_strings().version.to_string();
        let incompatible = |err: &LibraryError| LoadError::Incompatible { path: path.to_owned(), details: summarise_library_error(err) };
        let module = match header.init_root_module::<PluginModuleRef>() {
            Ok(module) => module,
            Err(err @ LibraryError::AbiInstability(_)) if built_by_an_earlier_patch(header) => {
                // SAFETY: `built_by_an_earlier_patch` checked the library's layout against ours,
                // with the library's tables as the interface: each is a prefix of ours, and every
                // entry past its end has a default body that runs in its place (see `ffi`).
                unsafe { header.init_root_module_with_unchecked_layout::<PluginModuleRef>() }.map_err(|_| incompatible(&err))?
            }
            Err(err) => return Err(incompatible(&err)),
        };
        Ok(Self { module, path: path.to_owned(), built_against })
    }

    /// The plugin's name.
    pub fn name(&self) -> &'static str {
        self.module.name().as_str()
    }
    /// The plugin's own version.
    pub fn version(&self) -> &'static str {
        self.module.version().as_str()
    }
    /// The `plugin-api` version the library was built against.
    pub fn built_against(&self) -> &str {
        &self.built_against
    }
    /// The element name of the plugin's config section, if it has one.
    pub fn config_section(&self) -> Option<&'static str> {
        self.module.config_section().into_option().map(|s| s.as_str())
    }
    /// The library's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the plugin with its context and the XML text of its config section.
    pub fn instantiate<S: HostServices>(&self, services: S, config: Option<&str>) -> Result<LoadedPlugin, LoadError> {
        let host = FfiHost_TO::from_value(GuardedServices(services), TD_Opaque);
        match (self.module.create())(host, config.map(RStr::from_str).into()) {
            RResult::ROk(hooks) => Ok(LoadedPlugin { hooks, name: self.name() }),
            RResult::RErr(error) => Err(LoadError::Config { plugin: self.name().to_string(), error }),
        }
    }
}

/// A hook panicked inside the plugin; the plugin must not be called again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    /// The plugin's name.
    pub plugin: &'static str,
    /// The hook that panicked.
    pub hook: &'static str,
    /// The panic's message.
    pub message: String,
}

impl fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {} panicked in {}: {}", self.plugin, self.hook, self.message)
    }
}

impl std::error::Error for PluginFailure {}

/// A live plugin instance. Each hook returns `Err` if the plugin panicked in it.
pub struct LoadedPlugin {
    hooks: FfiHooksBox,
    name: &'static str,
}

impl LoadedPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn check<T>(&self, hook: &'static str, result: RResult<T, RString>) -> Result<T, PluginFailure> {
        result
            .into_result()
            .map_err(|message| PluginFailure { plugin: self.name, hook, message: message.into() })
    }

    /// See [`crate::Plugin::session_opened`].
    pub fn session_opened(&mut self, session: &SessionInfo) -> Result<(), PluginFailure> {
        let r = self.hooks.session_opened(session);
        self.check("session_opened", r)
    }
    /// See [`crate::Plugin::offer_requested`].
    pub fn offer_requested(&mut self, id: SessionId) -> Result<OfferDecision, PluginFailure> {
        let r = self.hooks.offer_requested(id);
        self.check("offer_requested", r)
    }
    /// See [`crate::Plugin::message_received`].
    pub fn message_received(&mut self, id: SessionId, json: &str) -> Result<MessageVerdict, PluginFailure> {
        let r = self.hooks.message_received(id, json.into());
        self.check("message_received", r)
    }
    /// See [`crate::Plugin::session_playing`].
    pub fn session_playing(&mut self, id: SessionId) -> Result<(), PluginFailure> {
        let r = self.hooks.session_playing(id);
        self.check("session_playing", r)
    }
    /// See [`crate::Plugin::session_closed`].
    pub fn session_closed(&mut self, id: SessionId, reason: CloseReason) -> Result<(), PluginFailure> {
        let r = self.hooks.session_closed(id, reason);
        self.check("session_closed", r)
    }
    /// See [`crate::Plugin::timer_fired`].
    pub fn timer_fired(&mut self, token: u64) -> Result<(), PluginFailure> {
        let r = self.hooks.timer_fired(token);
        self.check("timer_fired", r)
    }
}

/// [`HostServices`] seen through the FFI vtable, with host panics kept on the host's side.
struct GuardedServices<S>(S);

impl<S> GuardedServices<S> {
    fn run<T: Default>(&self, call: &str, f: impl FnOnce(&S) -> T) -> T {
        catch_unwind(AssertUnwindSafe(|| f(&self.0))).unwrap_or_else(|payload| {
            eprintln!("host panicked in plugin context call {call}: {}", panic_message(&*payload));
            T::default()
        })
    }
}

impl<S: HostServices> FfiHost for GuardedServices<S> {
    fn now_ms(&self) -> u64 {
        self.run("now_ms", |s| s.now_ms())
    }
    fn send(&self, id: SessionId, json: RStr<'_>) {
        self.run("send", |s| s.queue(HostCall::Send(id, json.as_str().to_owned())))
    }
    fn serve_from_edge(&self, id: SessionId) {
        self.run("serve_from_edge", |s| s.queue(HostCall::ServeFromEdge(id)))
    }
    fn close(&self, id: SessionId, code: u16, reason: RStr<'_>) {
        self.run("close", |s| s.queue(HostCall::Close(id, code, reason.as_str().to_owned())))
    }
    fn set_timer(&self, token: u64, after_ms: u64) {
        self.run("set_timer", |s| s.queue(HostCall::SetTimer { token, after_ms }))
    }
    fn log(&self, level: LogLevel, message: RStr<'_>) {
        self.run("log", |s| s.log(level, message.as_str()))
    }
    fn count(&self, name: RStr<'_>, delta: i64) {
        self.run("count", |s| s.queue(HostCall::Count(name.as_str().to_owned(), delta)))
    }
    fn report_delivery(&self, id: SessionId, delivery: Delivery) {
        self.run("report_delivery", |s| s.queue(HostCall::ReportDelivery(id, delivery)))
    }
}
