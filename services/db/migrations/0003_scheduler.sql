-- wrtci schema: the scheduler's own records.

-- Every device a lab has announced in the labs KV bucket, kept after the lab
-- goes away: new firmware still gets jobs for its device type, and those jobs
-- wait in their queue until a lab comes back (see job_waiting below).
CREATE TABLE announced_devices (
    lab             text NOT NULL,
    device          text NOT NULL,
    device_type     text NOT NULL,
    features        text[] NOT NULL DEFAULT '{}',
    heartbeat_at    timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    -- the lab counts as online for this device until expires_at (heartbeat + bucket TTL)
    PRIMARY KEY (lab, device)
);
CREATE INDEX announced_devices_type_idx ON announced_devices (device_type, expires_at);

-- JetStream sequence of the current attempt's message on the JOBS stream,
-- NULL until it is published: a redelivered firmware event publishes exactly
-- the jobs still missing, and cancel / timeout remove the queued message.
ALTER TABLE jobs ADD COLUMN queue_seq bigint;
CREATE INDEX jobs_deadline_idx ON jobs (deadline_at) WHERE state = 'running';

-- How many times the firmware was reopened by a manual retry after it was
-- done; each round ends with its own "done" event.
ALTER TABLE checkouts ADD COLUMN round integer NOT NULL DEFAULT 0;
CREATE INDEX checkouts_timers_idx ON checkouts (holdoff_until, timeout_at) WHERE state <> 'done';

-- A queued job is waiting when no lab with its device type is online.
CREATE VIEW job_waiting AS
SELECT j.id AS job_id,
       j.checkout_id,
       j.device_type,
       j.state = 'queued' AND NOT EXISTS (
           SELECT 1 FROM announced_devices d
           WHERE d.device_type = j.device_type AND d.expires_at > now()
       ) AS waiting_for_lab
FROM jobs j;

-- One line per firmware: where its jobs are.
CREATE VIEW firmware_progress AS
SELECT c.id AS checkout_id,
       c.state,
       c.round,
       count(w.job_id) AS jobs,
       count(w.job_id) FILTER (WHERE j.state = 'queued') AS queued,
       count(w.job_id) FILTER (WHERE j.state = 'running') AS running,
       count(w.job_id) FILTER (WHERE j.state = 'done') AS done,
       count(w.job_id) FILTER (WHERE w.waiting_for_lab) AS waiting_for_lab,
       coalesce(array_agg(DISTINCT w.device_type) FILTER (WHERE w.waiting_for_lab), '{}')
           AS waiting_device_types
FROM checkouts c
LEFT JOIN job_waiting w ON w.checkout_id = c.id
LEFT JOIN jobs j ON j.id = w.job_id
GROUP BY c.id, c.state, c.round;
