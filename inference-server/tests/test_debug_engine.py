"""The debug engine: its formula is a contract with the TypeScript tests."""

from __future__ import annotations

import hashlib
import math
import struct
import subprocess
import sys

import grpc
import numpy as np
import pytest
from conftest import RunningServer, embed, make_config, vectors
from faulty_server import Faults

from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

MASK = (1 << 64) - 1


def reference_row(text: str, dim: int, normalize: bool, truncate_dim: int = 0) -> list[float]:
    """The docstring's formula in plain Python integers, independent of numpy."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    row = []
    for j in range(dim):
        z = (seed + (j + 1) * 0x9E3779B97F4A7C15) & MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z = z ^ (z >> 31)
        row.append((z >> 40) / 2**23 - 1.0)
    as_f32 = [struct.unpack("<f", struct.pack("<f", v))[0] for v in row]
    assert as_f32 == row, "every value is exact in float32"
    if truncate_dim:
        row = row[:truncate_dim]
    if normalize:
        norm = math.sqrt(sum(v * v for v in row))
        row = [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in row]
    return row


TEXTS = ["hello world", "Embeddings, streamed: ünïcode ✓", ""]


def test_vectors_follow_the_formula(debug_stub: pb_grpc.InferenceStub) -> None:
    plain = debug_stub.LoadModel(pb.LoadModelRequest(model_id="any/model-id"))
    assert (plain.dim, plain.revision, plain.pooling, plain.max_length) == (
        64,
        "debug",
        "debug",
        512,
    )
    unit = debug_stub.LoadModel(
        pb.LoadModelRequest(model_id="any/model-id", normalize=True, prefix="query: ")
    )
    results = embed(debug_stub, [(1, plain.model_key, TEXTS), (2, unit.model_key, TEXTS)])
    got_plain, got_unit = vectors(results[1]), vectors(results[2])
    for i, text in enumerate(TEXTS):
        assert got_plain[i].tolist() == reference_row(text, 64, normalize=False)
        np.testing.assert_allclose(
            got_unit[i], reference_row("query: " + text, 64, normalize=True), rtol=0, atol=1e-7
        )
    assert list(results[1].embeddings.token_counts) == [4, 6, 2]
    assert list(results[2].embeddings.token_counts) == [5, 7, 3]
    counts = debug_stub.CountTokens(pb.CountTokensRequest(model_key=unit.model_key, texts=TEXTS))
    assert list(counts.counts) == [5, 7, 3]


def test_truncate_dim_keeps_the_first_values_then_normalizes(
    debug_stub: pb_grpc.InferenceStub,
) -> None:
    for normalize in (False, True):
        info = debug_stub.LoadModel(
            pb.LoadModelRequest(model_id="any/model-id", truncate_dim=16, normalize=normalize)
        )
        assert (info.dim, info.truncate_dim) == (16, 16)
        got = vectors(embed(debug_stub, [(1, info.model_key, TEXTS)])[1])
        assert got.shape == (len(TEXTS), 16)
        for i, text in enumerate(TEXTS):
            expected = reference_row(text, 64, normalize=normalize, truncate_dim=16)
            if normalize:
                np.testing.assert_allclose(got[i], expected, rtol=0, atol=1e-7)
                # Normalized after the cut: the full row's unit vector cut would not be.
                assert abs(float(np.linalg.norm(got[i].astype(np.float64))) - 1.0) < 1e-6
            else:
                assert got[i].tolist() == expected
    with pytest.raises(grpc.RpcError) as caught:
        debug_stub.LoadModel(pb.LoadModelRequest(model_id="any/model-id", truncate_dim=65))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncate_dim 65 is more than the 64 dimensions" in caught.value.details()


def test_truncation_and_token_budget() -> None:
    server = RunningServer(make_config(["--engine", "debug", "--max-batch-tokens", "20"]))
    try:
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            short = stub.LoadModel(pb.LoadModelRequest(model_id="m", max_length=5))
            results = embed(
                stub,
                [
                    (1, short.model_key, ["one two three four", "one two three", "one"]),
                    (2, short.model_key, ["w"] * 7),  # 7 rows x 3 tokens = 21 > 20
                ],
            )
    finally:
        server.close()
    assert list(results[1].embeddings.token_counts) == [5, 5, 3]
    assert list(results[1].embeddings.truncated) == [True, False, False]
    assert results[2].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "max_batch_tokens" in results[2].error.message


def test_out_of_memory_is_split_and_retried(debug_stub: pb_grpc.InferenceStub) -> None:
    texts = [f"paragraph {i}" for i in range(16)]
    reference_key = debug_stub.LoadModel(pb.LoadModelRequest(model_id="m")).model_key
    reference = vectors(embed(debug_stub, [(1, reference_key, texts)])[1])
    for above, expect_ok in ((4, True), (0, False)):
        config = make_config(["--engine", "debug", "--debug-dim", "64"])
        server = RunningServer(config, faults=Faults(oom_above=above))
        try:
            with server.channel() as channel:
                stub = pb_grpc.InferenceStub(channel)
                key = stub.LoadModel(pb.LoadModelRequest(model_id="m")).model_key
                result = embed(stub, [(1, key, texts)])[1]
        finally:
            server.close()
        if expect_ok:
            np.testing.assert_array_equal(vectors(result), reference)
        else:  # even one row "does not fit": the batch fails, RESOURCE_EXHAUSTED
            assert result.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


def test_debug_engine_does_not_import_torch() -> None:
    script = (
        "import sys\n"
        "from embed_inference.cli import parse_config\n"
        "from embed_inference.server import make_backend\n"
        "from embed_inference.models import LoadRequest, ModelRegistry\n"
        "config = parse_config(['--engine', 'debug'], {})\n"
        "backend = make_backend(config)\n"
        "backend.start()\n"
        "model = ModelRegistry(config, backend).load(LoadRequest(model_id='m'))\n"
        "prepared = model.encoder.pre(['a b'])\n"
        "model.encoder.post(model.encoder.forward(prepared))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("dim", [1, 7, 1024])
def test_vectorized_formula_matches_reference_for_any_dim(dim: int) -> None:
    from embed_inference.encoders.debug import debug_vectors, seeds_of

    got = debug_vectors(seeds_of(["x", "yz"]), dim)
    assert got.dtype == np.float32 and got.shape == (2, dim)
    assert got[1].tolist() == reference_row("yz", dim, normalize=False)
