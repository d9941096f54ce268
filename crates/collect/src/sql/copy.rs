//! PostgreSQL `COPY … FROM STDIN` text format: one line per row, fields
//! separated by tabs, NULL as `\N`, and backslash, tab, newline and carriage
//! return escaped with a backslash.

use haul_collect_core::Value;

use super::convert::postgres_text;

/// Appends one row in COPY text format, newline included.
pub fn push_copy_row(buffer: &mut String, row: &[Value]) {
    for (index, value) in row.iter().enumerate() {
        if index > 0 {
            buffer.push('\t');
        }
        match postgres_text(value) {
            None => buffer.push_str("\\N"),
            Some(text) => push_escaped(buffer, &text),
        }
    }
    buffer.push('\n');
}

fn push_escaped(buffer: &mut String, text: &str) {
    if !text.contains(['\\', '\t', '\n', '\r']) {
        buffer.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => buffer.push_str("\\\\"),
            '\t' => buffer.push_str("\\t"),
            '\n' => buffer.push_str("\\n"),
            '\r' => buffer.push_str("\\r"),
            other => buffer.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        let mut buffer = String::new();
        let row = [Value::Null, Value::String("a\tb\nc\\d\re".into()), Value::Int(7), Value::String("\\N".into())];
        push_copy_row(&mut buffer, &row);
        assert_eq!(buffer, "\\N\ta\\tb\\nc\\\\d\\re\t7\t\\\\N\n");
        let mut buffer = String::new();
        push_copy_row(&mut buffer, &[Value::Bytes(vec![0xde, 0xad])]);
        assert_eq!(buffer, "\\\\xdead\n");
    }

    proptest! {
        #[test]
        fn rows_split_back_into_their_fields(fields in proptest::collection::vec(proptest::option::of(".*"), 1..6)) {
            let row: Vec<Value> = fields.iter().map(|f| f.clone().map_or(Value::Null, Value::String)).collect();
            let mut buffer = String::new();
            push_copy_row(&mut buffer, &row);
            let line = buffer.strip_suffix('\n').unwrap();
            prop_assert!(!line.contains('\n'));
            let parsed: Vec<Option<String>> = line.split('\t').map(unescape_field).collect();
            prop_assert_eq!(parsed, fields);
        }
    }
}
