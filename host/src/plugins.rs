//! The loaded plugins: loading them as the config says (each from a private copy of its library),
//! calling their hooks one at a time, turning their host calls into actions, and disabling a plugin
//! that panics.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sessions::{Reserved, Sessions};
use anyhow::Context as _;
use plugin_api::{
    CloseReason, HostCall, HostServices, LoadError, LoadedPlugin, LogLevel, MessageVerdict, OfferDecision, PluginFailure,
    PluginLibrary, SessionId, SessionInfo,
};
use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// What the plugins asked for, carried out in order by [`crate::effects::run`] after each hook
/// returned.
#[derive(Debug)]
pub enum PluginAction {
    /// A host call of plugin number `plugin` (its index in the set, for its timers).
    Call {
        /// Index of the plugin in the set.
        plugin: usize,
        /// What it asked for.
        call: HostCall,
    },
    /// A plugin was disabled after a panic.
    Disabled,
}

/// One plugin's context: what its host calls reach.
struct Context {
    plugin: &'static str,
    index: usize,
    actions: mpsc::UnboundedSender<PluginAction>,
    /// Where a message's bytes are reserved when the plugin sends it.
    sessions: Arc<Sessions>,
    clock: Instant,
    metrics: Arc<Metrics>,
}

impl HostServices for Context {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }
    fn queue(&self, call: HostCall) {
        if let HostCall::Send(id, json) = &call {
            match self.sessions.reserve(*id, json.len()) {
                Reserved::Yes => {}
                Reserved::Refused => return self.metrics.counts.plugin_messages_dropped_over_bound.inc(),
                Reserved::NoSession => return,
            }
        }
        let _ = self.actions.send(PluginAction::Call { plugin: self.index, call });
    }
    fn log(&self, level: LogLevel, message: &str) {
        let plugin = self.plugin;
        match level {
            LogLevel::Error => tracing::error!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
        }
    }
}

struct Slot {
    name: &'static str,
    plugin: Mutex<LoadedPlugin>,
    disabled: AtomicBool,
}

/// The plugins in config order. Each is called by one thread at a time.
pub struct PluginSet {
    slots: Vec<Slot>,
    actions: mpsc::UnboundedSender<PluginAction>,
    metrics: Arc<Metrics>,
}

impl PluginSet {
    /// Loads every plugin the config names and hands each its config section. A library that
    /// fails to load stops the start if it is `Required`, else it is logged and skipped.
    pub fn load(
        config: &Config,
        actions: mpsc::UnboundedSender<PluginAction>,
        clock: Instant,
        metrics: Arc<Metrics>,
        sessions: Arc<Sessions>,
    ) -> anyhow::Result<Self> {
        let mut slots = Vec::new();
        let mut claimed = Vec::new();
        // Made at the first plugin, removed (on drop) when this function returns.
        let copies = OnceCell::new();
        for (index, entry) in config.plugins.iter().enumerate() {
            let path = config.plugin_path(entry);
            let copies = copies.get_or_init(PrivateCopies::create);
            let loaded = open_private_copy(copies, index, &path).and_then(|(library, copy)| {
                let section = library.config_section().and_then(|name| config.section(name));
                let context = Context {
                    plugin: library.name(),
                    index: slots.len(),
                    actions: actions.clone(),
                    sessions: sessions.clone(),
                    clock,
                    metrics: metrics.clone(),
                };
                let plugin = library.instantiate(context, section.map(|s| s.xml.as_str())).map_err(|e| match (e, section) {
                    // Point a config refusal at the file's line and column.
                    (LoadError::Config { plugin, error }, Some(section)) => {
                        let at = error.offset.into_option().map(|o| section.offset + o as usize);
                        LoadError::Config {
                            plugin,
                            error: plugin_api::ConfigError::new(None, config.error_at(at, error.message.to_string()).to_string()),
                        }
                    }
                    (e, _) => e,
                })?;
                Ok((library, plugin, copy))
            });
            match loaded {
                Ok((library, plugin, copy)) => {
                    tracing::info!(
                        plugin = %library.name(),
                        version = %library.version(),
                        abi = %library.built_against(),
                        path = %path.display(),
                        copy = %copy.display(),
                        "plugin loaded"
                    );
                    claimed.extend(library.config_section());
                    slots.push(Slot { name: library.name(), plugin: Mutex::new(plugin), disabled: AtomicBool::new(false) });
                }
                Err(e) if entry.required => {
                    return Err(e).context("a required plugin could not be loaded (set <Required>false</Required> to run without it)");
                }
                Err(e) => tracing::error!("plugin not loaded, running without it: {e}"),
            }
        }
        for ignored in config.check_claimed(&claimed)? {
            tracing::warn!("<Modules><{}> is ignored: no loaded plugin handles it", ignored.name);
        }
        Ok(Self { slots, actions, metrics })
    }

