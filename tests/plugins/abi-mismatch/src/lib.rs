//! Test fixture: a library exporting a plugin root module under the same interface name as
//! `plugin-api`, but with another layout, as a plugin built against a different `plugin-api`
//! would. The host must refuse it at load with a message naming the library and what differs.

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::RStr;
use abi_stable::{declare_root_module_statics, export_root_module, StableAbi};

/// A root module shaped like another interface revision: `create` takes different arguments.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The plugin's name.
    pub name: RStr<'static>,
    /// A field the host's interface does not have.
    pub priority: u32,
    /// A constructor with another signature.
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(u64) -> u64,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "plugin";
    const NAME: &'static str = "streaming-host plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.1.0");
}

extern "C" fn create(x: u64) -> u64 {
    x
}

/// The mismatched root module.
#[export_root_module]
pub fn plugin_root_module() -> PluginModuleRef {
    PluginModule { name: RStr::from_str("abi-mismatch"), priority: 1, create }.leak_into_prefix()
}
