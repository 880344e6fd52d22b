-- The audit log of every instance in one place, for the admin's statistics and for reading it whole.
-- Each instance also keeps its own file. `line` is the line as the file holds it; `digest` (SHA-256 of
-- those bytes) keeps a line from being stored twice when `store migrate --from files` copies a file
-- that already reached the database.
CREATE TABLE audit (
    id bigserial PRIMARY KEY,
    time timestamptz NOT NULL,
    digest bytea NOT NULL UNIQUE,
    line jsonb NOT NULL
);
CREATE INDEX audit_time ON audit (time);
