#!/usr/bin/env bash
# Runs every test of authrun: unit tests, the HTTP tests and the command-line tests.
# Installs what the tests need on a fresh Debian machine first.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "Installing ${need_apt[*]} for the tests..."
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi

cargo test --all-targets "$@"
