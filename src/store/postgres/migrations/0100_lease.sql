-- A running run's lease: the instance running it moves it forward every few seconds. Once it has passed
-- (that instance crashed or lost the database), any instance marks the run "Interrupted". Rows written
-- before the lease existed have none; they are left to the start of an instance that finds no other.
ALTER TABLE runs ADD COLUMN lease_until timestamptz;
CREATE INDEX runs_running_lease ON runs (lease_until) WHERE running;
