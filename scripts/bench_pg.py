#!/usr/bin/env python3
"""Two authrun instances on one PostgreSQL ([store] kind = "postgres"); called by bench.py when PostgreSQL
is installed (Debian's `postgresql`: /usr/lib/postgresql/<version>/bin), or alone with `bench.py --pg-only`.

Figures, each beside the same one for a single instance on its files, measured in the same run:
- the status answer (/get_deploy_status, 10 runs) with wrk against both instances at once (half the
  connections each), and against one instance on the database: the answer comes from memory, so the
  database should see no work from it (the transactions it counted during the run are reported);
- start-up time against a database holding N runs (imported with `authrun store migrate --from files`).
The cluster is initdb-ed into a temp dir and started with pg_ctl on a free port (fsync on, as deployed).
"""

import glob, os, shutil, subprocess, tempfile, threading

import bench as b


def pg_bin():
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda path: int(path.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class Postgres:
    """A throwaway cluster with a database `authrun`, stopped by stop()."""

    def __init__(self, bin_dir):
        self.bin = bin_dir
        self.dir = tempfile.mkdtemp(prefix="authrun-bench-pg-")
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            subprocess.run(["chown", "-R", "postgres:", self.dir], check=True)
        self.port = b.free_port()
        self.data = os.path.join(self.dir, "data")
        self.tool("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self.tool("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.dir, "server.log"), "-w",
                  "start")
        self.psql("postgres", "CREATE DATABASE authrun")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/authrun"

    def tool(self, name, *args):
        return subprocess.run(self.as_owner + [os.path.join(self.bin, name), *args], cwd=self.dir,
                              capture_output=True, text=True, check=True).stdout

    def psql(self, db, sql):
        return self.tool("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-Atqc",
                         sql).strip()

    def commits(self):
        return int(self.psql("postgres", "SELECT xact_commit FROM pg_stat_database WHERE datname = 'authrun'"))

    def stop(self):
        subprocess.run(self.as_owner + [os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                                        "stop"], cwd=self.dir, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def on_database(entries, url):
    """An instance's directory whose config names the database; its history file is imported once."""
    d, config = b.authrun_dir(entries)
    with open(config, "a") as f:
        f.write(f"\n[store]\nkind = \"postgres\"\nurl = \"{url}\"\n")
    return d, config


def import_files(d, config):
    subprocess.run([b.AUTHRUN, "store", "migrate", "--from", "files", "--config", config], cwd=d, check=True,
                   capture_output=True, text=True)


def wrk_together(servers, path, connections):
    """wrk against every server at once, `connections` split evenly; their rps summed, the worst p99."""
    each = max(1, connections // len(servers))
    results = [None] * len(servers)

    def one(i):
        results[i] = b.wrk(servers[i].url(path), each)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(servers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"rps": sum(r["rps"] for r in results), "p99_ms": max(r["p99_ms"] for r in results),
            "non_2xx": sum(r["non_2xx"] for r in results), "per_instance_rps": [r["rps"] for r in results]}


def measure(quick):
    bin_dir = pg_bin()
    if bin_dir is None:
        return {"skipped": "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)"}
    results = {}
    connections = 16
    path = "/get_deploy_status"

    # The status answer: one instance on its files, one on the database, two on the database.
    d, config = b.authrun_dir(10)
    files = b.start_authrun(d, config)
    results["status_files_one_instance"] = b.wrk(files.url(path), connections)
    files.stop()
    shutil.rmtree(d, ignore_errors=True)

    pg = Postgres(bin_dir)
    try:
        dirs = [on_database(10, pg.url) for _ in range(2)]
        import_files(*dirs[0])
        servers = [b.start_authrun(d, config) for d, config in dirs]
        before = pg.commits()
        results["status_postgres_one_instance"] = b.wrk(servers[0].url(path), connections)
        results["status_postgres_two_instances"] = wrk_together(servers, path, connections)
        results["database_commits_during_status_runs"] = pg.commits() - before
        for server in servers:
            server.stop()
        for d, _ in dirs:
            shutil.rmtree(d, ignore_errors=True)
    finally:
        pg.stop()

    # Start-up against a database holding `entries` runs, and on the same history in a file.
    entries = 10_000 if quick else 100_000
    runs = 5 if quick else 10
    pg = Postgres(bin_dir)
    try:
        d, config = on_database(entries, pg.url)
        import_files(d, config)
        os.remove(os.path.join(d, "history.json"))
        startups = []
        for _ in range(runs):
            server = b.start_authrun(d, config)
            startups.append(server.startup_ms)
            server.stop()
        results["startup_postgres_ms"] = {"runs_in_database": entries, "median": b.median(startups),
                                          "all": startups}
        shutil.rmtree(d, ignore_errors=True)
    finally:
        pg.stop()
    d, config = b.authrun_dir(entries)
    startups = []
    for _ in range(runs):
        server = b.start_authrun(d, config)
        startups.append(server.startup_ms)
        server.stop()
    results["startup_files_ms"] = {"runs_in_file": entries, "median": b.median(startups), "all": startups}
    shutil.rmtree(d, ignore_errors=True)
    return results


def summarize(r):
    if "skipped" in r:
        print(f"\nseveral instances: skipped ({r['skipped']})")
        return
    print("\nseveral instances (/get_deploy_status, 10 runs, 16 connections in all):")
    for label, name in [("status_files_one_instance", "one instance, files"),
                        ("status_postgres_one_instance", "one instance, PostgreSQL"),
                        ("status_postgres_two_instances", "two instances, one PostgreSQL")]:
        run = r[label]
        print(f"  {name:32} {run['rps']:>9.0f} rps p99 {run['p99_ms']:6.2f} ms non-2xx {run['non_2xx']}")
    print(f"  database transactions during those runs: {r['database_commits_during_status_runs']} "
          f"(lease renewals and checks; the answers come from memory)")
    s, f = r["startup_postgres_ms"], r["startup_files_ms"]
    print(f"start-up with {s['runs_in_database']} runs: median {s['median']:.1f} ms on PostgreSQL, "
          f"{f['median']:.1f} ms on a file")
