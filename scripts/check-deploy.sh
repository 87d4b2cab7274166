#!/usr/bin/env bash
# Static checks of the deployment files. No Docker engine runs on the development
# machines or in CI, so nothing is built or started: the files are validated as
# files. Every check runs; the script names each one that failed and exits 1.
#
#   compose      Debian's docker-compose (installed when missing) renders
#                docker-compose.yml + docker-compose.override.yml (what `docker
#                compose up` reads: GPU), docker-compose.yml alone, and + the CPU
#                override; any error or warning fails
#   dockerfiles  dockerfilelint on both Dockerfiles (.dockerfilelintrc)
#   set-up       Dockerfile.inference installs with scripts/setup-python.sh, the
#                script scripts/setup.sh runs for developers and CI
#   healthcheck  deploy/healthcheck.py parses (and passes ruff, when the venv has it)
#   schemas      every manifest under deploy/k8s (and sharded/) against the real
#                Kubernetes $K8S_VERSION OpenAPI schemas, strict (unknown fields fail), with
#                PyPI's kubernetes-validate: its wheel ships the schemas of each version,
#                so nothing is fetched (installed by scripts/setup-python.sh, dev extra)
#   files        scripts/check-deploy.mjs: the rendered compose models, Dockerfiles vs.
#                .dockerignore, and every manifest under deploy/k8s (probe ports,
#                the dns:/// target, GPU limits, non-root, ...)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 1
venv="${EMBED_VENV:-$root/.venv}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=()
step() { echo "== deploy: $*" >&2; }
fail() {
  echo "FAIL (deploy): $1" >&2
  failed+=("$1")
}

step "compose files (docker-compose config)"
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "installing Debian's docker-compose (used here only to validate)" >&2
  if ! (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y docker-compose) >"$tmp/apt.log" 2>&1; then
    tail -n 20 "$tmp/apt.log" >&2
  fi
fi
render() { # NAME [-f FILE ...]: docker-compose's merged model into $tmp/NAME.yml
  local name="$1"
  shift
  # The caller's COMPOSE_* settings must not change which files are read.
  if ! env -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME -u COMPOSE_PROFILES \
    docker-compose "$@" config >"$tmp/$name.yml" 2>"$tmp/$name.err"; then
    cat "$tmp/$name.err" >&2
    fail "compose ($name): docker-compose ${*:-} config: invalid"
  elif [ -s "$tmp/$name.err" ]; then
    cat "$tmp/$name.err" >&2
    fail "compose ($name): docker-compose ${*:-} config: warnings"
  fi
}
if command -v docker-compose >/dev/null 2>&1; then
  render gpu # no -f: docker-compose.yml + docker-compose.override.yml
  render base -f docker-compose.yml
  render cpu -f docker-compose.yml -f docker-compose.cpu.yml
else
  fail "docker-compose is not installed and could not be installed"
fi

step "Dockerfiles (dockerfilelint)"
if ! npx --no-install dockerfilelint Dockerfile.inference Dockerfile.orchestrator >"$tmp/lint.out" 2>&1; then
  cat "$tmp/lint.out" >&2
  fail "dockerfilelint"
fi

step "Dockerfile.inference installs with scripts/setup-python.sh"
# One instruction per line: continuation lines joined.
joined="$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' Dockerfile.inference)"
run_line="$(grep -E '^RUN .*scripts/setup-python\.sh' <<<"$joined" || true)"
if [ -z "$run_line" ]; then
  fail "Dockerfile.inference has no RUN line running scripts/setup-python.sh"
else
  for setting in 'EMBED_VENV=/opt/venv' 'EMBED_MODEL_DIR=/models' 'EMBED_PIP_EXTRAS="$SERVER_EXTRAS"'; do
    grep -qF -- "$setting" <<<"$run_line" || fail "Dockerfile.inference: the set-up RUN line lacks $setting"
  done
fi
# The image's extras: the CPU engine at most, never the test tools of the dev extra.
extras="$(grep -E '^ARG SERVER_EXTRAS=' Dockerfile.inference | head -1 | cut -d= -f2-)"
if [ -z "$(grep -E '^ARG SERVER_EXTRAS=' Dockerfile.inference)" ]; then
  fail "Dockerfile.inference has no ARG SERVER_EXTRAS"
elif grep -qw dev <<<"$extras"; then
  fail "Dockerfile.inference installs the dev extra (test tools) into the image: SERVER_EXTRAS=$extras"
fi
grep -qE '^COPY +scripts/setup-python\.sh ' <<<"$joined" \
  || fail "Dockerfile.inference does not COPY scripts/setup-python.sh"
grep -qE '^[^#]*scripts/setup-python\.sh' scripts/setup.sh \
  || fail "scripts/setup.sh no longer runs scripts/setup-python.sh (the Dockerfile must run the same script)"

step "deploy/healthcheck.py"
# Parsed, not byte-compiled: nothing is written into the work tree.
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' deploy/healthcheck.py >&2 \
  || fail "deploy/healthcheck.py does not parse"
if [ -x "$venv/bin/ruff" ]; then
  "$venv/bin/ruff" check --quiet --line-length 100 deploy/healthcheck.py >&2 || fail "ruff check deploy/healthcheck.py"
  "$venv/bin/ruff" format --quiet --check --line-length 100 deploy/healthcheck.py >&2 || fail "ruff format deploy/healthcheck.py"
fi

# The version deploy/k8s/README.md names: Indexed Jobs' backoffLimitPerIndex is GA there.
K8S_VERSION=1.33.0
step "Kubernetes manifests against the $K8S_VERSION schemas (kubernetes-validate --strict)"
if [ -x "$venv/bin/kubernetes-validate" ]; then
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" deploy/k8s/*.yaml deploy/k8s/sharded/*.yaml >&2 \
    || fail "kubernetes-validate: a manifest does not match the Kubernetes $K8S_VERSION schemas"
else
  fail "kubernetes-validate is not in $venv (scripts/setup-python.sh installs it with the dev extra)"
fi

step "compose models, Dockerfiles, .dockerignore, Kubernetes manifests"
node scripts/check-deploy.mjs "$tmp/gpu.yml" "$tmp/base.yml" "$tmp/cpu.yml" || fail "deployment file checks"

if [ "${#failed[@]}" -gt 0 ]; then
  echo "deploy: ${#failed[@]} check(s) failed:" >&2
  printf '  - %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "deploy: every check holds" >&2
