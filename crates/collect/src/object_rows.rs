//! Rows built from JSON objects, for sources that read JSON records (JSON
//! Lines files, API responses). A batch's schema is the union of its
//! records' keys in first-seen order; a key a record lacks is null, a field
//! whose values mix types within the batch is typed `json`, and nested
//! objects and arrays stay nested ([`Value::Json`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use haul_collect_core::{Batch, DataType, Field, Schema, Value};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

/// The rows of one batch under way, with the fields seen so far.
#[derive(Default)]
pub(crate) struct ObjectRows {
    names: Vec<String>,
    positions: HashMap<String, usize>,
    /// Per field: the type of its non-null values, `Json` once they differ,
    /// `None` while all are null.
    types: Vec<Option<DataType>>,
    rows: Vec<Vec<Value>>,
}

impl ObjectRows {
    /// Adds one record.
    pub(crate) fn push(&mut self, object: OrderedObject<'_>) {
        let mut row = vec![Value::Null; self.names.len()];
        for (index, (key, json)) in object.0.into_iter().enumerate() {
            self.set(&mut row, index, key.0, Value::from_json(json));
        }
        self.rows.push(row);
    }

    /// Adds one record read straight from the entries of a JSON object, in
    /// document order, without collecting them first. On an error the rows
    /// are left unfinished: the caller drops them.
    pub(crate) fn push_entries<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        let mut row = vec![Value::Null; self.names.len()];
        let mut index = 0;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let value = Value::from_json(map.next_value::<serde_json::Value>()?);
            self.set(&mut row, index, key.0, value);
            index += 1;
        }
        self.rows.push(row);
        Ok(())
    }

    /// Puts `value`, the `index`th entry of its record, into the record's field `key`.
    fn set(&mut self, row: &mut Vec<Value>, index: usize, key: Cow<'_, str>, value: Value) {
        let position = self.position_of(index, key);
        if row.len() <= position {
            row.resize(position + 1, Value::Null);
        }
        if let (Some(slot), Some(known)) = (row.get_mut(position), self.types.get_mut(position)) {
            *known = DataType::merged(*known, &value);
            *slot = value;
        }
    }

    /// The rows pushed so far as one batch; starts a new one.
    pub(crate) fn take_batch(&mut self) -> Batch {
        let types: Vec<DataType> =
            std::mem::take(&mut self.types).into_iter().map(|known| known.unwrap_or(DataType::String)).collect();
        let fields = std::mem::take(&mut self.names)
            .into_iter()
            .zip(&types)
            .map(|(name, &data_type)| Field::new(name, data_type));
        let schema = Arc::new(Schema::new(fields.collect()));
        self.positions.clear();
        let mut rows = std::mem::take(&mut self.rows);
        for row in &mut rows {
            row.resize(types.len(), Value::Null);
            for (value, &data_type) in row.iter_mut().zip(&types) {
                if data_type == DataType::Json && !matches!(value, Value::Json(_) | Value::Null) {
                    *value = Value::Json(value.to_json());
                }
            }
        }
        Batch::new(schema, rows)
    }

    /// The position of field `key`, the `index`th key of its record, added
    /// when first seen. Records usually repeat the order of their keys, so
    /// the field at `index` is tried before the lookup by name.
    fn position_of(&mut self, index: usize, key: Cow<'_, str>) -> usize {
        if self.names.get(index).is_some_and(|name| *name == key) {
            return index;
        }
        if let Some(&position) = self.positions.get(key.as_ref()) {
            return position;
        }
        let position = self.names.len();
        let key = key.into_owned();
        self.positions.insert(key.clone(), position);
        self.names.push(key);
        self.types.push(None);
        position
    }
}

/// One JSON object (a JSON Lines line), or why it is not one.
pub(crate) fn parse_object(text: &str) -> Result<OrderedObject<'_>, String> {
    serde_json::from_str::<OrderedObject>(text).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => "not a json object".to_string(),
        _ => format!("invalid json: {error}"),
    })
}

/// A JSON object with its keys in document order; anything else is a data error.
pub(crate) struct OrderedObject<'de>(pub(crate) Vec<(Key<'de>, serde_json::Value)>);

impl<'de> Deserialize<'de> for OrderedObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Reads a JSON object's entries in document order.
struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = OrderedObject<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(entry) = map.next_entry::<Key<'de>, serde_json::Value>()? {
            entries.push(entry);
        }
        Ok(OrderedObject(entries))
    }
}

/// An object key, borrowed from the input unless it holds escapes.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a string key")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_string())))
            }

            fn visit_string<E: serde::de::Error>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}
