//! The job file: what to read, how to process it, where to write it, and how
//! (mode, parallelism, limits). TOML on disk; the same structure in JSON over
//! the API. Unknown keys and wrong types are errors that name the file, line
//! and column, and list the valid choices.

use std::ops::Range;

use haul_common::duration::HumanDuration;
use haul_common::retry::RetryPolicy;
use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};

use crate::error_limit::ErrorLimit;
use crate::flow::RateLimitSpec;

/// What part of the input a run collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Everything, every run.
    #[default]
    Full,
    /// Only what is newer than the job's high-water mark, which advances when a run succeeds.
    Incremental,
    /// Explicit `[from, to)` bounds, for backfills.
    Range,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
            Mode::Range => "range",
        }
    }
}

/// Incremental settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalSpec {
    /// The field whose growing value marks new records (a timestamp or an increasing id).
    pub cursor: Option<String>,
    /// A margin re-read below the high-water mark for late rows: a number for
    /// numeric cursors, a duration ("10m") for time cursors.
    pub lookback: Option<serde_json::Value>,
}

/// `[from, to)` bounds on a field, for `range` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeBounds {
    /// The field the bounds apply to; the source's split key when absent.
    pub field: Option<String>,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

/// Where rejected records go: `{ path = "rejected.jsonl" }` (a JSON Lines
/// file) or `{ url = "postgres://…", table = "dead_letters" }` (a table,
/// created when missing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum DeadLetterSpec {
    File { path: String },
    Table { url: String, table: String },
}

/// A plugin reference: its `type` and its own options, kept untyped until the
/// plugin's factory reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    pub kind: String,
    pub options: toml::Table,
    /// Where the plugin's table sits in the job file, as a path of keys.
    pub location: Vec<String>,
}

/// A table of the job file that another part of haul interprets (the
/// server's `[schedule]`, for example), kept untyped with its location so
/// that [`JobSource::decode`] can report errors at their line and column.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub options: toml::Table,
    /// Where the table sits in the job file, as a path of keys.
    pub location: Vec<String>,
}

/// A whole job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub mode: Mode,
    pub incremental: IncrementalSpec,
    pub range: Option<RangeBounds>,
    pub parallelism: usize,
    pub batch_size: usize,
    pub checkpoint_interval: HumanDuration,
    pub retry: RetryPolicy,
    pub error_limit: ErrorLimit,
    pub dead_letter: Option<DeadLetterSpec>,
    pub rate_limit: RateLimitSpec,
    pub source: PluginSpec,
    pub processors: Vec<PluginSpec>,
    pub sink: PluginSpec,
    /// The platform's settings (`haul server`); `haul run` ignores them.
    pub platform: PlatformSpec,
}

/// How the server runs a job: when, after what, how urgently, in which pool,
/// for how long. `haul run` ignores these settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlatformSpec {
    /// `[schedule]`: cron, time zone, misfire and overlap policies; interpreted by the scheduler.
    pub schedule: Option<Section>,
    /// Jobs whose runs for the same schedule time must succeed first.
    pub depends_on: Vec<String>,
    /// Higher runs first; waiting raises it over time so nothing starves.
    pub priority: i32,
    /// The quota group whose concurrent-shard limit this job's shards count against.
    pub pool: String,
    /// The worker label (worker group) a shard of this job needs: in the
    /// distributed mode, only the workers of its pool that carry this label
    /// take its shards; with none, any worker of its pool does. Ignored
    /// where the server runs every shard itself.
    pub worker_label: Option<String>,
    /// A run still going after this long is cancelled.
    pub timeout: Option<HumanDuration>,
    /// A shard still going after this long fails.
    pub shard_timeout: Option<HumanDuration>,
    /// `[run_retry]`: how often and how patiently a failed run is tried again; interpreted by the scheduler.
    pub run_retry: Option<Section>,
}

/// The pool of a job that names none.
pub const DEFAULT_POOL: &str = "default";

