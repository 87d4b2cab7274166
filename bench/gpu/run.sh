#!/usr/bin/env bash
# The GPU benchmark, for a host with a GPU, torch, transformers, sentence-transformers and
# grpcio, but no network and no Node.js. Run from the repository root with the kit that
# bench/gpu/prepare.sh built carried along (bench/work/gpu-kit):
#
#   bash bench/gpu/run.sh                 # GPU: 2 models x float16/bfloat16, >= 20,000 paragraphs
#   bash bench/gpu/run.sh --cpu-dry-run   # here: the same code paths on the CPU, 24 paragraphs
#
# Prints progress lines with timestamps, then one Markdown table; appends it to bench/RESULTS.md
# and, when $OUT is set (the device tool's folder that comes back), writes the section
# (results.md), the raw figures (results.json) and the logs there, since the host's copy of the
# working tree is thrown away.
# Environment: EMBED_BENCH_PYTHON (default: python3 on the GPU, .venv/bin/python in a dry run),
# EMBED_BENCH_ROWS (paragraphs, default 20000), EMBED_BENCH_BUDGET_S (no measurement starts
# after this many seconds, default 420, so that the whole run ends within 8 minutes).
set -euo pipefail

export EMBED_BENCH_T0="${EMBED_BENCH_T0:-$(date +%s.%N)}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
kit="$root/bench/work/gpu-kit"
here="$root/bench/gpu"

dry=0
case "${1:-}" in
--cpu-dry-run) dry=1 ;;
"") ;;
*)
  echo "usage: bash bench/gpu/run.sh [--cpu-dry-run]" >&2
  exit 2
  ;;
esac

say() { echo "[$(date +%H:%M:%S)] run.sh: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

# Never the hub: the models are made here and the host has no network anyway.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
export TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=true
# A stray CUDA_LAUNCH_BLOCKING=1 would serialize every kernel and halve the figures.
unset CUDA_LAUNCH_BLOCKING

if ((dry)); then
  python="${EMBED_BENCH_PYTHON:-$root/.venv/bin/python}"
  device=cpu
  dtypes=(float32) # the server refuses float16/bfloat16 on the CPU
  threads=2
  rows="${EMBED_BENCH_ROWS:-16}" # bge-large takes seconds per paragraph on two cores
  limit="$rows" # a tiny slice, not repeated
  warmup_rows=4
  st_warmup_rows=2
  warmup_batches=0 # each bge-large batch takes seconds on two cores
  matmul_seconds=0.3
  # Small batches, so that the slice makes several: the summary's rate runs from the first
  # batch to the last.
  batch_size=4
  budget=0 # no time budget: it is only a check that everything runs
else
  python="${EMBED_BENCH_PYTHON:-python3}"
  device=cuda:0
  dtypes=(float16 bfloat16)
  threads=0 # torch's default: every core
  rows="${EMBED_BENCH_ROWS:-20000}"
  limit=0
  warmup_rows=2048
  st_warmup_rows=256
  warmup_batches=3
  matmul_seconds=0.5
  batch_size=512
  budget="${EMBED_BENCH_BUDGET_S:-420}"
fi
command -v "$python" >/dev/null || die "no Python at '$python' (set EMBED_BENCH_PYTHON)"

[[ -d "$kit" ]] || ((dry)) ||
  die "$kit is missing: run 'bash bench/gpu/prepare.sh' on the development machine and carry it"

# Scratch space: the models (1.4 GB), the input and the outputs; removed at exit.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/embed-gpu-bench.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
trap 'exit 143' TERM INT # so that the EXIT trap runs on a timeout too
# The small results (the section, results.json, the logs), written as they come: straight into
# $OUT where the device tool sets it (the host's working tree is thrown away, and a run cut
# short by a timeout keeps what it had), else into the ignored bench/work/.
if [[ -n "${OUT:-}" ]]; then
  results_dir="$OUT"
else
  results_dir="$root/bench/work/gpu-run"
  rm -rf "$results_dir"
fi
mkdir -p "$results_dir/logs"

# --- Node and the orchestrator: from the kit (decompressed with Python's lzma, as the host
# may lack xz); a dry run without a kit falls back to this machine's node and build.
if [[ -f "$kit/node.xz" ]]; then
  node="$scratch/node"
  "$python" -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)' "$kit/node.xz" "$node"
  chmod +x "$node"
  cli="$kit/orchestrator/bin/embed-multi.js"
