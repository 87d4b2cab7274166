"""Token ids through the contract: CountTokens(return_ids) and EmbedBatch.tokens, on the
real model over real gRPC, and the debug engine's fake ids."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from conftest import MODEL_ID, REPO, cosine_rows, vectors

from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

EXAMPLES = REPO / "examples" / "paragraphs.jsonl"


def example_texts() -> list[str]:
    with EXAMPLES.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def embed_batches(stub: pb_grpc.InferenceStub, batches: list[pb.EmbedBatch]) -> dict[int, Any]:
    return {r.batch_id: r for r in stub.Embed(iter(batches), timeout=300)}


def tokenized_rows(stub: pb_grpc.InferenceStub, key: str) -> int:
    info = stub.Info(pb.InfoRequest())
    return next(m.tokenized_rows for m in info.models if m.model_key == key)


@pytest.fixture(scope="module")
def model(st_stub: pb_grpc.InferenceStub) -> pb.ModelInfo:
    return st_stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID), timeout=120)


def test_ids_and_texts_give_identical_vectors_equal_to_encode(
    st_stub: pb_grpc.InferenceStub, model: pb.ModelInfo, direct_model: Any
) -> None:
    texts = [*example_texts()[:24], "漢字かな" * 300, "short", "  padded  text  "]
    before = tokenized_rows(st_stub, model.model_key)
    counted = st_stub.CountTokens(
        pb.CountTokensRequest(model_key=model.model_key, texts=texts, return_ids=True)
    )
    assert counted.HasField("tokens") and not counted.counts
    tokens = counted.tokens
    assert len(tokens.lengths) == len(texts)
    assert len(tokens.ids) == 4 * sum(tokens.lengths)
    assert max(tokens.lengths) == model.max_length and any(tokens.truncated)
    assert tokenized_rows(st_stub, model.model_key) == before + len(texts)

    results = embed_batches(
        st_stub,
        [
            pb.EmbedBatch(batch_id=1, model_key=model.model_key, tokens=tokens),
            pb.EmbedBatch(batch_id=2, model_key=model.model_key, texts=texts),
        ],
    )
    by_ids, by_texts = vectors(results[1]), vectors(results[2])
    assert by_ids.tobytes() == by_texts.tobytes()
    assert list(results[1].embeddings.token_counts) == list(results[2].embeddings.token_counts)
    assert list(results[1].embeddings.truncated) == list(results[2].embeddings.truncated)
    assert list(results[1].embeddings.token_counts) == list(tokens.lengths)
    # The ids batch tokenized nothing; the texts batch tokenized every row once.
    assert tokenized_rows(st_stub, model.model_key) == before + 2 * len(texts)
    direct = direct_model.encode(texts, batch_size=32, convert_to_numpy=True)
    assert cosine_rows(by_ids, direct).min() >= 0.999999


def test_long_texts_are_cut_yet_give_the_ids_of_the_whole_text(
    st_server: Any, model: pb.ModelInfo
) -> None:
    encoder = st_server.server.runtime.registry.get(model.model_key).encoder
    assert encoder.supports_ids and encoder.text._cut_margin is not None
    rng = random.Random(7)
    words = ["alpha", "Beta", "漢字", "x" * 130, "naïve", "of", "1,234", "\t", "é" * 99]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 4000))) for _ in range(120)]
    # Words longer than WordPiece's 100 characters straddling where a cut may fall,
    # a text with no whitespace, and one made of one enormous word.
    texts += ["w " * 1100 + "y" * 3000, "漢" * 100_000, "z" * 50_000, "a " * 5000]
    cut = encoder.text._tokenize_rows(texts, cut=True)
    whole = encoder.text._tokenize_rows(texts, cut=False)
    assert np.array_equal(cut.lengths, whole.lengths)
    assert np.array_equal(cut.ids, whole.ids)
    assert np.array_equal(cut.truncated, whole.truncated)
    assert cut.truncated.sum() > 60


def test_bad_ids_are_refused_per_batch(st_stub: pb_grpc.InferenceStub, model: pb.ModelInfo) -> None:
    key = model.model_key
    bad = [
        pb.TokenIds(ids=np.array([101, 10**6, 102], "<u4").tobytes(), lengths=[3], truncated=[0]),
        pb.TokenIds(ids=np.array([101, 102], "<u4").tobytes(), lengths=[3], truncated=[0]),
        pb.TokenIds(ids=np.array([101, 102], "<u4").tobytes(), lengths=[2], truncated=[]),
        pb.TokenIds(ids=np.full(300, 101, "<u4").tobytes(), lengths=[300], truncated=[1]),
    ]
    batches = [pb.EmbedBatch(batch_id=i, model_key=key, tokens=t) for i, t in enumerate(bad)]
    batches.append(
        pb.EmbedBatch(
            batch_id=9,
            model_key=key,
            tokens=pb.TokenIds(ids=np.array([101, 102], "<u4").tobytes(), lengths=[2]),
            texts=["both"],
        )
    )
    results = embed_batches(st_stub, batches)
    assert len(results) == len(batches)
    for result in results.values():
        assert result.WhichOneof("outcome") == "error"
        assert result.error.code == 3, result.error.message  # INVALID_ARGUMENT


def test_concurrent_streams_tokenize_in_parallel_without_errors(
    st_stub: pb_grpc.InferenceStub, model: pb.ModelInfo
) -> None:
    texts = example_texts()[:40]

    def one_stream(offset: int) -> list[bytes]:
        batches = [
            pb.EmbedBatch(batch_id=i, model_key=model.model_key, texts=texts[i : i + 4])
            for i in range(0, len(texts), 4)
        ]
        results = embed_batches(st_stub, batches)
        return [vectors(results[i]).tobytes() for i in sorted(results)]

    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(one_stream, range(4)))
    assert all(o == outputs[0] for o in outputs[1:])


def test_debug_engine_ids_give_the_same_vectors(debug_stub: pb_grpc.InferenceStub) -> None:
    info = debug_stub.LoadModel(
        pb.LoadModelRequest(model_id="d", prefix="p: ", normalize=True, max_length=8)
    )
    texts = ["one two", "a b c d e f g h i j k", "x", "unicode 漢字 é"]
    counted = debug_stub.CountTokens(
        pb.CountTokensRequest(model_key=info.model_key, texts=texts, return_ids=True)
    )
    assert list(counted.tokens.lengths) == [5, 8, 4, 6]  # words + prefix word + 2, cut at 8
    assert list(counted.tokens.truncated) == [False, True, False, False]
    plain = debug_stub.CountTokens(pb.CountTokensRequest(model_key=info.model_key, texts=texts))
    assert list(plain.counts) == [5, 14, 4, 6] and not plain.HasField("tokens")
    results = embed_batches(
        debug_stub,
        [
            pb.EmbedBatch(batch_id=1, model_key=info.model_key, tokens=counted.tokens),
            pb.EmbedBatch(batch_id=2, model_key=info.model_key, texts=texts),
        ],
    )
    assert vectors(results[1]).tobytes() == vectors(results[2]).tobytes()
    assert list(results[1].embeddings.token_counts) == list(results[2].embeddings.token_counts)
    assert list(results[1].embeddings.truncated) == list(results[2].embeddings.truncated)
