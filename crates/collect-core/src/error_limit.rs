//! How many bad records a run tolerates, like DataX's `errorLimit`: a count
//! (`error_limit = 10`) or a ratio of the records read (`error_limit = 0.01`).
//! Rejected records always go to the dead letters; the limit decides when
//! the run gives up.

use serde::{Deserialize, Serialize};

/// The tolerated rejections. The default tolerates none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorLimit {
    /// At most this many rejected records.
    Count(u64),
    /// At most this fraction of the records read (0.0 to 1.0), checked when the run ends.
    Ratio(f64),
}

impl Default for ErrorLimit {
    fn default() -> Self {
        ErrorLimit::Count(0)
    }
}

impl ErrorLimit {
    /// Checked while the run goes: only a count can be exceeded before the end.
    pub fn exceeded_so_far(&self, rejected: u64) -> bool {
        matches!(self, ErrorLimit::Count(limit) if rejected > *limit)
    }

    /// Checked once the run has read everything.
    pub fn exceeded_at_end(&self, rejected: u64, read: u64) -> bool {
        match *self {
            ErrorLimit::Count(limit) => rejected > limit,
            ErrorLimit::Ratio(ratio) => rejected > 0 && rejected as f64 > ratio * read.max(1) as f64,
        }
    }
}

impl std::fmt::Display for ErrorLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorLimit::Count(limit) => write!(f, "{limit} records"),
            ErrorLimit::Ratio(ratio) => write!(f, "{:.2}% of records", ratio * 100.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_and_ratio() {
        assert!(!ErrorLimit::Count(2).exceeded_so_far(2));
        assert!(ErrorLimit::Count(2).exceeded_so_far(3));
        assert!(!ErrorLimit::Ratio(0.1).exceeded_so_far(1_000));
        assert!(!ErrorLimit::Ratio(0.1).exceeded_at_end(10, 100));
        assert!(ErrorLimit::Ratio(0.1).exceeded_at_end(11, 100));
        assert!(ErrorLimit::Count(0).exceeded_at_end(1, 100));
    }

    #[test]
    fn reads_from_toml() {
        #[derive(Deserialize)]
        struct Doc {
            limit: ErrorLimit,
        }
        assert_eq!(toml::from_str::<Doc>("limit = 5").unwrap().limit, ErrorLimit::Count(5));
        assert_eq!(toml::from_str::<Doc>("limit = 0.25").unwrap().limit, ErrorLimit::Ratio(0.25));
    }
}
