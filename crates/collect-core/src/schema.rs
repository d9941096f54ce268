//! Field names and types, shared by every record of a [`crate::Batch`].

use serde::{Deserialize, Serialize};

/// The logical type of a field; each maps to one [`crate::Value`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    Int,
    Float,
    Decimal,
    String,
    Bytes,
    Date,
    Timestamp,
    TimestampTz,
    Json,
}

impl DataType {
    /// The type of a column that held values of type `known` (`None`: only
    /// nulls so far) and then `value`: the same type, or JSON when they differ.
    /// Sources and processors that infer a batch's schema from its values use it.
    pub fn merged(known: Option<DataType>, value: &crate::Value) -> Option<DataType> {
        match (known, value.data_type()) {
            (known, None) => known,
            (None, found) => found,
            (Some(known), Some(found)) if known == found => Some(known),
            _ => Some(DataType::Json),
        }
    }
}

/// One named, typed field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
}

impl Field {
    pub fn new(name: impl Into<String>, data_type: DataType) -> Self {
        Field { name: name.into(), data_type, nullable: true }
    }
}

/// The ordered fields of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Schema {
    pub fields: Vec<Field>,
}

impl Schema {
    pub fn new(fields: Vec<Field>) -> Self {
        Schema { fields }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|field| field.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|field| field.name.as_str())
    }

    /// A row of this schema as a JSON object, field order kept.
    pub fn row_to_json(&self, row: &[crate::Value]) -> serde_json::Value {
        let map = self.names().zip(row).map(|(name, value)| (name.to_string(), value.to_json())).collect();
        serde_json::Value::Object(map)
    }
}
