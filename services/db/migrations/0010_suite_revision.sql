-- The git revision of the lab's test-suite checkout that ran an attempt
-- (job.finished data.suite_revision); NULL for older labs and central verdicts.
ALTER TABLE job_attempts ADD COLUMN suite_revision text;
