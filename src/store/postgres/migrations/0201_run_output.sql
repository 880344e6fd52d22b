-- The output of each run, in the batches the instance running it wrote, so that any instance can show
-- it live and afterwards. `body` holds lines `first_line ..= last_line` as the run's log file does (a
-- stream tag, a space, the text, a newline each). The last batch of a run is marked `final`.
CREATE TABLE run_output (
    run_id bigint NOT NULL,
    first_line bigint NOT NULL,
    last_line bigint NOT NULL,
    body bytea NOT NULL,
    final boolean NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, first_line)
);
