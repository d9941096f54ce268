-- haul store schema, version 3 (PostgreSQL): a running shard can be asked to split.

-- Set by the leader on a straggling shard; its owner splits it at its next
-- checkpoint, and clears it.
ALTER TABLE shards ADD COLUMN split_requested BOOLEAN NOT NULL DEFAULT FALSE;