else
  node="$(command -v node || true)"
  cli="$root/bin/embed-multi.js"
fi
[[ -n "$node" ]] || die "no node: the kit has none and none is installed"
say "node $("$node" --version) at $node; orchestrator $cli"
# The native addon is the part most likely not to fit another host (glibc >= 2.34 here).
"$node" -e '
  const req = require("node:module").createRequire(process.argv[1]);
  new (req("better-sqlite3"))(":memory:").close();' "$(dirname "$(dirname "$cli")")/package.json" ||
  die "the orchestrator's better-sqlite3 addon does not load with this node on this host"

# --- Python: the server's modules from the working tree; the kit's gRPC packages only where
# the host's are missing or too old (preflight tries the host's first).
extra="$(EMBED_BENCH_T0="$EMBED_BENCH_T0" "$python" "$here/bench.py" preflight \
  --kit "$kit" --scratch "$scratch")" || die "preflight failed (see above)"
export PYTHONPATH="$root/inference-server${extra:+:$extra}${PYTHONPATH:+:$PYTHONPATH}"
if ((!dry)); then
  "$python" -c 'import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)' || die "torch sees no CUDA device"
fi

# --- Models: real configs, random weights, the kit's tokenizer files.
tokenizer="$kit/tokenizer"
[[ -f "$tokenizer/vocab.txt" ]] || tokenizer="$root/models/sentence-transformers/all-MiniLM-L6-v2"
say "building the models (random weights) in $scratch/models"
"$python" "$here/make_models.py" --out "$scratch/models" --tokenizer "$tokenizer" \
  >"$results_dir/models.jsonl"

# --- Input: the unarXive sample, repeated to >= $rows paragraphs.
"$python" "$here/bench.py" make-input --out "$scratch/input.jsonl" \
  --warmup-out "$scratch/warmup.jsonl" --warmup-rows "$warmup_rows" \
  --min-rows "$rows" --limit "$limit" \
  "$root/../shared/data/unarxive-2212-paragraphs.jsonl" \
  "$root/shared/data/unarxive-2212-paragraphs.jsonl" \
  "$kit/corpus.jsonl.xz" \
  "$root/examples/paragraphs.jsonl" >"$results_dir/input.json"
say "input: $(cat "$results_dir/input.json")"

# --- Provenance: git where the tree has it, else what prepare.sh wrote.
if commit="$(git rev-parse --short HEAD 2>/dev/null)"; then
  [[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] ||
    commit="$commit (with uncommitted changes)"
elif [[ -f "$kit/COMMIT" ]]; then
  commit="$(cat "$kit/COMMIT") (from the kit)"
else
  commit=unknown
fi

deadline=0
if ((budget > 0)); then
  deadline="$(awk -v t0="$EMBED_BENCH_T0" -v b="$budget" 'BEGIN { printf "%.0f", t0 + b }')"
fi
status=0
"$python" "$here/bench.py" drive \
  --model-dir "$scratch/models" --device "$device" --threads "$threads" \
  --dtypes "${dtypes[@]}" --input "$scratch/input.jsonl" --input-info "$results_dir/input.json" \
  --warmup-input "$scratch/warmup.jsonl" --warmup-rows "$warmup_rows" \
  --st-warmup-rows "$st_warmup_rows" --warmup-batches "$warmup_batches" \
  --matmul-seconds "$matmul_seconds" --deadline "$deadline" \
  --batch-size "$batch_size" --max-batch-tokens 65536 --max-workers 4 \
  --node "$node" --cli "$cli" --work "$scratch" --logs "$results_dir/logs" \
  --section-out "$results_dir/results.md" --results "$root/bench/RESULTS.md" \
  --commit "$commit" || status=$?
say "done in $(awk -v t0="$EMBED_BENCH_T0" -v now="$(date +%s.%N)" 'BEGIN { printf "%.0f", now - t0 }') s (status $status); results in $results_dir"
exit "$status"