/// The longest pool name or worker label.
pub const MAX_QUEUE_TOKEN_LEN: usize = 64;

/// Checks that `label` can name a worker label (a job's `worker_label`, a
/// worker's `labels`); see [`check_queue_token`].
pub fn check_worker_label(label: &str) -> Result<(), String> {
    check_queue_token("worker label", label)
}

/// Checks that `pool` can name a pool (a job's `pool`, a worker's `pools`, a
/// server's `[pools]`); see [`check_queue_token`].
pub fn check_pool(pool: &str) -> Result<(), String> {
    check_queue_token("pool", pool)
}

/// Checks that `name`, a `kind` of name that goes into a broker's queue
/// names, is 1 to [`MAX_QUEUE_TOKEN_LEN`] ASCII letters, digits, `-` and `_`:
/// safe there, and never mistaken for another (a pool `a.label.gpu` would be
/// pool `a` with label `gpu`). The error says what is wrong.
fn check_queue_token(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("a {kind} cannot be empty"));
    }
    if name.len() > MAX_QUEUE_TOKEN_LEN {
        return Err(format!("the {kind} {name:?} is longer than {MAX_QUEUE_TOKEN_LEN} characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(format!("the {kind} {name:?} holds {bad:?}; only ASCII letters, digits, `-` and `_` are allowed"));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Option<String>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    incremental: IncrementalSpec,
    range: Option<RangeBounds>,
    #[serde(default = "default_parallelism")]
    parallelism: usize,
    #[serde(default = "default_batch_size")]
    batch_size: usize,
    #[serde(default = "default_checkpoint_interval")]
    checkpoint_interval: HumanDuration,
    #[serde(default)]
    retry: RetryPolicy,
    #[serde(default)]
    error_limit: ErrorLimit,
    dead_letter: Option<DeadLetterSpec>,
    #[serde(default)]
    rate_limit: RateLimitSpec,
    source: toml::Table,
    #[serde(default)]
    processors: Vec<toml::Table>,
    sink: toml::Table,
    schedule: Option<toml::Table>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    priority: i32,
    pool: Option<String>,
    worker_label: Option<String>,
    timeout: Option<HumanDuration>,
    shard_timeout: Option<HumanDuration>,
    run_retry: Option<toml::Table>,
}

fn default_parallelism() -> usize {
    4
}

fn default_batch_size() -> usize {
    2_000
}

fn default_checkpoint_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(2))
}

/// An error in a job file, located at a line and column when possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct JobFileError {
    pub file: String,
    /// 1-based line and column.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

/// A job file's text, kept to locate errors found after parsing (in plugin options).
#[derive(Debug, Clone)]
pub struct JobSource {
    pub file: String,
    pub text: String,
}

impl JobSource {
    pub fn new(file: impl Into<String>, text: impl Into<String>) -> Self {
        JobSource { file: file.into(), text: text.into() }
    }

