//! The record `.` a VRL program runs on, kept in slots rather than in a VRL
//! object: one slot per field of the batch the program is given, then one per
//! field it adds, in the order it first adds them. A path reaches a slot by
//! its first segment, a field name; the rest of the path is walked inside the
//! slot's value exactly as VRL walks it inside an object.
//!
//! Slots spare building an object (its keys and tree) for every record and
//! reading it back, and let a record's untouched fields stay out of VRL. They
//! need the program to name the fields it uses: one that uses the record as a
//! whole (`.` itself, `get`, `unnest`) runs instead on a VRL object of every
//! field, made from the slots and read back into them.

use haul_collect_core::{Schema, Value};
use vrl::compiler::{SecretTarget, Target};
use vrl::path::{OwnedSegment, OwnedTargetPath, PathPrefix};
use vrl::value::{KeyString, ObjectMap, Secrets, Value as VrlValue};

use super::vrl_bridge::value_to_vrl;

/// The fields of one record, for one batch's schema.
pub struct RecordSlots {
    /// Each slot's field name.
    names: Vec<KeyString>,
    /// Each slot's input field, or `None` for a field the program added.
    inputs: Vec<Option<usize>>,
    /// The current record's values; `None` where the record lacks the field.
    values: Vec<Option<VrlValue>>,
    /// Whether the program runs on a whole VRL object instead.
    whole: bool,
}

impl RecordSlots {
    /// Slots for the fields of `schema` marked in `given`; `whole` when the
    /// program uses the record as a whole (then every field should be given).
    pub(super) fn new(schema: &Schema, given: &[bool], whole: bool) -> RecordSlots {
        let (names, inputs): (Vec<KeyString>, Vec<Option<usize>>) = schema
            .names()
            .enumerate()
            .filter(|(index, _)| given[*index])
            .map(|(index, name)| (KeyString::from(name), Some(index)))
            .unzip();
        let values = vec![None; names.len()];
        RecordSlots { names, inputs, values, whole }
    }

    /// Whether the program runs on a whole VRL object (see the module documentation).
    pub(super) fn whole(&self) -> bool {
        self.whole
    }

    /// Loads the given fields of `row`; the added fields start absent.
    pub fn load(&mut self, row: &[Value]) {
        for (value, input) in self.values.iter_mut().zip(&self.inputs) {
            *value = input.map(|index| value_to_vrl(&row[index]));
        }
    }

    /// How many slots there are so far.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// The field name of `slot`.
    pub fn name(&self, slot: usize) -> &str {
        self.names[slot].as_str()
    }

    /// The input field `slot` is loaded from, or `None` for an added field.
    pub fn input(&self, slot: usize) -> Option<usize> {
        self.inputs[slot]
    }

    /// Whether the record has the field of `slot`.
    pub fn holds(&self, slot: usize) -> bool {
        self.values[slot].is_some()
    }

    /// Takes the value the program left in `slot`, leaving it absent.
    pub fn take(&mut self, slot: usize) -> Option<VrlValue> {
        self.values[slot].take()
    }

    fn find(&self, name: &str) -> Option<usize> {
        // Length and first byte first: most names differ there, and the
        // comparison of whole names is a call.
        let first = name.as_bytes().first();
        self.names.iter().position(|slot| {
            let slot = slot.as_str();
            slot.len() == name.len() && slot.as_bytes().first() == first && slot == name
        })
    }

    /// A new slot for a field the program adds.
    fn add(&mut self, name: &KeyString) -> usize {
        self.names.push(name.clone());
        self.inputs.push(None);
        self.values.push(None);
        self.names.len() - 1
    }

    /// The record as one VRL object, for a program that uses it whole; the
    /// slots are left empty.
    pub(super) fn take_object(&mut self) -> VrlValue {
        let object: ObjectMap = self
            .names
            .iter()
            .zip(&mut self.values)
            .filter_map(|(name, value)| Some((name.clone(), value.take()?)))
            .collect();
        VrlValue::Object(object)
    }

    /// Reads back the object a program that uses the record whole left.
    pub(super) fn read_object(&mut self, object: ObjectMap) {
        self.values.iter_mut().for_each(|value| *value = None);
        for (name, value) in object {
            let slot = self.find(name.as_str()).unwrap_or_else(|| self.add(&name));
            self.values[slot] = Some(value);
        }
    }

