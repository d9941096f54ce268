//! The built-in plugin registry, and job loading re-exported from
//! [`haul_collect_core::assemble`] for the commands.

pub use haul_collect_core::assemble::{LoadedJob, dead_letters, load_file as load};
use haul_collect_core::registry::PluginRegistry;

/// The registry of every built-in plugin.
pub fn builtin_registry() -> PluginRegistry {
    let mut registry = PluginRegistry::default();
    haul_collect::register_builtin(&mut registry);
    registry
}
