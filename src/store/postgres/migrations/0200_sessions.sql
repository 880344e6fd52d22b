-- The browser sessions, shared by every instance: a browser signed in through one is signed in on all.
-- `expires` is set by the product's clock (not the database's); `verified` says which budget a session
-- counts against (anonymous sessions, which anybody can make, never push out verified ones).
CREATE TABLE sessions (
    id text PRIMARY KEY,
    verified boolean NOT NULL,
    expires timestamptz NOT NULL,
    -- tower-sessions' record as JSON text: its id is a 128-bit number, more than jsonb keeps exactly.
    record text NOT NULL
);

-- The eviction's order: per kind, the session closest to expiring first.
CREATE INDEX sessions_by_expiry ON sessions (verified, expires, id);
