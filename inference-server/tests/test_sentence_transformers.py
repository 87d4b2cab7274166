"""The real model behind the real server, checked against a direct SentenceTransformer."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from conftest import (
    MODEL_ID,
    MODEL_PATH,
    RunningServer,
    cosine_rows,
    embed,
    model_config,
    vectors,
)
from faulty_server import Faults

from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def model(st_stub: pb_grpc.InferenceStub) -> pb.ModelInfo:
    return st_stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID), timeout=120)


def test_info_reports_engine_device_and_limits(st_stub: pb_grpc.InferenceStub) -> None:
    info = st_stub.Info(pb.InfoRequest())
    assert info.engine == "sentence-transformers"
    assert info.device == "cpu"
    assert info.dtype == "float32"
    assert info.server_version
    assert info.limits.max_batch_size == 1024
    assert info.limits.max_batch_tokens == 131072
    assert info.limits.max_message_bytes == 64 * 1024 * 1024
    assert info.limits.max_text_chars == 200_000


def test_load_model_describes_the_model(
    st_stub: pb_grpc.InferenceStub, model: pb.ModelInfo
) -> None:
    assert model.dim == 384
    assert model.max_length == 256
    assert model.pooling == "mean"
    assert model.revision.startswith("sha256:") and len(model.revision) > 10
    assert (model.dtype, model.device, model.model_id) == ("float32", "cpu", MODEL_ID)
    assert model.model_key
    again = st_stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID))
    assert again.model_key == model.model_key, "same settings, same key"
    other = st_stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID, prefix="query: "))
    assert other.model_key != model.model_key
    listed = {m.model_key for m in st_stub.Info(pb.InfoRequest()).models}
    assert {model.model_key, other.model_key} <= listed


def test_embed_matches_sentence_transformers_encode(
    st_stub: pb_grpc.InferenceStub, model: pb.ModelInfo, paragraphs: list[str], direct_model: Any
) -> None:
    texts = paragraphs[:24]
    # Several batches on one stream, answered by batch_id, rows in request order.
    batches = [(100 + i, model.model_key, texts[i * 8 : (i + 1) * 8]) for i in range(3)]
    results = embed(st_stub, batches)
    assert sorted(results) == [100, 101, 102]
    got = np.concatenate([vectors(results[100 + i]) for i in range(3)])
    expected = direct_model.encode(texts, convert_to_numpy=True)
    assert got.shape == expected.shape == (24, 384)
    assert cosine_rows(got, expected).min() >= 0.9999
    first = results[100].embeddings
    assert len(first.token_counts) == len(first.truncated) == 8
    lengths = [len(ids) for ids in direct_model.tokenizer(texts[:8])["input_ids"]]
    assert list(first.token_counts) == [min(n, 256) for n in lengths]
    assert list(first.truncated) == [n > 256 for n in lengths]


def test_prefix_is_prepended(
    st_stub: pb_grpc.InferenceStub, model: pb.ModelInfo, paragraphs: list[str], direct_model: Any
) -> None:
    texts = paragraphs[:6]
    prefixed = st_stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID, prefix="passage: "))
    assert prefixed.prefix == "passage: "
    results = embed(st_stub, [(1, prefixed.model_key, texts), (2, model.model_key, texts)])
    with_prefix, plain = vectors(results[1]), vectors(results[2])
    expected = direct_model.encode(["passage: " + t for t in texts])
    assert cosine_rows(with_prefix, expected).min() >= 0.9999
    assert np.abs(with_prefix - plain).max(axis=1).min() > 1e-3
    counts = st_stub.CountTokens(pb.CountTokensRequest(model_key=prefixed.model_key, texts=texts))
    plain_counts = st_stub.CountTokens(
        pb.CountTokensRequest(model_key=model.model_key, texts=texts)
    )
    # "passage: " is two more tokens ("passage", ":").
    extra = np.array(counts.counts) - np.array(plain_counts.counts)
    assert extra.tolist() == [2] * len(texts)


def test_normalize_gives_unit_rows(
    st_stub: pb_grpc.InferenceStub, paragraphs: list[str], direct_model: Any
) -> None:
    info = st_stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID, normalize=True))
    assert info.normalize
    got = vectors(embed(st_stub, [(7, info.model_key, paragraphs[:5])])[7])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    expected = direct_model.encode(paragraphs[:5], normalize_embeddings=True)
    assert cosine_rows(got, expected).min() >= 0.9999


def test_truncation_flags_and_counts(
    st_stub: pb_grpc.InferenceStub, paragraphs: list[str], direct_model: Any
) -> None:
    short = st_stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID, max_length=16))
    assert short.max_length == 16
    exactly_16 = " ".join(["hello"] * 14)  # 14 words + [CLS] + [SEP]
    texts = [paragraphs[0], "hello world", exactly_16]
    result = embed(st_stub, [(1, short.model_key, texts)])[1]
    assert list(result.embeddings.token_counts) == [16, 4, 16]
    assert list(result.embeddings.truncated) == [True, False, False]
    counts = st_stub.CountTokens(pb.CountTokensRequest(model_key=short.model_key, texts=texts))
    assert counts.counts[0] == len(direct_model.tokenizer(paragraphs[0])["input_ids"]) > 16
    assert list(counts.counts[1:]) == [4, 16]
    own = direct_model.max_seq_length
    direct_model.max_seq_length = 16
    try:
        expected = direct_model.encode(texts)
    finally:
        direct_model.max_seq_length = own
    assert cosine_rows(vectors(result), expected).min() >= 0.9999


@pytest.fixture(scope="module")
def matryoshka_model(st_server: RunningServer) -> Any:
    """The reference for truncate_dim: sentence-transformers' own, on the same files."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(MODEL_PATH), device="cpu", truncate_dim=128)


