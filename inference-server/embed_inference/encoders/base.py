"""The encoder interface and the out-of-memory split that every engine shares.

The stages are separate methods because the Embed pipeline runs them in
different threads: tokenizing batch n+1 while batch n is in the forward pass.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ResourceExhausted

log = logging.getLogger("embed_inference.encoders")


def is_out_of_memory(error: BaseException) -> bool:
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is not None and isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    # Some kernels still raise a bare RuntimeError for a CUDA OOM.
    return isinstance(error, RuntimeError) and "CUDA out of memory" in str(error)


def first_line(error: BaseException) -> str:
    """An exception as one log-friendly line: its type and the first line of its text."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


@dataclass(frozen=True)
class Settings:
    """The LoadModel settings that change the numbers, on top of the weights."""

    prefix: str
    normalize: bool
    max_length: int
    # Matryoshka: the first N dimensions of the pooled embedding, kept before the
    # normalization (as sentence-transformers' truncate_dim); 0 = all of them.
    truncate_dim: int = 0
    # "" or "int8": static int8 quantization, calibrated on the texts the client sent
    # with the load (encoders/int8.py).
    quantize: str = ""


@dataclass(frozen=True)
class Fidelity:
    """A quantized encoder's vectors against its float32 reference on the calibration
    texts: every row's cosine between the two."""

    rows: int
    min_cosine: float
    mean_cosine: float
    # sha256 of the calibration texts, each followed by a NUL byte.
    calibration_sha256: str


