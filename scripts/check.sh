#!/usr/bin/env bash
# Every check: type check, linters and formatters of both languages, the
# contract's lint, the TypeScript tests (node's runner) and the Python tests
# (pytest). Expects scripts/setup.sh to have run (npm test does both).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="${EMBED_VENV:-$root/.venv}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
step() { echo "== $*" >&2; }

step "type check (tsc)"
npx --no-install tsc -p tsconfig.json
step "lint and format (biome)"
npx --no-install biome check src test bench bin
step "contract lint (buf)"
npx --no-install buf lint
step "lint and format (ruff)"
"$venv/bin/ruff" check inference-server
"$venv/bin/ruff" format --check inference-server
step "deployment files (compose, Dockerfiles, Kubernetes)"
bash scripts/check-deploy.sh
step "TypeScript tests (node --test)"
node --test --test-concurrency=1 --test-reporter=spec dist/test/
step "Python tests (pytest)"
(cd inference-server && "$venv/bin/python" -m pytest -q)
