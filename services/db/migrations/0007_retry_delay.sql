-- An attempt retried after an infrastructure error waits before it is
-- published (the timeout service's timers publish it), so that a short outage
-- of S3 or the downloads server does not use up every attempt at once.
ALTER TABLE jobs ADD COLUMN not_before timestamptz;
CREATE INDEX jobs_retry_due ON jobs (not_before) WHERE state = 'queued' AND queue_seq IS NULL;