    /// The slot a path of the record starts in and the rest of the path;
    /// `None` for a path not into a field (only a whole-record program has them).
    fn locate<'p>(&self, path: &'p OwnedTargetPath) -> Option<(Option<usize>, &'p KeyString, &'p [OwnedSegment])> {
        match path.path.segments.split_first() {
            Some((OwnedSegment::Field(name), rest)) => Some((self.find(name.as_str()), name, rest)),
            _ => None,
        }
    }
}

/// The slots as the target a VRL program runs on, with the metadata and
/// secrets VRL keeps beside a record.
pub(super) struct SlotTarget<'a> {
    slots: &'a mut RecordSlots,
    metadata: VrlValue,
    secrets: Secrets,
}

impl<'a> SlotTarget<'a> {
    pub fn new(slots: &'a mut RecordSlots) -> SlotTarget<'a> {
        SlotTarget { slots, metadata: VrlValue::Object(ObjectMap::new()), secrets: Secrets::default() }
    }
}

/// The error of an operation on the record as a whole, which a program given
/// slots does not make (VRL itself only checks that the record exists).
const NOT_A_FIELD: &str = "the program is given fields, not `.` as a whole";

/// A stand-in for the record as a whole, for VRL's check that a record exists.
static RECORD_EXISTS: VrlValue = VrlValue::Null;

impl std::fmt::Debug for SlotTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotTarget").field("fields", &self.slots.names).finish_non_exhaustive()
    }
}

impl Target for SlotTarget<'_> {
    fn target_insert(&mut self, path: &OwnedTargetPath, value: VrlValue) -> Result<(), String> {
        if path.prefix == PathPrefix::Metadata {
            self.metadata.insert(&path.path, value);
            return Ok(());
        }
        let (slot, name, rest) = self.slots.locate(path).ok_or(NOT_A_FIELD)?;
        let slot = slot.unwrap_or_else(|| self.slots.add(name));
        let current = &mut self.slots.values[slot];
        match rest {
            [] => *current = Some(value),
            // What VRL does to an object's field: containers made as needed.
            rest => {
                current.get_or_insert(VrlValue::Null).insert(rest, value);
            }
        }
        Ok(())
    }

    fn target_get(&self, path: &OwnedTargetPath) -> Result<Option<&VrlValue>, String> {
        if path.prefix == PathPrefix::Metadata {
            return Ok(self.metadata.get(&path.path));
        }
        if path.path.is_root() {
            return Ok(Some(&RECORD_EXISTS));
        }
        let (slot, _, rest) = self.slots.locate(path).ok_or(NOT_A_FIELD)?;
        Ok(slot.and_then(|slot| self.slots.values[slot].as_ref()).and_then(|value| value.get(rest)))
    }

    fn target_get_mut(&mut self, path: &OwnedTargetPath) -> Result<Option<&mut VrlValue>, String> {
        if path.prefix == PathPrefix::Metadata {
            return Ok(self.metadata.get_mut(&path.path));
        }
        let (slot, _, rest) = self.slots.locate(path).ok_or(NOT_A_FIELD)?;
        Ok(slot.and_then(|slot| self.slots.values[slot].as_mut()).and_then(|value| value.get_mut(rest)))
    }

    fn target_remove(&mut self, path: &OwnedTargetPath, compact: bool) -> Result<Option<VrlValue>, String> {
        if path.prefix == PathPrefix::Metadata {
            return Ok(self.metadata.remove(&path.path, compact));
        }
        let (slot, _, rest) = self.slots.locate(path).ok_or(NOT_A_FIELD)?;
        let Some(slot) = slot else { return Ok(None) };
        let current = &mut self.slots.values[slot];
        if rest.is_empty() {
            return Ok(current.take());
        }
        let Some(value) = current.as_mut() else { return Ok(None) };
        let removed = value.remove(rest, compact);
        // As VRL does in an object: with `compact`, a container emptied by the
        // removal goes too.
        if compact && removed.is_some() && is_empty_container(value) {
            *current = None;
        }
        Ok(removed)
    }
}

fn is_empty_container(value: &VrlValue) -> bool {
    match value {
        VrlValue::Object(map) => map.is_empty(),
        VrlValue::Array(items) => items.is_empty(),
        _ => false,
    }
}

