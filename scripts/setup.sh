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
