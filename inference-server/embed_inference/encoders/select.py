"""The sentence-transformers engine, and the one place that chooses a model key's encoder.

Every model key starts from the reference encoder (st.py: the model's own modules, as
`SentenceTransformer.encode` runs them). A faster sibling (the packed BERT path on CUDA)
is used only where it knows the model and its vectors agree with the reference's on
CHECK_TEXTS when the model loads; otherwise the reference it is, with one log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidArgument
from .base import Backend, Encoder, Settings, Weights, first_line
from .hf_text import TextEncoder, TextTokenizer
from .st import SentenceTransformerEncoder, load_weights

log = logging.getLogger("embed_inference.encoders.select")

# The check at load: every row's cosine to the reference path, and the norms' ratio (which
# catches a mean computed as a sum when the vectors are not normalized).
MIN_COSINE = 0.9995
MAX_NORM_ERROR = 0.01
CHECK_TEXTS = (
    "Hello world.",
    "The quick brown fox jumps over the lazy dog; it is a pangram used in typography.",
    "Die Übersetzung ins Deutsche, 日本語のテキスト, и немного кириллицы — with accents: café.",
    " ".join(["We estimate the latent variable model by maximum likelihood."] * 80),
    "a",
)

# The CPU engine's bound: its vectors are to be those of float32 torch.
CPU_MIN_COSINE = 0.9999
# Which CPU engine --engine names: sentence-transformers = the fastest that passes its check.
CPU_ENGINES = {"sentence-transformers": "auto", "openvino": "openvino", "torch": "torch"}

# A faster sibling of the reference encoder: made from the weights, the settings and the
# shared tokenization; raises when it does not know the model.
Make = Callable[[Weights, Settings, TextTokenizer], TextEncoder]


@dataclass(frozen=True)
class Candidate:
    label: str
    make: Make
    # Every row's cosine to the reference on CHECK_TEXTS must reach this.
    min_cosine: float = MIN_COSINE


def fast_bert_candidate(weights: Weights, settings: Settings, text: TextTokenizer) -> TextEncoder:
    from .fast_bert import FastBertEncoder, packed_model

    return FastBertEncoder(weights, settings, text, packed_model(weights))


def openvino_candidate(threads: int | None, cache: Path | None) -> Make:
    def make(weights: Weights, settings: Settings, text: TextTokenizer) -> TextEncoder:
        from .openvino_engine import OpenVinoEncoder, openvino_model

        model = openvino_model(weights, text, threads, cache)
        return OpenVinoEncoder(weights, settings, text, model)

    return make


def select_encoder(
    weights: Weights, settings: Settings, candidates: Sequence[Candidate]
) -> TextEncoder:
    """The first candidate that runs the model and agrees with the reference encoder on
    CHECK_TEXTS; else the reference encoder, each refusal said in one log line. Never raises
    for a candidate's failure."""
    text = TextTokenizer(weights, settings)
    reference = SentenceTransformerEncoder(weights, settings, text)
    for candidate_spec in candidates:
        label, make, min_cosine = (
            candidate_spec.label,
            candidate_spec.make,
            candidate_spec.min_cosine,
        )
        try:
            candidate = make(weights, settings, text)
            worst, norm_error = compare(reference, candidate, CHECK_TEXTS)
        except Exception as error:
            log.info("%s off for this model (%s): %s", label, _name(weights), first_line(error))
            continue
        if worst < min_cosine or norm_error > MAX_NORM_ERROR:
            log.warning(
                "%s off for this model (%s): its vectors differ from the reference path "
                "(lowest cosine %.6f, norm error %.4f)",
                label,
                _name(weights),
                worst,
                norm_error,
            )
            continue
        log.info("%s on for %s (check: lowest cosine %.6f)", label, _name(weights), worst)
        return candidate
    return reference


def compare(reference: Encoder, other: Encoder, texts: Sequence[str]) -> tuple[float, float]:
    """(lowest row cosine, largest relative norm difference) between two encoders' vectors."""

    def encode(encoder: Encoder) -> np.ndarray:
        return encoder.post(encoder.forward(encoder.pre(list(texts)))).astype(np.float64)

    a, b = encode(reference), encode(other)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cosine = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-30)
    return float(cosine.min()), float(np.max(np.abs(na - nb) / np.maximum(na, 1e-30)))


def _name(weights: Weights) -> str:
    config = getattr(getattr(weights.model, "_first_module", lambda: None)(), "auto_model", None)
    name = getattr(getattr(config, "config", None), "_name_or_path", "") if config else ""
    return str(name or type(weights.model).__name__)


class SentenceTransformerBackend(Backend):
    name = "sentence-transformers"

    def __init__(
        self,
        threads: int | None,
        trust_remote_code: bool,
        fast_path: str = "auto",
        cpu_engine: str = "auto",
        cache: Path | None = None,
    ):
        # Where engines keep what they derive from weights (OpenVINO's converted graph).
        self._cache = cache
        self._threads = threads
        self._trust_remote_code = trust_remote_code
        # auto: the packed fast path on CUDA only (on the CPU padding costs less than the
        # packing).
        self._fast_path = fast_path
        # auto or openvino: OpenVINO on the CPU where it passes its check; torch: never.
        self._cpu_engine = cpu_engine

    def start(self) -> None:
        if self._threads is not None:
            torch.set_num_threads(self._threads)
        import sentence_transformers  # noqa: F401 - the slow import, done before SERVING

    def load(
        self, model_id: str, local_path: Path | None, revision: str, device: str, dtype: str
    ) -> Weights:
        return load_weights(model_id, local_path, revision, device, dtype, self._trust_remote_code)

    def candidates(self, weights: Weights) -> list[Candidate]:
        """The faster siblings worth trying for these weights, best first."""
        found: list[Candidate] = []
        cpu = weights.device == "cpu"
        if self._fast_path == "on" or (self._fast_path == "auto" and not cpu):
            found.append(Candidate("fast path", fast_bert_candidate))
        if cpu and self._cpu_engine != "torch":
            found.append(
                Candidate(
                    "openvino engine",
                    openvino_candidate(self._threads, self._cache),
                    CPU_MIN_COSINE,
                )
            )
        return found

    def encoder(
        self, weights: Weights, settings: Settings, calibration: Sequence[str] = ()
    ) -> Encoder:
        if settings.quantize:
            if self._cpu_engine == "torch":
                raise InvalidArgument(
                    "the torch engine cannot quantize: int8 runs on the openvino engine "
                    "(--engine openvino or sentence-transformers)"
                )
            from .int8 import int8_encoder

            return int8_encoder(weights, settings, calibration, self._threads, self._cache)
        return select_encoder(weights, settings, self.candidates(weights))
