//! What the client commands print on stdout: the API's answer as JSON, or
//! text for people — lines and tables of aligned columns.

use std::fmt::Write as _;
use std::io::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// How a client command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns and short sentences.
    Table,
    /// The API's answer, as pretty-printed JSON.
    Json,
}

impl OutputFormat {
    /// Prints `value` as JSON, or the text `render` makes of it.
    pub fn print<T: Serialize>(self, value: &T, render: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
        let text = match self {
            OutputFormat::Json => serde_json::to_string_pretty(value)?,
            OutputFormat::Table => render(value),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", text.trim_end())?;
        Ok(())
    }
}

/// Rows under a header, each column as wide as its widest cell.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|title| title.to_string()).collect()] }
    }

    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows.push(cells.into_iter().collect());
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                self.rows.iter().filter_map(|row| row.get(column)).map(|c| c.chars().count()).max().unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                let _ = write!(line, "{cell:<width$}  ", width = widths[column]);
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// A time as people read it: UTC, to the second.
pub fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An optional value, or `-`.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_their_widest_cell() {
        let mut table = Table::new(&["ID", "STATE"]);
        table.row(["r-1".to_string(), "running".to_string()]);
        table.row(["run-22".to_string(), "ok".to_string()]);
        assert_eq!(table.render(), "ID      STATE\nr-1     running\nrun-22  ok\n");
    }

    #[test]
    fn accented_letters_count_once_and_short_rows_are_fine() {
        let mut table = Table::new(&["NAME", "NOTE"]);
        table.row(["é".to_string()]);
        table.row(["abcdé".to_string(), "x".to_string()]);
        assert_eq!(table.render(), "NAME   NOTE\né\nabcdé  x\n");
    }
}
