//! The arithmetic of splitting: boundaries of even integer ranges, the step
//! between quantile boundaries, and half-open shard ranges built from sorted
//! boundaries. Pure functions; the queries that feed them live in the planner.

/// The most shards a source may plan: beyond, per-shard overhead dominates
/// and the plan itself becomes large.
pub const MAX_SHARDS: usize = 100_000;

/// Boundaries that cut `[min, max]` into at most `shards` ranges of nearly
/// equal width: strictly increasing, each in `(min, max]`.
pub fn even_boundaries(min: i64, max: i64, shards: usize) -> Vec<i64> {
    if max <= min || shards <= 1 {
        return Vec::new();
    }
    let width = i128::from(max) - i128::from(min) + 1;
    let shards = (shards.min(MAX_SHARDS) as i128).min(width);
    let mut boundaries: Vec<i64> = Vec::with_capacity(shards as usize - 1);
    for index in 1..shards {
        let boundary = (i128::from(min) + width * index / shards) as i64;
        if boundary > min && boundaries.last().is_none_or(|last| boundary > *last) {
            boundaries.push(boundary);
        }
    }
    boundaries
}

/// Rows between quantile boundaries so that `count` rows make at most
/// `shards` shards (at least 1).
pub fn quantile_step(count: u64, shards: usize) -> u64 {
    count.div_ceil(shards.max(1) as u64).max(1)
}

/// Half-open ranges `[lower, upper)` from sorted boundaries: the first is
/// unbounded below and the last unbounded above, so together they cover every
/// key, even one added after planning. Equal boundaries are merged.
pub fn ranges<T: PartialEq + Clone>(boundaries: &[T]) -> Vec<(Option<T>, Option<T>)> {
    let mut distinct: Vec<&T> = Vec::with_capacity(boundaries.len());
    for boundary in boundaries {
        if distinct.last().is_none_or(|last| *last != boundary) {
            distinct.push(boundary);
        }
    }
    let lowers = std::iter::once(None).chain(distinct.iter().map(|b| Some((*b).clone())));
    let uppers = distinct.iter().map(|b| Some((*b).clone())).chain(std::iter::once(None));
    lowers.zip(uppers).collect()
}

/// The id of the `index`th key-range shard.
pub fn shard_id(index: usize) -> String {
    format!("k{index:04}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owner(ranges: &[(Option<i64>, Option<i64>)], key: i64) -> Vec<usize> {
        let inside = |(lower, upper): &(Option<i64>, Option<i64>)| {
            lower.is_none_or(|lower| key >= lower) && upper.is_none_or(|upper| key < upper)
        };
        ranges.iter().enumerate().filter(|(_, range)| inside(range)).map(|(index, _)| index).collect()
    }

    #[test]
    fn even_split_of_a_small_range() {
        assert_eq!(even_boundaries(1, 100, 4), vec![26, 51, 76]);
        assert_eq!(even_boundaries(5, 5, 4), Vec::<i64>::new());
        assert_eq!(even_boundaries(1, 3, 8), vec![2, 3]);
        assert_eq!(ranges(&[26, 51]), vec![(None, Some(26)), (Some(26), Some(51)), (Some(51), None)]);
        assert_eq!(ranges::<i64>(&[]), vec![(None, None)]);
        assert_eq!(shard_id(3), "k0003");
    }

    #[test]
    fn the_widest_split_stays_in_range() {
        let boundaries = even_boundaries(i64::MIN, i64::MAX, usize::MAX);
        assert_eq!(boundaries.len(), MAX_SHARDS - 1);
        assert!(boundaries.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn quantile_steps() {
        assert_eq!(quantile_step(0, 4), 1);
        assert_eq!(quantile_step(10, 4), 3);
        assert_eq!(quantile_step(3, 8), 1);
    }

    proptest! {
        #[test]
        fn even_ranges_cover_every_key_once(
            min in any::<i64>(),
            span in prop_oneof![0u64..1_000, any::<u64>()],
            shards in 1usize..70,
            probes in proptest::collection::vec(any::<u64>(), 1..20),
        ) {
            let max = (i128::from(min) + i128::from(span)).min(i128::from(i64::MAX)) as i64;
            let boundaries = even_boundaries(min, max, shards);
            prop_assert!(boundaries.len() < shards.max(1));
            prop_assert!(boundaries.windows(2).all(|pair| pair[0] < pair[1]));
            prop_assert!(boundaries.iter().all(|b| *b > min && *b <= max));
            let ranges = ranges(&boundaries);
            let width = (i128::from(max) - i128::from(min)) as u128 + 1;
            for probe in probes {
                let key = (i128::from(min) + (u128::from(probe) % width) as i128) as i64;
                prop_assert_eq!(owner(&ranges, key).len(), 1, "key {} in {:?}", key, ranges);
            }
            for key in [i64::MIN, min, max, i64::MAX] {
                prop_assert_eq!(owner(&ranges, key).len(), 1);
            }
        }

        #[test]
        fn boundary_ranges_have_no_gap_or_overlap(
            mut boundaries in proptest::collection::vec(-50i64..50, 0..12),
            key in -60i64..60,
        ) {
            boundaries.sort();
            let ranges = ranges(&boundaries);
            prop_assert_eq!(owner(&ranges, key).len(), 1);
            for pair in ranges.windows(2) {
                prop_assert_eq!(pair[0].1, pair[1].0);
            }
        }
    }
}