@pytest.mark.parametrize("normalize", [False, True])
def test_truncate_dim_matches_sentence_transformers(
    st_stub: pb_grpc.InferenceStub,
    model: pb.ModelInfo,
    paragraphs: list[str],
    matryoshka_model: Any,
    normalize: bool,
) -> None:
    info = st_stub.LoadModel(
        pb.LoadModelRequest(model_id=MODEL_ID, truncate_dim=128, normalize=normalize)
    )
    assert (info.dim, info.truncate_dim, info.normalize) == (128, 128, normalize)
    assert info.model_key != model.model_key
    texts = paragraphs[:12]
    got = vectors(embed(st_stub, [(1, info.model_key, texts)])[1])
    expected = matryoshka_model.encode(texts, convert_to_numpy=True, normalize_embeddings=normalize)
    assert got.shape == expected.shape == (12, 128)
    assert cosine_rows(got, expected).min() >= 0.999999
    norms = np.linalg.norm(got, axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(expected, axis=1), rtol=1e-5)
    if normalize:
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    else:
        # all-MiniLM-L6-v2 ends in a Normalize module: the full vector is a unit vector,
        # and its first 128 dimensions (cut after that module, as sentence-transformers
        # cuts) are shorter.
        assert norms.max() < 0.99
    full = vectors(embed(st_stub, [(2, model.model_key, texts)])[2])
    if not normalize:
        np.testing.assert_allclose(got, full[:, :128], rtol=0, atol=1e-6)


def test_truncate_dim_is_checked_against_the_model(st_stub: pb_grpc.InferenceStub) -> None:
    whole = st_stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID, truncate_dim=384))
    assert (whole.dim, whole.truncate_dim) == (384, 384)
    with pytest.raises(grpc.RpcError) as caught:
        st_stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID, truncate_dim=385))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        f"truncate_dim 385 is more than the 384 dimensions of {MODEL_ID!r}"
    )


def test_load_model_errors(st_stub: pb_grpc.InferenceStub) -> None:
    cases = [
        (pb.LoadModelRequest(model_id="nobody/no-such-model"), grpc.StatusCode.NOT_FOUND),
        (pb.LoadModelRequest(model_id=""), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.LoadModelRequest(model_id="../models"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.LoadModelRequest(model_id="a/b/c"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.LoadModelRequest(model_id=MODEL_ID, dtype="float64"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.LoadModelRequest(model_id=MODEL_ID, dtype="float16"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.LoadModelRequest(model_id=MODEL_ID, device="tpu"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            pb.LoadModelRequest(model_id=MODEL_ID, max_length=100_000),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for request, code in cases:
        with pytest.raises(grpc.RpcError) as caught:
            st_stub.LoadModel(request, timeout=60)
        assert caught.value.code() == code, (request, caught.value.details())
        assert "\n" not in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        st_stub.LoadModel(pb.LoadModelRequest(model_id="nobody/no-such-model"))
    assert "nobody/no-such-model" in caught.value.details()


def test_batch_errors_keep_the_stream_going(
    st_stub: pb_grpc.InferenceStub, model: pb.ModelInfo
) -> None:
    key = model.model_key
    results = embed(
        st_stub,
        [
            (1, "no-such-key", ["a"]),
            (2, key, ["fine"]),
            (3, key, ["x"] * 1025),
            (4, key, ["y" * 200_001]),
            (5, key, []),
            (6, key, ["also fine", "really"]),
        ],
    )
    codes = {b: (r.error.code if r.HasField("error") else 0) for b, r in results.items()}
    assert codes == {
        1: grpc.StatusCode.NOT_FOUND.value[0],
        2: 0,
        3: grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        4: grpc.StatusCode.INVALID_ARGUMENT.value[0],
        5: grpc.StatusCode.INVALID_ARGUMENT.value[0],
        6: 0,
    }
    assert "no-such-key" in results[1].error.message
    assert vectors(results[6]).shape == (2, 384)
    with pytest.raises(grpc.RpcError) as caught:
        st_stub.CountTokens(pb.CountTokensRequest(model_key="no-such-key", texts=["a"]))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_out_of_memory_split_returns_the_same_vectors(
    st_stub: pb_grpc.InferenceStub,
    model: pb.ModelInfo,
    paragraphs: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    texts = paragraphs[:16]
    reference = vectors(embed(st_stub, [(1, model.model_key, texts)])[1])
    server = RunningServer(model_config("--device", "cpu"), faults=Faults(oom_above=4))
    try:
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            info = stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID))
            assert info.model_key == model.model_key, "the fault does not change the numbers"
            result = embed(stub, [(1, info.model_key, texts)])[1]
    finally:
        server.close()
    assert result.embeddings.rows == 16
    # 16 rows -> 8 + 8 -> four pieces of 4, each under the hook's limit.
    assert "out of memory on a batch of 16 rows" in caplog.text
    assert "4 pieces" in caplog.text
    np.testing.assert_allclose(vectors(result), reference, atol=1e-5)
