-- The notifier's health issues: one row per device, the claim every replica
-- takes (SELECT ... FOR UPDATE) before it talks to GitHub or the mail server.
--
-- A device that leaves the pool gets one GitHub issue "Healthcheck <lab>/<device>"
-- (openwrt-tests' title), reopened when it fails again, closed on recovery.
-- ``issue_number`` remembers the issue; without it (first failure, or this
-- table lost) the issue is looked up by its title before one is created, so
-- neither a restart nor a second replica opens a second issue.
-- ``last_event_at`` orders the device.health events: an older one than the
-- last handled (a redelivery, two replicas racing) changes nothing.
CREATE TABLE health_issues (
    lab             text NOT NULL,
    device          text NOT NULL,
    state           text NOT NULL DEFAULT 'closed' CHECK (state IN ('open', 'closed')),
    issue_number    integer,
    failed_since    timestamptz,
    last_passed_at  timestamptz,
    last_event_at   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lab, device)
);