impl SecretTarget for SlotTarget<'_> {
    fn get_secret(&self, key: &str) -> Option<&str> {
        self.secrets.get_secret(key)
    }

    fn insert_secret(&mut self, key: &str, value: &str) {
        self.secrets.insert_secret(key, value);
    }

    fn remove_secret(&mut self, key: &str) {
        self.secrets.remove_secret(key);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use haul_collect_core::{DataType, Field};
    use serde_json::json;

    use super::super::vrl_bridge::{Access, CompiledProgram};
    use super::*;

    /// The record a run left: every field with its value, as a whole-record run sees it.
    fn fields_left(slots: &mut RecordSlots, schema: &Schema, row: &[Value]) -> BTreeMap<String, VrlValue> {
        let mut fields: BTreeMap<String, VrlValue> = (0..schema.fields.len())
            .filter(|index| !slots.inputs.contains(&Some(*index)))
            .map(|index| (schema.fields[index].name.clone(), value_to_vrl(&row[index])))
            .collect();
        for slot in 0..slots.len() {
            if let Some(value) = slots.take(slot) {
                fields.insert(slots.name(slot).to_string(), value);
            }
        }
        fields
    }

    #[test]
    fn slots_behave_as_the_whole_record() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Json),
            Field::new("b", DataType::Int),
            Field::new("list", DataType::Json),
            Field::new("untouched", DataType::String),
        ]);
        let rows = [
            vec![Value::Json(json!({"b": 2, "c": 3})), Value::Int(1), Value::Json(json!([1])), "u".into()],
            vec![Value::Json(json!({"b": {"x": 1}})), Value::Null, Value::Null, "v".into()],
            vec![Value::Json(json!(7)), Value::Int(2), Value::Json(json!([[0]])), Value::Null],
            vec![Value::Null, Value::Null, Value::Json(json!({"k": 1})), "w".into()],
        ];
        let programs = [
            ".a.b.c = 1",
            "del(.a.b, compact: true)",
            "del(.a.b)\ndel(.a.c)",
            "del(.a.b.x, compact: true)",
            ".n = del(.a)\n.e = exists(.a)",
            ".list[2] = \"x\"\n.list[0][1] = true",
            "%meta.x = 1\n.m = %meta.x",
            ".a = .b\ndel(.b)\n.c = exists(.b)",
            ".new = 1\ndel(.new)\n.other = 2",
            "del(.missing.deep, compact: true)\n.z = .missing.deep",
            ".a.b = del(.a.c, compact: true)",
            ".b = to_int(.b) ?? 0\n.list = push(array(.list) ?? [], .b)",
            "if .b == 2 { abort }\n.seen = true",
            ".x = .a.b.x\n.y = .list[0]\n.a.k, err = to_int(.b)",
        ];
        for source in programs {
            let program = CompiledProgram::compile("source", source, "UTC").unwrap();
            let mut slots = program.given_fields(&schema, Access::ReadWrite);
            assert!(!slots.whole(), "{source} is run in slots");
            let mut whole = RecordSlots::new(&schema, &[true; 4], true);
            let (mut in_slots, mut in_whole) = (program.runner(), program.runner());
            for row in &rows {
                slots.load(row);
                whole.load(row);
                let by_slots = in_slots.run(&mut slots).map(|output| output.result);
                let by_whole = in_whole.run(&mut whole).map(|output| output.result);
                assert_eq!(by_slots, by_whole, "result of {source} on {row:?}");
                if by_whole.is_ok() {
                    assert_eq!(
                        fields_left(&mut slots, &schema, row),
                        fields_left(&mut whole, &schema, row),
                        "record left by {source} on {row:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn programs_using_the_whole_record_get_it() {
        let schema = Schema::new(vec![Field::new("a", DataType::Int), Field::new("b", DataType::Int)]);
        for source in [". = {\"c\": .a}", ".n = length(keys(.))", ".x = get!(., [\"a\"])", ".u = unnest!(.b)"] {
            let program = CompiledProgram::compile("source", source, "UTC").unwrap();
            let slots = program.given_fields(&schema, Access::Read);
            assert!(slots.whole() && slots.len() == 2, "{source} gets every field");
        }
    }
}
