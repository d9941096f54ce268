//! The functions haul's VRL programs can call: VRL's standard library, with
//! one change for speed. VRL's `format_timestamp` parses its format (and its
//! time zone) on every call; here a format and a time zone written as
//! literals, as they almost always are, are parsed once, when the program
//! compiles. Results and error messages stay VRL's own, and a format or time
//! zone computed at run time, or one that does not parse, is left to VRL's
//! function. A format of only zero-padded numbers and literals (`%Y-%m-%d
//! %H:%M:%S`, `%F`, `%T`) is written digit by digit, the same text chrono
//! writes, without chrono's general formatting.

use chrono::format::strftime::StrftimeItems;
use chrono::format::{Item, Numeric, Pad};
use chrono::{Datelike, NaiveDateTime, Timelike};
use vrl::compiler::prelude::*;

/// VRL's standard library, `format_timestamp` taking literals once.
pub fn all() -> Vec<Box<dyn Function>> {
    let mut functions = vrl::stdlib::all();
    for function in &mut functions {
        if function.identifier() == FormatTimestamp.identifier() {
            *function = Box::new(FormatTimestamp);
        }
    }
    functions
}

/// `format_timestamp`, as VRL documents and checks it.
#[derive(Debug, Clone, Copy)]
struct FormatTimestamp;

impl Function for FormatTimestamp {
    fn identifier(&self) -> &'static str {
        vrl::stdlib::FormatTimestamp.identifier()
    }

    fn summary(&self) -> &'static str {
        vrl::stdlib::FormatTimestamp.summary()
    }

    fn usage(&self) -> &'static str {
        vrl::stdlib::FormatTimestamp.usage()
    }

    fn category(&self) -> &'static str {
        vrl::stdlib::FormatTimestamp.category()
    }

    fn internal_failure_reasons(&self) -> &'static [&'static str] {
        vrl::stdlib::FormatTimestamp.internal_failure_reasons()
    }

    fn return_kind(&self) -> u16 {
        vrl::stdlib::FormatTimestamp.return_kind()
    }

    fn return_rules(&self) -> &'static [&'static str] {
        vrl::stdlib::FormatTimestamp.return_rules()
    }

    fn notices(&self) -> &'static [&'static str] {
        vrl::stdlib::FormatTimestamp.notices()
    }

    fn examples(&self) -> &'static [Example] {
        vrl::stdlib::FormatTimestamp.examples()
    }

    fn parameters(&self) -> &'static [Parameter] {
        vrl::stdlib::FormatTimestamp.parameters()
    }

    fn compile(&self, state: &TypeState, ctx: &mut FunctionCompileContext, arguments: ArgumentList) -> Compiled {
        let format = arguments.optional_literal("format", state).ok().flatten();
        let timezone = arguments.optional_literal("timezone", state);
        let items = format
            .as_ref()
            .and_then(|format| StrftimeItems::new(format.to_str_lossy()?.as_ref()).parse_to_owned().ok());
        let timezone = match timezone {
            Ok(None) => Some(None),
            Ok(Some(name)) => name.to_str_lossy().and_then(|name| TimeZone::parse(name.as_ref())).map(Some),
            Err(_) => None,
        };
        match (items, timezone) {
            (Some(items), Some(timezone)) => {
                Ok(FormatTimestampWithItems { value: arguments.required("value"), items, timezone }.as_expr())
            }
            _ => vrl::stdlib::FormatTimestamp.compile(state, ctx, arguments),
        }
    }
}

/// `format_timestamp` with its format parsed and its time zone known.
#[derive(Debug, Clone)]
struct FormatTimestampWithItems {
    value: Box<dyn Expression>,
    items: Vec<Item<'static>>,
    /// `None`: the time is formatted in UTC.
    timezone: Option<TimeZone>,
}

impl FunctionExpression for FormatTimestampWithItems {
    fn resolve(&self, ctx: &mut Context) -> Resolved {
        let instant = self.value.resolve(ctx)?.try_timestamp()?;
        let text = match self.timezone {
            Some(TimeZone::Named(zone)) => self.render(&instant.with_timezone(&zone)),
            Some(TimeZone::Local) => self.render(&instant.with_timezone(&chrono::Local)),
            None => self.render(&instant),
        };
        Ok(text.into())
    }

    fn type_def(&self, _state: &TypeState) -> TypeDef {
        TypeDef::bytes().fallible()
    }
}

impl FormatTimestampWithItems {
    fn render<Zone: chrono::TimeZone>(&self, at: &chrono::DateTime<Zone>) -> String
    where
        Zone::Offset: std::fmt::Display,
    {
        plain_text(&at.naive_local(), &self.items)
            .unwrap_or_else(|| at.format_with_items(self.items.iter()).to_string())
    }
}

