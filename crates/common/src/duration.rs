//! Human durations in configuration files: `"250ms"`, `"5s"`, `"10m"`, `"2h"`, `"1d"`.

use std::time::Duration;

/// A duration written as a number followed by a unit (`ms`, `s`, `m`, `h`, `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

/// Why a duration string could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration `{input}`: expected a number and a unit, one of ms, s, m, h, d (e.g. \"5s\")")]
pub struct ParseDurationError {
    input: String,
}

impl std::str::FromStr for HumanDuration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || ParseDurationError { input: input.to_string() };
        let trimmed = input.trim();
        let split = trimmed.find(|c: char| !c.is_ascii_digit()).ok_or_else(error)?;
        let (digits, unit) = trimmed.split_at(split);
        let amount: u64 = digits.parse().map_err(|_| error())?;
        let millis_per_unit: u64 = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(error()),
        };
        let millis = amount.checked_mul(millis_per_unit).ok_or_else(error)?;
        Ok(HumanDuration(Duration::from_millis(millis)))
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_unit() {
        let cases = [("250ms", 250), ("5s", 5_000), ("10m", 600_000), ("2h", 7_200_000), ("1d", 86_400_000)];
        for (text, millis) in cases {
            assert_eq!(text.parse::<HumanDuration>().unwrap().0, Duration::from_millis(millis), "{text}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        for text in ["", "5", "s", "5 parsecs", "-1s", "99999999999999999999d"] {
            assert!(text.parse::<HumanDuration>().is_err(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(millis in 0u64..10_000_000_000) {
            let duration = HumanDuration(Duration::from_millis(millis));
            prop_assert_eq!(duration.to_string().parse::<HumanDuration>().unwrap(), duration);
        }

        #[test]
        fn never_panics(text in ".*") {
            let _ = text.parse::<HumanDuration>();
        }
    }
}
