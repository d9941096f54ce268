//! haul's built-in plugins, one folder each. [`register_builtin`] lists them
//! explicitly; adding a plugin touches its folder and that function only.

pub mod sql;

use haul_collect_core::registry::PluginRegistry;

/// Registers every built-in plugin.
pub fn register_builtin(registry: &mut PluginRegistry) {
    registry.add(sql::SqlSourcePlugin);
    registry.add(sql::SqlSinkPlugin);
}
