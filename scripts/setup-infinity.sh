#!/usr/bin/env bash
# A virtual environment of its own for infinity-emb, the third-party
# OpenAI-compatible embedding server the `openai` backend's tests run
# against. Its pins (numpy<2, sentence-transformers<4, transformers<=5.0)
# clash with the inference server's, so it never goes into .venv. Torch is the
# one thing it shares: a path file points at the torch of .venv (1.2 GB plus
# its CUDA libraries, which nothing should download twice), and pip is told
# nothing about it, so it never tries to install or replace it.
# pip install is never run in this venv after the link is made (a changed pin
# list remakes the venv from scratch). Skips everything when the stamp matches.
#
#   EMBED_VENV           the inference server's venv (default: <repo>/.venv)
#   EMBED_INFINITY_VENV  this venv         (default: <repo>/.cache/infinity-venv)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
main_venv="${EMBED_VENV:-$root/.venv}"
venv="${EMBED_INFINITY_VENV:-$root/.cache/infinity-venv}"
log() { echo "[setup-infinity] $*" >&2; }

# The versions are pinned so the tests meet the same server every time.
pins=(
  "infinity-emb[server]==0.0.78"
  "sentence-transformers==3.4.1"
  "transformers==4.57.1"
  "numpy<2"
  "scipy<1.15"
  "scikit-learn<1.7"
  sympy networkx jinja2 fsspec filelock typing-extensions
)
main_site="$("$main_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
want="$(printf '%s\n' "${pins[@]}" | sha256sum | cut -d' ' -f1) $main_site"
stamp="$venv/.embed-multi-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

log "creating the infinity-emb virtual environment in $venv (pip caches the downloads)"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
# The same interpreter as .venv, so the shared torch's compiled parts load.
base="$("$main_venv/bin/python" -c 'import sys; print(sys._base_executable)')"
"$base" -m venv "$venv"
pip_log="$venv/.pip.log"
pip_install() {
  "$venv/bin/python" -m pip install --disable-pip-version-check "$@" >>"$pip_log" 2>&1 || {
    tail -n 40 "$pip_log" >&2
    log "pip install failed; the whole log is in $pip_log"
    exit 1
  }
}
# sentence-transformers names torch as a requirement; --no-deps keeps pip
# from fetching a second one. Its other requirements are in the list.
pip_install "${pins[0]}" "${pins[@]:2}"
pip_install --no-deps "${pins[1]}"
pip_install "tqdm" "Pillow" "huggingface-hub>=0.32"

# torch, its CUDA libraries and triton, linked from .venv after the last pip
# install (pip never resolves against them). torch's dist-info comes too:
# transformers asks importlib.metadata whether torch is there.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
shared="$venv/shared-torch"
mkdir -p "$shared"
for name in torch functorch torchgen triton nvidia cuda "$main_site"/torch-*.dist-info; do
  name="$(basename "$name")"
  if [ -e "$main_site/$name" ]; then ln -sfn "$main_site/$name" "$shared/$name"; fi
done
echo "$shared" > "$site/embed-multi-shared-torch.pth"
"$venv/bin/python" -c 'import torch, infinity_emb, sentence_transformers' >>"$pip_log" 2>&1 || {
  tail -n 20 "$pip_log" >&2
  log "the infinity-emb environment does not import; the whole log is in $pip_log"
  exit 1
}
echo "$want" > "$stamp"
log "infinity-emb ready: $venv/bin/infinity_emb"
