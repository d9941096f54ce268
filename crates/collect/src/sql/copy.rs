//! PostgreSQL `COPY … FROM STDIN` text format: one line per row, fields
//! separated by tabs, NULL as `\N`, and backslash, tab, newline and carriage
//! return escaped with a backslash. Text cannot hold a NUL character.

use std::io::{self, Write};

use haul_collect_core::Value;

use super::convert::write_postgres_text;

/// Why a row cannot be sent: PostgreSQL text cannot hold a NUL character.
#[derive(Debug, PartialEq, Eq)]
pub struct NulInField {
    /// The field's index in the row.
    pub field: usize,
}

/// Appends one row in COPY text format, newline included, writing each value
/// straight into `buffer`. On error the buffer holds part of the row.
pub fn push_copy_row(buffer: &mut Vec<u8>, row: &[Value]) -> Result<(), NulInField> {
    for (index, value) in row.iter().enumerate() {
        if index > 0 {
            buffer.push(b'\t');
        }
        let written = match value {
            // The hot cases: text needing no escape, and values whose text never needs one.
            Value::String(text) if !needs_escape(text.as_bytes()) => {
                buffer.extend_from_slice(text.as_bytes());
                Ok(true)
            }
            Value::Decimal(text) => {
                buffer.extend_from_slice(text.as_bytes());
                Ok(true)
            }
            Value::Int(_)
            | Value::Float(_)
            | Value::Bool(_)
            | Value::Date(_)
            | Value::Timestamp(_)
            | Value::TimestampTz(_) => write_postgres_text(buffer, value),
            _ => write_postgres_text(&mut Escaped(buffer), value),
        };
        match written {
            Ok(true) => {}
            Ok(false) => buffer.extend_from_slice(b"\\N"),
            Err(_) => return Err(NulInField { field: index }),
        }
    }
    buffer.push(b'\n');
    Ok(())
}

/// Whether `bytes` hold a byte COPY text must escape (or cannot hold): a
/// backslash or a control character. A branch-free scan, so it vectorises.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |found, &byte| found | (byte < 0x20) | (byte == b'\\'))
}

/// Writes into a buffer with backslash, tab, newline and carriage return
/// escaped; a NUL byte is an error. The escaped bytes are ASCII, so UTF-8
/// text stays valid.
struct Escaped<'a>(&'a mut Vec<u8>);

impl Write for Escaped<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut rest = bytes;
        while let Some(position) = rest.iter().position(|byte| matches!(byte, b'\\' | b'\t' | b'\n' | b'\r' | 0)) {
            self.0.extend_from_slice(&rest[..position]);
            let escaped: &[u8] = match rest[position] {
                b'\\' => b"\\\\",
                b'\t' => b"\\t",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "a NUL character")),
            };
            self.0.extend_from_slice(escaped);
            rest = &rest[position + 1..];
        }
        self.0.extend_from_slice(rest);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn typed_values_are_written_as_postgres_reads_them() {
        use chrono::{NaiveDate, TimeZone, Utc};
        let date = NaiveDate::from_ymd_opt(2024, 3, 7).unwrap();
        let row = vec![
            Value::Int(-42),
            Value::Float(0.1),
            Value::Bool(true),
            Value::Decimal("12.50".into()),
            Value::Date(date),
            Value::Timestamp(date.and_hms_nano_opt(4, 5, 6, 7_000).unwrap()),
            Value::TimestampTz(Utc.with_ymd_and_hms(2024, 12, 31, 23, 59, 58).unwrap()),
            Value::String("a\tb\\c".into()),
            Value::String("plain".into()),
            Value::Null,
        ];
        let mut buffer = Vec::new();
        push_copy_row(&mut buffer, &row).unwrap();
        assert_eq!(
            String::from_utf8(buffer).unwrap(),
            "-42\t0.1\tt\t12.50\t2024-03-07\t2024-03-07 04:05:06.000007000\t2024-12-31 23:59:58+00\ta\\tb\\\\c\tplain\t\\N\n"
        );
    }

    fn unescape_field(field: &str) -> Option<String> {
        if field == "\\N" {
            return None;
        }
        let mut out = String::new();
        let mut chars = field.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('t') => out.push('\t'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        Some(out)
    }

    #[test]
    fn escapes_specials_and_nulls() {
        let mut buffer = Vec::new();
        let row = [Value::Null, Value::String("a\tb\nc\\d\re".into()), Value::Int(7), Value::String("\\N".into())];
        push_copy_row(&mut buffer, &row).unwrap();
        assert_eq!(buffer, b"\\N\ta\\tb\\nc\\\\d\\re\t7\t\\\\N\n");
        let mut buffer = Vec::new();
        push_copy_row(&mut buffer, &[Value::Bytes(vec![0xde, 0xad])]).unwrap();
        assert_eq!(buffer, b"\\\\xdead\n");
        let json = Value::Json(serde_json::json!({"k": "tab\there"}));
        let mut buffer = Vec::new();
        push_copy_row(&mut buffer, &[json]).unwrap();
        assert_eq!(buffer, b"{\"k\":\"tab\\\\there\"}\n");
    }

    #[test]
    fn a_nul_character_names_its_field() {
        let row = [Value::Int(1), Value::String("a\0b".into())];
        assert_eq!(push_copy_row(&mut Vec::new(), &row), Err(NulInField { field: 1 }));
    }

    proptest! {
        #[test]
        fn rows_split_back_into_their_fields(fields in proptest::collection::vec(proptest::option::of(".*"), 1..6)) {
            let row: Vec<Value> = fields.iter().map(|f| f.clone().map_or(Value::Null, Value::String)).collect();
            let mut buffer = Vec::new();
            let nul = fields.iter().flatten().any(|field| field.contains('\0'));
            prop_assert_eq!(push_copy_row(&mut buffer, &row).is_err(), nul);
            prop_assume!(!nul);
            let buffer = String::from_utf8(buffer).unwrap();
            let line = buffer.strip_suffix('\n').unwrap();
            prop_assert!(!line.contains('\n'));
            let parsed: Vec<Option<String>> = line.split('\t').map(unescape_field).collect();
            prop_assert_eq!(parsed, fields);
        }
    }
}
