#!/usr/bin/env python3
"""Runs authrun's benchmarks and writes target/bench/results.json; called by scripts/bench.sh.

Every figure is measured in the same run for authrun and for the baseline (examples/baseline.rs, an axum
server answering a fixed body of the same size), on 127.0.0.1, with wrk sharing the machine's cores.
"""

import base64, hashlib, hmac, json, os, platform, re, shutil, signal, socket, struct, subprocess
import sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
RELEASE = os.path.join(TARGET, "release")
AUTHRUN = os.path.join(RELEASE, "authrun")
BASELINE = os.path.join(RELEASE, "examples", "baseline")
STAMP = os.path.join(RELEASE, "examples", "stamp")
BENCH_RUNS = os.path.join(RELEASE, "examples", "bench_runs")
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
QUICK = "--quick" in sys.argv
# Only the figures of several instances on one PostgreSQL (scripts/bench_pg.py).
PG_ONLY = "--pg-only" in sys.argv
DURATION = "3s" if QUICK else "10s"
CONNECTIONS = [1, 16, 64]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def totp_now(secret=SECRET, t=None):
    key = base64.b32decode(secret)
    counter = int((time.time() if t is None else t) // 30)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0xF
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return "%06d" % (value % 1_000_000)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Server:
    """A server process on a free port; waits until it answers."""

    def __init__(self, argv, port, cwd=None, env=None):
        self.port = port
        started = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        self.startup_ms = (time.perf_counter() - started) * 1000
        if "serving" not in line:
            raise SystemExit(f"{argv[0]} did not start: {line!r}")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wrk(url, connections):
    threads = 1 if connections == 1 else 2
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", DURATION, "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    factor = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": float(p99.group(1)) * factor,
            "non_2xx": int(errors.group(1)) if errors else 0}


def write_history(path, entries):
    start = 1_700_000_000
    records = []
    for i in range(entries):
        t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + i * 600))
        records.append({"time": t, "status": "Deploy succeeded", "id": i + 1, "exit_code": 0,
                        "duration_ms": 2000, "log": f"{i + 1}.log"})
    with open(path, "w") as f:
        json.dump(records, f)


def authrun_dir(history_entries, script_body="#!/bin/sh\necho deployed\n", retention=None, status_entries=100):
    d = tempfile.mkdtemp(prefix="authrun-bench-")
    script = os.path.join(d, "deploy.sh")
    with open(script, "w") as f:
        f.write(script_body)
    os.chmod(script, 0o755)
    config = os.path.join(d, "authrun.toml")
    history = (f"[history]\nretention = {retention or max(1000, history_entries)}\n"
               f"status_entries = {status_entries}\n")
    # wrk opens all its connections from 127.0.0.1: the per-client cap must let it have them.
    server = "[server]\nmax_connections_per_client = 512\n"
    with open(config, "w") as f:
        f.write(f"[script]\npath = \"deploy.sh\"\ncooldown_seconds = 0\n\n{history}\n{server}\n"
                f"[totp]\nsecret = \"{SECRET}\"\n")
    os.chmod(config, 0o600)
    if history_entries:
        write_history(os.path.join(d, "history.json"), history_entries)
    return d, config


def start_authrun(directory, config):
    port = free_port()
    env = dict(os.environ, RUST_LOG=os.environ.get("BENCH_RUST_LOG", "authrun=info,tower_http=info"))
    server = Server([AUTHRUN, "serve", "--config", config, "--bind", f"127.0.0.1:{port}"], port, cwd=directory,
                    env=env)
    return server


