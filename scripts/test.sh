#!/usr/bin/env bash
# Runs every test of authrun: unit tests, the HTTP tests, the command-line tests and the browser tests
# (tests/browser: Debian's headless Chromium driven through chromedriver), and the mail tests (a real SMTP
# server, Debian's python3-aiosmtpd).
# Installs what the tests need on a fresh Debian machine first.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
# The service unit's hardening is rated by systemd's own analyzer.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# The metrics tests (tests/http/metrics.rs) read GET /metrics with the reference OpenMetrics parser,
# Python's prometheus_client, as Debian packages it for /usr/bin/python3.
[ -x /usr/bin/python3 ] || need_apt+=(python3)
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need_apt+=(python3-prometheus-client)
# The mail tests start a real SMTP server: aiosmtpd, run by Debian's own Python.
{ [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1; } || need_apt+=(python3-aiosmtpd)
# The tests of `[store] kind = "postgres"` (tests/cli/instances.rs, tests/cli/shared.rs) initdb and
# start their own cluster from Debian's binaries in /usr/lib/postgresql/<version>/bin; no system
# service is used.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "Installing ${need_apt[*]} for the tests..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# The accessibility engine the browser tests inject into every page: axe-core, pinned, from the npm
# registry into target/axe (ignored by git; never from a CDN).
AXE_VERSION=4.14.1
if [ ! -f target/axe/node_modules/axe-core/axe.min.js ] ||
   ! grep -q "\"version\": \"$AXE_VERSION\"" target/axe/node_modules/axe-core/package.json; then
  command -v npm >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
  echo "Installing axe-core $AXE_VERSION for the browser tests..."
  mkdir -p target/axe
  npm install --silent --no-save --no-audit --no-fund --prefix target/axe "axe-core@$AXE_VERSION"
fi

# --no-fail-fast: a failing test binary does not hide the results of the others. Examples and benchmark
# binaries hold no tests; they are built (and so checked) by clippy in CI.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --lib --bins --tests --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
