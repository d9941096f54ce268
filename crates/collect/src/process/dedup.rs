//! Deduplication by key for the `cleanse` processor, across every shard of a
//! run: the processor instance is shared by all shards, so one store serves
//! them all, locked once per batch.
//!
//! A key is reduced to a 128-bit hash (two independently keyed SipHash-1-3
//! hashes of the key's values, with their types and lengths). Two different
//! keys collide with probability about n²/2¹²⁹: for a billion keys, below
//! 10⁻²⁰, so the exact mode is exact in practice. It keeps the hashes in
//! memory up to `memory_limit`, then spills them as sorted runs to temporary
//! files ([`super::dedup_runs`]) and checks later keys against memory and the
//! runs. The approximate mode keeps a Bloom filter sized for `expected` keys
//! at `false_positive_rate`: a false positive drops a unique record.
//!
//! The keys seen live as long as the processor, one run in one process: a
//! run resumed in a new process starts with none (duplicates of records
//! written before the interruption can pass), and a shard retried from its
//! checkpoint after a transient error sees the records it had processed but
//! not committed as duplicates, so they are removed rather than rewritten.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use haul_collect_core::registry::OptionError;
use haul_collect_core::{Schema, Value};
use serde::Deserialize;

use super::dedup_runs::SortedRuns;

/// Estimated bytes of memory per hash kept in the in-memory set (16 bytes of
/// hash, a control byte, and the spare room of a hash table that doubles).
const BYTES_PER_HASH: u64 = 40;

/// The `dedup` table of the `cleanse` processor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// The fields whose values together identify a record.
    pub key: Vec<String>,
    /// Memory for the exact mode's hashes before they spill to disk, or the
    /// largest Bloom filter the approximate mode may allocate.
    #[serde(default)]
    pub memory_limit: Option<ByteSize>,
    #[serde(default)]
    pub method: DedupMethod,
    /// Keys the approximate mode is sized for.
    #[serde(default = "default_expected")]
    pub expected: u64,
    /// The approximate mode's false-positive rate while at most `expected` keys were seen.
    #[serde(default = "default_false_positive_rate")]
    pub false_positive_rate: f64,
}

/// The default `dedup.memory_limit`: 64MB.
const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;

fn default_expected() -> u64 {
    10_000_000
}

fn default_false_positive_rate() -> f64 {
    0.001
}

/// How keys already seen are remembered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupMethod {
    #[default]
    Exact,
    Approximate,
}

/// A size in bytes written as `"64MB"`, `"512KB"`, `"1GB"` or a plain number
/// of bytes; the units are powers of 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ByteSize(pub u64);

impl TryFrom<String> for ByteSize {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let error =
            || format!("invalid size `{text}`: expected a number and a unit, one of B, KB, MB, GB (e.g. \"64MB\")");
        let trimmed = text.trim();
        let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let amount: u64 = digits.parse().map_err(|_| error())?;
        let multiplier: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "KB" | "KIB" => 1 << 10,
            "MB" | "MIB" => 1 << 20,
            "GB" | "GIB" => 1 << 30,
            _ => return Err(error()),
        };
        amount.checked_mul(multiplier).map(ByteSize).ok_or_else(error)
    }
}

/// Removes records whose key was seen before in the run.
///
/// Keys first seen in a shard stay tentative until the shard commits: a
/// retry that discards uncommitted batches forgets them, so the records it
/// reads again are not taken for duplicates of themselves. Tentative keys
/// are held in memory, about one checkpoint interval's worth per shard.
pub struct Dedup {
    key: Vec<String>,
    hasher: KeyHasher,
    store: Arc<Mutex<DedupState>>,
}

type HashSet128 = HashSet<u128, BuildHasherDefault<PassThroughHasher>>;

/// Committed keys, and the tentative keys of each shard.
struct DedupState {
    seen: SeenKeys,
    tentative: HashMap<String, HashSet128>,
}

impl DedupState {
    fn known(&self, hash: u128) -> anyhow::Result<bool> {
        Ok(self.tentative.values().any(|keys| keys.contains(&hash)) || self.seen.contains(hash)?)
    }
}

