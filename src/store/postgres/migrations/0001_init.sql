-- The runs of every action. `record` is the run as the history shows it (the JSON of /get_deploy_status);
-- the other columns are what the database itself decides on.
CREATE SEQUENCE run_ids;

CREATE TABLE runs (
    id bigint PRIMARY KEY,
    action text NOT NULL,
    started timestamptz NOT NULL,
    -- True from the claim until the run has ended.
    running boolean NOT NULL,
    record jsonb NOT NULL
);

-- One run per action: a second running row of an action is refused by the database itself.
CREATE UNIQUE INDEX runs_one_running_per_action ON runs (action) WHERE running;
CREATE INDEX runs_by_action ON runs (action, id);

-- The newest TOTP step accepted per secret ("shared": the shared secret). A code is accepted once: its
-- step must be later than the one stored, and storing it is one atomic statement.
CREATE TABLE used_steps (
    secret text PRIMARY KEY,
    step bigint NOT NULL
);

-- State kept whole as one JSON document per name ("regulation", "operators", "sessions"), changed under
-- a row lock (SELECT ... FOR UPDATE), so concurrent changes from several instances never overwrite
-- each other.
CREATE TABLE documents (
    name text PRIMARY KEY,
    body jsonb NOT NULL
);
