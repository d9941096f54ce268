-- haul store schema, version 1 (SQLite).
-- Plain tables so that the MySQL and PostgreSQL schemas mirror this one.
-- Times are integer milliseconds since the Unix epoch, from the database's clock.
-- JSON values are stored as text.

-- The incremental state each job carries from one successful run to the next.
CREATE TABLE job_state (
    job TEXT NOT NULL PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE runs (
    id TEXT NOT NULL PRIMARY KEY,
    job TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('full', 'incremental', 'range')),
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'running', 'paused', 'succeeded', 'failed', 'cancelled')),
    next_state TEXT,
    message TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE INDEX runs_job_created_at ON runs (job, created_at);

-- The shard ledger: a run's plan (spec, position) and each shard's progress and lease.
CREATE TABLE shards (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    shard_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    sequence INTEGER NOT NULL DEFAULT 0,
    checkpoint TEXT,
    counters TEXT NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    lease_expires_at INTEGER,
    error TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, shard_id)
);

-- The history of a run and its shards.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    shard_id TEXT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL
);

CREATE INDEX events_run_id ON events (run_id, id);
