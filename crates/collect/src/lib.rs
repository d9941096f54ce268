//! haul's built-in plugins, one folder each. [`register_builtin`] lists them
//! explicitly; adding a plugin touches its folder and that function only.

pub mod crawl;
pub mod file;
pub mod http;
mod object_rows;
pub mod process;
pub mod singer;
pub mod sql;
pub mod stdout;
pub mod web;

use haul_collect_core::registry::PluginRegistry;

/// Registers every built-in plugin.
pub fn register_builtin(registry: &mut PluginRegistry) {
    registry.add(file::FileSourcePlugin);
    registry.add(file::FileSinkPlugin);
    registry.add(stdout::StdoutSinkPlugin);
    registry.add(sql::SqlSourcePlugin);
    registry.add(sql::SqlSinkPlugin);
    registry.add(process::cleanse::CleansePlugin);
    registry.add(process::rename::RenamePlugin);
    registry.add(process::select::SelectPlugin);
    registry.add(process::select::DropPlugin);
    registry.add(process::cast::CastPlugin);
    registry.add(singer::SingerSourcePlugin);
    registry.add(singer::SingerSinkPlugin);
    registry.add(process::remap::RemapPlugin);
    registry.add(process::filter::FilterPlugin);
    registry.add(process::validate::ValidatePlugin);
    registry.add(process::mask::MaskPlugin);
    registry.add(crawl::CrawlSourcePlugin);
    registry.add(http::HttpSourcePlugin);
}
