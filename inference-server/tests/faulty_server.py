"""Test only: the inference server with faults installed when it starts.

The orchestrator's tests need a server that goes wrong in known ways: one that runs out of
memory above a batch size, fails a batch holding a marker, computes other vectors, returns
NaN rows, or never finishes loading a model. Production code knows nothing of them: this
wrapper wraps the engine that the server's flags choose (its Backend, and each model key's
Encoder) and starts the server with it.

    python inference-server/tests/faulty_server.py [FAULT FLAGS] [SERVER FLAGS]

FAULT FLAGS:
  --fault-oom-above N    a forward pass over more than N rows raises a CUDA out-of-memory
                         error (the server splits the batch and retries)
  --fault-poison S       a batch holding a text that contains S fails
  --fault-perturb-after N  with --fault-perturb: the first N batches the server answers are
                         right, every one after them perturbed (passes the probe, then goes wrong)
  --fault-perturb X      X times its norm times a fixed unit vector is added to every vector,
                         normalized again if the model normalizes: other weights, same shape
  --fault-nan S          each text containing S comes back as a row of NaN
  --fault-hang-load      LoadModel never answers (a server stuck reading weights)
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embed_inference import cli
from embed_inference.config import ServerConfig
from embed_inference.encoders.base import Backend, Encoder, Prepared, Settings, TokenBatch, Weights


@dataclass(frozen=True)
class Faults:
    oom_above: int | None = None
    poison: str | None = None
    perturb: float | None = None
    perturb_after: int = 0
    nan: str | None = None
    hang_load: bool = False

    @property
    def reads_texts(self) -> bool:
        """Poison and NaN look for a string in a batch's texts: token ids would hide it."""
        return bool(self.poison or self.nan)


@dataclass
class _Rows:
    """An engine's features or outputs, and which of their rows must come back NaN."""

    inner: Any
    nan: np.ndarray


class FaultyEncoder(Encoder):
    def __init__(self, inner: Encoder, faults: Faults, answers: _Answers | None = None) -> None:
        super().__init__(inner.settings)
        self.inner = inner
        self.faults = faults
        self.answers = answers or _Answers()
        self.vocab_size = inner.vocab_size
        self.fidelity = inner.fidelity  # a quantized engine's, as the real one reports

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def engine(self) -> str:
        return self.inner.engine

    @property
    def precision(self) -> str:
        return self.inner.precision

    @property
    def tokenized_rows(self) -> int:
        return self.inner.tokenized_rows

    @property
    def supports_ids(self) -> bool:
        return self.inner.supports_ids and not self.faults.reads_texts

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        return self.inner.tokenize(texts)

    def pre_ids(self, tokens: TokenBatch) -> Prepared:
        return self._wrap(self.inner.pre_ids(tokens), np.zeros(tokens.rows, dtype=bool))

    def pre(self, texts: Sequence[str]) -> Prepared:
        poison = self.faults.poison
        if poison and any(poison in t for t in texts):
            raise RuntimeError(f"poisoned batch (--fault-poison {poison!r})")
        marker = self.faults.nan
        nan = np.array([bool(marker) and marker in t for t in texts], dtype=bool)
        return self._wrap(self.inner.pre(texts), nan)

    @staticmethod
    def _wrap(prepared: Prepared, nan: np.ndarray) -> Prepared:
        return Prepared(
            features=_Rows(prepared.features, nan),
            rows=prepared.rows,
            token_counts=prepared.token_counts,
            truncated=prepared.truncated,
        )

    def core(self, features: Any) -> Any:
        rows = len(features.nan)
        above = self.faults.oom_above
        if above is not None and rows > above:
            raise _out_of_memory(f"simulated by --fault-oom-above {above}: {rows} rows")
        return _Rows(self.inner.core(features.inner), features.nan)

    def finish(self, output: Any) -> Any:
        return _Rows(self.inner.finish(output.inner), output.nan)

    def post(self, output: Any) -> np.ndarray:
        data = self.inner.post(output.inner)
        if self.faults.perturb is not None and self.answers.next() >= self.faults.perturb_after:
            data = perturbed(data, self.faults.perturb, self.settings.normalize)
        if output.nan.any():
            data = np.array(data, dtype=np.float32, copy=True)
            data[output.nan, :] = np.nan
        return data

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def split(self, features: Any, at: int) -> tuple[Any, Any]:
        first, second = self.inner.split(features.inner, at)
        return _Rows(first, features.nan[:at]), _Rows(second, features.nan[at:])

    def concat(self, outputs: list[Any]) -> Any:
        return _Rows(
            self.inner.concat([o.inner for o in outputs]), np.concatenate([o.nan for o in outputs])
        )

    def release_memory(self) -> None:
        self.inner.release_memory()


