#!/usr/bin/env bash
# Benchmarks authrun against a minimal axum server on this machine; see BENCHMARKS.md.
# Usage: scripts/bench.sh [--quick] [--pg-only]   (writes target/bench/results.json and prints a summary)
# With PostgreSQL installed (Debian's `postgresql`), it also measures two instances on one database
# (scripts/bench_pg.py); --pg-only measures only that, into target/bench/results_pg.json.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing ${missing[*]}..."
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

cargo build --release --bin authrun --example baseline --example stamp --example bench_runs
exec python3 scripts/bench.py "$@"
