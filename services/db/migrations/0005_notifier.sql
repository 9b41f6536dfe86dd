-- The notifier's delivery record: one row per (firmware, round, channel).
--
-- A firmware's move to ``done`` fires its reports exactly once per round
-- (KernelCI). The row is the claim: a replica moves it to 'sending' with a
-- lease before it talks to the SMTP server or GitHub, and to 'sent' after.
-- Another replica (or a redelivery of the same event) finds it sent and does
-- nothing, or finds it leased and waits. A crash between sending and marking
-- leaves a 'sending' row whose lease runs out: the next delivery sends again,
-- so such a crash may cause one more mail (a PR comment is found by its marker
-- and edited, never duplicated).
CREATE TABLE notifications (
    firmware_id     text NOT NULL REFERENCES checkouts (id) ON DELETE CASCADE,
    round           integer NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('mail', 'github_status', 'github_comment')),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    target          text NOT NULL DEFAULT '',
    -- who or what it goes to: the recipients, owner/repo@sha, owner/repo#n
    attempts        integer NOT NULL DEFAULT 0,
    lease_until     timestamptz,
    next_try_at     timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    detail          text,
    -- what the other side answered: the Message-ID, the comment id
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    PRIMARY KEY (firmware_id, round, channel)
);
CREATE INDEX notifications_open_idx ON notifications (state) WHERE state IN ('pending', 'sending');