    /// The name of plugin number `index`.
    pub fn name(&self, index: usize) -> &'static str {
        self.slots[index].name
    }

    /// The loaded plugins' names, in config order.
    pub fn names(&self) -> Vec<&'static str> {
        self.slots.iter().map(|s| s.name).collect()
    }

    /// Calls `hook` (named `name`) on one plugin unless disabled, timing it; a panic disables the
    /// plugin and yields `None`.
    fn call<T>(&self, slot: &Slot, name: &'static str, hook: impl FnOnce(&mut LoadedPlugin) -> Result<T, PluginFailure>) -> Option<T> {
        if slot.disabled.load(Ordering::Acquire) {
            return None;
        }
        let mut plugin = slot.plugin.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = Instant::now();
        let result = hook(&mut plugin);
        self.metrics.hook_took(slot.name, name, started.elapsed());
        match result {
            Ok(value) => Some(value),
            Err(failure) => {
                slot.disabled.store(true, Ordering::Release);
                tracing::error!("{failure}; plugin disabled, sessions are served from the edge");
                self.metrics.plugin_panicked(slot.name);
                let _ = self.actions.send(PluginAction::Disabled);
                None
            }
        }
    }

    /// A session opened.
    pub fn session_opened(&self, info: &SessionInfo) {
        for s in &self.slots {
            self.call(s, "session_opened", |p| p.session_opened(info));
        }
    }

    /// A player asked for an offer: the first plugin that takes it wins; else the edge serves it.
    pub fn offer_requested(&self, id: SessionId) -> OfferDecision {
        let handled = self.slots.iter().any(|s| self.call(s, "offer_requested", |p| p.offer_requested(id)) == Some(OfferDecision::Handled));
        if handled { OfferDecision::Handled } else { OfferDecision::ServeFromEdge }
    }

    /// A message the host does not handle. If the plugin meant to take it panicked, the message
    /// is dropped (its session is then served from the edge), not refused.
    pub fn message_received(&self, id: SessionId, json: &str) -> MessageVerdict {
        for slot in &self.slots {
            let was_enabled = !slot.disabled.load(Ordering::Acquire);
            match self.call(slot, "message_received", |p| p.message_received(id, json)) {
                Some(MessageVerdict::Handled) => return MessageVerdict::Handled,
                None if was_enabled => return MessageVerdict::Handled,
                _ => {}
            }
        }
        MessageVerdict::Unknown
    }

    /// The session's edge connection is up.
    pub fn session_playing(&self, id: SessionId) {
        for s in &self.slots {
            self.call(s, "session_playing", |p| p.session_playing(id));
        }
    }

    /// The session ended.
    pub fn session_closed(&self, id: SessionId, reason: CloseReason) {
        for s in &self.slots {
            self.call(s, "session_closed", |p| p.session_closed(id, reason));
        }
    }

    /// A plugin's timer is due.
    pub fn timer_fired(&self, plugin: usize, token: u64) {
        if let Some(slot) = self.slots.get(plugin) {
            self.call(slot, "timer_fired", |p| p.timer_fired(token));
        }
    }
}