impl Dedup {
    pub fn new(config: DedupConfig) -> anyhow::Result<Dedup> {
        if config.key.is_empty() {
            return Err(option_error("key", "dedup needs at least one key field").into());
        }
        let mut listed = HashSet::new();
        if let Some(twice) = config.key.iter().find(|name| !listed.insert(*name)) {
            return Err(option_error("key", &format!("key field `{twice}` is listed twice")).into());
        }
        let memory_limit = config.memory_limit.map(|size| size.0);
        let seen = match config.method {
            DedupMethod::Exact => {
                let limit = memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT);
                SeenKeys::Exact(ExactKeys::new((limit / BYTES_PER_HASH).max(1) as usize))
            }
            DedupMethod::Approximate => {
                let rate = config.false_positive_rate;
                if !(rate > 0.0 && rate < 1.0) {
                    return Err(option_error("false_positive_rate", "must be between 0 and 1, exclusive").into());
                }
                let filter = BloomFilter::sized_for(config.expected.max(1), rate);
                if let Some(limit) = memory_limit.filter(|limit| filter.bytes() > *limit) {
                    let message = format!(
                        "a Bloom filter for {} keys at a false-positive rate of {rate} needs {} bytes, more than memory_limit ({limit} bytes)",
                        config.expected,
                        filter.bytes()
                    );
                    return Err(option_error("memory_limit", &message).into());
                }
                SeenKeys::Approximate(filter)
            }
        };
        let state = DedupState { seen, tentative: HashMap::new() };
        Ok(Dedup { key: config.key, hasher: KeyHasher::default(), store: Arc::new(Mutex::new(state)) })
    }

    /// The positions of the key fields in `schema`; a missing one is an error.
    pub fn key_indices(&self, schema: &Schema) -> anyhow::Result<Vec<usize>> {
        self.key
            .iter()
            .map(|name| schema.index_of(name).with_context(|| format!("dedup key field `{name}` is not in the batch")))
            .collect()
    }

    /// Keeps the first record of each key not seen before, in batch order;
    /// the keys kept stay tentative for `shard` until [`Dedup::committed`].
    pub async fn retain_first(&self, shard: &str, rows: &mut Vec<Vec<Value>>, key: &[usize]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let hashes: Vec<u128> = rows.iter().map(|row| self.hasher.hash(row, key)).collect();
        let shard = shard.to_string();
        let fresh = self
            .with_state(move |state| {
                let mut fresh = Vec::with_capacity(hashes.len());
                for hash in hashes {
                    let new = !state.known(hash)?;
                    if new {
                        state.tentative.entry(shard.clone()).or_default().insert(hash);
                    }
                    fresh.push(new);
                }
                Ok(fresh)
            })
            .await?;
        let mut index = 0;
        rows.retain(|_| {
            index += 1;
            fresh[index - 1]
        });
        Ok(())
    }
}

impl Dedup {
    /// The shard's tentative keys become committed keys.
    pub async fn committed(&self, shard: &str) -> anyhow::Result<()> {
        let shard = shard.to_string();
        self.with_state(move |state| {
            for hash in state.tentative.remove(&shard).unwrap_or_default() {
                state.seen.insert(hash)?;
            }
            Ok(())
        })
        .await
    }

    /// The shard's tentative keys are forgotten: their records will be read again.
    pub async fn rewound(&self, shard: &str) {
        if let Ok(mut state) = self.store.lock() {
            state.tentative.remove(shard);
        }
    }

    /// Runs `work` on the state off the async threads (committing may spill to disk).
    async fn with_state<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut DedupState) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let mut state = store.lock().map_err(|_| anyhow::anyhow!("the dedup store was poisoned by a panic"))?;
            work(&mut state)
        })
        .await
        .context("the dedup task stopped")?
    }
}

fn option_error(option: &str, message: &str) -> OptionError {
    OptionError { path: vec!["dedup".to_string(), option.to_string()], message: message.to_string() }
}

