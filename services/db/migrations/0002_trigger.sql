-- The trigger service's own bookkeeping (issue 4).
--
-- trigger_http_cache: conditional-GET validators per URL, shared by every
-- trigger replica so that a restart or another replica also gets 304s. A
-- validator is stored only after what the body described was recorded and
-- announced, so a crash in between means the body is fetched again.
-- ``body`` is kept only for small index documents (.versions.json,
-- .targets.json) that a scan needs even when they did not change.
CREATE TABLE trigger_http_cache (
    url             text PRIMARY KEY,
    etag            text,
    last_modified   text,
    body            bytea,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- trigger_announcements: which firmware.discovered events were published.
-- The event is published after the checkout commits and marked here after the
-- publish returns, so a crash in between republishes (NATS dedupes by the
-- event id) and a later rescan does not publish again.
CREATE TABLE trigger_announcements (
    event_id        text PRIMARY KEY,
    checkout_id     text NOT NULL REFERENCES checkouts (id) ON DELETE CASCADE,
    published_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trigger_announcements_checkout_idx ON trigger_announcements (checkout_id);
