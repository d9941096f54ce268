-- haul store schema, version 2 (MySQL and MariaDB): the server's jobs and run queue.

-- Jobs submitted to the server, with their spec text.
CREATE TABLE jobs (
    name VARCHAR(255) NOT NULL PRIMARY KEY,
    spec LONGTEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    version BIGINT NOT NULL DEFAULT 1,
    -- The latest schedule time dealt with (fired or skipped), in milliseconds.
    planned_through BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Why a run exists and how it queues.
ALTER TABLE runs
    ADD COLUMN `trigger` VARCHAR(16) NOT NULL DEFAULT 'manual'
        CHECK (`trigger` IN ('manual', 'schedule', 'backfill', 'retry')),
    ADD COLUMN scheduled_for BIGINT,
    ADD COLUMN priority BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN pool VARCHAR(255) NOT NULL DEFAULT 'default',
    ADD COLUMN params LONGTEXT,
    ADD COLUMN attempt BIGINT NOT NULL DEFAULT 1,
    ADD COLUMN started_at BIGINT,
    ADD COLUMN finished_at BIGINT;

-- One run per job, trigger and schedule time: creating it twice returns the first.
-- NULL schedule times (manual runs) are distinct.
CREATE UNIQUE INDEX runs_job_trigger_scheduled_for ON runs (job, `trigger`, scheduled_for);
CREATE INDEX runs_state ON runs (state);
