-- haul store schema, version 4 (MySQL and MariaDB): a run's shards by state, in the plan's order.

-- What the leader reads each time it looks at a run it dispatches: the
-- running shards and the first pending ones, without reading the whole run.
CREATE INDEX shards_run_state_position ON shards (run_id, state, position);
