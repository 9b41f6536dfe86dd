-- wrtci schema, version 1.
--
-- checkouts / builds / tests / issues / incidents follow KCIDB v5: same table
-- names, same column names, ids prefixed with the origin ("wrtci:..."),
-- status values PASS FAIL ERROR SKIP MISS DONE. The columns KCIDB does not have
-- (node state, source, device) come after the KCIDB ones.

CREATE TABLE checkouts (
    -- KCIDB v5
    id                      text PRIMARY KEY,
    origin                  text NOT NULL,
    tree_name               text,
    git_repository_url      text,
    git_commit_hash         text,
    git_commit_name         text,
    git_repository_branch   text,
    patchset_files          jsonb,
    patchset_hash           text,
    message_id              text,
    comment                 text,
    start_time              timestamptz,
    log_url                 text,
    log_excerpt             text,
    valid                   boolean,
    misc                    jsonb NOT NULL DEFAULT '{}',
    -- wrtci: the firmware as a KernelCI node
    source_kind             text NOT NULL,
    priority_class          text NOT NULL,
    channel                 text NOT NULL,
    version                 text NOT NULL,
    revision                text,
    state                   text NOT NULL DEFAULT 'running'
                            CHECK (state IN ('running', 'available', 'closing', 'done')),
    holdoff_until           timestamptz,
    timeout_at              timestamptz,
    done_at                 timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (id LIKE origin || ':%')
);
CREATE INDEX checkouts_state_idx ON checkouts (state) WHERE state <> 'done';
CREATE INDEX checkouts_channel_idx ON checkouts (channel, created_at);

CREATE TABLE builds (
    -- KCIDB v5: one firmware image for one target/subtarget[/profile]
    id              text PRIMARY KEY,
    checkout_id     text NOT NULL REFERENCES checkouts (id) ON DELETE CASCADE,
    origin          text NOT NULL,
    comment         text,
    start_time      timestamptz,
    duration        double precision,
    architecture    text,
    command         text,
    compiler        text,
    input_files     jsonb,
    output_files    jsonb,
    config_name     text,
    config_url      text,
    log_url         text,
    log_excerpt     text,
    status          text CHECK (status IN ('PASS', 'FAIL', 'ERROR', 'SKIP', 'MISS', 'DONE')),
    misc            jsonb NOT NULL DEFAULT '{}',
    -- wrtci
    target          text NOT NULL,
    subtarget       text NOT NULL,
    profile         text,
    image_name      text NOT NULL,
    image_type      text NOT NULL,
    filesystem      text,
    sha256          text NOT NULL,
    size            bigint,
    url             text,
    object_key      text,
    CHECK (id LIKE origin || ':%')
);
CREATE INDEX builds_checkout_idx ON builds (checkout_id);
CREATE INDEX builds_device_idx ON builds (target, subtarget, profile);

CREATE TABLE jobs (
    id              text PRIMARY KEY,
    checkout_id     text NOT NULL REFERENCES checkouts (id) ON DELETE CASCADE,
    build_id        text NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    device_type     text NOT NULL,
    plans           jsonb NOT NULL DEFAULT '[]',
    priority        integer NOT NULL,
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'done')),
    result          text CHECK (result IN ('pass', 'fail', 'skip', 'error')),
    error_code      text,
    error_message   text,
    attempt         integer NOT NULL DEFAULT 1,
    max_attempts    integer NOT NULL DEFAULT 3,
    lab             text,
    device          text,
    log_key         text,
    timeout_s       double precision NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    deadline_at     timestamptz,
    last_progress_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    misc            jsonb NOT NULL DEFAULT '{}',
    CHECK ((state = 'done') = (result IS NOT NULL))
);
CREATE INDEX jobs_checkout_idx ON jobs (checkout_id);
CREATE INDEX jobs_open_idx ON jobs (state, device_type) WHERE state <> 'done';

-- Every attempt of a job stays visible; the job row shows the last one.
CREATE TABLE job_attempts (
    job_id          text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt         integer NOT NULL,
    state           text NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    result          text CHECK (result IN ('pass', 'fail', 'skip', 'error')),
    error_code      text,
    error_message   text,
    lab             text,
    device          text,
    log_key         text,
    queued_at       timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE tests (
    -- KCIDB v5: one pytest test of one job attempt
    id                  text PRIMARY KEY,
    build_id            text NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    origin              text NOT NULL,
    environment_comment text,
    environment_misc    jsonb,
    path                text NOT NULL,
    comment             text,
    log_url             text,
    log_excerpt         text,
    status              text NOT NULL
                        CHECK (status IN ('PASS', 'FAIL', 'ERROR', 'SKIP', 'MISS', 'DONE')),
    start_time          timestamptz,
    duration            double precision,
    output_files        jsonb,
    misc                jsonb NOT NULL DEFAULT '{}',
    -- wrtci
    job_id              text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt             integer NOT NULL,
    device_type         text NOT NULL,
    lab                 text,
    device              text,
    CHECK (id LIKE origin || ':%')
);
CREATE INDEX tests_job_idx ON tests (job_id, attempt);
CREATE INDEX tests_history_idx ON tests (device_type, path, start_time);

CREATE TABLE issues (
    -- KCIDB v5: a known problem (e.g. a log-analysis signature)
    id              text NOT NULL,
    version         integer NOT NULL,
    origin          text NOT NULL,
    report_url      text,
    report_subject  text,
    culprit_code    boolean,
    culprit_tool    boolean,
    culprit_harness boolean,
    comment         text,
    misc            jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, version),
    CHECK (id LIKE origin || ':%')
);

CREATE TABLE incidents (
    -- KCIDB v5: an issue seen in a build or a test
    id              text PRIMARY KEY,
    origin          text NOT NULL,
    issue_id        text NOT NULL,
    issue_version   integer NOT NULL,
    build_id        text REFERENCES builds (id) ON DELETE CASCADE,
    test_id         text REFERENCES tests (id) ON DELETE CASCADE,
    present         boolean,
    comment         text,
    misc            jsonb NOT NULL DEFAULT '{}',
    FOREIGN KEY (issue_id, issue_version) REFERENCES issues (id, version),
    CHECK (id LIKE origin || ':%')
);

CREATE TABLE labs (
    name            text PRIMARY KEY,
    online          boolean NOT NULL DEFAULT false,
    version         text,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz,
    misc            jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE devices (
    lab                  text NOT NULL REFERENCES labs (name) ON DELETE CASCADE,
    name                 text NOT NULL,
    device_type          text NOT NULL,
    features             text[] NOT NULL DEFAULT '{}',
    state                text NOT NULL DEFAULT 'idle'
                         CHECK (state IN ('idle', 'busy', 'checking', 'unhealthy', 'maintenance')),
    health               text NOT NULL DEFAULT 'unknown'
                         CHECK (health IN ('healthy', 'warning', 'unhealthy', 'unknown')),
    consecutive_failures integer NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lab, name)
);
CREATE INDEX devices_type_idx ON devices (device_type);

CREATE TABLE device_health (
    event_id        text PRIMARY KEY,
    lab             text NOT NULL,
    device          text NOT NULL,
    device_type     text NOT NULL,
    health          text NOT NULL,
    state           text NOT NULL,
    check_passed    boolean,
    consecutive_failures integer NOT NULL DEFAULT 0,
    message         text,
    at              timestamptz NOT NULL
);
CREATE INDEX device_health_device_idx ON device_health (lab, device, at);
