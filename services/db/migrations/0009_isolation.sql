-- Labs onboarded with `wrtci lab add`: their NATS identity (NKey public key)
-- and the device types they may take jobs of. A revoked lab keeps its row
-- (revoked_at set) so that its late events are refused with a reason.
CREATE TABLE lab_registrations (
    name            text PRIMARY KEY,
    public_key      text NOT NULL,
    device_types    text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

-- HTTP API tokens: only a digest is stored; the token is shown once.
CREATE TABLE api_tokens (
    name            text PRIMARY KEY,
    scope           text NOT NULL CHECK (scope IN ('upload', 'control', 'read')),
    digest          text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz
);
