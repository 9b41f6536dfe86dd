-- API tokens (`wrtci token create`) may carry more than one scope: `wrtci up`
-- makes one local token that both uploads and retries/cancels. The table of
-- 0009 had one scope per token and no code wrote it yet, so the column is
-- replaced. Every token may read (see services/auth.py).
ALTER TABLE api_tokens DROP COLUMN scope;
ALTER TABLE api_tokens ADD COLUMN scopes text[] NOT NULL
    CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['upload', 'control', 'read']::text[]);