def status_size(server):
    with urllib.request.urlopen(server.url("/get_deploy_status")) as r:
        return len(r.read())


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    results = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                           "cpu": cpu_model(), "duration_per_wrk_run": DURATION},
               "notes": "wrk runs on the same 2 cores as the server; ratios are the headline."}
    if PG_ONLY:
        import bench_pg
        results["several_instances"] = bench_pg.measure(QUICK)
        write_results(results, "results_pg.json")
        bench_pg.summarize(results["several_instances"])
        return

    # 1-3. Throughput and p99 of the status endpoint and the page, against the baseline.
    # The 100,000-entry history is measured twice: with the default answer (its newest 100 runs), and
    # answering 10 runs, the same answer as the 10-entry history, so only the history's length differs.
    cases = [("history_10", 10, 100), ("history_100000", 100_000, 100), ("history_100000_answer_10", 100_000, 10)]
    for label, entries, answered in cases:
        d, config = authrun_dir(entries, status_entries=answered)
        server = start_authrun(d, config)
        size = status_size(server)
        page_size = len(urllib.request.urlopen(server.url("/")).read())
        idle = rss_kb(server.proc.pid)
        base_port = free_port()
        baseline = Server([BASELINE, str(base_port), str(size)], base_port)
        block = {"status_bytes": size, "page_bytes": page_size, "authrun_idle_rss_kb": idle, "runs": {}}
        # An action's own status route is answered like /get_deploy_status, from its own cache.
        paths = ["/get_deploy_status", "/actions/deploy/status", "/"] if entries == 10 else ["/get_deploy_status"]
        for path in paths:
            for c in CONNECTIONS:
                peak = [0]
                a = wrk_with_rss(server, path, c, peak)
                b = wrk(baseline.url("/get_deploy_status"), c)
                block["runs"][f"{path} c={c}"] = {
                    "authrun": a, "baseline": b,
                    "rps_ratio": round(a["rps"] / b["rps"], 3),
                    "p99_ratio": round(a["p99_ms"] / b["p99_ms"], 3) if b["p99_ms"] else None,
                    "authrun_peak_rss_kb": peak[0],
                }
        block["baseline_idle_rss_kb"] = rss_kb(baseline.proc.pid)
        baseline.stop()
        server.stop()
        shutil.rmtree(d, ignore_errors=True)
        results[label] = block

    # 4. Start-up with a 100,000-entry history.
    d, config = authrun_dir(100_000)
    startups = []
    for _ in range(5 if QUICK else 10):
        server = start_authrun(d, config)
        startups.append(server.startup_ms)
        server.stop()
    results["startup_100000_ms"] = {"median": median(startups), "all": startups}
    shutil.rmtree(d, ignore_errors=True)

    # 5. Memory after a run printing 100 MB.
    megabytes = 20 if QUICK else 100
    d, config = authrun_dir(10, f"#!/bin/sh\nyes '{'x' * 99}' | head -c {megabytes * 1_000_000}\n")
    server = start_authrun(d, config)
    before = rss_kb(server.proc.pid)
    body = f"code={totp_now()}".encode()
    answer = json.loads(urllib.request.urlopen(server.url("/verify"), data=body).read())
    run_id = answer["run_id"]
    peak = before
    while True:
        peak = max(peak, rss_kb(server.proc.pid))
        status = json.loads(urllib.request.urlopen(server.url("/get_deploy_status")).read())
        if status["state"] != "running":
            break
        time.sleep(0.02)
    results["big_output_rss_kb"] = {"megabytes": megabytes, "before": before, "peak_during": peak,
                                    "after": rss_kb(server.proc.pid), "run_id": run_id}
    server.stop()
    shutil.rmtree(d, ignore_errors=True)

    # 6-7. Spawn latency and output overhead (in-process, with a manual clock for fresh codes).
    runs = subprocess.run([BENCH_RUNS, STAMP, "20" if QUICK else "40", str(megabytes)], capture_output=True,
                          text=True, check=True)
    run_figures = json.loads(runs.stdout.strip().splitlines()[-1])
    latencies = run_figures["spawn_latency_ms"]
    results["spawn_latency_ms"] = {"median": median(latencies), "p99": percentile(latencies, 99),
                                   "runs": len(latencies)}
    authrun_ms = median(run_figures["output_run_ms"])
    results["output_overhead"] = {
        "megabytes": megabytes,
        "authrun_ms": authrun_ms,
        "direct_ms": median(run_figures["output_direct_ms"]),
        "to_file_ms": median(run_figures["output_to_file_ms"]),
        "through_cat_to_file_ms": median(run_figures["output_through_cat_to_file_ms"]),
        "store_floor_ms": median(run_figures["output_store_floor_ms"]),
        "store_floor_ratio": round(median(run_figures["output_store_floor_ms"])
                                   / median(run_figures["output_direct_ms"]), 3),
        "ratio": round(authrun_ms / median(run_figures["output_direct_ms"]), 3),
        "ratio_to_file": round(authrun_ms / median(run_figures["output_to_file_ms"]), 3),
        "ratio_through_cat": round(authrun_ms / median(run_figures["output_through_cat_to_file_ms"]), 3),
    }

    # 8. Several instances on one PostgreSQL, when it is installed.
    import bench_pg
    results["several_instances"] = bench_pg.measure(QUICK)

    out = write_results(results, "results.json")
    summarize(results)
    bench_pg.summarize(results["several_instances"])
    print(f"\nwritten to {out}")


def write_results(results, name):
    os.makedirs(os.path.join(TARGET, "bench"), exist_ok=True)
    out = os.path.join(TARGET, "bench", name)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    return out


def wrk_with_rss(server, path, connections, peak):
    """wrk against authrun while sampling its resident memory."""
    import threading
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(server.proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        return wrk(server.url(path), connections)
    finally:
        stop.set()
        sampler.join()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def summarize(r):
    print(f"machine: {r['machine']['cpus']} cpus, {r['machine']['cpu']}, wrk {r['machine']['duration_per_wrk_run']} per run")
    for label in ["history_10", "history_100000", "history_100000_answer_10"]:
        block = r[label]
        print(f"\n{label}: status answer {block['status_bytes']} bytes, idle RSS {block['authrun_idle_rss_kb']} KB "
              f"(baseline {block['baseline_idle_rss_kb']} KB)")
        for name, run in block["runs"].items():
            a, b = run["authrun"], run["baseline"]
            print(f"  {name:28} authrun {a['rps']:>9.0f} rps p99 {a['p99_ms']:6.2f} ms | baseline {b['rps']:>9.0f} rps "
                  f"p99 {b['p99_ms']:6.2f} ms | ratio {run['rps_ratio']:.2f} p99x {run['p99_ratio']} | "
                  f"peak RSS {run['authrun_peak_rss_kb']} KB")
    print(f"\nstart-up with 100,000 entries: median {r['startup_100000_ms']['median']:.1f} ms")
    m = r["big_output_rss_kb"]
    print(f"{m['megabytes']} MB run: RSS before {m['before']} KB, peak {m['peak_during']} KB, after {m['after']} KB")
    s = r["spawn_latency_ms"]
    print(f"spawn latency over {s['runs']} runs: median {s['median']:.2f} ms, p99 {s['p99']:.2f} ms")
    o = r["output_overhead"]
    print(f"output of {o['megabytes']} MB: {o['authrun_ms']:.0f} ms under authrun; run directly: {o['direct_ms']:.0f} ms "
          f"to /dev/null (ratio {o['ratio']}), {o['to_file_ms']:.0f} ms to a file (ratio {o['ratio_to_file']}), "
          f"{o['through_cat_to_file_ms']:.0f} ms through cat to a file (ratio {o['ratio_through_cat']}); "
          f"writing the same bytes to a file with dd alone: {o['store_floor_ms']:.0f} ms "
          f"({o['store_floor_ratio']} x the /dev/null run)")


if __name__ == "__main__":
    main()
