//! What every backend records of a shard split (see
//! [`Store::request_split`](super::Store::request_split) and
//! [`Store::split_shard`](super::Store::split_shard)): the kinds of its
//! events and their reasons, written once.

use haul_collect_core::ShardSpec;

use crate::model::Lease;

/// The event kind of a split the leader asked for.
pub(super) const SPLIT_REQUESTED: &str = "split_requested";

/// The event kind of a split made by the shard's owner.
pub(super) const SPLIT: &str = "split";

/// The reasons of the events of a split: the split shard's, and the new shard's.
pub(super) fn split_reasons(lease: &Lease, new_shard: &ShardSpec) -> (String, String) {
    (
        format!("split by {} at epoch {}: shard {} takes the rest", lease.owner, lease.epoch, new_shard.id),
        format!("split from shard {}", lease.shard_id),
    )
}