/// Hashes key values to 128 bits with two independently keyed hashers.
#[derive(Default)]
struct KeyHasher {
    high: RandomState,
    low: RandomState,
}

impl KeyHasher {
    fn hash(&self, row: &[Value], key: &[usize]) -> u128 {
        let mut high = self.high.build_hasher();
        let mut low = self.low.build_hasher();
        for &index in key {
            feed(&mut high, &row[index]);
            feed(&mut low, &row[index]);
        }
        (u128::from(high.finish()) << 64) | u128::from(low.finish())
    }
}

/// Feeds one value with its type tag and length, so that no two different
/// keys feed the same bytes.
fn feed(hasher: &mut impl Hasher, value: &Value) {
    match value {
        Value::Null => hasher.write_u8(0),
        Value::Bool(b) => hasher.write_u16(0x100 | u16::from(*b)),
        Value::Int(i) => {
            hasher.write_u8(2);
            hasher.write_i64(*i);
        }
        Value::Float(f) => {
            hasher.write_u8(3);
            hasher.write_u64(f.to_bits());
        }
        Value::Decimal(text) => feed_bytes(hasher, 4, text.as_bytes()),
        Value::String(text) => feed_bytes(hasher, 5, text.as_bytes()),
        Value::Bytes(bytes) => feed_bytes(hasher, 6, bytes),
        Value::Date(date) => {
            hasher.write_u8(7);
            date.hash(hasher);
        }
        Value::Timestamp(time) => {
            hasher.write_u8(8);
            time.hash(hasher);
        }
        Value::TimestampTz(time) => {
            hasher.write_u8(9);
            time.hash(hasher);
        }
        Value::Json(json) => feed_bytes(hasher, 10, json.to_string().as_bytes()),
    }
}

fn feed_bytes(hasher: &mut impl Hasher, tag: u8, bytes: &[u8]) {
    hasher.write_u8(tag);
    hasher.write_usize(bytes.len());
    hasher.write(bytes);
}

/// The keys seen so far in a run.
enum SeenKeys {
    Exact(ExactKeys),
    Approximate(BloomFilter),
}

impl SeenKeys {
    /// Records `hash`; true when it was not seen before.
    fn insert(&mut self, hash: u128) -> anyhow::Result<bool> {
        match self {
            SeenKeys::Exact(keys) => keys.insert(hash),
            SeenKeys::Approximate(filter) => Ok(filter.insert(hash)),
        }
    }

    /// Whether `hash` was recorded (for the Bloom filter: probably).
    fn contains(&self, hash: u128) -> anyhow::Result<bool> {
        match self {
            SeenKeys::Exact(keys) => Ok(keys.memory.contains(&hash) || keys.spilled.contains(hash)?),
            SeenKeys::Approximate(filter) => Ok(filter.contains(hash)),
        }
    }
}

/// Hashes in memory up to `capacity`, the older ones in sorted runs on disk.
struct ExactKeys {
    memory: HashSet<u128, BuildHasherDefault<PassThroughHasher>>,
    capacity: usize,
    spilled: SortedRuns,
}

impl ExactKeys {
    fn new(capacity: usize) -> ExactKeys {
        ExactKeys { memory: HashSet::default(), capacity, spilled: SortedRuns::default() }
    }

    fn insert(&mut self, hash: u128) -> anyhow::Result<bool> {
        if self.memory.contains(&hash) || self.spilled.contains(hash)? {
            return Ok(false);
        }
        self.memory.insert(hash);
        if self.memory.len() >= self.capacity {
            let mut sorted: Vec<u128> = self.memory.drain().collect();
            sorted.sort_unstable();
            self.spilled.add(&sorted).context("spilling dedup keys to a temporary file")?;
        }
        Ok(true)
    }
}

/// The hashes are already uniform: a hash table may use their low bits as is.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// A Bloom filter over 128-bit hashes: `hashes` bit positions per key, derived
/// from the two 64-bit halves (Kirsch–Mitzenmacher double hashing).
struct BloomFilter {
    words: Vec<u64>,
    bits: u64,
    hashes: u64,
}

