"""The test-only hooks EMBED_TEST_PERTURB and EMBED_TEST_NAN, over real gRPC on the
debug engine: they make a server misbehave in exactly the way the orchestrator's
probe and per-batch checks must catch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import RunningServer, cosine_rows, embed, make_config, vectors

from embed_inference.errors import ConfigError
from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

TEXTS = ["a short one", "another paragraph of text", "numbers 1 2 3", "ünïcödé 日本語"]


def embed_with(environ: dict[str, str], texts: list[str], normalize: bool) -> np.ndarray:
    server = RunningServer(make_config(["--engine", "debug"], environ))
    try:
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            key = stub.LoadModel(pb.LoadModelRequest(model_id="m", normalize=normalize)).model_key
            return vectors(embed(stub, [(1, key, texts)])[1]).copy()
    finally:
        server.close()


@pytest.mark.parametrize("normalize", [True, False])
def test_perturb_changes_every_vector_and_keeps_norms_when_normalizing(normalize: bool) -> None:
    clean = embed_with({}, TEXTS, normalize)
    bent = embed_with({"EMBED_TEST_PERTURB": "1"}, TEXTS, normalize)
    assert bent.shape == clean.shape and bent.dtype == np.float32
    assert np.all(np.isfinite(bent))
    cos = cosine_rows(clean, bent)
    assert np.all(cos < 0.99), cos
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(bent, axis=1), 1.0, atol=1e-5)
    # The same perturbation every time: a perturbed server is consistently wrong.
    again = embed_with({"EMBED_TEST_PERTURB": "1"}, TEXTS, normalize)
    np.testing.assert_array_equal(bent, again)


def test_nan_marks_exactly_the_rows_with_the_marker() -> None:
    texts = ["clean", "has zz-nan-zz inside", "clean too", "zz-nan-zz"]
    out = embed_with({"EMBED_TEST_NAN": "zz-nan-zz"}, texts, True)
    bad = [i for i in range(len(texts)) if np.isnan(out[i]).any()]
    assert bad == [1, 3]
    assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[0])) and np.all(np.isfinite(out[2]))
    clean = embed_with({}, ["clean", "clean too"], True)
    np.testing.assert_array_equal(out[[0, 2]], clean)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf"])
def test_perturb_must_be_a_positive_number(value: str) -> None:
    with pytest.raises(ConfigError, match="EMBED_TEST_PERTURB"):
        make_config(["--engine", "debug"], {"EMBED_TEST_PERTURB": value})


@pytest.mark.parametrize("environ", [{}, {"EMBED_TEST_NAN": "zz-nan-zz"}])
def test_with_the_nan_hook_count_tokens_gives_counts_so_batches_carry_texts(
    environ: dict[str, str],
) -> None:
    # The hook looks for its marker in a batch's texts: token-id batches would hide it.
    server = RunningServer(make_config(["--engine", "debug"], environ))
    try:
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            key = stub.LoadModel(pb.LoadModelRequest(model_id="m")).model_key
            answer = stub.CountTokens(
                pb.CountTokensRequest(model_key=key, texts=TEXTS, return_ids=True)
            )
    finally:
        server.close()
    assert answer.HasField("tokens") == (not environ)
    if environ:
        assert len(answer.counts) == len(TEXTS)
