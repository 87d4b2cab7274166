#!/usr/bin/env bash
# The GPU benchmark, for a host with a GPU, torch, transformers, sentence-transformers and
# grpcio, but no network and no Node.js. Run from the repository root with the kit that
# bench/gpu/prepare.sh built carried along (bench/work/gpu-kit):
#
#   bash bench/gpu/run.sh [--model bge-large|minilm] [--dtype float16|bfloat16] [--skip-st]
#                         [--fast-path auto|on|off] [--no-ceiling]
#   bash bench/gpu/run.sh --cpu-dry-run   # here: the same code paths on the CPU, 16 paragraphs
#
# --model and --dtype (repeatable) pick what is measured (default: both models, float16 and
# bfloat16, which does not fit one 8-minute call: run one model and dtype per call);
# --skip-st skips the slow SentenceTransformer.encode baseline; --fast-path is the server's
# (default auto: the packed BERT path on CUDA; a dry run forces it on so that it runs);
# --no-ceiling skips the orchestrator ceiling (debug engine, 200,000 rows, run first).
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

usage() {
  echo "usage: bash bench/gpu/run.sh [--cpu-dry-run] [--model bge-large|minilm]..." \
    "[--dtype float16|bfloat16]... [--skip-st] [--fast-path auto|on|off] [--no-ceiling]" >&2
  exit 2
}
dry=0
models=()
dtype_flags=()
skip_st=0
fast_path=""
ceiling=1
while (($#)); do
  case "$1" in
  --cpu-dry-run) dry=1 ;;
  --model)
    [[ "${2:-}" == bge-large || "${2:-}" == minilm ]] || usage
    models+=("$2")
    shift
    ;;
  --dtype)
    [[ "${2:-}" == float16 || "${2:-}" == bfloat16 || "${2:-}" == float32 ]] || usage
    dtype_flags+=("$2")
    shift
    ;;
  --skip-st) skip_st=1 ;;
  --fast-path)
    [[ "${2:-}" == auto || "${2:-}" == on || "${2:-}" == off ]] || usage
    fast_path="$2"
    shift
    ;;
  --no-ceiling) ceiling=0 ;;
  *) usage ;;
  esac
  shift
done

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
  # bge-large's worker (in-process, the float32 check, the bare forward, ST encode) takes
  # over 10 minutes on two busy cores.
  run_timeout=2400
  ceiling_rows="${EMBED_BENCH_CEILING_ROWS:-2000}"
  # The CPU default is the reference path; the dry run forces the fast path so that it runs.
  fast_path="${fast_path:-on}"
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
  ceiling_rows="${EMBED_BENCH_CEILING_ROWS:-200000}"
  run_timeout=600
