"""The GPU benchmark's Python side; bench/gpu/run.sh calls its subcommands.

    preflight   which of the kit's Python packages the host needs on PYTHONPATH
    make-input  the corpus repeated to at least N paragraphs (and a warm-up slice)
    worker      in one process: the matmul rate, the server's encoder in-process and a bare
                SentenceTransformer.encode, for one model and dtype (JSON to a file)
    drive       every model x dtype: end to end (server + orchestrator), then the worker;
                prints the table and appends it to bench/RESULTS.md

Standard library only at the top level: torch is imported by the worker alone, so that the
driver, the server and the worker are the only processes that hold the GPU, one at a time.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import lzma
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SERVER_SRC = ROOT / "inference-server"
T0 = float(os.environ.get("EMBED_BENCH_T0") or time.time())

# The models (folders made by make_models.py), in the order they are measured: bge-large first,
# as its figures are the targets.
MODELS = (
    ("bge-large", "bench/bge-large-en-v1.5-random"),
    ("minilm", "bench/all-MiniLM-L6-v2-random"),
)
MAX_LENGTH = 512
ST_BATCH_SIZE = 32
# How far the in-process loop tokenizes ahead of the forward pass (the server's queues hold
# about as many batches between its stages).
PRE_AHEAD = 3
# Issue 11's targets, end to end on an H100 or H200 in half precision.
TARGET_RATES = {"bge-large": 4000.0, "minilm": 10000.0}
TARGET_RATIO = 0.95
# The fast path's bound against a float32 forward (as embed_inference.encoders.select).
MIN_COSINE = 0.9995
RESULTS_HEADER = "# Benchmark results\n\nTables appended by the scripts in bench/; newest last.\n"


def log(message: str) -> None:
    now = time.time()
    stamp = datetime.fromtimestamp(now).strftime("%H:%M:%S")
    print(f"[{stamp} +{now - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def past(deadline: float) -> bool:
    return deadline > 0 and time.time() > deadline


# --------------------------------------------------------------------------- preflight


def preflight(args: argparse.Namespace) -> int:
    """Prints the extra PYTHONPATH entries (colon-separated, maybe empty) under which the
    inference server's modules import; fails with a message naming what is missing."""
    missing = [
        name
        for name in ("torch", "transformers", "sentence_transformers", "numpy")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        print(
            f"preflight: {sys.executable} lacks {', '.join(missing)}; this benchmark needs a "
            "Python with torch, transformers and sentence-transformers (set EMBED_BENCH_PYTHON)",
            file=sys.stderr,
        )
        return 2
    # The server's encoder uses the sentence-transformers API of its pyproject (>= 6.2).
    from sentence_transformers import SentenceTransformer, __version__

    lacking = [
        name
        for name in ("preprocess", "get_embedding_dimension")
        if not hasattr(SentenceTransformer, name)
    ]
    if lacking:
        print(
            f"preflight: sentence-transformers {__version__} on this host lacks "
            f"SentenceTransformer.{', .'.join(lacking)}, which the inference server calls; it "
            "needs sentence-transformers >= 6.2",
            file=sys.stderr,
        )
        return 2
    kit: Path = args.kit
    pylib = kit / "pylib"
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    grpcio = kit / f"grpcio-{tag}.tar.xz"
    attempts: list[tuple[str, list[Path]]] = []
    if not os.environ.get("EMBED_BENCH_FORCE_KIT"):  # set to test the kit's copies
        attempts.append(("the host's own packages", []))
    if pylib.is_dir():
        attempts.append(("the kit's protobuf, grpc_health and grpc_reflection", [pylib]))
        if grpcio.is_file() and platform.machine() == "x86_64" and sys.platform == "linux":
            attempts.append(("the kit's protobuf, grpc_health, grpc_reflection and grpcio", []))
    # The server's gRPC imports, without torch (the encoder module loads it lazily).
    probe = "import embed_inference.server, embed_inference.pipeline"
    failures = []
    for label, extra in attempts:
        if label.endswith("grpcio"):
            target = args.scratch / f"grpcio-{tag}"
            if not target.is_dir():
                with lzma.open(grpcio) as packed, tarfile.open(fileobj=packed) as tar:
                    tar.extractall(target)
            extra = [pylib, target]
        # run.sh's PYTHONPATH (the kit's wheels, unpacked) stays in front of site-packages.
        inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        path = os.pathsep.join(str(p) for p in [SERVER_SRC, *extra, *inherited])
        env = {**os.environ, "PYTHONPATH": path}
        done = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            print(f"preflight: the server's gRPC modules import with {label}", file=sys.stderr)
            print(os.pathsep.join(str(p) for p in extra))
            return 0
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        failures.append(f"  with {label}: {last}")
    print(
        "preflight: the inference server cannot import its gRPC modules "
        "(it needs grpcio >= 1.85.1, protobuf >= 7.35.1 < 8, grpcio-health-checking and "
        f"grpcio-reflection; the kit's grpcio fits CPython {tag[2]}.{tag[3:]} only):\n"
        + "\n".join(failures),
        file=sys.stderr,
    )
    return 2


# --------------------------------------------------------------------------- input


def make_input(args: argparse.Namespace) -> int:
    source = next((Path(s) for s in args.sources if Path(s).is_file()), None)
    if source is None:
        print(f"make-input: none of {', '.join(args.sources)} exists", file=sys.stderr)
        return 2
    opener = lzma.open if source.suffix == ".xz" else open
    with opener(source, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    records = [r for r in records if isinstance(r.get("text"), str) and r["text"].strip()]
    if args.limit:
        records = records[: args.limit]
    repeats = max(1, math.ceil(args.min_rows / len(records)))
    # Each repetition gets its own paragraph_index range, so that no two lines are equal.
    stride = max(int(r.get("paragraph_index", 0)) for r in records) + 1
    lines = []
    for rep in range(repeats):
        for record in records:
            copy = dict(record)
            copy["paragraph_index"] = int(record.get("paragraph_index", 0)) + rep * stride
            lines.append(json.dumps(copy, ensure_ascii=False))
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.warmup_out.write_text("\n".join(lines[: args.warmup_rows]) + "\n", encoding="utf-8")
    info = {"source": str(source), "paragraphs": len(records), "repeats": repeats}
    info["rows"] = len(lines)
    print(json.dumps(info))
    return 0


def read_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


# --------------------------------------------------------------------------- worker


def load_encoder(args: argparse.Namespace, engine: str = "sentence-transformers") -> Any:
    """The server's encoder, made as the server makes it (config -> its engine selector ->
    registry -> encoder), with its --fast-path setting; the load runs the fast path's check.
    Returns the server's config, the encoder, and what must outlive it (backend, registry)."""
    from embed_inference.config import ServerConfig
    from embed_inference.models import LoadRequest, ModelRegistry
    from embed_inference.server import make_backend

    config = ServerConfig(
        model_dir=args.model_dir,
        device=args.device,
        dtype=args.dtype,
        engine=engine,
        threads=args.threads or None,
        fast_path=args.fast_path,
    )
    backend = make_backend(config)
    backend.start()
    registry = ModelRegistry(config, backend)
    request = LoadRequest(
        args.model_id, device=args.device, dtype=args.dtype, max_length=MAX_LENGTH, normalize=True
    )
    return config, registry.load(request).encoder, (backend, registry)


def count_tokens(encoder: Any, texts: Sequence[str]) -> list[int]:
    """Each text's tokens, in calls of 512 as the orchestrator's CountTokens calls."""
    counts: list[int] = []
    for first in range(0, len(texts), 512):
        counts.extend(encoder.count_tokens(texts[first : first + 512]))
    return counts


def plan_batches(
    args: argparse.Namespace, config: Any, dim: int, counts: Sequence[int]
) -> list[list[int]]:
    """The batches the CLI sends for this input, counts and limits (the server's own, as its
    Info reports them): cut by the orchestrator's planner, bench/gpu/plan.ts, run with the
    kit's node. There is no copy of the planner here: without plan.js, no plan."""
    if not args.plan_js.is_file():
        raise SystemExit(
            f"bench.py: {args.plan_js} is missing: rebuild the kit (bench/gpu/prepare.sh), or "
            "'npx tsc -p tsconfig.json' for a dry run"
        )
    limits = config.limits
    scratch = tempfile.TemporaryDirectory(prefix="embed-bench-plan.")
    counts_file = Path(scratch.name) / "counts.json"
    counts_file.write_text(json.dumps(list(counts)), encoding="utf-8")
    command = [
        str(args.node), str(args.plan_js),
        "--input", str(args.input), "--counts", str(counts_file),
        "--max-length", str(MAX_LENGTH), "--dim", str(dim),
        "--batch-size", str(args.batch_size), "--max-batch-tokens", str(args.max_batch_tokens),
        "--server-max-batch-size", str(limits.max_batch_size),
        "--server-max-batch-tokens", str(limits.max_batch_tokens),
        "--server-max-message-bytes", str(args.max_message_bytes or limits.max_message_bytes),
        "--server-max-text-chars", str(limits.max_text_chars),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    scratch.cleanup()
    if done.returncode != 0:
        raise SystemExit(f"bench.py: the planner failed: {done.stderr.strip()}")
    return json.loads(done.stdout)["batches"]


def plan(args: argparse.Namespace) -> int:
    """The plan the worker would use, as JSON (test/gpu-plan.test.ts compares it with the
    batches of a CLI run over the same input)."""
    config, encoder, _keep = load_encoder(args, args.engine)
    counts = count_tokens(encoder, read_texts(args.input))
    print(json.dumps(plan_batches(args, config, encoder.dim, counts)))
    return 0


def counted_flops(config: dict[str, Any], lengths: Sequence[int]) -> float:
    """Forward FLOPs of a BERT encoder over rows of the given real lengths: per layer and
    token 8h^2 (Q, K, V, output projections) + 4hi (feed-forward) + 4sh (scores and the
    weighted sum over the row's own s tokens); embeddings and pooling are negligible."""
    h = config["hidden_size"]
    i = config["intermediate_size"]
    layers = config["num_hidden_layers"]
    tokens = sum(lengths)
    squares = sum(s * s for s in lengths)
    return float(layers * ((8 * h * h + 4 * h * i) * tokens + 4 * h * squares))


def matmul_rate(torch: Any, device: str, dtype: Any, seconds: float) -> float:
    """TFLOP/s of square matmuls in this dtype: the best of a few sizes, each timed for about
    `seconds` after a warm-up."""
    cuda = device.startswith("cuda")
    sizes = (4096, 8192, 16384) if cuda else (512, 1024, 2048)
    best = 0.0

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        for _ in range(3):
            torch.matmul(a, b, out=out)
        sync()
        runs = 0
        started = time.perf_counter()
        while True:
            for _ in range(10):
                torch.matmul(a, b, out=out)
            runs += 10
            sync()
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
        best = max(best, 2.0 * n**3 * runs / elapsed / 1e12)
        del a, b, out
    if cuda:
        torch.cuda.empty_cache()
    return best


def run_batches(encoder: Any, texts: Sequence[str], batches: Sequence[Sequence[int]]) -> int:
    """The server's stages in one process: tokenize ahead on two threads (as its pre pool),
    forward on this one, normalize and copy to the host on a third (its post pool)."""
    rows = 0
    with ThreadPoolExecutor(2) as pre_pool, ThreadPoolExecutor(1) as post_pool:
        pending = iter(batches)
        ahead: deque[Future[Any]] = deque()
        posts: deque[Future[Any]] = deque()

        def submit() -> None:
            batch = next(pending, None)
            if batch is not None:
                ahead.append(pre_pool.submit(encoder.pre, [texts[i] for i in batch]))

        for _ in range(PRE_AHEAD):
            submit()
        while ahead:
            prepared = ahead.popleft().result()
            submit()
            output = encoder.forward(prepared)
            posts.append(post_pool.submit(encoder.post, output))
            del output
            while len(posts) > 2:
                rows += posts.popleft().result().shape[0]
        while posts:
            rows += posts.popleft().result().shape[0]
    return rows


def worker(args: argparse.Namespace) -> int:
    import torch

    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    dtype = torch_dtype[args.dtype]
    cuda = args.device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    from embed_inference.encoders.select import CHECK_TEXTS

    texts = read_texts(args.input)
    folder = args.model_dir / args.model_id
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    result: dict[str, Any] = {"rows": len(texts)}

    def save() -> None:  # after every stage: a later failure keeps what was measured
        args.out_json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    log(f"worker {args.model_id} {args.dtype}: matmul rate")
    result["matmul_tflops"] = matmul_rate(torch, args.device, dtype, args.matmul_seconds)
    log(f"worker: matmul {result['matmul_tflops']:.1f} TFLOP/s")
    save()

    server_config, encoder, keep = load_encoder(args)
    packed = getattr(encoder, "packed", None)
    result["path"] = (
        f"fast path ({packed.attention_name})" if packed is not None else "reference path"
    )
    log(f"worker: the encoder takes the {result['path']}")
    counts = count_tokens(encoder, texts)
    lengths = [max(1, min(c, MAX_LENGTH)) for c in counts]
    batches = plan_batches(args, server_config, encoder.dim, counts)
    padded = sum(len(b) * lengths[b[0]] for b in batches)
    first = [lengths[i] for i in batches[0]]
    result.update(
        first_rows=len(first),
        first_tokens=sum(first),
        first_flops=counted_flops(config, first),
        tokens=sum(lengths),
        plan_truncated=sum(c > MAX_LENGTH for c in counts),
        flops=counted_flops(config, lengths),
        batches=len(batches),
        plan_padding_efficiency=sum(lengths) / padded,
    )
    save()
    # Warm-up: the largest batch (allocator, kernels for long rows) and the shortest ones.
    warm = batches[:1] + batches[-args.warmup_batches :] if args.warmup_batches else []
    if past(args.deadline):
        log("worker: past the time budget, in-process skipped")
    else:
        run_batches(encoder, texts, warm)
        sync()
        log(f"worker: in-process, {len(batches)} batches")
        started = time.perf_counter()
        done = run_batches(encoder, texts, batches)
        sync()
        result["inproc_seconds"] = time.perf_counter() - started
        assert done == len(texts), (done, len(texts))
        log(f"worker: in-process {len(texts) / result['inproc_seconds']:.1f} paragraphs/s")
        save()

    # The encoder's vectors (fast path or not) against a float32 forward of the same model.
    sample = sorted({*batches[0][:32], *batches[-1][:32], *range(0, len(texts), 997)})
    sample_texts = [texts[i] for i in sample] + list(CHECK_TEXTS)
    got = encoder.post(encoder.forward(encoder.pre(sample_texts)))
    del encoder, keep
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(
        str(folder), device=args.device, model_kwargs={"torch_dtype": torch.float32}
    )
    reference.max_seq_length = MAX_LENGTH
    want = reference.encode(
        sample_texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True
    )
    del reference
    gc.collect()
    result["check_rows"] = len(sample_texts)
    result["check_min_cosine"] = min_cosine(got, want)
    verdict = "ok" if result["check_min_cosine"] >= MIN_COSINE else "FAILED"
    log(
        f"worker: {result['path']} vs a float32 forward over {len(sample_texts)} texts: lowest "
        f"cosine {result['check_min_cosine']:.6f} (>= {MIN_COSINE}: {verdict})"
    )
    save()

    if past(args.deadline):
        log("worker: past the time budget, bare forward skipped")
    else:
        bare_forward(args, torch, folder, dtype, texts, batches, warm, sync, result)
        save()
    if past(args.deadline):
        log("worker: past the time budget, tokenizer alone skipped")
    else:
        tokenizer_alone(folder, texts, result)
        save()

    if args.skip_st:
        log("worker: SentenceTransformer.encode skipped (--skip-st)")
    elif past(args.deadline):
        log("worker: past the time budget, SentenceTransformer.encode skipped")
    else:
        model = SentenceTransformer(
            str(folder), device=args.device, model_kwargs={"torch_dtype": dtype}
        )

        def encode(chunk: Sequence[str]) -> Any:
            return model.encode(
                list(chunk),
                batch_size=ST_BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )

        encode(texts[: args.warmup_rows])
        sync()
        log("worker: SentenceTransformer.encode")
        started = time.perf_counter()
        vectors = encode(texts)
        sync()
        result["st_seconds"] = time.perf_counter() - started
        assert vectors.shape[0] == len(texts)
        log(f"worker: ST encode {len(texts) / result['st_seconds']:.1f} paragraphs/s")
    save()
    return 0


def min_cosine(a: Any, b: Any) -> float:
    import numpy as np

    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return float(((a64 * b64).sum(axis=1) / np.maximum(norms, 1e-30)).min())


def bare_forward(
    args: argparse.Namespace,
    torch: Any,
    folder: Path,
    dtype: Any,
    texts: Sequence[str],
    batches: Sequence[Sequence[int]],
    warm: Sequence[Sequence[int]],
    sync: Callable[[], None],
    result: dict[str, Any],
) -> None:
    """The ceiling of a padded forward: a bare transformers BertModel (sdpa) over the same
    batches, tokenized and moved to the device before the clock starts; pooling as the
    model's (CLS or mean) and normalization on the device; no server, no host copies."""
    from transformers import AutoModel, AutoTokenizer

    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    cls = bool(pooling.get("pooling_mode_cls_token"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), attn_implementation="sdpa", dtype=dtype)
    model = model.to(args.device).eval()

    def inputs(batch: Sequence[int]) -> dict[str, Any]:
        encoded = tokenizer(
            [texts[i] for i in batch],
            padding=True,
            truncation=True,
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        return {key: value.to(args.device) for key, value in encoded.items()}

    def run(prepared: Sequence[dict[str, Any]]) -> int:
        rows = 0
        with torch.inference_mode():
            for features in prepared:
                hidden = model(**features).last_hidden_state
                if cls:
                    pooled = hidden[:, 0]
                else:
                    mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=1)
                rows += pooled.shape[0]
        return rows

    log(f"worker: bare forward ({'CLS' if cls else 'mean'} pooling), tokenizing up front")
    run([inputs(b) for b in warm])
    prepared = [inputs(b) for b in batches]
    sync()
    started = time.perf_counter()
    rows = run(prepared)
    sync()
    result["bare_seconds"] = time.perf_counter() - started
    assert rows == len(texts), (rows, len(texts))
    log(f"worker: bare forward {len(texts) / result['bare_seconds']:.1f} paragraphs/s")
    prepared.clear()
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()


def tokenizer_alone(folder: Path, texts: Sequence[str], result: dict[str, Any]) -> None:
    """The model's fast tokenizer on the whole list in one call: Rust threads on every core
    (TOKENIZERS_PARALLELISM=true), truncating at MAX_LENGTH, no padding, no tensors."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer(list(texts[:256]), truncation=True, max_length=MAX_LENGTH)  # warm-up
    log(f"worker: tokenizer alone ({os.cpu_count()} cores)")
    started = time.perf_counter()
    encoded = tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH)
    result["tokenizer_seconds"] = time.perf_counter() - started
    result["tokenizer_tokens"] = sum(len(ids) for ids in encoded["input_ids"])
    log(f"worker: tokenizer {len(texts) / result['tokenizer_seconds']:.1f} paragraphs/s")


# --------------------------------------------------------------------------- drive


class Server:
    """The inference server as a child process on a free port; stops with us (stdin EOF)."""

    def __init__(self, args: argparse.Namespace, dtype: str, log_path: Path) -> None:
        command = [
            sys.executable, "-m", "embed_inference",
            "--host", "127.0.0.1", "--port", "0",
            "--model-dir", str(args.model_dir),
            "--device", args.device, "--dtype", dtype,
            "--exit-on-stdin-eof", "--fast-path", args.fast_path,
        ]  # fmt: skip
        if args.threads:
            command += ["--threads", str(args.threads)]
        self._log = log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.log_path = log_path
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(args.server_start_timeout)
        first = lines[0].strip() if lines else ""
        prefix = "embed-inference-server listening on "
        if not first.startswith(prefix):
            self.stop()
            raise RuntimeError(f"the server did not start: {first or 'no listening line'}")
        self.address = first[len(prefix) :]
        # Keep reading stdout, so that a stray print cannot fill the pipe and block it.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def orchestrate(
    args: argparse.Namespace, alias: str, dtype: str, server: str, input_file: Path, name: str
) -> dict[str, Any]:
    """One orchestrator run; returns the summary row and the metadata."""
    out = args.work / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        str(args.node), str(args.cli),
        "--input_file", str(input_file), "--output_dir", str(out),
        "--config", str(args.work / "models.yaml"), "--models", alias,
        "--servers", server, "--dtype", dtype,
        "--batch_size", str(args.batch_size), "--max_batch_tokens", str(args.max_batch_tokens),
        "--max_workers", str(args.max_workers), "--checkpoint_interval", "20000",
        "--output_format", "npy", "--progress", "none", "--server_timeout", "300",
        # Every row goes to the server, over the batches the worker's plan has too (the
        # input repeats the corpus, which --dedupe would send once).
        "--no-dedupe",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=args.run_timeout, check=False
    )
    wall = time.perf_counter() - started
    (args.logs / f"orchestrator-{name}.log").write_text(done.stdout + done.stderr, "utf-8")
    if done.returncode != 0:
        raise RuntimeError(f"embed-multi exited with {done.returncode}: {done.stderr.strip()}")
    # The summary table, read by its header's names (columns come and go: reused,
    # deduplicated), which are separated by two spaces or more.
    table = [re.split(r"\s{2,}", ln.strip()) for ln in done.stdout.splitlines()]
    header = next((cells for cells in table if cells[:1] == ["model"]), None)
    values = next((cells for cells in table if cells[:1] == [alias]), None)
    if header is None or values is None or len(values) != len(header):
        raise RuntimeError(f"no summary row for {alias} in: {done.stdout}")
    summary = dict(zip(header, values, strict=True))
    metadata = json.loads((out / f"{alias}.metadata.json").read_text(encoding="utf-8"))
    shutil.rmtree(out, ignore_errors=True)
    return {
        "embedded": int(summary["embedded"]),
        "summary_seconds": float(summary["seconds"]),
        # "-" when the run had a single batch (its first batch is also its last).
        "rate": None if summary["rows/s"] == "-" else float(summary["rows/s"]),
        "wall": wall,
        "truncated": int(summary["truncated"]),
        "padding_efficiency": float(summary["padding eff."]),
        "total_tokens": int(metadata["total_tokens"]),
        "processing_time": float(metadata["processing_time"]),
    }


def end_to_end(args: argparse.Namespace, alias: str, dtype: str) -> dict[str, Any]:
    name = f"{alias}-{dtype}"
    log(f"{name}: starting the server")
    server = Server(args, dtype, args.logs / f"server-{name}.log")
    try:
        target = server.address
        log(f"{name}: server on {target}; warm-up run ({args.warmup_rows} paragraphs)")
        orchestrate(args, alias, dtype, target, args.warmup_input, f"{name}-warmup")
        log(f"{name}: timed run")
        result = orchestrate(args, alias, dtype, target, args.input, name)
        rate, wall = fmt(result["rate"]), result["wall"]
        log(f"{name}: end to end {rate} paragraphs/s (summary); the process took {wall:.1f} s")
        return result
    except Exception:
        log(f"{name}: server log tail:\n{server.tail()}")
        raise
    finally:
        server.stop()


def run_worker(args: argparse.Namespace, alias: str, model_id: str, dtype: str) -> dict[str, Any]:
    out_json = args.work / f"worker-{alias}-{dtype}.json"
    out_json.unlink(missing_ok=True)
    command = [
        sys.executable, str(Path(__file__).resolve()), "worker",
        "--model-dir", str(args.model_dir), "--model-id", model_id,
        "--device", args.device, "--dtype", dtype, "--threads", str(args.threads or 0),
        "--input", str(args.input), "--batch-size", str(args.batch_size),
        "--max-batch-tokens", str(args.max_batch_tokens),
        "--warmup-rows", str(args.st_warmup_rows), "--warmup-batches", str(args.warmup_batches),
        "--matmul-seconds", str(args.matmul_seconds),
        "--deadline", str(args.deadline), "--out-json", str(out_json),
        "--fast-path", args.fast_path, "--node", str(args.node), "--plan-js", str(args.plan_js),
    ]  # fmt: skip
    if args.skip_st:
        command.append("--skip-st")
    done = subprocess.run(command, timeout=args.run_timeout, check=False)
    result = json.loads(out_json.read_text(encoding="utf-8")) if out_json.is_file() else {}
    if done.returncode != 0:
        result["worker_error"] = f"the worker exited with {done.returncode} (see its log above)"
    return result


def fmt(value: float | None, digits: int | None = None) -> str:
    """Rates to about three significant digits (a CPU dry run has rates below 1)."""
    if value is None:
        return "-"
    if digits is None:
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}"


def e2e_figures(r: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """End-to-end paragraphs/s, tokens/s and MFU from the orchestrator's summary.

    The summary times each model from its first batch sent to its last batch written, so
    every row it counts is inside that window."""
    rate, embedded = r.get("rate"), r.get("embedded", 0)
    if not embedded or not (rate or r.get("summary_seconds")):
        return None, None, None
    # Whichever of the two rounded columns (rows/s to 1, seconds to 0.1) is the more precise.
    candidates = []
    if rate:
        candidates.append((0.5 / rate, embedded / rate))
    if r.get("summary_seconds"):
        candidates.append((0.05 / r["summary_seconds"], r["summary_seconds"]))
    seconds = min(candidates)[1]
    paragraphs = embedded / seconds
    tokens = r["total_tokens"] / seconds
    mfu = None
    if r.get("flops") and r.get("matmul_tflops"):
        mfu = r["flops"] / seconds / (r["matmul_tflops"] * 1e12)
    return paragraphs, tokens, mfu


Figures = tuple[float | None, float | None, float | None]


def rate_figures(r: dict[str, Any], rows: int, seconds: float | None) -> Figures:
    """Paragraphs/s, tokens/s and MFU of `rows` paragraphs in `seconds`."""
    if not seconds:
        return None, None, None
    tokens = r["tokens"] / seconds if r.get("tokens") else None
    mfu = None
    if r.get("flops") and r.get("matmul_tflops"):
        mfu = r["flops"] / seconds / (r["matmul_tflops"] * 1e12)
    return rows / seconds, tokens, mfu


def render(results: list[dict[str, Any]], rows: int) -> str:
    """One table: for each model and dtype, every figure beside its ceilings (the bare
    forward pass, and the tokenizer alone), all measured in the same run."""
    header = ["model", "dtype", "measured", "paragraphs/s", "tokens/s", "/ bare forward", "MFU"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        e2e, e2e_tokens, e2e_mfu = e2e_figures(r)
        bare = rows / r["bare_seconds"] if r.get("bare_seconds") else None

        def figures(seconds: float | None, r: dict[str, Any] = r) -> Figures:
            return rate_figures(r, rows, seconds)

        tokenizer = r.get("tokenizer_seconds")
        wall = rows / r["wall"] if r.get("wall") else None
        entries = [
            ("end to end (embed-multi + server)", e2e, e2e_tokens, e2e_mfu),
            ("end to end, whole process", wall, None, None),
            (f"in-process encoder, {r.get('path', '?')}", *figures(r.get("inproc_seconds"))),
            ("bare forward (transformers sdpa, pre-tokenized)", *figures(r.get("bare_seconds"))),
            (
                f"tokenizer alone ({os.cpu_count()} cores)",
                rows / tokenizer if tokenizer else None,
                r["tokenizer_tokens"] / tokenizer if tokenizer else None,
                None,
            ),
            (f"SentenceTransformer.encode (batch {ST_BATCH_SIZE})", *figures(r.get("st_seconds"))),
        ]
        for label, rate, tokens, mfu in entries:
            if rate is None:
                continue
            ratio = rate / bare if bare and not label.startswith("tokenizer") else None
            cells = [
                r["model"], r["dtype"], label, fmt(rate), fmt(tokens), fmt(ratio, 2),
                "-" if mfu is None else f"{100 * mfu:.1f}%",
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    host = f"{cpu}, {os.cpu_count()} cores"
    if device.startswith("cuda"):
        # In a child process: the driver itself never opens a CUDA context.
        name = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.get_device_name(0))"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        return f"{name or 'unknown GPU'}; {host}"
    return host


def versions(node: Path) -> str:
    found = []
    for name in ("torch", "transformers", "sentence_transformers", "grpc", "google.protobuf"):
        try:
            module = __import__(name, fromlist=["__version__"])
            found.append(f"{name.split('.')[-1]} {module.__version__}")
        except Exception:  # a version is a note, never a failure
            found.append(f"{name} ?")
    node_version = subprocess.run(
        [str(node), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"node {node_version}; python {platform.python_version()}; " + "; ".join(found)


def drive(args: argparse.Namespace) -> int:
    args.logs.mkdir(parents=True, exist_ok=True)
    models_yaml = "models:\n" + "".join(
        f"  {alias}:\n    model_name: {model_id}\n    normalize_embeddings: true\n"
        f"    max_length: {MAX_LENGTH}\n"
        for alias, model_id in MODELS
    )
    (args.work / "models.yaml").write_text(models_yaml, encoding="utf-8")
    rows = len(read_texts(args.input))
    machine = describe_machine(args.device)
    log(f"machine: {machine}; {rows} paragraphs; dtypes {', '.join(args.dtypes)}")
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    for alias, model_id in MODELS:
        if args.models and alias not in args.models:
            continue
        for dtype in args.dtypes:
            entry: dict[str, Any] = {"model": alias, "dtype": dtype}
            if past(args.deadline):
                log(f"{alias} {dtype}: past the time budget, skipped")
                failures.append(f"{alias} {dtype}: skipped (time budget)")
                continue
            try:
                entry.update(end_to_end(args, alias, dtype))
            except Exception as error:  # one failed measurement must not lose the others
                log(f"{alias} {dtype}: end to end FAILED: {error}")
                failures.append(f"{alias} {dtype}, end to end: {error}")
            try:
                entry.update(run_worker(args, alias, model_id, dtype))
                if "worker_error" in entry:
                    failures.append(f"{alias} {dtype}, worker: {entry['worker_error']}")
            except Exception as error:
                log(f"{alias} {dtype}: worker FAILED: {error}")
                failures.append(f"{alias} {dtype}, worker: {error}")
            if "embedded" in entry or "matmul_tflops" in entry:
                entry.setdefault("embedded", rows)
                results.append(entry)
            raw = args.section_out.parent / "results.json"  # the raw figures, as they come
            raw.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    section = report(args, results, rows, machine, failures)
    print(section)
    args.section_out.write_text(section, encoding="utf-8")
    # A run that measured nothing leaves RESULTS.md alone; a partial one goes in, with its
    # failures listed under the table.
    if args.results and results:
        if not args.results.exists():
            args.results.write_text(RESULTS_HEADER, encoding="utf-8")
        with args.results.open("a", encoding="utf-8") as handle:
            handle.write(section)
        log(f"appended to {args.results}")
    return 1 if failures else 0


def report(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    rows: int,
    machine: str,
    failures: list[str],
) -> str:
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    info = json.loads(args.input_info.read_text(encoding="utf-8"))
    first = next((r for r in results if r.get("tokens")), {})
    dry = not args.device.startswith("cuda")
    if dry:
        title = "GPU benchmark: CPU dry run (GPU figures pending)"
    else:
        card = machine.split(";")[0]
        title = f"GPU: end to end vs in-process vs SentenceTransformer.encode ({card})"
    notes = [
        f"Input: {rows} paragraphs = {info['paragraphs']} paragraphs of "
        f"{Path(info['source']).name} "
        f"x {info['repeats']}; {first.get('tokens', 0):,} tokens after truncation at "
        f"{MAX_LENGTH} ({first.get('plan_truncated', '?')} paragraphs truncated), padding "
        f"efficiency {first.get('plan_padding_efficiency', 0):.3f}. Models: bge-large-en-v1.5 and "
        "all-MiniLM-L6-v2 shapes (their real configs, random weights, both truncating at 512). "
        f"Orchestrator: --batch_size {args.batch_size} --max_batch_tokens "
        f"{args.max_batch_tokens} --max_workers {args.max_workers} --output_format npy "
        "--no-dedupe.",
        "e2e: the orchestrator's summary (first batch sent to last batch written, with the "
        "server started and the model loaded by a warm-up run beforehand); tokens/s likewise "
        "from the metadata's total_tokens. e2e wall: the "
        "whole orchestrator process (start, input scan, token counting, planning, .npy "
        "finalization). In-process: the server's own encoder (pre -> forward -> post, "
        "tokenizing up to three batches ahead on two threads, as the server's stages do) over "
        "the batches the CLI sends (cut by its own planner, dist/bench/gpu/plan.js), no gRPC, "
        "all batches timed. ST encode: "
        f"SentenceTransformer.encode(texts, batch_size={ST_BATCH_SIZE}). MFU: counted FLOPs "
        "(per layer and real token 8h^2 + 4hi + 4sh, s the row's own length) / e2e seconds / "
        "the matmul rate (the best square torch.matmul in that dtype, measured in the same run).",
        f"Software: {versions(args.node)}.",
    ]
    if dry:
        notes.append(
            f"This is `bash bench/gpu/run.sh --cpu-dry-run`: the GPU script's code paths on the "
            f"CPU, {rows} paragraphs, float32, --threads {args.threads}; the figures say "
            "nothing about GPU speed. The GPU figures are pending: no GPU host was at hand."
        )
    else:
        for r in results:
            target = TARGET_RATES.get(r["model"])
            e2e = e2e_figures(r)[0]
            if target is None or e2e is None:
                continue
            inproc = rows / r["inproc_seconds"] if r.get("inproc_seconds") else None
            ratio = e2e / inproc if inproc else None
            ok = e2e >= target and ratio is not None and ratio >= TARGET_RATIO
            notes.append(
                f"Target, {r['model']} {r['dtype']}: >= {target:,.0f} paragraphs/s end to end "
                f"and >= {TARGET_RATIO} of in-process: {e2e:,.0f}/s, {fmt(ratio, 2)} -> "
                f"{'met' if ok else 'NOT met'}."
            )
    for r in results:
        if "check_min_cosine" in r:
            ok = r["check_min_cosine"] >= MIN_COSINE
            notes.append(
                f"Vectors, {r['model']} {r['dtype']}: the server's encoder ({r.get('path', '?')}) "
                f"vs a float32 SentenceTransformer forward over {r['check_rows']} texts: lowest "
                f"cosine {r['check_min_cosine']:.6f} -> {'ok' if ok else 'BELOW THE BOUND'} "
                f"(>= {MIN_COSINE}). "
                f"Matmul peak {fmt(r.get('matmul_tflops'))} TFLOP/s."
            )
    for r in results:  # the worker's token counts must be the orchestrator's
        if r.get("total_tokens") and r.get("tokens") and r["total_tokens"] != r["tokens"]:
            notes.append(
                f"Warning, {r['model']} {r['dtype']}: the orchestrator embedded "
                f"{r['total_tokens']:,} tokens, the in-process plan {r['tokens']:,}."
            )
    notes += [f"Failed or skipped: {f}" for f in failures]
    stamp = f"{date}, {machine}, commit {args.commit}"
    body = render(results, rows)
    return f"\n## {title}\n\n{stamp}\n\n{body}\n" + "".join(f"\n{n}\n" for n in notes)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GPU benchmark (see bench/gpu/README.md)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("preflight")
    p.add_argument("--kit", type=Path, required=True)
    p.add_argument("--scratch", type=Path, required=True, help="where to unpack grpcio")

    p = sub.add_parser("make-input")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--warmup-out", type=Path, required=True)
    p.add_argument("--warmup-rows", type=int, default=2048)
    p.add_argument("--min-rows", type=int, default=20000)
    p.add_argument("--limit", type=int, default=0, help="first N paragraphs only (dry run)")
    p.add_argument("sources", nargs="+", help="candidate corpora, first existing wins")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model-dir", type=Path, required=True)
    common.add_argument("--device", required=True)
    common.add_argument("--threads", type=int, default=0)
    common.add_argument("--input", type=Path, required=True)
    common.add_argument("--batch-size", type=int, default=512)
    common.add_argument("--max-batch-tokens", type=int, default=65536)
    common.add_argument("--warmup-batches", type=int, default=3)
    common.add_argument("--matmul-seconds", type=float, default=0.5)
    common.add_argument("--deadline", type=float, default=0, help="epoch seconds; 0 = none")
    common.add_argument("--fast-path", choices=("auto", "on", "off"), default="auto")
    common.add_argument("--skip-st", action="store_true", help="no SentenceTransformer.encode")
    common.add_argument("--node", type=Path, required=True)
    common.add_argument("--plan-js", type=Path, required=True, help="dist/bench/gpu/plan.js")
    common.add_argument(
        "--max-message-bytes", type=int, default=0, help="the server's, if not its default"
    )

    p = sub.add_parser("plan", parents=[common])
    p.add_argument("--model-id", required=True)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--engine", default="sentence-transformers")

    p = sub.add_parser("worker", parents=[common])
    p.add_argument("--model-id", required=True)
    p.add_argument("--dtype", required=True)
    p.add_argument("--warmup-rows", type=int, default=256, help="of the ST encode warm-up")
    p.add_argument("--out-json", type=Path, required=True)

    p = sub.add_parser("drive", parents=[common])
    p.add_argument("--dtypes", nargs="+", required=True)
    p.add_argument("--models", nargs="*", default=[], help="aliases to run (default: all)")
    p.add_argument("--input-info", type=Path, required=True, help="make-input's JSON line")
    p.add_argument("--warmup-input", type=Path, required=True)
    p.add_argument("--warmup-rows", type=int, required=True)
    p.add_argument("--st-warmup-rows", type=int, default=256)
    p.add_argument("--max-workers", type=int, default=4)
    p.add_argument("--cli", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--logs", type=Path, required=True)
    p.add_argument("--section-out", type=Path, required=True)
    p.add_argument("--results", type=Path, help="append the section to this Markdown file")
    p.add_argument("--commit", default="unknown")
    p.add_argument("--server-start-timeout", type=float, default=180)
    p.add_argument("--run-timeout", type=float, default=600)

    args = parser.parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "preflight": preflight,
        "make-input": make_input,
        "worker": worker,
        "plan": plan,
        "drive": drive,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