impl BloomFilter {
    /// The optimal size for `expected` keys at false-positive rate `rate`:
    /// m = −n·ln p / (ln 2)² bits and k = (m / n)·ln 2 hashes.
    fn sized_for(expected: u64, rate: f64) -> BloomFilter {
        let ln2 = std::f64::consts::LN_2;
        let bits = ((-(expected as f64) * rate.ln() / (ln2 * ln2)).ceil() as u64).max(64);
        let hashes = ((bits as f64 / expected as f64) * ln2).round().max(1.0) as u64;
        BloomFilter { words: vec![0; bits.div_ceil(64) as usize], bits, hashes }
    }

    fn bytes(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    /// Whether every bit of the key is set.
    fn contains(&self, hash: u128) -> bool {
        self.positions(hash).all(|(word, mask)| self.words[word] & mask != 0)
    }

    /// The word and bit mask of each of the key's bits.
    fn positions(&self, hash: u128) -> impl Iterator<Item = (usize, u64)> + use<> {
        let first = hash as u64;
        let step = ((hash >> 64) as u64) | 1;
        let bits = self.bits;
        (0..self.hashes).map(move |i| {
            let bit = first.wrapping_add(i.wrapping_mul(step)) % bits;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    /// Sets the key's bits; true when one of them was still clear.
    fn insert(&mut self, hash: u128) -> bool {
        let mut fresh = false;
        for (word, mask) in self.positions(hash) {
            fresh |= self.words[word] & mask == 0;
            self.words[word] |= mask;
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use haul_collect_core::{DataType, Field};
    use proptest::prelude::*;

    use super::*;

    fn config(method: DedupMethod, memory_limit: Option<&str>) -> DedupConfig {
        DedupConfig {
            key: vec!["id".to_string()],
            memory_limit: memory_limit.map(|limit| ByteSize::try_from(limit.to_string()).unwrap()),
            method,
            expected: default_expected(),
            false_positive_rate: default_false_positive_rate(),
        }
    }

    fn rows(ids: impl IntoIterator<Item = i64>) -> Vec<Vec<Value>> {
        ids.into_iter().map(|id| vec![Value::Int(id)]).collect()
    }

    fn ids(rows: &[Vec<Value>]) -> Vec<i64> {
        rows.iter()
            .map(|row| match row[0] {
                Value::Int(id) => id,
                _ => panic!("not an id"),
            })
            .collect()
    }

    #[test]
    fn byte_sizes_read_units() {
        assert_eq!(ByteSize::try_from("64MB".to_string()), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::try_from("512 kb".to_string()), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::try_from("100".to_string()), Ok(ByteSize(100)));
        assert!(ByteSize::try_from("lots".to_string()).is_err());
        assert!(ByteSize::try_from("5TB".to_string()).is_err());
    }

    #[test]
    fn key_hash_tells_types_and_field_boundaries_apart() {
        let hasher = KeyHasher::default();
        let hash = |row: Vec<Value>| hasher.hash(&row, &(0..row.len()).collect::<Vec<_>>());
        assert_ne!(hash(vec![Value::Int(1)]), hash(vec![Value::from("1")]));
        assert_ne!(hash(vec![Value::from("ab"), Value::from("c")]), hash(vec![Value::from("a"), Value::from("bc")]));
        assert_eq!(hash(vec![Value::from("a"), Value::Null]), hash(vec![Value::from("a"), Value::Null]));
    }

    #[test]
    fn missing_key_field_is_an_error_naming_it() {
        let dedup = Dedup::new(config(DedupMethod::Exact, None)).unwrap();
        let schema = Schema::new(vec![Field::new("name", DataType::String)]);
        let error = dedup.key_indices(&schema).unwrap_err();
        assert_eq!(error.to_string(), "dedup key field `id` is not in the batch");
    }

    #[test]
    fn bloom_filter_bigger_than_memory_limit_is_refused() {
        let error = Dedup::new(config(DedupMethod::Approximate, Some("1KB"))).err().unwrap();
        let option = error.downcast::<OptionError>().unwrap();
        assert_eq!(option.path, ["dedup", "memory_limit"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exact_dedup_across_two_concurrent_shards() {
        let dedup = Arc::new(Dedup::new(config(DedupMethod::Exact, Some("4KB"))).unwrap());
        // Both shards read every key 0..2000 in batches of 100, in opposite orders.
        let shard = |reverse: bool| {
            let dedup = Arc::clone(&dedup);
            tokio::spawn(async move {
                let mut kept = Vec::new();
                let mut keys: Vec<i64> = (0..2000).collect();
                if reverse {
                    keys.reverse();
                }
                for chunk in keys.chunks(100) {
                    let mut batch = rows(chunk.iter().copied());
                    let name = if reverse { "backward" } else { "forward" };
                    dedup.retain_first(name, &mut batch, &[0]).await.unwrap();
                    dedup.committed(name).await.unwrap();
                    kept.extend(ids(&batch));
                }
                kept
            })
        };
        let (first, second) = (shard(false), shard(true));
        let mut all = first.await.unwrap();
        all.extend(second.await.unwrap());
        all.sort_unstable();
        assert_eq!(all, (0..2000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_rewound_shard_reads_its_records_again_without_losing_them() {
        let dedup = Dedup::new(config(DedupMethod::Exact, None)).unwrap();
        let mut first = rows(0..10);
        dedup.retain_first("a", &mut first, &[0]).await.unwrap();
        assert_eq!(ids(&first), (0..10).collect::<Vec<_>>());
        // Another shard sees the tentative keys as duplicates already.
        let mut other = rows(5..15);
        dedup.retain_first("b", &mut other, &[0]).await.unwrap();
        assert_eq!(ids(&other), (10..15).collect::<Vec<_>>());

        // Shard a fails before committing and reads the same records again: none is lost.
        dedup.rewound("a").await;
        let mut again = rows(0..10);
        dedup.retain_first("a", &mut again, &[0]).await.unwrap();
        assert_eq!(ids(&again), (0..10).collect::<Vec<_>>());
        dedup.committed("a").await.unwrap();
        dedup.committed("b").await.unwrap();

        let mut late = rows(0..20);
        dedup.retain_first("c", &mut late, &[0]).await.unwrap();
        assert_eq!(ids(&late), (15..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn approximate_dedup_stays_within_its_false_positive_rate() {
        let mut settings = config(DedupMethod::Approximate, Some("1MB"));
        settings.expected = 100_000;
        settings.false_positive_rate = 0.01;
        let dedup = Dedup::new(settings).unwrap();
        let mut kept = 0;
        for start in (0..100_000).step_by(1_000) {
            let mut unique = rows(start..start + 1_000);
            dedup.retain_first("s", &mut unique, &[0]).await.unwrap();
            dedup.committed("s").await.unwrap();
            kept += unique.len();
        }
        let false_positives = 100_000 - kept;
        assert!(false_positives <= 1_000, "{false_positives} unique keys dropped, more than 1%");
        let mut repeated = rows(0..100_000);
        dedup.retain_first("s", &mut repeated, &[0]).await.unwrap();
        assert!(repeated.is_empty(), "a Bloom filter never lets a repeated key through");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn exact_dedup_spilling_to_disk_keeps_each_first_occurrence_once(
            batches in prop::collection::vec(prop::collection::vec(0i64..600, 0..120), 1..12)
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            // 200 bytes hold 5 hashes: nearly every insert spills a run.
            let dedup = Dedup::new(config(DedupMethod::Exact, Some("200B"))).unwrap();
            let mut seen = HashSet::new();
            for batch in batches {
                let expected: Vec<i64> = batch.iter().copied().filter(|id| seen.insert(*id)).collect();
                let mut rows = rows(batch);
                runtime.block_on(dedup.retain_first("s", &mut rows, &[0])).unwrap();
                runtime.block_on(dedup.committed("s")).unwrap();
                prop_assert_eq!(ids(&rows), expected);
            }
        }
    }
}
