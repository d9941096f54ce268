-- haul store schema, version 2 (PostgreSQL): the server's jobs and run queue.

-- Jobs submitted to the server, with their spec text.
CREATE TABLE jobs (
    name TEXT NOT NULL PRIMARY KEY,
    spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    version BIGINT NOT NULL DEFAULT 1,
    -- The latest schedule time dealt with (fired or skipped), in milliseconds.
    planned_through BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Why a run exists and how it queues.
ALTER TABLE runs ADD COLUMN "trigger" TEXT NOT NULL DEFAULT 'manual'
    CHECK ("trigger" IN ('manual', 'schedule', 'backfill', 'retry'));
ALTER TABLE runs ADD COLUMN scheduled_for BIGINT;
ALTER TABLE runs ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN pool TEXT NOT NULL DEFAULT 'default';
ALTER TABLE runs ADD COLUMN params TEXT;
ALTER TABLE runs ADD COLUMN attempt BIGINT NOT NULL DEFAULT 1;
ALTER TABLE runs ADD COLUMN started_at BIGINT;
ALTER TABLE runs ADD COLUMN finished_at BIGINT;

-- One run per job, trigger and schedule time: creating it twice returns the first.
-- NULL schedule times (manual runs) are distinct.
CREATE UNIQUE INDEX runs_job_trigger_scheduled_for ON runs (job, "trigger", scheduled_for);
CREATE INDEX runs_state ON runs (state);
