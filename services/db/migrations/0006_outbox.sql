-- Events that a transaction decides are staged here in that same transaction
-- and published after it commits (services/outbox.py): a rollback publishes
-- nothing, a crash between commit and publish leaves the row for the next
-- flush. Publishing uses the event id as Nats-Msg-Id, so a row published
-- twice (two flushers, a crash after publish) is one message.
CREATE TABLE event_outbox (
    seq         bigserial PRIMARY KEY,
    event_id    text NOT NULL UNIQUE,
    subject     text NOT NULL,
    payload     bytea NOT NULL,
    staged_at   timestamptz NOT NULL DEFAULT now()
);
