-- The stage a lab reports for a running attempt (job.progress: download, flash,
-- boot, test, upload), stored by the results service so pages and the API show
-- it after a restart without reading the event stream. stage_at: when the
-- attempt entered that stage (a late redelivery of an older event moves nothing).
ALTER TABLE job_attempts ADD COLUMN stage text;
ALTER TABLE job_attempts ADD COLUMN stage_at timestamptz;

COMMENT ON COLUMN tests.log_url IS
    'Not written: the KCIDB export builds log_url from [kcidb] public_url and the job attempt';
