"""Transport concerns, on the debug engine: health, auth, TLS, reflection, sizes,
cancellation, and the overlap of the Embed pipeline's stages."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import (
    MODEL_DIR,
    RunningServer,
    debug_channel,
    embed,
    make_config,
    refused_load,
    vectors,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from embed_inference.config import Limits
from embed_inference.encoders.base import Encoder, Prepared, Settings
from embed_inference.models import LoadedModel, ModelInfo
from embed_inference.pipeline import EmbedStream, StagePools
from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_health_is_not_serving_until_the_engine_is_ready() -> None:
    server = RunningServer(make_config(["--engine", "debug"]), prepare=False)
    try:
        with server.channel() as channel:
            assert health_of(channel, "") == NOT_SERVING
            assert health_of(channel, "embedmulti.v1.Inference") == NOT_SERVING
            server.prepare()
            assert health_of(channel, "") == SERVING
            assert health_of(channel, "embedmulti.v1.Inference") == SERVING
    finally:
        server.close()


def test_reflection_lists_the_services(debug_server: RunningServer) -> None:
    with debug_server.channel() as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"embedmulti.v1.Inference", "grpc.health.v1.Health"} <= services


def test_auth_token() -> None:
    with debug_channel({"EMBED_AUTH_TOKEN": "s3cret"}) as channel:
        stub = pb_grpc.InferenceStub(channel)
        good = [("authorization", "Bearer s3cret")]
        assert stub.Info(pb.InfoRequest(), metadata=good).engine == "debug"
        key = stub.LoadModel(pb.LoadModelRequest(model_id="m"), metadata=good).model_key
        assert vectors(embed(stub, [(1, key, ["a"])], metadata=good)[1]).shape == (1, 384)
        for metadata in (
            None,
            [("authorization", "Bearer wrong")],
            [("authorization", "s3cret")],
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Info(pb.InfoRequest(), metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as caught:
            embed(stub, [(1, key, ["a"])])
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert health_of(channel, "") == SERVING, "health needs no token"


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = RunningServer(
        make_config(["--engine", "debug", "--tls-cert", str(cert), "--tls-key", str(key)])
    )
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(server.target, credentials) as channel:
            assert (
                pb_grpc.InferenceStub(channel).Info(pb.InfoRequest(), timeout=10).engine == "debug"
            )
        with grpc.insecure_channel(server.target) as plain:
            with pytest.raises(grpc.RpcError) as caught:
                pb_grpc.InferenceStub(plain).Info(pb.InfoRequest(), timeout=3)
            assert caught.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
    finally:
        server.close()


def test_message_size_limits() -> None:
    server = RunningServer(make_config(["--engine", "debug", "--max-message-bytes", "65536"]))
    try:
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            assert stub.Info(pb.InfoRequest()).limits.max_message_bytes == 65536
            key = stub.LoadModel(pb.LoadModelRequest(model_id="m")).model_key
            # A reply of 100 x 384 float32 (153,600 bytes) would not fit.
            result = embed(stub, [(1, key, ["w"] * 100), (2, key, ["w"] * 10)])
            assert result[1].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert vectors(result[2]).shape == (10, 384)
            # A request over the limit is refused by gRPC itself.
            with pytest.raises(grpc.RpcError) as caught:
                stub.CountTokens(pb.CountTokensRequest(model_key=key, texts=["x" * 70_000]))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.close()


def test_many_batches_and_cancellation(
    debug_server: RunningServer, debug_stub: pb_grpc.InferenceStub
) -> None:
    key = debug_stub.LoadModel(pb.LoadModelRequest(model_id="m")).model_key
    batches = [(i, key, [f"text {i} {j}" for j in range(50)]) for i in range(40)]
    results = embed(debug_stub, batches)
    assert sorted(results) == list(range(40))
    assert all(r.embeddings.rows == 50 for r in results.values())

    # A client that cancels mid-stream: the server drops the stream's work and goes on.
    def endless() -> Any:
        for i in range(10**9):
            yield pb.EmbedBatch(batch_id=i, model_key=key, texts=["x"] * 10)

    call = debug_stub.Embed(endless())
    assert next(call).embeddings.rows == 10
    call.cancel()
    with pytest.raises(grpc.RpcError) as caught:
        for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    assert vectors(embed(debug_stub, [(1, key, ["after"])])[1]).shape == (1, 64)


class _OverlapEncoder(Encoder):
    """Batch 0's forward pass waits until batch 1's tokenization has started: a
    pipeline that ran one batch at a time would never get there."""

    def __init__(self) -> None:
        super().__init__(Settings("", False, 8))
        self.second_pre_started = threading.Event()
        self.overlapped = False

    @property
    def dim(self) -> int:
        return 2

    def pre(self, texts: Sequence[str]) -> Prepared:
        if texts[0] == "second":
            self.second_pre_started.set()
        n = len(texts)
        return Prepared(texts, n, np.ones(n, np.uint32), np.zeros(n, bool))

    def core(self, features: Any) -> Any:
        if features[0] == "first":
            self.overlapped = self.second_pre_started.wait(5)
        return np.zeros((len(features), 2), np.float32)

    def post(self, output: Any) -> np.ndarray:
        return output

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [1] * len(texts)

    def split(self, features: Any, at: int) -> tuple[Any, Any]:
        return features[:at], features[at:]

    def concat(self, outputs: list[Any]) -> Any:
        return np.concatenate(outputs)

    def release_memory(self) -> None:
        pass


def test_tokenizing_overlaps_the_forward_pass() -> None:
    encoder = _OverlapEncoder()
    info = ModelInfo("k", "m", "r", 2, 8, "debug", False, "", "float32", "cpu", 0)

    class Registry:
        def get(self, key: str) -> LoadedModel:
            return LoadedModel(info, encoder)

    async def run() -> list[pb.EmbedResult]:
        async def requests() -> AsyncIterator[pb.EmbedBatch]:
            for batch_id, text in enumerate(["first", "second", "third"]):
                yield pb.EmbedBatch(batch_id=batch_id, model_key="k", texts=[text])

        pools = StagePools()
        try:
            stream = EmbedStream(Registry(), Limits(), pools)  # type: ignore[arg-type]
            return [result async for result in stream.run(requests())]
        finally:
            pools.shutdown()

    started = time.monotonic()
    results = asyncio.run(run())
    assert sorted(r.batch_id for r in results) == [0, 1, 2]
    assert encoder.overlapped, "batch 1 was not tokenized while batch 0 was in the forward pass"
    assert time.monotonic() - started < 4


@pytest.mark.parametrize(
    "model_id",
    ["a" * 5000, "org/" + "b" * 97, "x" * 300 + "/y", "../etc", "a/b/c", "name with spaces"],
)
def test_a_model_id_that_cannot_be_a_folder_is_invalid_argument(
    st_stub: pb_grpc.InferenceStub, model_id: str
) -> None:
    """Refused before the file system sees it: no INTERNAL, no server paths in the message."""
    details = refused_load(st_stub, model_id).details() or ""
    assert str(MODEL_DIR) not in details and str(MODEL_DIR.resolve()) not in details
    assert "/models" not in details
    assert len(details) < 400, "a 5000-character id is not echoed whole"


def test_a_token_with_a_trailing_newline_is_trimmed() -> None:
    with debug_channel({"EMBED_AUTH_TOKEN": "s3cret\n"}) as channel:
        stub = pb_grpc.InferenceStub(channel)
        good = [("authorization", "Bearer s3cret")]
        assert stub.Info(pb.InfoRequest(), metadata=good).engine == "debug"
