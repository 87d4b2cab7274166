"""Opt-in static int8 (`--quantize int8`): the CPU engine's OpenVINO graph, quantized by NNCF.

Static, not dynamic: the scales of every activation are fixed once from calibration texts, so
the forward computes int8 matmuls without measuring each batch (ONNX Runtime's dynamic int8
reached only cosine 0.958 to float32 here; bench/RESULTS.md). The calibration texts are a
sample of the client's own run (never a data set from a hub), sent with LoadModel; the client
picks them deterministically, so that every server and every resume quantizes alike.

After quantizing, the server measures how far the int8 vectors stray from the float32
reference (the model's own torch modules) on those same texts: every row's cosine; the
lowest and the mean go back in ModelInfo, and the client decides whether that is enough.

The quantized graph is kept beside the float32 one (`<cache>/openvino/<key>-int8-<hash>`, the
hash over the calibration's token ids and the NNCF version): a second start, or a resumed
run, reads the same graph instead of quantizing again, so its vectors are the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidArgument
from .base import (
    Encoder,
    Fidelity,
    Settings,
    TokenBatch,
    Weights,
    calibration_digest,
    first_line,
)
from .hf_text import TextEncoder, TextTokenizer
from .openvino_engine import (
    OpenVinoEncoder,
    OpenVinoModel,
    cached_graph,
    compile_graph,
    openvino_model,
    run_compiled,
    save_graph,
)
from .st import SentenceTransformerEncoder

log = logging.getLogger("embed_inference.encoders.int8")

PRECISION = "int8"
# Rows per forward when measuring the fidelity (sorted by length, so little padding).
_FIDELITY_BATCH = 16


class Int8Model:
    """The float32 graph of `base`, quantized on the calibration texts, compiled."""

    def __init__(self, base: OpenVinoModel, text: TextTokenizer, calibration: Sequence[str]):
        import openvino as ov

        self.keys = base.keys
        rows = [text.tokenize([t]) for t in calibration]
        folder = _int8_folder(base.folder, rows)
        graph = cached_graph(ov, folder)
        with tempfile.TemporaryDirectory(prefix="embed-int8-") as scratch:
            if graph is None:
                graph = _written_and_read(ov, _quantize(base, text, rows), folder, Path(scratch))
            # float32 for what stays unquantized (OpenVINO would pick bfloat16 where the
            # CPU has it).
            self.compiled = compile_graph(ov, graph, "f32", base.threads)
        self.precision = PRECISION
        self._local = threading.local()

    def __call__(self, features: dict[str, Any]) -> torch.Tensor:
        return run_compiled(self.compiled, self._local, self.keys, features)


def _written_and_read(ov: Any, graph: Any, folder: Path | None, scratch: Path) -> Any:
    """The graph as read back from its files. NNCF's graph in memory computes other last
    bits than the same graph written and read (measured: one ulp here and there), and a
    resumed run reads the kept one: so the first run reads it too, from the cache or, with
    no cache, from a scratch folder."""
    save_graph(ov, graph, folder)
    kept = cached_graph(ov, folder)
    if kept is not None:
        return kept
    ov.save_model(graph, str(scratch / "model.xml"), compress_to_fp16=False)
    return ov.Core().read_model(str(scratch / "model.xml"))


def _quantize(base: OpenVinoModel, text: TextTokenizer, rows: list[TokenBatch]) -> Any:
    import nncf

    # NNCF logs its progress bars at INFO; the server's log says one line instead.
    nncf.set_log_level(logging.ERROR)
    items = []
    for tokens in rows:
        features = text.pad(tokens)
        items.append({i: features[k].numpy() for i, k in enumerate(base.keys)})
    log.info("quantizing to int8 on %d calibration texts (NNCF)", len(items))
    return nncf.quantize(
        base.graph.clone(),  # the float32 graph stays as it is, for other model keys
        nncf.Dataset(items),
        # TRANSFORMER: SmoothQuant on the matmuls, and the ops whose int8 hurts attention
        # (softmax, layer norm, the residual adds) left in float.
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(items),
    )


def _int8_folder(float_folder: Path | None, rows: list[TokenBatch]) -> Path | None:
    """Beside the float32 graph's folder, keyed by what the quantization read."""
    if float_folder is None:
        return None
    digest = hashlib.sha256()
    digest.update(_version("nncf").encode() + b"\0")
    for tokens in rows:
        digest.update(np.ascontiguousarray(tokens.ids, dtype=np.uint32).tobytes() + b"\0")
    return float_folder.with_name(f"{float_folder.name}-int8-{digest.hexdigest()[:16]}")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def int8_encoder(
    weights: Weights,
    settings: Settings,
    calibration: Sequence[str],
    threads: int | None,
    cache: Path | None,
) -> TextEncoder:
    """The quantized encoder, its fidelity measured; InvalidArgument where it cannot be."""
    if weights.device != "cpu":
        raise InvalidArgument(
            f"quantize int8 runs on the CPU engine (OpenVINO), not on {weights.device}"
        )
    try:
        import nncf  # noqa: F401 - its absence is a refusal, not a crash at quantizing
    except ImportError as error:
        raise InvalidArgument(
            "quantize int8 needs NNCF in the server's environment "
            "(pip install 'embed-inference-server[cpu]')"
        ) from error
    text = TextTokenizer(weights, settings)
    try:
        base = openvino_model(weights, text, threads, cache)
        encoder = OpenVinoEncoder(weights, settings, text, Int8Model(base, text, calibration))
    except Exception as error:
        raise InvalidArgument(
            f"quantize int8: the OpenVINO engine cannot run this model ({first_line(error)})"
        ) from error
    reference = SentenceTransformerEncoder(weights, settings, text)
    encoder.fidelity = fidelity(reference, encoder, text, calibration)
    log.info(
        "int8 on %d calibration texts: lowest cosine to float32 %.6f, mean %.6f",
        encoder.fidelity.rows,
        encoder.fidelity.min_cosine,
        encoder.fidelity.mean_cosine,
    )
    return encoder


def fidelity(
    reference: Encoder,
    quantized: Encoder,
    text: TextTokenizer,
    texts: Sequence[str],
) -> Fidelity:
    """Every text's cosine between the two encoders' vectors (as the client gets them: after
    truncate_dim and normalize). Tokenized here without counting as the run's texts."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    cosines: list[np.ndarray] = []
    for start in range(0, len(order), _FIDELITY_BATCH):
        batch = [texts[i] for i in order[start : start + _FIDELITY_BATCH]]
        tokens = text.tokenize(batch)
        a, b = (
            e.post(e.forward(e.pre_ids(tokens))).astype(np.float64) for e in (reference, quantized)
        )
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosines.append((a * b).sum(axis=1) / np.maximum(norms, 1e-30))
    every = np.concatenate(cosines)
    return Fidelity(
        rows=len(texts),
        min_cosine=float(every.min()),
        mean_cosine=float(every.mean()),
        calibration_sha256=calibration_digest(texts),
    )
