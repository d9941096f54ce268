-- haul store schema, version 3 (SQLite): a running shard can be asked to split.

-- Set by the leader on a straggling shard; its owner splits it at its next
-- checkpoint, and clears it.
ALTER TABLE shards ADD COLUMN split_requested INTEGER NOT NULL DEFAULT 0;