def _out_of_memory(detail: str) -> BaseException:
    """What CUDA raises, where torch is loaded; else the RuntimeError some kernels raise."""
    message = f"CUDA out of memory ({detail})"
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return torch.cuda.OutOfMemoryError(message)
        except TypeError:  # not constructible in this torch build
            pass
    return RuntimeError(message)


class _Answers:
    """How many batches one server answered before this one (all its models)."""

    def __init__(self) -> None:
        self._count = itertools.count()
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._count)


def perturbed(data: Any, strength: float, normalize: bool) -> np.ndarray:
    """Vectors of the right shape and norm that mean something else, as from other weights
    or pooling: a fixed direction (seeded, the same on every call) times `strength` times
    the row's norm is added to every row (so the change does not depend on the scale),
    which is then normalized again if the model normalizes."""
    dim = int(data.shape[1])
    direction = np.random.default_rng(0).standard_normal(dim)
    direction /= np.linalg.norm(direction)
    rows = data.astype(np.float64)
    out = rows + strength * np.linalg.norm(rows, axis=1, keepdims=True) * direction[None, :]
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(out, dtype=np.float32)


class FaultyBackend(Backend):
    def __init__(self, inner: Backend, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults
        # The model keys stay those of the real engine.
        self.name = inner.name
        self.uses_model_files = inner.uses_model_files
        self._stopped = threading.Event()
        self._answers = _Answers()

    def start(self) -> None:
        self.inner.start()

    def stop(self) -> None:
        self._stopped.set()  # a hanging load returns, so that the process can exit
        self.inner.stop()

    def load(
        self, model_id: str, local_path: Path | None, revision: str, device: str, dtype: str
    ) -> Weights:
        if self.faults.hang_load:
            self._stopped.wait()
            raise RuntimeError("the server stopped while LoadModel hung (--fault-hang-load)")
        return self.inner.load(model_id, local_path, revision, device, dtype)

    def encoder(
        self, weights: Weights, settings: Settings, calibration: Sequence[str] = ()
    ) -> Encoder:
        inner = self.inner.encoder(weights, settings, calibration)
        return FaultyEncoder(inner, self.faults, self._answers)


def faulty_backends(faults: Faults) -> cli.BackendFactory:
    """The server's own choice of engine, with `faults` installed."""

    def make(config: ServerConfig) -> Backend:
        from embed_inference.server import make_backend

        return FaultyBackend(make_backend(config), faults)

    return make


def parse_faults(argv: Sequence[str]) -> tuple[Faults, list[str]]:
    """The fault flags, and the rest of argv for the server."""
    parser = argparse.ArgumentParser(prog="faulty_server.py", add_help=False)
    parser.add_argument("--fault-oom-above", type=_non_negative)
    parser.add_argument("--fault-poison")
    parser.add_argument("--fault-perturb", type=_positive)
    parser.add_argument("--fault-perturb-after", type=_non_negative, default=0)
    parser.add_argument("--fault-nan")
    parser.add_argument("--fault-hang-load", action="store_true")
    known, rest = parser.parse_known_args(argv)
    faults = Faults(
        oom_above=known.fault_oom_above,
        poison=known.fault_poison or None,
        perturb=known.fault_perturb,
        perturb_after=known.fault_perturb_after,
        nan=known.fault_nan or None,
        hang_load=known.fault_hang_load,
    )
    return faults, rest


def _non_negative(value: str) -> int:
    rows = int(value)
    if rows < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {rows}")
    return rows


def _positive(value: str) -> float:
    strength = float(value)
    if not math.isfinite(strength) or strength <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value!r}")
    return strength


def main(argv: Sequence[str] | None = None) -> int:
    faults, rest = parse_faults(sys.argv[1:] if argv is None else argv)
    return cli.main(rest, faulty_backends(faults))


if __name__ == "__main__":
    sys.exit(main())
