"""The test-only faulty server (faulty_server.py), over real gRPC on the debug engine: it
makes a server misbehave in exactly the ways the orchestrator's probe and per-batch checks
must catch, installed at start around the engine the flags choose."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import RunningServer, cosine_rows, embed, make_config, vectors
from faulty_server import Faults, parse_faults

from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

TEXTS = ["a short one", "another paragraph of text", "numbers 1 2 3", "ünïcödé 日本語"]
WRAPPER = Path(__file__).with_name("faulty_server.py")


def embed_with(faults: Faults | None, texts: list[str], normalize: bool) -> np.ndarray:
    server = RunningServer(make_config(["--engine", "debug"]), faults=faults)
    try:
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            key = stub.LoadModel(pb.LoadModelRequest(model_id="m", normalize=normalize)).model_key
            return vectors(embed(stub, [(1, key, texts)])[1]).copy()
    finally:
        server.close()


@pytest.mark.parametrize("normalize", [True, False])
def test_perturb_changes_every_vector_and_keeps_norms_when_normalizing(normalize: bool) -> None:
    clean = embed_with(None, TEXTS, normalize)
    bent = embed_with(Faults(perturb=1.0), TEXTS, normalize)
    assert bent.shape == clean.shape and bent.dtype == np.float32
    assert np.all(np.isfinite(bent))
    cos = cosine_rows(clean, bent)
    assert np.all(cos < 0.99), cos
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(bent, axis=1), 1.0, atol=1e-5)
    # The same perturbation every time: a perturbed server is consistently wrong.
    again = embed_with(Faults(perturb=1.0), TEXTS, normalize)
    np.testing.assert_array_equal(bent, again)


def test_perturb_after_leaves_the_first_batches_right() -> None:
    """--fault-perturb-after N: passes the probe (its first batch), then goes wrong."""
    clean = embed_with(None, TEXTS, True)
    server = RunningServer(
        make_config(["--engine", "debug"]), faults=Faults(perturb=1.0, perturb_after=2)
    )
    try:
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            key = stub.LoadModel(pb.LoadModelRequest(model_id="m", normalize=True)).model_key
            got = [vectors(embed(stub, [(i, key, TEXTS)])[i]).copy() for i in range(1, 5)]
    finally:
        server.close()
    for i, batch in enumerate(got):
        cos = cosine_rows(clean, batch)
        assert np.all(cos > 0.9999) if i < 2 else np.all(cos < 0.99), (i, cos)


def test_nan_marks_exactly_the_rows_with_the_marker() -> None:
    texts = ["clean", "has zz-nan-zz inside", "clean too", "zz-nan-zz"]
    out = embed_with(Faults(nan="zz-nan-zz"), texts, True)
    bad = [i for i in range(len(texts)) if np.isnan(out[i]).any()]
    assert bad == [1, 3]
    assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[0])) and np.all(np.isfinite(out[2]))
    clean = embed_with(None, ["clean", "clean too"], True)
    np.testing.assert_array_equal(out[[0, 2]], clean)


def test_poison_fails_only_the_batch_with_the_marker() -> None:
    server = RunningServer(make_config(["--engine", "debug"]), faults=Faults(poison="zz-p"))
    try:
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            key = stub.LoadModel(pb.LoadModelRequest(model_id="m")).model_key
            results = embed(stub, [(1, key, TEXTS), (2, key, ["x zz-p y"]), (3, key, TEXTS)])
    finally:
        server.close()
    assert "poisoned batch" in results[2].error.message
    np.testing.assert_array_equal(vectors(results[1]), vectors(results[3]))


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf"])
def test_perturb_must_be_a_positive_number(value: str) -> None:
    with pytest.raises(SystemExit):
        parse_faults(["--fault-perturb", value])


def test_fault_flags_leave_the_server_flags() -> None:
    faults, rest = parse_faults(["--fault-oom-above", "4", "--engine", "debug", "--port", "0"])
    assert faults == Faults(oom_above=4) and rest == ["--engine", "debug", "--port", "0"]


@pytest.mark.parametrize("faults", [None, Faults(nan="zz-nan-zz"), Faults(poison="zz")])
def test_with_a_text_fault_count_tokens_gives_counts_so_batches_carry_texts(
    faults: Faults | None,
) -> None:
    # The fault looks for its marker in a batch's texts: token-id batches would hide it.
    server = RunningServer(make_config(["--engine", "debug"]), faults=faults)
    try:
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            key = stub.LoadModel(pb.LoadModelRequest(model_id="m")).model_key
            answer = stub.CountTokens(
                pb.CountTokensRequest(model_key=key, texts=TEXTS, return_ids=True)
            )
    finally:
        server.close()
    assert answer.HasField("tokens") == (faults is None)
    if faults is not None:
        assert len(answer.counts) == len(TEXTS)


def test_hang_load_holds_load_model_until_the_server_stops() -> None:
    """--fault-hang-load: LoadModel never answers; the orchestrator's signal tests use it.
    The wrapper runs as the orchestrator's tests start it, and SIGTERM still ends it."""
    proc = subprocess.Popen(
        [sys.executable, str(WRAPPER), "--fault-hang-load", "--engine", "debug", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"listening on (\S+):(\d+)", proc.stdout.readline())
        assert match
        with grpc.insecure_channel(f"127.0.0.1:{match.group(2)}") as channel:
            stub = pb_grpc.InferenceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.LoadModel(pb.LoadModelRequest(model_id="m"), timeout=2)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert stub.Info(pb.InfoRequest(), timeout=10).engine == "debug", "the rest works"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_production_code_reads_no_fault() -> None:
    package = Path(__file__).resolve().parents[1] / "embed_inference"
    for path in package.rglob("*.py"):
        assert "EMBED_TEST_" not in path.read_text(encoding="utf-8"), path
