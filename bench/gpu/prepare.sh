#!/usr/bin/env bash
# Builds bench/work/gpu-kit/: everything the GPU benchmark (bench/gpu/run.sh) needs on a host
# that has no network and no Node.js, in ONE folder to carry (ignored by git, so a device run
# gets it only when named in its carry list). Runs here, on the development machine, after
# scripts/setup.sh (it needs dist/, node_modules/ and .venv/).
#
#   bash bench/gpu/prepare.sh
#   bash bench/gpu/prepare.sh --orchestrator-only DIR [--fast]
#
# The second form builds only the orchestrator's archive, into DIR, and checks it against its
# share of the limit: the one part that grows with this repository's code and npm
# dependencies. --fast packs it with gzip -6 instead of xz -9: seconds instead of a minute or
# two, and never smaller, so a --fast archive under the share means the real one is too (the
# test suite runs it: test/gpu-kit.test.ts).
#
# Contents: node.xz (this machine's node, xz -9), orchestrator.tar.xz (package.json, bin/,
# dist/src/ and the production node_modules with better-sqlite3's native addon; xz -9, since
# Parquet and Arrow make it 46 MiB as it is, and run.sh unpacks it with Python), tokenizer/ (the
# bert-base-uncased files of the offline all-MiniLM-L6-v2, no weights), corpus.jsonl.xz (the
# unarXive sample, which lies outside the working tree), pylib/ (protobuf, grpc_health and
# grpc_reflection from .venv: pure Python, or abi3), grpcio-cpXY.tar.xz (grpcio from .venv, used
# only when the host's grpcio is too old and its Python matches), wheels/ (grpcio 1.85.3 for
# CPython 3.12 manylinux x86_64 and sentence-transformers 6.2.0, which run.sh installs first:
# the GPU host runs Python 3.12 with an older grpcio and sentence-transformers 6.0.1), COMMIT
# and MANIFEST.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
kit="bench/work/gpu-kit"
venv="${EMBED_VENV:-$root/.venv}"
# EMBED_BENCH_CORPUS: where a worktree has no ../shared beside it.
corpus="${EMBED_BENCH_CORPUS:-$root/../shared/data/unarxive-2212-paragraphs.jsonl}"
tokenizer_src="models/sentence-transformers/all-MiniLM-L6-v2"
# The device tool carries at most 64 MiB in all; leave room for the rest of the working tree.
# Each part has its own ceiling too (bench/gpu/kit-budget.txt), so that a part that grows is
# named, and the orchestrator's can be checked alone.
limit_mib=60
budget_file="bench/gpu/kit-budget.txt"

