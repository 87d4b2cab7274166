"""The deterministic debug engine (`--engine debug`): no model, no torch, fast start.

The orchestrator's tests recompute its output, so the formula is part of the
contract and must not change:

    For each text t (after the prefix is prepended):
      seed = the first 8 bytes of sha256(utf8(t)), read as a little-endian uint64
      for j in 0 .. dim-1:
        x = splitmix64(seed + (j + 1) * 0x9E3779B97F4A7C15 mod 2^64)
        value[j] = float32((x >> 40) / 2^23 - 1.0)     # exact in float32, in [-1, 1)
      where splitmix64(z), all mod 2^64:
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        z = z ^ (z >> 31)
      if truncate_dim N > 0: only value[0 .. N-1] are kept (the row has N values)
      if normalize: the row is divided by its L2 norm, both in float64
      (norm = sqrt(sum(float64(value[j])^2))), and the quotient cast to float32.

    Token count of t: the number of whitespace-separated words (Python str.split())
    + 2, cut at max_length (default 512); truncated when the uncut count exceeds it.

    Token ids of t (CountTokens with return_ids, and EmbedBatch.tokens): as many ids as
    its token count, the first two the seed's low and high 32 bits, the rest 0. An
    EmbedBatch of these ids gives the same vectors as one of the texts.

Any model id is accepted: dim = --debug-dim (truncate_dim when set), revision "debug",
pooling "debug".
It also measures the orchestrator's speed ceiling, so it is vectorized over the
whole batch with numpy uint64 arithmetic (which wraps mod 2^64).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgument
from .base import Backend, Encoder, Prepared, Settings, TokenBatch, Weights

DEFAULT_MAX_LENGTH = 512
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# Elements per chunk: the temporaries stay in the CPU cache.
_CHUNK_ELEMENTS = 1 << 15


def seeds_of(texts: Sequence[str]) -> np.ndarray:
    digests = b"".join(hashlib.sha256(t.encode("utf-8")).digest()[:8] for t in texts)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def debug_vectors(seeds: np.ndarray, dim: int) -> np.ndarray:
    """The formula above, without normalization: float32 (len(seeds), dim)."""
    rows = len(seeds)
    out = np.empty((rows, dim), dtype=np.float32)
    steps = np.arange(1, dim + 1, dtype=np.uint64) * _GOLDEN
    chunk_rows = max(1, _CHUNK_ELEMENTS // max(dim, 1))
    z = np.empty((min(chunk_rows, rows), dim), dtype=np.uint64)
    t = np.empty_like(z)
    top = np.empty(z.shape, dtype=np.int32)
    for start in range(0, rows, chunk_rows):
        stop = min(rows, start + chunk_rows)
        zz, tt, tp = z[: stop - start], t[: stop - start], top[: stop - start]
        np.add(seeds[start:stop, None], steps[None, :], out=zz)
        np.right_shift(zz, np.uint64(30), out=tt)
        np.bitwise_xor(zz, tt, out=zz)
        np.multiply(zz, _MIX1, out=zz)
        np.right_shift(zz, np.uint64(27), out=tt)
        np.bitwise_xor(zz, tt, out=zz)
        np.multiply(zz, _MIX2, out=zz)
        # The last step, z ^ (z >> 31), cannot change bits 40..63, so (x >> 40) == (z >> 40).
        np.right_shift(zz, np.uint64(40), out=zz)
        # Through int32 (the value is < 2^24): uint64 -> float conversion is slow in numpy.
        np.copyto(tp, zz, casting="unsafe")
        block = out[start:stop]
        np.copyto(block, tp, casting="unsafe")
        block *= np.float32(2.0**-23)
        block -= np.float32(1.0)
    return out


def l2_normalize_f64(values: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalization computed in float64, cast back to float32."""
    out = np.empty_like(values, dtype=np.float32)
    chunk_rows = max(1, _CHUNK_ELEMENTS // max(values.shape[1], 1))
    for start in range(0, len(values), chunk_rows):
        wide = values[start : start + chunk_rows].astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))
        norms[norms == 0.0] = 1.0
        wide /= norms[:, None]
        np.copyto(out[start : start + chunk_rows], wide, casting="same_kind")
    return out