def calibration_digest(texts: Sequence[str]) -> str:
    """sha256 (hex) of the texts, each followed by a NUL byte (as QuantizeFidelity says)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


@dataclass
class Weights:
    """Loaded model weights, shared by every model_key that uses them."""

    model: Any
    dim: int
    pooling: str
    dtype: str
    device: str
    # The model's own max sequence length, and the most its position embeddings allow.
    default_max_length: int
    position_limit: int
    # Commit hash for a hub/cache load; None when the caller hashes a local folder.
    revision: str | None = None
    # Serializes tokenizer calls on this model (see SentenceTransformerEncoder.pre).
    lock: threading.Lock = field(default_factory=threading.Lock)
    # What an engine derives from the weights once and shares across model keys (the
    # fast path's packed model, or the reason it has none).
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenBatch:
    """Token ids of several texts, as the forward pass takes them: prefix, special tokens
    and truncation at max_length applied, no padding."""

    # Every row's ids, concatenated.
    ids: np.ndarray
    # Ids per row.
    lengths: np.ndarray
    # Whether each row was cut at max_length.
    truncated: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.lengths)


@dataclass
class Prepared:
    """A tokenized batch: engine-specific features plus what the client is told per row."""

    features: Any
    rows: int
    # Tokens per row after truncation, special tokens included.
    token_counts: np.ndarray
    # Whether the untruncated count exceeded max_length.
    truncated: np.ndarray


class Encoder(ABC):
    """One model_key: shared weights plus its prefix, normalize, max_length and truncate_dim."""

    # The largest id plus one that pre_ids accepts; None: any uint32 (debug engine).
    vocab_size: int | None = None
    # Set on a quantized encoder: how close it stays to float32 on the calibration texts.
    fidelity: Fidelity | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tokenized = 0
        self._tokenized_lock = threading.Lock()

    @property
    def tokenized_rows(self) -> int:
        """Texts tokenized so far (CountTokens and Embed batches of texts)."""
        return self._tokenized

    def _count_tokenized(self, rows: int) -> None:
        with self._tokenized_lock:
            self._tokenized += rows

    @property
    def supports_ids(self) -> bool:
        """Whether tokenize/pre_ids work; if not, clients send texts."""
        return False

    @property
    def engine(self) -> str:
        """What computes the forward pass (reported in ModelInfo and the metadata)."""
        return "unknown"

    @property
    def precision(self) -> str:
        """The precision the forward computes in; "" = the model's dtype."""
        return ""

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        """Prefix, tokenize and truncate, for CountTokens(return_ids) and pre."""
        raise NotImplementedError

    def pre_ids(self, tokens: TokenBatch) -> Prepared:
        """`pre` for a batch that comes already tokenized."""
        raise NotImplementedError

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def pre(self, texts: Sequence[str]) -> Prepared:
        """Prefix, tokenize, truncate; on CUDA also start the host-to-device copy."""

    @abstractmethod
    def core(self, features: Any) -> Any:
        """The forward pass; returns the pooled embeddings, still on the device."""

    @abstractmethod
    def post(self, output: Any) -> np.ndarray:
        """Truncate, then normalize if asked; return a C-contiguous float32 (rows, dim) array."""

    def truncated(self, output: Any) -> Any:
        """The first truncate_dim columns of a (rows, dim) array or tensor: what
        sentence-transformers does to the pooled embedding (after the model's own modules,
        a Normalize module included) before `normalize_embeddings`."""
        keep = self.settings.truncate_dim
        return output[:, :keep] if keep else output

    @abstractmethod
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text with the prefix and special tokens, before truncation."""

    @abstractmethod
    def split(self, features: Any, at: int) -> tuple[Any, Any]:
        """Rows [0, at) and [at, rows) of a prepared batch, for the OOM retry."""

    @abstractmethod
    def concat(self, outputs: list[Any]) -> Any:
        """Joins core outputs of consecutive row ranges."""

    @abstractmethod
    def release_memory(self) -> None:
        """Returns cached device memory after an OOM (torch.cuda.empty_cache)."""

    def finish(self, output: Any) -> Any:
        """What follows the forward pass on the forward thread (the reference encoder
        queues the copy to the host there); `post` gets its result."""
        return output

    def forward(self, prepared: Prepared) -> Any:
        """`core` with the out-of-memory fallback: split in halves and retry, down to one
        row; the caller always gets one whole result for the batch, or ResourceExhausted.
        Then `finish`."""
        pieces = [0]
        output = self._forward_split(prepared.features, prepared.rows, pieces)
        if pieces[0] > 1:
            log.warning(
                "out of memory on a batch of %d rows: recovered by splitting it into %d pieces",
                prepared.rows,
                pieces[0],
            )
        return self.finish(output)

    def _forward_split(self, features: Any, rows: int, pieces: list[int]) -> Any:
        try:
            output = self.core(features)
            pieces[0] += 1
            return output
        except Exception as error:
            if not is_out_of_memory(error):
                raise
        # Outside the except block, so that the failed attempt's traceback (and the
        # tensors its frames hold) is released before the retry allocates again.
        self.release_memory()
        if rows <= 1:
            raise ResourceExhausted("out of device memory on a single row; the text is too long")
        half = rows // 2
        first, second = self.split(features, half)
        return self.concat(
            [
                self._forward_split(first, half, pieces),
                self._forward_split(second, rows - half, pieces),
            ]
        )


class Backend(ABC):
    """An engine: how weights are found and loaded, and how encoders are made."""

    name: str
    # Whether model ids are looked up in the model directory and the hub.
    uses_model_files: bool = True

    def start(self) -> None:  # noqa: B027 - optional hook
        """Heavy imports and global settings (torch threads), off the event loop."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """The server is stopping: end anything `load` may still be waiting on."""

    @abstractmethod
    def load(
        self,
        model_id: str,
        local_path: Path | None,
        revision: str,
        device: str,
        dtype: str,
    ) -> Weights:
        """Loads weights from `local_path`, or else `model_id` from the hub/cache."""

    @abstractmethod
    def encoder(
        self, weights: Weights, settings: Settings, calibration: Sequence[str] = ()
    ) -> Encoder:
        """The encoder of one model key; `calibration` (texts of the client's run) only
        with settings.quantize, which an engine that cannot quantize refuses
        (InvalidArgument)."""
