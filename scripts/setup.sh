#!/usr/bin/env bash
# Everything embed-multi needs on a fresh clone, skipping what is already
# there: npm packages, the compiled CLI, and (scripts/setup-python.sh) the
# Python environment with the inference server and the offline model.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
log() { echo "[setup] $*" >&2; }

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
npx --no-install tsc -p tsconfig.json
bash scripts/setup-python.sh
# infinity-emb, the third-party server the openai backend's tests run against
# (a venv of its own: its pins clash with the inference server's).
bash scripts/setup-infinity.sh
# promtool (Debian's prometheus package) checks the metrics exposition in the tests.
if ! command -v promtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing Debian's prometheus (for promtool check metrics)"
    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus) >/dev/null 2>&1 \
      || log "could not install prometheus: the metrics test will say so and fail"
  else
    log "promtool is missing and apt-get is not usable here: the metrics test will say so and fail"
  fi
fi
