#!/usr/bin/env bash
# Attacks a release authrun on 127.0.0.1 and prints what each attack gets; README's security notes
# quote the figures. Usage: scripts/attack.sh
#
# Every scripts/attack/*.py but _shared.py runs in order, each against a fresh authrun (default limits, a temp config),
# and prints `name: value` figure lines. A script finds the server in the environment:
#   AUTHRUN_ATTACK_HOST, AUTHRUN_ATTACK_PORT  where it listens (127.0.0.1)
#   AUTHRUN_ATTACK_PID                        its process, for /proc/PID/status (VmRSS, VmHWM)
#   AUTHRUN_ATTACK_DIR                        its working directory (config, state, audit log)
# Attack sources bind other 127.x.y.z addresses, which Linux routes to the loopback like 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

# Hundreds of sockets on both ends of each connection.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
command -v python3 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3; }

cargo build --release --bin authrun
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/authrun"
secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP

work=$(mktemp -d)
pid=""
stop_server() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

# Starts authrun in a new directory and exports where it is; fails after 20 s without it serving.
start_server() {
  local dir="$work/$1"
  mkdir -p "$dir"
  printf '#!/bin/sh\necho deployed\n' >"$dir/deploy.sh"
  chmod +x "$dir/deploy.sh"
  printf '[script]\npath = "deploy.sh"\n\n[totp]\nsecret = "%s"\n' "$secret" >"$dir/authrun.toml"
  chmod 600 "$dir/authrun.toml"
  # The product's default log level, so the flood's figures count what a real server logs; the burst
  # runs on 64 worker threads, where a race in counting would show most.
  local threads=""
  [ "$1" = burst ] && threads=64
  (cd "$dir" && exec env -u RUST_LOG ${threads:+TOKIO_WORKER_THREADS=$threads} "$bin" serve \
    --config authrun.toml --bind 127.0.0.1:0 >stdout 2>stderr) &
  pid=$!
  local port=""
  for _ in $(seq 200); do
    port=$(sed -n 's|^authrun is serving http://127.0.0.1:\([0-9]*\)/$|\1|p' "$dir/stdout" 2>/dev/null)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr" >&2; echo "authrun did not start" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$port" ] || { echo "authrun did not say where it serves within 20 s" >&2; exit 1; }
  export AUTHRUN_ATTACK_HOST=127.0.0.1 AUTHRUN_ATTACK_PORT="$port" AUTHRUN_ATTACK_PID="$pid" \
    AUTHRUN_ATTACK_DIR="$dir"
}

for attack in scripts/attack/[!_]*.py; do
  name=$(basename "$attack" .py)
  echo "== $name"
  start_server "$name"
  python3 "$attack"
  stop_server
done
