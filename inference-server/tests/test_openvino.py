"""The CPU engine (OpenVINO) against torch float32 on the same offline all-MiniLM-L6-v2: the
default on a CPU, its check at load, its fallbacks, and the bfloat16 rule."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    CORPUS,
    MODEL_ID,
    MODEL_PATH,
    TORCH_THREADS,
    RunningServer,
    cosine_rows,
    float32_weights,
    make_config,
    model_config,
    run_stages,
    st_backend,
    vectors,
)
from faulty_server import Faults, FaultyEncoder

from embed_inference import devices
from embed_inference.encoders.base import Settings, Weights
from embed_inference.encoders.openvino_engine import OpenVinoEncoder
from embed_inference.encoders.select import (
    CPU_MIN_COSINE,
    Candidate,
    SentenceTransformerBackend,
    openvino_candidate,
    select_encoder,
)
from embed_inference.encoders.st import SentenceTransformerEncoder
from embed_inference.errors import ConfigError
from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

LOGGER = "embed_inference.encoders.select"


def fixture_texts() -> list[str]:
    with CORPUS.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> SentenceTransformerBackend:
    cache = tmp_path_factory.mktemp("cache")
    backend = st_backend("auto", "auto", cache)
    backend.start()
    return backend


@pytest.fixture(scope="module")
def weights32(backend: SentenceTransformerBackend) -> Weights:
    weights = float32_weights(backend)
    weights.revision = "test-revision"  # as the registry sets it: the cache's key
    return weights


def test_the_default_on_a_cpu_is_openvino_and_gives_float32_vectors_of_the_fixture(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing set: the server picks OpenVINO on this CPU, and every third of the 1,200
    fixture paragraphs (all lengths, the truncated ones too) comes back within cosine 0.9999
    of a float32 SentenceTransformer.encode. All 1,200 through the CLI are in
    bench/RESULTS.md (least cosine 0.999999999999); a third keeps CI time down."""
    everything = fixture_texts()
    assert len(everything) == 1200
    texts = everything[::3]
    config = model_config()
    assert config.engine == "sentence-transformers" and config.dtype == "float32"
    server = RunningServer(config)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER), server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            info = stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID))
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            batches = [(b, order[b * 64 : (b + 1) * 64]) for b in range((len(order) + 63) // 64)]
            requests = [
                pb.EmbedBatch(batch_id=b, model_key=info.model_key, texts=[texts[i] for i in rows])
                for b, rows in batches
            ]
            # A generous deadline: 1,200 paragraphs on 2 shared cores.
            results = {r.batch_id: r for r in stub.Embed(iter(requests), timeout=1800)}
    finally:
        server.close()
    assert "openvino engine on" in caplog.text
    assert (info.engine, info.precision) == ("openvino", "float32")
    got = np.zeros((len(texts), info.dim), dtype=np.float32)
    for b, rows in batches:
        got[rows] = vectors(results[b])
    from sentence_transformers import SentenceTransformer

    direct = SentenceTransformer(str(MODEL_PATH), device="cpu")
    want = direct.encode(texts, batch_size=64, convert_to_numpy=True)
    assert cosine_rows(got, want).min() >= CPU_MIN_COSINE


def test_token_ids_and_truncation_are_the_reference_ones(
    backend: SentenceTransformerBackend, weights32: Weights
) -> None:
    settings = Settings("query: ", True, 128)
    encoder = backend.encoder(weights32, settings)
    assert isinstance(encoder, OpenVinoEncoder) and encoder.supports_ids
    texts = [*fixture_texts()[:40], " ".join(["long"] * 400)]
    prepared = encoder.pre(texts)
    assert prepared.truncated[-1] and int(prepared.token_counts.max()) == 128
    reference = SentenceTransformerEncoder(weights32, settings, encoder.text)
    assert (
        cosine_rows(run_stages(encoder, texts), run_stages(reference, texts)).min()
        >= CPU_MIN_COSINE
    )
    # Out of memory splits give the same vectors as the whole batch.
    split = FaultyEncoder(encoder, Faults(oom_above=8))
    np.testing.assert_allclose(run_stages(split, texts), run_stages(encoder, texts), atol=1e-5)


def test_the_converted_graph_is_kept_and_read_back(
    backend: SentenceTransformerBackend, weights32: Weights
) -> None:
    backend.encoder(weights32, Settings("", False, 256))
    kept = list(Path(backend._cache or "").glob("openvino/*/model.xml"))
    assert len(kept) == 1
    again = Weights(**{**vars(weights32), "extras": {}})
    encoder = backend.encoder(again, Settings("", False, 256))
    assert isinstance(encoder, OpenVinoEncoder)


def test_an_engine_made_wrong_on_purpose_falls_back(
    weights32: Weights, caplog: pytest.LogCaptureFixture
) -> None:
    """A CPU engine whose vectors are a little off (cosine about 0.9996: enough for the GPU
    path's bound, not for this one's) is refused at load; the reference path serves."""
    real = openvino_candidate(int(TORCH_THREADS), None)

    def slightly_wrong(weights: Weights, settings: Settings, text: Any) -> Any:
        return FaultyEncoder(real(weights, settings, text), Faults(perturb=0.03))

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        encoder = select_encoder(
            weights32,
            Settings("", True, 256),
            [Candidate("openvino engine", slightly_wrong, CPU_MIN_COSINE)],
        )
    assert type(encoder) is SentenceTransformerEncoder
    assert "openvino engine off" in caplog.text and "differ from the reference" in caplog.text


def test_a_model_the_engine_cannot_run_keeps_the_reference_path(
    backend: SentenceTransformerBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A static-embedding model (features: ids and offsets, no transformer) is not one the
    engine converts: one log line, and the model's own modules serve it."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(MODEL_PATH / "tokenizer.json"))
    folder = tmp_path / "static"
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=16)]).save(str(folder))
    weights = backend.load("tiny/static", folder, "", "cpu", "float32")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        encoder = backend.encoder(weights, Settings("", True, 128))
    assert type(encoder) is SentenceTransformerEncoder
    lines = [r.getMessage() for r in caplog.records if "openvino engine off" in r.getMessage()]
    assert len(lines) == 1 and "not token ids" in lines[0]
    texts = ["a b c", "hello world"]
    want = SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True)
    assert cosine_rows(run_stages(encoder, texts), want).min() >= 0.9999


def test_engine_torch_names_the_reference_path(weights32: Weights) -> None:
    backend = st_backend("auto", "torch")
    encoder = backend.encoder(weights32, Settings("", True, 256))
    assert type(encoder) is SentenceTransformerEncoder and encoder.engine == "torch"
    for engine in ("openvino", "torch", "sentence-transformers"):
        assert make_config(["--engine", engine, "--device", "cpu"]).engine == engine


def test_bfloat16_on_a_cpu_only_where_it_computes_it(tmp_path: Path) -> None:
    flags = tmp_path / "cpuinfo"
    flags.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n", encoding="utf-8")
    assert devices.cpu_has_bfloat16(str(flags))
    flags.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_vnni\n", encoding="utf-8")
    assert not devices.cpu_has_bfloat16(str(flags))
    if devices.cpu_has_bfloat16():
        assert make_config(["--dtype", "bfloat16", "--device", "cpu"]).dtype == "bfloat16"
    else:
        with pytest.raises(ConfigError, match="bfloat16 on the CPU needs AVX-512 BF16 or AMX"):
            make_config(["--dtype", "bfloat16", "--device", "cpu"])
    with pytest.raises(ConfigError, match="float16 needs a CUDA device"):
        make_config(["--dtype", "float16", "--device", "cpu"])
