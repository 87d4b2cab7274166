"""Shared fixtures: real servers on 127.0.0.1 port 0 (each on its own event loop in a
background thread) and real gRPC clients; the model loads once per session."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from faulty_server import Faults, faulty_backends

from embed_inference.cli import parse_config
from embed_inference.config import ServerConfig
from embed_inference.encoders.base import Weights
from embed_inference.encoders.select import SentenceTransformerBackend
from embed_inference.server import InferenceServer
from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PATH = MODEL_DIR / MODEL_ID
# A slice of the unarXive corpus kept in the repository (licence beside it).
CORPUS = REPO / "test" / "fixtures" / "unarxive-slice.jsonl"
TORCH_THREADS = "2"

# huggingface_hub is first imported later, when a server starts its engine: nothing may
# wait on the network.
os.environ["HF_HUB_OFFLINE"] = "1"


def make_config(argv: Sequence[str], environ: dict[str, str] | None = None) -> ServerConfig:
    return parse_config(["--port", "0", *argv], environ or {})


def model_config(*argv: str, environ: dict[str, str] | None = None) -> ServerConfig:
    """A server of the offline model folder on TORCH_THREADS threads; `argv` adds flags."""
    return make_config(["--model-dir", str(MODEL_DIR), "--threads", TORCH_THREADS, *argv], environ)


def st_backend(
    fast_path: str, cpu_engine: str, cache: Path | None = None
) -> SentenceTransformerBackend:
    """The sentence-transformers engine on TORCH_THREADS threads (not started)."""
    return SentenceTransformerBackend(int(TORCH_THREADS), False, fast_path, cpu_engine, cache)


def float32_weights(backend: SentenceTransformerBackend) -> Weights:
    """The offline model loaded by `backend` on the CPU in float32."""
    return backend.load(MODEL_ID, MODEL_PATH, "", "cpu", "float32")


def run_stages(encoder: Any, texts: list[str]) -> np.ndarray:
    """An encoder's three stages on `texts`, one after the other."""
    return encoder.post(encoder.forward(encoder.pre(texts)))


class RunningServer:
    """An InferenceServer on its own loop in a daemon thread, as the CLI runs it."""

    def __init__(
        self, config: ServerConfig, prepare: bool = True, faults: Faults | None = None
    ) -> None:
        self.config = config
        self._backend_of = faulty_backends(faults) if faults is not None else None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: InferenceServer = self.call(self._create())
        self.port: int = self.call(self.server.start())
        if prepare:
            self.prepare()

    async def _create(self) -> InferenceServer:
        return InferenceServer(self.config, self._backend_of)

    def call(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def prepare(self) -> None:
        self.call(self.server.prepare())

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        size = self.config.limits.max_message_bytes
        return grpc.insecure_channel(
            self.target,
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
            ],
        )

    def close(self) -> None:
        self.call(self.server.stop(0.5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="session")
def paragraphs() -> list[str]:
    """Real arXiv paragraphs: the first 40 with some substance."""
    texts: list[str] = []
    with CORPUS.open(encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line)["text"].strip()
            if len(text) > 80:
                texts.append(text)
            if len(texts) == 40:
                break
    return texts


@pytest.fixture(scope="session")
def st_server() -> Iterator[RunningServer]:
    server = RunningServer(model_config("--device", "cpu"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def st_channel(st_server: RunningServer) -> Iterator[grpc.Channel]:
    with st_server.channel() as channel:
        yield channel


@pytest.fixture(scope="session")
def st_stub(st_channel: grpc.Channel) -> pb_grpc.InferenceStub:
    return pb_grpc.InferenceStub(st_channel)


@pytest.fixture(scope="session")
def direct_model(st_server: RunningServer) -> Any:
    """The reference: a plain SentenceTransformer on the same files."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(MODEL_PATH), device="cpu")


@pytest.fixture(scope="session")
def debug_server() -> Iterator[RunningServer]:
    server = RunningServer(make_config(["--engine", "debug", "--debug-dim", "64"]))
    yield server
    server.close()


@pytest.fixture(scope="session")
def debug_stub(debug_server: RunningServer) -> Iterator[pb_grpc.InferenceStub]:
    with debug_server.channel() as channel:
        yield pb_grpc.InferenceStub(channel)


@contextmanager
def debug_channel(environ: dict[str, str] | None = None) -> Iterator[grpc.Channel]:
    """A channel to a server of its own on the debug engine; `environ` is its environment."""
    server = RunningServer(make_config(["--engine", "debug"], environ))
    try:
        with server.channel() as channel:
            yield channel
    finally:
        server.close()


def embed(
    stub: pb_grpc.InferenceStub,
    batches: Sequence[tuple[int, str, Sequence[str]]],
    metadata: Sequence[tuple[str, str]] | None = None,
) -> dict[int, pb.EmbedResult]:
    """Sends every batch on one stream and returns the results by batch_id."""
    requests = iter(
        [pb.EmbedBatch(batch_id=b, model_key=key, texts=list(texts)) for b, key, texts in batches]
    )
    results: dict[int, pb.EmbedResult] = {}
    for result in stub.Embed(requests, metadata=metadata, timeout=120):
        assert result.batch_id not in results, "one answer per batch"
        results[result.batch_id] = result
    return results


def refused_load(stub: pb_grpc.InferenceStub, model_id: str) -> grpc.RpcError:
    """LoadModel of an id the server must refuse before loading anything: INVALID_ARGUMENT."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.LoadModel(pb.LoadModelRequest(model_id=model_id), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value


def vectors(result: pb.EmbedResult) -> np.ndarray:
    assert result.WhichOneof("outcome") == "embeddings", result.error.message
    emb = result.embeddings
    data = np.frombuffer(emb.data, dtype="<f4")
    assert data.size == emb.rows * emb.dim
    return data.reshape(emb.rows, emb.dim)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