/// `at` written by `items` when they are only literals and zero-padded
/// numbers of the date and time, the text chrono writes for them; `None` for
/// any other item, or a year outside 0..=9999 (which chrono signs).
fn plain_text(at: &NaiveDateTime, items: &[Item<'_>]) -> Option<String> {
    let mut text = String::with_capacity(32);
    for item in items {
        match item {
            Item::Literal(literal) | Item::Space(literal) => text.push_str(literal),
            Item::OwnedLiteral(literal) | Item::OwnedSpace(literal) => text.push_str(literal),
            Item::Numeric(numeric, Pad::Zero) => {
                let (value, width) = match numeric {
                    Numeric::Year => (u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?, 4),
                    Numeric::Month => (at.month(), 2),
                    Numeric::Day => (at.day(), 2),
                    Numeric::Hour => (at.hour(), 2),
                    Numeric::Minute => (at.minute(), 2),
                    // A leap second is second 60.
                    Numeric::Second => (at.second() + u32::from(at.nanosecond() >= 1_000_000_000), 2),
                    _ => return None,
                };
                push_zero_padded(&mut text, value, width);
            }
            _ => return None,
        }
    }
    Some(text)
}

/// Appends the last `width` (at most 4) decimal digits of `value`.
fn push_zero_padded(text: &mut String, value: u32, width: usize) {
    let mut digits = [b'0'; 4];
    let mut rest = value;
    for digit in digits[..width].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    digits[..width].iter().for_each(|&digit| text.push(char::from(digit)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The result of `source` with haul's functions and with VRL's own.
    fn both(source: &str) -> (Result<Value, String>, Result<Value, String>) {
        let run = |functions: Vec<Box<dyn Function>>| {
            let program = vrl::compiler::compile(source, &functions).map_err(|_| "compile error".to_string())?.program;
            let mut record = ObjectMap::new();
            let at = chrono::DateTime::from_timestamp(1_603_296_000, 5).unwrap();
            record.insert("at".into(), Value::Timestamp(at));
            record.insert("f".into(), Value::from("%Y"));
            let mut target = vrl::compiler::TargetValue {
                value: Value::Object(record),
                metadata: Value::Object(ObjectMap::new()),
                secrets: Default::default(),
            };
            let mut runtime = vrl::compiler::runtime::Runtime::default();
            runtime.resolve(&mut target, &program, &TimeZone::default()).map_err(|error| error.to_string())
        };
        (run(all()), run(vrl::stdlib::all()))
    }

    #[test]
    fn format_timestamp_gives_what_vrl_gives() {
        for source in [
            r#"format_timestamp!(.at, format: "%Y-%m-%d")"#,
            r#"format_timestamp!(.at, format: "%+ %v %R %.3f %s %%")"#,
            r#"format_timestamp!(.at, format: "%d %B %Y %H:%M", timezone: "Europe/Berlin")"#,
            r#"format_timestamp!(.at, format: "%H:%M %Z", timezone: "local")"#,
            r#"format_timestamp(.at, format: "%Q INVALID") ?? "invalid""#,
            r#"format_timestamp(.at, format: "%Y", timezone: "Mars/Olympus") ?? "no zone""#,
            r#"format_timestamp!(.at, format: string!(.f))"#,
            r#"format_timestamp(.f, format: "%Y") ?? "not a time""#,
            r#"format_timestamp!(.at, format: "%Y", timezone: string!(.f) + "x") ?? "no zone""#,
        ] {
            let (haul, vrl) = both(source);
            assert_eq!(haul, vrl, "{source}");
        }
        assert_eq!(both(r#"format_timestamp!(.at, format: "%Y-%m-%d")"#).0, Ok(Value::from("2020-10-21")));
    }

    proptest::proptest! {
        #[test]
        fn plain_formats_write_what_chrono_writes(
            seconds in -70_000_000_000i64..300_000_000_000,
            nanos in 0u32..2_000_000_000,
            format in proptest::sample::select(vec![
                "%Y-%m-%d", "%F %T", "%Y-%m-%dT%H:%M:%S", "%d/%m/%Y %H:%M", "%Y%m%d", "day %d, %Hh", "%Y-%m-%d %.3f", "%b %e %y",
            ]),
        ) {
            let Some(at) = chrono::DateTime::from_timestamp(seconds, nanos).map(|at| at.naive_utc()) else {
                return Ok(());
            };
            let items = StrftimeItems::new(format).parse_to_owned().unwrap();
            let plain = !["%.3f", "%b"].iter().any(|other| format.contains(other));
            let expected = at.format_with_items(items.iter()).to_string();
            match plain_text(&at, &items) {
                Some(text) => proptest::prop_assert_eq!(text, expected),
                None => proptest::prop_assert!(!plain || !(0..=9999).contains(&at.year()), "{} fell back", format),
            }
        }
    }
}