fi
fast_path="${fast_path:-auto}"
((${#dtype_flags[@]} == 0)) || dtypes=("${dtype_flags[@]}")
python="$(command -v "$python")" || die "no Python at '$python' (set EMBED_BENCH_PYTHON)"

[[ -d "$kit" ]] || ((dry)) ||
  die "$kit is missing: run 'bash bench/gpu/prepare.sh' on the development machine and carry it"

# Scratch space: the models (1.4 GB), the input and the outputs; removed at exit.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/embed-gpu-bench.XXXXXX")"
trap 'exit 143' TERM INT # so that the EXIT trap runs on a timeout too
# The small results (the section, results.json, models.jsonl, input.json), written as they
# come: straight into $OUT where the device tool sets it (the host's working tree is thrown
# away, and a run cut short by a timeout keeps what it had), else into the ignored bench/work/.
# $OUT brings back at most 8 files, and each model and dtype writes 3 logs: there the logs go
# to the scratch folder and come back as one logs.tar.gz, packed at exit (a timeout too).
if [[ -n "${OUT:-}" ]]; then
  results_dir="$OUT"
  logs="$scratch/logs"
  trap 'tar -C "$scratch" -czf "$OUT/logs.tar.gz" logs 2>/dev/null; rm -rf "$scratch"' EXIT
else
  results_dir="$root/bench/work/gpu-run"
  rm -rf "$results_dir"
  logs="$results_dir/logs"
  trap 'rm -rf "$scratch"' EXIT
fi
mkdir -p "$results_dir" "$logs"

# --- Before anything else: the kit's wheels (grpcio 1.85.3 for CPython 3.12 and
# sentence-transformers 6.2.0; the GPU host has an older grpcio and sentence-transformers
# 6.0.1, which lacks SentenceTransformer.preprocess). Installed into the scratch folder, not
# the host's site-packages, and put first on PYTHONPATH. A wheel that does not fit this
# Python (the cp312 grpcio in a dry run on 3.11) is skipped with a line saying so.
wheels="$scratch/wheels"
mkdir -p "$wheels"
for wheel in "$kit"/wheels/*.whl; do
  [[ -f "$wheel" ]] || continue
  if "$python" -m pip --version >/dev/null 2>&1; then
    if "$python" -m pip install --no-index --no-deps --quiet --disable-pip-version-check \
      --target "$wheels" "$wheel" >>"$scratch/pip.log" 2>&1; then
      say "installed $(basename "$wheel") into $wheels"
    else
      say "skipped $(basename "$wheel"): pip refused it here (see below)"
      tail -n 3 "$scratch/pip.log" >&2
    fi
  # No pip on the host: a wheel of pure modules and one extension is a zip to unpack.
  elif "$python" - "$wheel" "$wheels" <<'UNPACK'; then
import sys, sysconfig, zipfile
wheel, target = sys.argv[1], sys.argv[2]
tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
name = wheel.rsplit("/", 1)[-1]
if "-py3-none-any" not in name and f"-{tag}-" not in name:
    sys.exit(1)
zipfile.ZipFile(wheel).extractall(target)
UNPACK
    say "unpacked $(basename "$wheel") into $wheels (no pip)"
  else
    say "skipped $(basename "$wheel"): it does not fit this Python"
  fi
done
export PYTHONPATH="$wheels${PYTHONPATH:+:$PYTHONPATH}"

# --- Node and the orchestrator: from the kit (decompressed with Python's lzma, as the host
# may lack xz); a dry run without a kit falls back to this machine's node and build.
if [[ -f "$kit/node.xz" ]]; then
  node="$scratch/node"
  "$python" -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)' "$kit/node.xz" "$node"
  chmod +x "$node"
  # The orchestrator comes packed (xz -9: Parquet and Arrow make it 46 MiB as it is).
  "$python" -c 'import sys, tarfile
with tarfile.open(sys.argv[1], "r:xz") as archive:
    archive.extractall(sys.argv[2], filter="data")' "$kit/orchestrator.tar.xz" "$scratch" ||
    die "cannot unpack $kit/orchestrator.tar.xz"
  cli="$scratch/orchestrator/bin/embed-multi.js"
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

# --- The orchestrator ceiling (debug engine, dim 1024, no GPU): first, as it is short and
# independent of the models; a wrapper runs this Python's server, as the orchestrator spawns
# one executable.
ceiling_md="$scratch/ceiling.md"
if ((ceiling)); then
  bench_js="$(dirname "$(dirname "$cli")")/dist/bench/ceiling.js"
  server_cmd="$scratch/embed-inference-server"
  printf '#!/bin/sh\nexec "%s" -m embed_inference "$@"\n' "$python" >"$server_cmd"
  chmod +x "$server_cmd"
  if [[ -f "$bench_js" ]]; then
    say "orchestrator ceiling: $ceiling_rows rows, debug engine, dim 1024 ($bench_js)"
    if EMBED_INFERENCE_SERVER="$server_cmd" timeout 150 "$node" "$bench_js" "$ceiling_rows" 0 \
      --no-jsonl >"$ceiling_md" 2>"$logs/ceiling.log"; then
      say "ceiling: $(grep -E '^\| batch 256' "$ceiling_md" | head -1)"
    else
      say "the ceiling run failed (see logs/ceiling.log)"
      tail -n 5 "$logs/ceiling.log" >&2
      : >"$ceiling_md"
    fi
  else
    say "no $bench_js: ceiling skipped (rebuild the kit, or 'npm run build' for a dry run)"
  fi
fi

# --- Models: real configs, random weights, the kit's tokenizer files.
tokenizer="$kit/tokenizer"
[[ -f "$tokenizer/vocab.txt" ]] || tokenizer="$root/models/sentence-transformers/all-MiniLM-L6-v2"
say "building the models (random weights) in $scratch/models"
only=()
for m in "${models[@]}"; do
  case "$m" in
  bge-large) only+=(--only bge-large-en-v1.5-random) ;;
  minilm) only+=(--only all-MiniLM-L6-v2-random) ;;
  esac
done
"$python" "$here/make_models.py" --out "$scratch/models" --tokenizer "$tokenizer" "${only[@]}" \
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
drive_flags=()
((!skip_st)) || drive_flags+=(--skip-st)
"$python" "$here/bench.py" drive \
  --model-dir "$scratch/models" --device "$device" --threads "$threads" \
  --dtypes "${dtypes[@]}" --input "$scratch/input.jsonl" --input-info "$results_dir/input.json" \
  --warmup-input "$scratch/warmup.jsonl" --warmup-rows "$warmup_rows" \
  --st-warmup-rows "$st_warmup_rows" --warmup-batches "$warmup_batches" \
  --matmul-seconds "$matmul_seconds" --deadline "$deadline" \
  --batch-size "$batch_size" --max-batch-tokens 65536 --max-workers 4 \
  --node "$node" --cli "$cli" --plan-js "$(dirname "$(dirname "$cli")")/dist/bench/gpu/plan.js" --work "$scratch" --logs "$logs" \
  --section-out "$results_dir/results.md" --results "$root/bench/RESULTS.md" \
  --commit "$commit" --run-timeout "$run_timeout" --fast-path "$fast_path" --models "${models[@]}" "${drive_flags[@]}" ||
  status=$?
# The ceiling's section goes with the models' (into $OUT's results.md, and bench/RESULTS.md
# unless ceiling.js, run from this tree's dist/, has appended it there itself).
if [[ -s "$ceiling_md" ]]; then
  cat "$ceiling_md" >>"$results_dir/results.md"
  [[ "$(dirname "$(dirname "$cli")")" == "$root" ]] || cat "$ceiling_md" >>"$root/bench/RESULTS.md"
fi
say "done in $(awk -v t0="$EMBED_BENCH_T0" -v now="$(date +%s.%N)" 'BEGIN { printf "%.0f", now - t0 }') s (status $status); results in $results_dir"
exit "$status"
