"""The fast CPU engine: the model's own torch modules, converted once by OpenVINO.

`openvino.convert_model` traces the SentenceTransformer's forward (transformer, pooling and
its Normalize module, if any) into an OpenVINO graph with dynamic batch and length, which
runs on the CPU about twice as fast as torch's float32 here (bench/RESULTS.md). It takes
the same padded features as the reference encoder (and so the token ids our batches carry);
the stage after it is the shared one. It is used only where the check at load (select.py)
finds its vectors equal to the reference's (cosine >= 0.9999); anything it cannot convert
or compile keeps the reference path.

The converted graph is kept on disk (`<cache>/openvino/<key>/model.xml`, the key a hash of
the weights' revision and the versions that shape the trace), so a second server start reads
it instead of tracing again (seconds instead of a minute on 2 busy cores); the check at load
still runs on it.

Precision: float32 is asked for explicitly (INFERENCE_PRECISION_HINT f32), since OpenVINO
would otherwise pick bfloat16 on CPUs that have it; bfloat16 only when the model is loaded
in bfloat16 (and the CPU has it: devices.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import Settings, Weights
from .hf_text import TextEncoder, TextTokenizer, split_features

log = logging.getLogger("embed_inference.encoders.openvino")

NAME = "openvino"
_PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}
# Texts of several lengths for the trace (shapes are dynamic; values do not matter).
_TRACE_TEXTS = ("a", "Hello, world: a short sentence.", "word " * 40)


class OpenVinoModel:
    """One compiled graph per loaded weights, shared by their model keys."""

    def __init__(
        self, weights: Weights, text: TextTokenizer, threads: int | None, cache: Path | None
    ) -> None:
        import openvino as ov

        if weights.device != "cpu":
            raise RuntimeError(f"OpenVINO runs on the CPU here, not {weights.device}")
        if not text.supports_ids:
            # The graph is traced over token-id features; other inputs (a static
            # embedding's offsets, images) stay with the model's own modules.
            raise RuntimeError("the model's features are not token ids and a mask")
        hint = _PRECISION_HINTS.get(weights.dtype)
        if hint is None:
            raise RuntimeError(f"no OpenVINO precision for {weights.dtype}")
        example = text.pad(text.tokenize(list(_TRACE_TEXTS)))
        self.keys = [k for k, v in example.items() if isinstance(v, torch.Tensor)]
        extra = {k: v for k, v in example.items() if not isinstance(v, torch.Tensor)}
        folder = _cache_folder(cache, weights, self.keys)
        graph = cached_graph(ov, folder)
        if graph is None:
            forward = _Forward(weights.model, self.keys, extra)
            with torch.no_grad():
                graph = ov.convert_model(
                    forward, example_input=tuple(example[k] for k in self.keys)
                )
            save_graph(ov, graph, folder)
        # Kept for a quantized sibling (int8.py), which starts from this graph and its folder.
        self.graph = graph
        self.folder = folder
        self.threads = threads
        self.compiled = compile_graph(ov, graph, hint, threads)
        self.precision = weights.dtype
        # One infer request per thread: the forward thread, and a load's check.
        self._local = threading.local()

    def __call__(self, features: dict[str, Any]) -> torch.Tensor:
        return run_compiled(self.compiled, self._local, self.keys, features)


def compile_graph(ov: Any, graph: Any, hint: str, threads: int | None) -> Any:
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": hint,
        "PERFORMANCE_HINT": "LATENCY",  # one batch at a time, all the cores on it
    }
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(graph, "CPU", config)


def run_compiled(
    compiled: Any, local: threading.local, keys: list[str], features: dict[str, Any]
) -> torch.Tensor:
    """One forward of a compiled graph, on this thread's own infer request."""
    request = getattr(local, "request", None)
    if request is None:
        request = local.request = compiled.create_infer_request()
    inputs = [np.ascontiguousarray(features[k].numpy()) for k in keys]
    result = request.infer(inputs)
    return torch.from_numpy(np.array(result[compiled.output(0)], copy=True))


class _Forward(torch.nn.Module):
    """The SentenceTransformer's forward with positional tensors, as the trace wants."""

    def __init__(self, model: Any, keys: list[str], extra: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.keys = keys
        self.extra = extra

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        features = dict(zip(self.keys, tensors, strict=True))
        return self.model({**features, **self.extra})["sentence_embedding"]


class OpenVinoEncoder(TextEncoder):
    def __init__(
        self, weights: Weights, settings: Settings, text: TextTokenizer, model: Any
    ) -> None:
        """`model`: an OpenVinoModel, or its int8 sibling (int8.py): features in, pooled
        embeddings out, and a `precision`."""
        super().__init__(weights, settings, text)
        self.model = model

    @property
    def engine(self) -> str:
        return NAME

    @property
    def precision(self) -> str:
        return str(self.model.precision)

    def device_features(self, features: dict[str, Any]) -> dict[str, Any]:
        return features

    def core(self, features: Any) -> torch.Tensor:
        return self.model(features)

    def split(self, features: Any, at: int) -> tuple[Any, Any]:
        return split_features(features, at)


def _cache_folder(cache: Path | None, weights: Weights, keys: list[str]) -> Path | None:
    """Where this model's graph is kept; None without a cache or a revision to key it by."""
    if cache is None or not weights.revision:
        return None
    versions = {
        name: _version(name)
        for name in ("openvino", "torch", "transformers", "sentence-transformers")
    }
    blob = json.dumps(
        {"revision": weights.revision, "dtype": weights.dtype, "keys": keys, **versions},
        sort_keys=True,
    )
    return cache / "openvino" / hashlib.sha256(blob.encode()).hexdigest()[:24]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def cached_graph(ov: Any, folder: Path | None) -> Any:
    if folder is None or not (folder / "model.xml").is_file():
        return None
    try:
        return ov.Core().read_model(str(folder / "model.xml"))
    except Exception as error:  # a damaged cache entry: trace again
        log.info("cannot read the cached OpenVINO graph in %s (%s): tracing again", folder, error)
        return None


def save_graph(ov: Any, graph: Any, folder: Path | None) -> None:
    """Written to a temporary folder beside it, then renamed: never a half-written entry."""
    if folder is None:
        return
    temporary: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
        ov.save_model(graph, str(temporary / "model.xml"), compress_to_fp16=False)
        os.replace(temporary, folder)
    except OSError as error:
        # A read-only or full disk, or another server that kept the same graph first: the
        # engine works without it; the temporary folder (ours) goes.
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        if not (folder / "model.xml").is_file():
            log.info("cannot keep the OpenVINO graph in %s: %s", folder, error)


def openvino_model(
    weights: Weights, text: TextTokenizer, threads: int | None, cache: Path | None
) -> OpenVinoModel:
    cached = weights.extras.get(NAME)
    if isinstance(cached, Exception):
        raise cached
    if cached is None:
        try:
            cached = OpenVinoModel(weights, text, threads, cache)
        except Exception as error:
            weights.extras[NAME] = error
            raise
        weights.extras[NAME] = cached
    return cached
