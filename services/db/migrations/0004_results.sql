-- Results analysis: work queue, regressions, flaky tests, KCIDB forwarding.
-- Written only by services/results.

-- Work the results service does after a job attempt's facts are committed:
-- 'history' (regressions + flaky tests) and 'log' (console log analysis).
-- Rows are written in the same transaction as the results (an outbox), so a
-- crash between "results stored" and "results analysed" loses nothing.
CREATE TABLE results_work (
    kind            text NOT NULL CHECK (kind IN ('history', 'log')),
    job_id          text NOT NULL,
    attempt         integer NOT NULL,
    log_key         text,
    tries           integer NOT NULL DEFAULT 0,
    not_before      timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, job_id, attempt),
    FOREIGN KEY (job_id, attempt) REFERENCES job_attempts (job_id, attempt) ON DELETE CASCADE
);
CREATE INDEX results_work_due_idx ON results_work (not_before);

-- When each test row was committed (for lag figures and "new since" queries).
ALTER TABLE tests ADD COLUMN ingested_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE INDEX tests_ingested_idx ON tests (ingested_at);
CREATE INDEX tests_checkout_history_idx ON tests (device_type, path, job_id);

-- A test that failed on a device type where it passed on the previous firmware
-- of the same lineage (source kind + channel); fixed when it passes again.
CREATE TABLE regressions (
    id                          text PRIMARY KEY,
    lineage                     text NOT NULL,
    device_type                 text NOT NULL,
    path                        text NOT NULL,
    last_passing_checkout_id    text NOT NULL REFERENCES checkouts (id) ON DELETE CASCADE,
    first_failing_checkout_id   text NOT NULL REFERENCES checkouts (id) ON DELETE CASCADE,
    first_failing_test_id       text,
    fixed_checkout_id           text REFERENCES checkouts (id) ON DELETE SET NULL,
    fixed_test_id               text,
    flaky                       boolean NOT NULL DEFAULT false,
    detected_at                 timestamptz NOT NULL DEFAULT now(),
    fixed_at                    timestamptz,
    UNIQUE (lineage, device_type, path, first_failing_checkout_id)
);
CREATE INDEX regressions_failing_idx ON regressions (first_failing_checkout_id);
CREATE INDEX regressions_open_idx ON regressions (device_type, path) WHERE fixed_checkout_id IS NULL;

-- Tests whose outcome flips between attempts / reruns of one firmware.
CREATE TABLE flaky_tests (
    device_type     text NOT NULL,
    path            text NOT NULL,
    score           double precision NOT NULL,
    flips           integer NOT NULL,
    pairs           integer NOT NULL,
    runs            integer NOT NULL,
    flaky           boolean NOT NULL,
    last_checkout_id text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_type, path)
);

-- Every KCIDB object handed to a kcidb-ng endpoint: at most once per object.
CREATE TABLE kcidb_submissions (
    kind            text NOT NULL
                    CHECK (kind IN ('checkouts', 'builds', 'tests', 'issues', 'incidents')),
    object_id       text NOT NULL,
    batch_id        text NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'submitted', 'processed', 'failed')),
    submission_id   text,
    tries           integer NOT NULL DEFAULT 0,
    next_try_at     timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, object_id)
);
CREATE INDEX kcidb_submissions_batch_idx ON kcidb_submissions (batch_id);
CREATE INDEX kcidb_submissions_open_idx ON kcidb_submissions (state) WHERE state IN ('pending', 'submitted');
