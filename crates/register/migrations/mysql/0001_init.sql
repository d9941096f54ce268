-- haul store schema, version 1 (MySQL and MariaDB), mirroring the SQLite schema.
-- Times are integer milliseconds since the Unix epoch, from the database's clock.
-- JSON values are stored as text, exactly as written. Keys are compared byte
-- for byte (utf8mb4_bin), as in SQLite and PostgreSQL.

-- The incremental state each job carries from one successful run to the next.
CREATE TABLE job_state (
    job VARCHAR(255) NOT NULL PRIMARY KEY,
    state LONGTEXT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE runs (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    job VARCHAR(255) NOT NULL,
    spec_hash TEXT NOT NULL,
    mode VARCHAR(16) NOT NULL CHECK (mode IN ('full', 'incremental', 'range')),
    state VARCHAR(16) NOT NULL
        CHECK (state IN ('pending', 'running', 'paused', 'succeeded', 'failed', 'cancelled')),
    next_state LONGTEXT,
    message TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    INDEX runs_job_created_at (job, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The shard ledger: a run's plan (spec, position) and each shard's progress and lease.
CREATE TABLE shards (
    run_id VARCHAR(64) NOT NULL,
    shard_id VARCHAR(512) NOT NULL,
    position BIGINT NOT NULL,
    spec LONGTEXT NOT NULL,
    state VARCHAR(16) NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    sequence BIGINT NOT NULL DEFAULT 0,
    checkpoint LONGTEXT,
    counters TEXT NOT NULL,
    epoch BIGINT NOT NULL DEFAULT 0,
    owner VARCHAR(255),
    lease_expires_at BIGINT,
    error TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, shard_id),
    FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The history of a run and its shards.
CREATE TABLE events (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    run_id VARCHAR(64) NOT NULL,
    shard_id VARCHAR(512),
    at BIGINT NOT NULL,
    kind VARCHAR(32) NOT NULL,
    reason TEXT NOT NULL,
    INDEX events_run_id (run_id, id),
    FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