class DebugEncoder(Encoder):
    def __init__(self, dim: int, settings: Settings) -> None:
        super().__init__(settings)
        self._dim = dim

    @property
    def dim(self) -> int:
        return self.settings.truncate_dim or self._dim

    @property
    def engine(self) -> str:
        return "debug"

    def _words(self, texts: Sequence[str]) -> np.ndarray:
        prefix = self.settings.prefix
        return np.fromiter((len((prefix + t).split()) + 2 for t in texts), np.int64, len(texts))

    def pre(self, texts: Sequence[str]) -> Prepared:
        prefix = self.settings.prefix
        self._count_tokenized(len(texts))
        full = self._words(texts)
        max_length = self.settings.max_length
        return Prepared(
            features=seeds_of([prefix + t for t in texts]),
            rows=len(texts),
            token_counts=np.minimum(full, max_length).astype(np.uint32),
            truncated=full > max_length,
        )

    @property
    def supports_ids(self) -> bool:
        return self.settings.max_length >= 2  # room for the seed

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        prefix = self.settings.prefix
        self._count_tokenized(len(texts))
        full = self._words(texts)
        lengths = np.minimum(full, self.settings.max_length).astype(np.uint32)
        ids = np.zeros(int(lengths.sum()), dtype=np.uint32)
        starts = np.concatenate(([0], np.cumsum(lengths[:-1], dtype=np.int64)))
        halves = seeds_of([prefix + t for t in texts]).view(np.uint32).reshape(-1, 2)
        ids[starts] = halves[:, 0]
        ids[starts + 1] = halves[:, 1]
        return TokenBatch(ids=ids, lengths=lengths, truncated=full > self.settings.max_length)

    def pre_ids(self, tokens: TokenBatch) -> Prepared:
        lengths = tokens.lengths.astype(np.uint32)
        if np.any(lengths < 2):
            raise InvalidArgument("debug engine token ids need at least 2 ids per row")
        starts = np.concatenate(([0], np.cumsum(lengths[:-1], dtype=np.int64)))
        ids = tokens.ids.astype(np.uint64)
        seeds = ids[starts] | (ids[starts + 1] << np.uint64(32))
        return Prepared(
            features=seeds,
            rows=tokens.rows,
            token_counts=lengths,
            truncated=tokens.truncated.astype(bool),
        )

    def core(self, features: Any) -> np.ndarray:
        # Value j depends on the seed and j alone: the first truncate_dim values are
        # computed by themselves, never the whole row to be cut.
        return debug_vectors(features, self.dim)

    def post(self, output: Any) -> np.ndarray:
        kept = self.truncated(output)
        return l2_normalize_f64(kept) if self.settings.normalize else kept

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self._count_tokenized(len(texts))
        return self._words(texts).tolist()

    def split(self, features: Any, at: int) -> tuple[Any, Any]:
        return features[:at], features[at:]

    def concat(self, outputs: list[Any]) -> np.ndarray:
        return np.concatenate(outputs, axis=0)

    def release_memory(self) -> None:
        pass


class DebugBackend(Backend):
    name = "debug"
    uses_model_files = False

    def __init__(self, dim: int) -> None:
        self._dim = dim

    def load(
        self, model_id: str, local_path: Path | None, revision: str, device: str, dtype: str
    ) -> Weights:
        return Weights(
            model=None,
            dim=self._dim,
            pooling="debug",
            dtype="float32",
            device=device,
            default_max_length=DEFAULT_MAX_LENGTH,
            # Nothing in the formula limits the length; the cap only keeps counts sane.
            position_limit=2**31 - 1,
            revision="debug",
        )

    def encoder(
        self, weights: Weights, settings: Settings, calibration: Sequence[str] = ()
    ) -> Encoder:
        if settings.quantize:
            raise InvalidArgument(
                f"the debug engine cannot quantize ({settings.quantize}): it runs no model"
            )
        return DebugEncoder(self._dim, settings)
