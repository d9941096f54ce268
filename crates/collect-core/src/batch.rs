//! Records travel in batches: one shared schema, many rows.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Schema, Value};

/// Records that share one schema. Each row has exactly one value per field.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub schema: Arc<Schema>,
    pub rows: Vec<Vec<Value>>,
}

impl Batch {
    pub fn new(schema: Arc<Schema>, rows: Vec<Vec<Value>>) -> Self {
        debug_assert!(rows.iter().all(|row| row.len() == schema.fields.len()));
        Batch { schema, rows }
    }

    pub fn empty(schema: Arc<Schema>) -> Self {
        Batch { schema, rows: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// An estimate of the batch's payload in bytes.
    pub fn approximate_size(&self) -> u64 {
        self.rows.iter().flat_map(|row| row.iter()).map(|v| v.approximate_size() as u64).sum()
    }

    /// One row as a JSON object, field order kept (see [`Schema::row_to_json`]).
    pub fn row_to_json(&self, row: &[Value]) -> serde_json::Value {
        self.schema.row_to_json(row)
    }
}

/// A record that could not be read or processed, on its way to the dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// Why it was rejected, in words.
    pub reason: String,
    /// Where it came from: a file and line, a key, a page.
    pub position: String,
    /// The record as far as it could be read: JSON, or the raw text.
    pub record: serde_json::Value,
    /// The step that rejected it (`source`, a processor's name, `sink`).
    pub stage: String,
}