    /// Reads a job file from disk.
    pub fn read(path: &std::path::Path) -> Result<Self, JobFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| JobFileError {
            file: path.display().to_string(),
            location: None,
            message: format!("cannot read the job file: {error}"),
        })?;
        Ok(JobSource::new(path.display().to_string(), text))
    }

    /// A fingerprint of the job file's text: a run is resumed only with the job it was planned from.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.text.as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// Parses and validates the job. `default_name` names a job that has no `name` key.
    pub fn parse(&self, default_name: &str) -> Result<JobSpec, JobFileError> {
        let raw: RawJob = toml::from_str(&self.text).map_err(|error| {
            let location = error.span().map(|span| self.line_column(span.start));
            self.error(location, error.message().trim_end_matches('\n').to_string())
        })?;
        let job = JobSpec {
            name: raw.name.unwrap_or_else(|| default_name.to_string()),
            mode: raw.mode,
            incremental: raw.incremental,
            range: raw.range,
            parallelism: raw.parallelism,
            batch_size: raw.batch_size,
            checkpoint_interval: raw.checkpoint_interval,
            retry: raw.retry,
            error_limit: raw.error_limit,
            dead_letter: raw.dead_letter,
            rate_limit: raw.rate_limit,
            source: self.plugin(raw.source, vec!["source".into()])?,
            processors: raw
                .processors
                .into_iter()
                .enumerate()
                .map(|(i, table)| self.plugin(table, vec!["processors".into(), i.to_string()]))
                .collect::<Result<_, _>>()?,
            sink: self.plugin(raw.sink, vec!["sink".into()])?,
            platform: PlatformSpec {
                schedule: raw.schedule.map(|options| Section { options, location: vec!["schedule".into()] }),
                depends_on: raw.depends_on,
                priority: raw.priority,
                pool: raw.pool.unwrap_or_else(|| DEFAULT_POOL.to_string()),
                worker_label: raw.worker_label,
                timeout: raw.timeout,
                shard_timeout: raw.shard_timeout,
                run_retry: raw.run_retry.map(|options| Section { options, location: vec!["run_retry".into()] }),
            },
        };
        self.validate(&job)?;
        Ok(job)
    }

    fn plugin(&self, mut options: toml::Table, location: Vec<String>) -> Result<PluginSpec, JobFileError> {
        let kind = match options.remove("type") {
            Some(toml::Value::String(kind)) => kind,
            Some(_) => return Err(self.error_at(&location, Some("type"), "`type` must be a string".into())),
            None => return Err(self.error_at(&location, None, format!("missing `type` in [{}]", location.join(".")))),
        };
        Ok(PluginSpec { kind, options, location })
    }

    fn validate(&self, job: &JobSpec) -> Result<(), JobFileError> {
        let fail = |key: &str, message: &str| Err(self.error_at(&[], Some(key), message.to_string()));
        if job.parallelism == 0 {
            return fail("parallelism", "`parallelism` must be at least 1");
        }
        if job.batch_size == 0 {
            return fail("batch_size", "`batch_size` must be at least 1");
        }
        if job.mode == Mode::Range && job.range.is_none() {
            return fail("mode", "`mode = \"range\"` needs a [range] table with `from` and `to`");
        }
        if job.mode != Mode::Range && job.range.is_some() {
            return fail("range", "a [range] table needs `mode = \"range\"`");
        }
        if job.platform.depends_on.contains(&job.name) {
            return fail("depends_on", "a job cannot depend on itself");
        }
        if let Some(Err(message)) = job.platform.worker_label.as_deref().map(check_worker_label) {
            return fail("worker_label", &format!("`worker_label`: {message}"));
        }
        if let Err(message) = check_pool(&job.platform.pool) {
            return fail("pool", &format!("`pool`: {message}"));
        }
        Ok(())
    }

    /// Reads a [`Section`] as `T`, with errors located in the job file.
    pub fn decode<T: serde::de::DeserializeOwned>(&self, section: &Section) -> Result<T, JobFileError> {
        serde_path_to_error::deserialize(toml::Value::Table(section.options.clone())).map_err(|error| {
            let path: Vec<String> =
                error.path().iter().map(|segment| segment.to_string()).filter(|s| s != "?").collect();
            self.located_error(&section.location, &path, error.into_inner().to_string())
        })
    }

    /// An error at `path` inside a [`Section`] (e.g. a value that parses but makes no sense).
    pub fn section_error(&self, section: &Section, path: &[String], message: String) -> JobFileError {
        self.located_error(&section.location, path, message)
    }

    /// An error about a plugin's options, located by the path serde reported.
    pub fn plugin_error(&self, plugin: &PluginSpec, path: &[String], message: String) -> JobFileError {
        self.located_error(&plugin.location, path, message)
    }

    /// An error at `path` inside the table at `location`.
    fn located_error(&self, location: &[String], path: &[String], message: String) -> JobFileError {
        let mut full_path = location.to_vec();
        full_path.extend(path.iter().cloned());
        let unknown_key = message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next());
        self.error_at(&full_path, unknown_key, message.clone())
    }

    fn error_at(&self, path: &[String], key: Option<&str>, message: String) -> JobFileError {
        let span = self.span_of(path, key);
        self.error(span.map(|span| self.line_column(span.start)), message)
    }

    fn error(&self, location: Option<(usize, usize)>, message: String) -> JobFileError {
        JobFileError { file: self.file.clone(), location, message }
    }

    /// The span of the deepest element of `path` (then `key` in it) found in the document.
    fn span_of(&self, path: &[String], key: Option<&str>) -> Option<Range<usize>> {
        let root = DeTable::parse(&self.text).ok()?;
        let mut span = root.span();
        let mut current = DeValue::Table(root.into_inner());
        for segment in path.iter().map(String::as_str).chain(key) {
            let next = match &current {
                DeValue::Table(table) => {
                    let (found_key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == segment)?;
                    span = if Some(segment) == key { found_key.span() } else { value.span() };
                    value.get_ref().clone()
                }
                DeValue::Array(items) => {
                    let item = items.get(segment.parse::<usize>().ok()?)?;
                    span = item.span();
                    item.get_ref().clone()
                }
                _ => break,
            };
            current = next;
        }
        Some(span)
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[source]\ntype = \"file\"\npath = \"in.csv\"\n\n[sink]\ntype = \"stdout\"\n";

    #[test]
    fn minimal_job_gets_defaults() {
        let job = JobSource::new("job.toml", MINIMAL).parse("job").unwrap();
        assert_eq!(job.name, "job");
        assert_eq!(job.mode, Mode::Full);
        assert_eq!(job.parallelism, 4);
        assert_eq!(job.source.kind, "file");
        assert_eq!(job.source.options.get("path").and_then(|v| v.as_str()), Some("in.csv"));
        assert!(!job.source.options.contains_key("type"));
    }

    #[test]
    fn unknown_top_level_key_is_located_with_choices() {
        let text = format!("paralelism = 3\n{MINIMAL}");
        let error = JobSource::new("job.toml", text).parse("job").unwrap_err();
        assert_eq!(error.location, Some((1, 1)));
        assert!(error.message.contains("unknown field `paralelism`"), "{error}");
        assert!(error.message.contains("parallelism"), "{error}");
        assert!(error.to_string().starts_with("job.toml:1:1: "), "{error}");
    }

    #[test]
    fn wrong_type_is_located() {
        let text = format!("{MINIMAL}\n[retry]\nattempts = \"many\"\n");
        let error = JobSource::new("job.toml", text).parse("job").unwrap_err();
        assert_eq!(error.location.map(|(line, _)| line), Some(9), "{error}");
    }

    #[test]
    fn plugin_errors_are_located_in_their_table() {
        let source = JobSource::new("job.toml", MINIMAL);
        let job = source.parse("job").unwrap();
        let error = source.plugin_error(&job.source, &[], "unknown field `path`, expected `paths`".into());
        assert_eq!(error.location, Some((3, 1)));
    }

    #[test]
    fn platform_settings_have_defaults_and_sections_decode_with_locations() {
        let job = JobSource::new("job.toml", MINIMAL).parse("job").unwrap();
        assert_eq!(job.platform, PlatformSpec { pool: DEFAULT_POOL.into(), ..Default::default() });

        let text = format!(
            "priority = 5\npool = \"api\"\ndepends_on = [\"a\"]\ntimeout = \"1h\"\n{MINIMAL}\n[schedule]\ncron = \"* * * * *\"\nzone = 1\n"
        );
        let source = JobSource::new("job.toml", text);
        let job = source.parse("job").unwrap();
        assert_eq!((job.platform.priority, job.platform.pool.as_str()), (5, "api"));
        assert_eq!(job.platform.depends_on, ["a"]);
        assert_eq!(job.platform.timeout, Some(HumanDuration(std::time::Duration::from_secs(3600))));

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Schedule {
            cron: String,
        }
        let error = source.decode::<Schedule>(job.platform.schedule.as_ref().unwrap()).unwrap_err();
        assert_eq!(error.location, Some((14, 1)), "{error}");
        assert!(error.message.starts_with("unknown field `zone`"), "{error}");
    }

    #[test]
    fn a_job_cannot_depend_on_itself() {
        let text = format!("name = \"a\"\ndepends_on = [\"a\"]\n{MINIMAL}");
        let error = JobSource::new("job.toml", text).parse("job").unwrap_err();
        assert_eq!((error.location, error.message.as_str()), (Some((2, 1)), "a job cannot depend on itself"));
    }

    #[test]
    fn worker_labels_and_pools_are_short_tokens_safe_in_a_queue_name() {
        for check in [check_worker_label, check_pool] {
            for good in ["gpu", "eu-west_1", "A", &"x".repeat(MAX_QUEUE_TOKEN_LEN)] {
                assert_eq!(check(good), Ok(()), "{good}");
            }
            for bad in ["", "has.dot", "a.label.gpu", "a b", "gpu/1", "é", "a*", &"x".repeat(MAX_QUEUE_TOKEN_LEN + 1)]
            {
                assert!(check(bad).is_err(), "{bad:?}");
            }
        }
    }

    #[test]
    fn a_pool_that_could_be_read_as_another_queue_is_refused() {
        let text = format!("name = \"a\"\npool = \"etl.label.gpu\"\n{MINIMAL}");
        let error = JobSource::new("job.toml", text).parse("job").unwrap_err();
        assert_eq!(error.location, Some((2, 1)));
        assert!(error.message.contains("`pool`") && error.message.contains("'.'"), "{}", error.message);
    }

    #[test]
    fn a_job_may_name_the_worker_label_its_shards_need() {
        let job = JobSource::new("job.toml", format!("worker_label = \"gpu\"\n{MINIMAL}")).parse("job").unwrap();
        assert_eq!(job.platform.worker_label.as_deref(), Some("gpu"));
        assert_eq!(JobSource::new("job.toml", MINIMAL).parse("job").unwrap().platform.worker_label, None);

        for bad in ["", "gpu.big"] {
            let text = format!("pool = \"etl\"\nworker_label = \"{bad}\"\n{MINIMAL}");
            let error = JobSource::new("job.toml", text).parse("job").unwrap_err();
            assert_eq!(error.location, Some((2, 1)), "{error}");
            assert!(error.message.starts_with("`worker_label`: "), "{error}");
        }
    }

    #[test]
    fn range_mode_requires_bounds() {
        let text = format!("mode = \"range\"\n{MINIMAL}");
        let error = JobSource::new("job.toml", text).parse("job").unwrap_err();
        assert!(error.message.contains("[range]"), "{error}");
        let text = format!("mode = \"range\"\nrange = {{ from = 1, to = 5 }}\n{MINIMAL}");
        assert!(JobSource::new("job.toml", text).parse("job").is_ok());
    }

    proptest::proptest! {
        /// No job file, however malformed, makes parsing panic; every error is located in the file.
        #[test]
        fn parsing_never_panics(text in "(\\PC|\n|=|\\[|\\]|\"|'){0,200}") {
            if let Err(error) = JobSource::new("job.toml", &text).parse("job") {
                proptest::prop_assert!(error.to_string().starts_with("job.toml"));
            }
        }

        #[test]
        fn mutated_valid_jobs_never_panic(cut in 0usize..MINIMAL.len(), insert in "\\PC{0,5}") {
            let mut text = MINIMAL.to_string();
            if text.is_char_boundary(cut) {
                text.insert_str(cut, &insert);
            }
            let _ = JobSource::new("job.toml", &text).parse("job");
        }
    }

    #[test]
    fn missing_type_is_reported() {
        let error =
            JobSource::new("j.toml", "[source]\npath = \"x\"\n[sink]\ntype = \"stdout\"\n").parse("j").unwrap_err();
        assert!(error.message.contains("missing `type` in [source]"), "{error}");
    }
}