/// The private copies of the plugin libraries: the host loads these, never the files the config
/// names.
///
/// Why: the dynamic loader maps the library's file into the process. `cp new.so libplugin_p2p.so`
/// (or a build writing its output there) truncates and rewrites that same file (same inode), so the
/// code the host runs changes under it: SIGBUS for a page past the new end, garbage instructions
/// (SIGSEGV, SIGILL) otherwise, at the next hook. A copy that only this process knows of is written
/// by no one; a new library is picked up at the next start, as before.
///
/// Where: one folder `p2p-host-<pid>` in [`std::env::temp_dir`] (`$TMPDIR`, else `/tmp`), made with
/// mode 0700 by a plain `mkdir`, which fails rather than reuse a folder (or symbolic link) someone
/// made first; then `p2p-host-<pid>-<n>` is tried. Each library is copied there as
/// `<n>-<file name>`, `n` its place in the config, so two of one file name do not collide.
///
/// When removed: as soon as the plugins are loaded (on drop, when [`PluginSet::load`] returns), not
/// at exit. On Linux a mapping keeps its file's inode alive after the name is unlinked, so the
/// loaded code stays; and removing at once leaves nothing behind when the host ends without running
/// exit code (SIGKILL, the OOM killer, an abort). The price: the copy shows as `(deleted)` in
/// `/proc/<pid>/maps`, and a debugger must be pointed at the original for symbols (the `plugin
/// loaded` line names both).
///
/// The temporary folder must allow execution: on a `noexec` mount the loader refuses the copy (the
/// error then says so); set `TMPDIR` to another folder. A library that loads others by a path
/// relative to its own folder (`$ORIGIN` in its RUNPATH) would not find them from the copy;
/// cargo's cdylibs do not.
struct PrivateCopies {
    dir: PathBuf,
}

impl PrivateCopies {
    fn create() -> Result<Self, String> {
        use std::os::unix::fs::DirBuilderExt as _;
        let pid = std::process::id();
        let mut attempt = 0;
        loop {
            let name = if attempt == 0 { format!("p2p-host-{pid}") } else { format!("p2p-host-{pid}-{attempt}") };
            let dir = std::env::temp_dir().join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Self { dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => return Err(format!("cannot make a private folder for its copy ({}): {e}", dir.display())),
            }
        }
    }

    /// Copies the library at `original`, the config's `index`th, into the folder.
    fn copy(&self, index: usize, original: &Path) -> std::io::Result<PathBuf> {
        let name = original.file_name().map_or_else(|| "plugin.so".into(), |n| n.to_string_lossy());
        let copy = self.dir.join(format!("{index}-{name}"));
        std::fs::copy(original, &copy)?;
        Ok(copy)
    }
}

impl Drop for PrivateCopies {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("cannot remove the plugins' private copies in {}: {e}", self.dir.display());
        }
    }
}

/// Opens a private copy of the library at `path`, the config's `index`th (see [`PrivateCopies`]);
/// returns it with the copy's path. Errors name `path`, not the copy.
fn open_private_copy(
    copies: &Result<PrivateCopies, String>,
    index: usize,
    path: &Path,
) -> Result<(PluginLibrary, PathBuf), LoadError> {
    let open_error = |reason: String| LoadError::Open { path: path.to_owned(), reason };
    let copies = copies.as_ref().map_err(|e| open_error(e.clone()))?;
    let copy = copies.copy(index, path).map_err(|e| open_error(e.to_string()))?;
    let library = PluginLibrary::open(&copy).map_err(|e| match e {
        LoadError::Open { reason, .. } => {
            let mut reason = reason.replace(&copy.display().to_string(), &path.display().to_string());
            if reason.contains("failed to map segment") {
                reason += &format!(
                    " (loading its private copy in {}: is that file system mounted noexec? set TMPDIR to another folder)",
                    copies.dir.display()
                );
            }
            open_error(reason)
        }
        LoadError::NotAPlugin { .. } => LoadError::NotAPlugin { path: path.to_owned() },
        LoadError::Incompatible { details, .. } => LoadError::Incompatible { path: path.to_owned(), details },
        other => other,
    })?;
    Ok((library, copy))
}