say() { echo "prepare: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

only=""
fast=0
while (($#)); do
  case "$1" in
  --orchestrator-only)
    [[ $# -ge 2 ]] || die "--orchestrator-only needs a folder"
    only="$2"
    shift 2
    ;;
  --fast)
    fast=1
    shift
    ;;
  *) die "unknown argument '$1' (expected --orchestrator-only DIR [--fast])" ;;
  esac
done
((fast == 0)) || [[ -n "$only" ]] || die "--fast goes with --orchestrator-only"

# The ceiling in MiB of the kit part named $1 (a path in the kit, as kit-budget.txt names it).
budget_of() {
  awk -v part="$1" '$1 == part { print $2; found = 1 } END { exit !found }' "$budget_file" ||
    die "$budget_file has no line for $1"
}
# Dies when the part at $1 (a file or folder; $2 its name in kit-budget.txt) is over its ceiling.
check_part() {
  local bytes ceiling
  bytes="$(du -sb "$1" | cut -f1)"
  ceiling="$(budget_of "$2")"
  ((bytes <= ceiling * 1024 * 1024)) ||
    die "$2 is $((bytes / 1024)) KiB, over its $ceiling MiB in $budget_file"
  say "$2: $((bytes / 1024)) KiB (ceiling $ceiling MiB)"
}

[[ -f dist/src/cli.js ]] || die "dist/ is missing: run 'npm run build' (or scripts/setup.sh) first"
[[ -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ]] ||
  die "node_modules lacks better-sqlite3's native addon: run 'npm ci' first"
[[ -f dist/bench/ceiling.js && -f dist/bench/gpu/plan.js ]] ||
  die "dist/bench/ceiling.js or dist/bench/gpu/plan.js is missing: run 'npm run build'"
command -v xz >/dev/null || ((fast)) || die "xz is not installed"
# The parts' ceilings must leave the whole under the limit.
total_budget="$(awk '!/^#/ && NF == 2 { sum += $2 } END { print sum + 0 }' "$budget_file")"
((total_budget <= limit_mib)) ||
  die "the ceilings in $budget_file add up to $total_budget MiB, over $limit_mib MiB"

# --- The orchestrator: what bin/embed-multi.js loads, nothing else (no tests, no benchmarks),
# built in $1/orchestrator, smoke-tested, then packed into $1/orchestrator.tar.xz (or .tar.gz
# with --fast) and removed.
build_orchestrator() {
  local out="$1" orch="$1/orchestrator" dir bs
  rm -rf "$orch"
  mkdir -p "$orch/bin" "$orch/dist"
  cp package.json "$orch/"
  cp bin/embed-multi.js "$orch/bin/"
  cp -r dist/src "$orch/dist/src"
  # The orchestrator ceiling (bench/ceiling.ts) runs on the GPU host too: its 16 cores, not ours.
  # ceiling.js builds its command line with the tests' cliArgs (test/cli-args.ts, no imports).
  # bench.py cuts its in-process batches with the orchestrator's planner (bench/gpu/plan.ts).
  mkdir -p "$orch/dist/bench/gpu" "$orch/dist/test"
  cp dist/bench/ceiling.js dist/bench/common.js "$orch/dist/bench/"
  cp dist/bench/gpu/plan.js "$orch/dist/bench/gpu/"
  cp dist/test/cli-args.js "$orch/dist/test/"
  # The run-time closure of package.json's dependencies, resolved in package-lock.json the way
  # node resolves them (nested node_modules first); offline, unlike `npm ci --omit=dev`.
  # prebuild-install is pruned: better-sqlite3 runs it only when installing.
  local closure
  # shellcheck disable=SC2016 # JavaScript template literals, not shell expansions
  mapfile -t closure < <(node -e '
    const lock = require(process.argv[1]);
    const pkgs = lock.packages;
    const skip = new Set(["prebuild-install"]);
    const seen = new Set();
    const resolve = (from, name) => {
      for (let dir = from; ; dir = dir.replace(/\/?node_modules\/(@[^/]+\/)?[^/]+$/, "")) {
        const key = `${dir ? `${dir}/` : ""}node_modules/${name}`;
        if (pkgs[key]) return key;
        if (!dir) throw new Error(`cannot resolve ${name} from ${from}`);
      }
    };
    const visit = (key) => {
      if (seen.has(key)) return;
      seen.add(key);
      const entry = pkgs[key];
      const deps = { ...entry.dependencies, ...entry.optionalDependencies };
      for (const name of Object.keys(deps)) {
        if (skip.has(name)) continue;
        const found = resolve(key, name);
        if (found) visit(found);
      }
    };
    for (const name of Object.keys(pkgs[""].dependencies)) visit(resolve("", name));
    for (const key of [...seen].sort()) console.log(key);' "$root/package-lock.json")
  for dir in "${closure[@]}"; do
    [[ -d "$dir" ]] || continue # an optional package not installed on this platform
    mkdir -p "$orch/$dir"
    # Without its nested node_modules: those in the closure are listed themselves.
    tar -C "$dir" --exclude=./node_modules -cf - . | tar -C "$orch/$dir" -xf -
  done
  # better-sqlite3 at run time needs lib/ and the addon; its SQLite sources and build
  # intermediates are most of its size.
  bs="$orch/node_modules/better-sqlite3"
  rm -rf "$bs/deps" "$bs/src" "$bs/build"
  mkdir -p "$bs/build/Release"
  cp node_modules/better-sqlite3/build/Release/better_sqlite3.node "$bs/build/Release/"
  # Type declarations (protobufjs lists @types/node as a dependency) are never loaded.
  rm -rf "$orch/node_modules/@types" "$orch/node_modules/undici-types"
  # Smoke test with this machine's node: the CLI starts and the addon opens a database.
  node "$orch/bin/embed-multi.js" --version >/dev/null || die "the kit's orchestrator does not start"
  node -e '
    const req = require("node:module").createRequire(process.argv[1]);
    new (req("better-sqlite3"))(":memory:").close();' "$(cd "$orch" && pwd)/package.json" ||
    die "the kit's better-sqlite3 does not load"
  # The benchmark's relative imports all lie in the kit (a missing one fails only on the host).
  # shellcheck disable=SC2016 # JavaScript template literals, not shell expansions
  node -e '
    const { readFileSync, existsSync, readdirSync } = require("node:fs");
    const { dirname, join } = require("node:path");
    const dir = process.argv[1];
    for (const name of readdirSync(dir, { recursive: true })) {
      const file = join(dir, name);
      if (!file.endsWith(".js")) continue;
      for (const m of readFileSync(file, "utf8").matchAll(/from "(\.[^"]+)"/g)) {
        if (!existsSync(join(dirname(file), m[1]))) {
          console.error(`${file} imports ${m[1]}, which is not in the kit`);
          process.exit(1);
        }
      }
    }' "$orch/dist/bench" || die "the kit's benchmark misses a module"
  say "packing $(du -sm "$orch" | cut -f1) MiB of orchestrator"
  if ((fast)); then
    tar -C "$out" -cf - orchestrator | gzip -6 >"$out/orchestrator.tar.gz"
    check_part "$out/orchestrator.tar.gz" orchestrator.tar.xz
  else
    tar -C "$out" -cf - orchestrator | xz -T0 -9 >"$out/orchestrator.tar.xz"
    check_part "$out/orchestrator.tar.xz" orchestrator.tar.xz
  fi
  rm -rf "$orch"
}

if [[ -n "$only" ]]; then
  mkdir -p "$only"
  build_orchestrator "$only"
  exit 0
fi

[[ -x "$venv/bin/python" ]] || die "no Python environment at $venv: run scripts/setup.sh first"
[[ -f "$tokenizer_src/tokenizer.json" ]] || die "$tokenizer_src is missing (scripts/setup.sh)"
# A stale dist/ would benchmark other code than the commit the kit names.
while IFS= read -r ts; do
  js="dist/${ts%.ts}.js"
  [[ "$ts" == *.d.ts || ( -f "$js" && ! "$ts" -nt "$js" ) ]] ||
    say "warning: $js is older than $ts (or missing): run 'npm run build'"
done < <(find src -name '*.ts')

rm -rf "$kit"
mkdir -p "$kit"

# --- Node: the binary itself (self-contained apart from glibc and libstdc++).
node_bin="$(readlink -f "$(command -v node)")"
# xz -9 of ~95 MB takes a minute or more on two cores: reuse the last result for the same binary.
cache="bench/work/.cache"
node_sum="$(sha256sum "$node_bin" | cut -c1-16)"
if [[ ! -f "$cache/node-$node_sum.xz" ]]; then
  say "compressing $node_bin ($(node --version))"
  mkdir -p "$cache"
  rm -f "$cache"/node-*.xz
  xz -T0 -9 -c "$node_bin" >"$cache/node-$node_sum.xz.part"
  mv "$cache/node-$node_sum.xz.part" "$cache/node-$node_sum.xz"
fi
cp "$cache/node-$node_sum.xz" "$kit/node.xz"

build_orchestrator "$kit"

# --- Tokenizer files (the bert-base-uncased vocabulary shared by both benchmark models).
mkdir -p "$kit/tokenizer"
for f in tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
  cp "$tokenizer_src/$f" "$kit/tokenizer/"
done

# --- The corpus: ../shared is not part of the working tree a device run receives.
if [[ -f "$corpus" ]]; then
  xz -T0 -9 -c "$corpus" >"$kit/corpus.jsonl.xz"
else
  say "warning: $corpus not found: the GPU run will repeat examples/paragraphs.jsonl instead"
fi

# --- Python packages a bare host may lack or hold in too old a version: the server imports
# grpc_health and grpc_reflection, and the generated code in inference-server/embedmulti needs
# protobuf >= 7.35.1 (< 8) and grpcio >= 1.85.1. run.sh adds these only where the host's own
# fail the import check.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$kit/pylib/google"
cp -r "$site/grpc_health" "$site/grpc_reflection" "$kit/pylib/"
cp -r "$site/google/protobuf" "$site/google/_upb" "$kit/pylib/google/"
cp -r "$site"/protobuf-*.dist-info "$site"/grpcio_health_checking-*.dist-info \
  "$site"/grpcio_reflection-*.dist-info "$kit/pylib/"
find "$kit/pylib" -name __pycache__ -type d -prune -exec rm -rf {} +
# grpcio is compiled for one CPython version: carried compressed, used only on a matching host.
pytag="$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
(cd "$site" && tar --exclude=__pycache__ -cf - grpc grpcio-*.dist-info) | xz -T0 -9 >"$kit/grpcio-$pytag.tar.xz"

# --- Wheels for the GPU host's Python 3.12 (its grpcio is too old; its sentence-transformers
# 6.0.1 lacks SentenceTransformer.preprocess). Downloaded once, cached in bench/work/.cache.
wheel_cache="$cache/wheels"
wheel_specs=(grpcio==1.85.3 sentence-transformers==6.2.0)
if [[ ! -f "$wheel_cache/grpcio-1.85.3-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl" ||
  ! -f "$wheel_cache/sentence_transformers-6.2.0-py3-none-any.whl" ]]; then
  say "downloading ${wheel_specs[*]} (cp312, manylinux x86_64)"
  mkdir -p "$wheel_cache"
  "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$wheel_cache" "${wheel_specs[@]}" ||
    die "could not download ${wheel_specs[*]}: the GPU host needs them (network?)"
fi
mkdir -p "$kit/wheels"
cp "$wheel_cache"/grpcio-1.85.3-cp312-*.whl "$wheel_cache"/sentence_transformers-6.2.0-*.whl \
  "$kit/wheels/"

# --- Provenance: the device host's copy of the tree may have no .git.
sha="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  sha="$sha (with uncommitted changes)"
fi
echo "$sha" >"$kit/COMMIT"
{
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "node $(node --version) ($(uname -m), glibc $(ldd --version | head -1 | awk '{print $NF}'))"
  "$venv/bin/python" -c 'import google.protobuf as p, grpc, sys
print(f"python {sys.version.split()[0]}; protobuf {p.__version__}; grpcio {grpc.__version__}")'
  echo "commit $sha"
} >"$kit/MANIFEST"

check_part "$kit/node.xz" node.xz
check_part "$kit/wheels" wheels
check_part "$kit/grpcio-$pytag.tar.xz" grpcio.tar.xz
check_part "$kit/pylib" pylib
check_part "$kit/tokenizer" tokenizer
[[ ! -f "$kit/corpus.jsonl.xz" ]] || check_part "$kit/corpus.jsonl.xz" corpus.jsonl.xz
bytes="$(du -sb "$kit" | cut -f1)"
mib=$((bytes / 1024 / 1024))
du -sh "$kit"/* >&2
((mib <= limit_mib)) || die "the kit is $mib MiB, over $limit_mib MiB"
echo "kit: $kit, $mib MiB ($bytes bytes), commit $sha"
echo "carry: [\"$kit\"]"
echo "GPU host: bash bench/gpu/run.sh   (results also land in \$OUT when it is set)"
