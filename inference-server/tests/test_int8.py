"""Static int8 (quantize int8): NNCF on the OpenVINO graph of the offline all-MiniLM-L6-v2,
calibrated on texts the client sends; its fidelity to float32 measured on them, the graph
kept and read back, and the refusals of what cannot quantize."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import (
    CORPUS,
    MODEL_DIR,
    MODEL_ID,
    MODEL_PATH,
    TORCH_THREADS,
    RunningServer,
    cosine_rows,
    embed,
    make_config,
    vectors,
)

from embed_inference.encoders.base import Settings, Weights, calibration_digest
from embed_inference.encoders.int8 import int8_encoder
from embed_inference.encoders.openvino_engine import OpenVinoEncoder
from embed_inference.encoders.select import SentenceTransformerBackend
from embed_inference.errors import InvalidArgument
from embed_inference.models import weights_digest
from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

# Few texts: quantizing reads each one twice (statistics, then bias correction).
CALIBRATION_ROWS = 24


def calibration_texts() -> list[str]:
    with CORPUS.open(encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle if line.strip()]
    step = len(texts) // CALIBRATION_ROWS
    return texts[::step][:CALIBRATION_ROWS]


def run(encoder: Any, texts: list[str]) -> np.ndarray:
    return encoder.post(encoder.forward(encoder.pre(texts)))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def weights32(cache: Path) -> Weights:
    backend = SentenceTransformerBackend(int(TORCH_THREADS), False, "auto", "auto", cache)
    backend.start()
    weights = backend.load(MODEL_ID, MODEL_PATH, "", "cpu", "float32")
    # As the registry sets it (the cache's key): the server of the last test reads the
    # graphs these tests kept, instead of tracing and quantizing again.
    weights.revision = weights_digest(MODEL_PATH)
    return weights


@pytest.fixture(scope="module")
def quantized(weights32: Weights, cache: Path) -> OpenVinoEncoder:
    settings = Settings("", False, 256, quantize="int8")
    encoder = int8_encoder(weights32, settings, calibration_texts(), int(TORCH_THREADS), cache)
    assert isinstance(encoder, OpenVinoEncoder)
    return encoder


def test_int8_reports_its_fidelity_as_a_direct_comparison_finds_it(
    quantized: OpenVinoEncoder,
) -> None:
    """The figures the server returns are those of the int8 vectors against a float32
    SentenceTransformer.encode of the same calibration texts, row by row."""
    from sentence_transformers import SentenceTransformer

    texts = calibration_texts()
    assert (quantized.engine, quantized.precision) == ("openvino", "int8")
    fidelity = quantized.fidelity
    assert fidelity is not None and fidelity.rows == len(texts)
    assert fidelity.calibration_sha256 == calibration_digest(texts)
    want = SentenceTransformer(str(MODEL_PATH), device="cpu").encode(texts, batch_size=8)
    cosines = cosine_rows(run(quantized, texts), want)
    assert fidelity.min_cosine == pytest.approx(float(cosines.min()), abs=2e-5)
    assert fidelity.mean_cosine == pytest.approx(float(cosines.mean()), abs=2e-5)
    # int8, not float32 in disguise: close, but not equal.
    assert 0.9 < fidelity.min_cosine <= fidelity.mean_cosine < 0.99999


def test_the_quantized_graph_is_kept_and_gives_the_same_bytes(
    quantized: OpenVinoEncoder, weights32: Weights, cache: Path
) -> None:
    """A second load (a resumed run, a restarted server) reads the kept int8 graph: no
    second quantization, and the same vectors to the bit."""
    kept = sorted(p.parent.name for p in cache.glob("openvino/*/model.xml"))
    assert len(kept) == 2 and any("-int8-" in name for name in kept), kept
    again = Weights(**{**vars(weights32), "extras": {}})
    settings = Settings("", False, 256, quantize="int8")
    second = int8_encoder(again, settings, calibration_texts(), int(TORCH_THREADS), cache)
    texts = calibration_texts()[:8]
    assert run(second, texts).tobytes() == run(quantized, texts).tobytes()
    assert second.fidelity == quantized.fidelity


def test_what_cannot_quantize_is_refused_in_one_line(weights32: Weights) -> None:
    settings = Settings("", False, 256, quantize="int8")
    torch_only = SentenceTransformerBackend(int(TORCH_THREADS), False, "auto", "torch")
    with pytest.raises(InvalidArgument, match="the torch engine cannot quantize"):
        torch_only.encoder(weights32, settings, ["a text"])
    on_gpu = Weights(**{**vars(weights32), "device": "cuda:0", "extras": {}})
    gpu_refusal = r"runs on the CPU engine \(OpenVINO\), not on cuda:0"
    with pytest.raises(InvalidArgument, match=gpu_refusal):
        int8_encoder(on_gpu, settings, ["a text"], None, None)


def test_load_model_quantizes_over_grpc_and_refuses_bad_requests(cache: Path) -> None:
    """Through the server: the int8 model gets its own key (another sample, another key),
    its fidelity in ModelInfo, and Embed serves it; bad requests are INVALID_ARGUMENT."""
    texts = calibration_texts()
    config = make_config(
        ["--model-dir", str(MODEL_DIR), "--threads", TORCH_THREADS, "--device", "cpu"],
        {"EMBED_CACHE_DIR": str(cache)},
    )
    server = RunningServer(config)
    try:
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            plain = stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID))
            int8 = stub.LoadModel(
                pb.LoadModelRequest(model_id=MODEL_ID, quantize="int8", calibration_texts=texts)
            )
            assert (int8.quantize, int8.engine, int8.precision) == ("int8", "openvino", "int8")
            assert len(list(cache.glob("openvino/*/model.xml"))) == 2  # read, not made again
            assert plain.quantize == "" and not plain.HasField("quantize_fidelity")
            assert int8.model_key != plain.model_key
            fidelity = int8.quantize_fidelity
            assert fidelity.rows == len(texts) and 0.9 < fidelity.min_cosine <= 1
            assert fidelity.calibration_sha256 == calibration_digest(texts)
            result = embed(stub, [(1, int8.model_key, texts[:4])])[1]
            assert vectors(result).shape == (4, 384)
            for request, why in [
                (pb.LoadModelRequest(model_id=MODEL_ID, quantize="int4"), "quantize must be"),
                (pb.LoadModelRequest(model_id=MODEL_ID, quantize="int8"), "calibration_texts"),
                (
                    pb.LoadModelRequest(
                        model_id=MODEL_ID, quantize="int8", calibration_texts=["x"] * 1025
                    ),
                    "more than the 1024",
                ),
            ]:
                with pytest.raises(grpc.RpcError) as caught:
                    stub.LoadModel(request)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert why in (caught.value.details() or "")
    finally:
        server.close()


def test_the_debug_engine_refuses_to_quantize(debug_stub: pb_grpc.InferenceStub) -> None:
    request = pb.LoadModelRequest(model_id="m", quantize="int8", calibration_texts=["a"])
    with pytest.raises(grpc.RpcError) as caught:
        debug_stub.LoadModel(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the debug engine cannot quantize" in (caught.value.details() or "")
