"""Hostile or careless clients, on the debug engine: ids with a trailing newline,
malformed messages (with and without the token), too many streams, and streams that
are never read."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from conftest import RunningServer, debug_channel, embed, make_config, refused_load, vectors

from embed_inference.encoders.debug import debug_vectors, seeds_of
from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

TOKEN = "s3cret-hardening"
GOOD = [("authorization", f"Bearer {TOKEN}")]
GARBAGE = b"\xff\xff\xff\xff"


@pytest.mark.parametrize("model_id", ["ok-model\n", "org/name\n", "ok\n-model", "org\n/name"])
def test_a_model_id_with_a_newline_is_refused(
    debug_stub: pb_grpc.InferenceStub, model_id: str
) -> None:
    """The debug engine takes any well-formed id, so only the id check can refuse these."""
    refused_load(debug_stub, model_id)


def _raw_calls(channel: grpc.Channel, metadata: list[tuple[str, str]] | None, n: int) -> set:
    """n malformed LoadModel calls and n malformed Embed streams; the status codes seen."""
    unary = channel.unary_unary("/embedmulti.v1.Inference/LoadModel")
    stream = channel.stream_stream("/embedmulti.v1.Inference/Embed")
    codes = set()
    for _ in range(n):
        for call in (
            lambda: unary(GARBAGE, metadata=metadata, timeout=10),
            lambda: list(stream(iter([GARBAGE]), metadata=metadata, timeout=10)),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            codes.add(caught.value.code())
    return codes


@pytest.fixture()
def token_channel(caplog: pytest.LogCaptureFixture) -> Iterator[grpc.Channel]:
    """A channel to a debug server that wants TOKEN, with every log line of INFO and up kept."""
    caplog.set_level(logging.INFO)
    with debug_channel({"EMBED_AUTH_TOKEN": TOKEN}) as channel:
        yield channel


def test_a_malformed_message_without_the_token_is_refused_unparsed(
    token_channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    codes = _raw_calls(token_channel, None, 20)
    codes |= _raw_calls(token_channel, [("authorization", "Bearer wrong")], 5)
    assert codes == {grpc.StatusCode.UNAUTHENTICATED}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_malformed_message_with_the_token_is_one_line_each(
    token_channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    codes = _raw_calls(token_channel, GOOD, 20)
    # The server is still fine.
    stub = pb_grpc.InferenceStub(token_channel)
    key = stub.LoadModel(pb.LoadModelRequest(model_id="m"), metadata=GOOD).model_key
    assert vectors(embed(stub, [(1, key, ["a"])], metadata=GOOD)[1]).shape == (1, 384)
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT}
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 40, [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in lines), "a traceback was logged"
    assert all("malformed request" in r.getMessage() for r in lines)
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


def test_streams_past_max_streams_are_refused() -> None:
    server = RunningServer(make_config(["--engine", "debug", "--max-streams", "2"]))
    try:
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            key = stub.LoadModel(pb.LoadModelRequest(model_id="m")).model_key
            held = [_open_stream(stub, key) for _ in range(2)]
            with pytest.raises(grpc.RpcError) as caught:
                embed(stub, [(9, key, ["x"])])
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-streams 2" in (caught.value.details() or "")
            for requests, _ in held:
                requests.put(None)  # half-close: those streams end
            for _, results in held:
                list(results)
            assert vectors(embed(stub, [(9, key, ["x"])])[9]).shape == (1, 384)
    finally:
        server.close()


def _open_stream(stub: pb_grpc.InferenceStub, key: str) -> tuple[queue.Queue, Iterator]:
    """A stream that stays open (its requests come from a queue) after one answered batch."""
    requests: queue.Queue = queue.Queue()
    requests.put(pb.EmbedBatch(batch_id=1, model_key=key, texts=["open"]))
    results = stub.Embed(iter(requests.get, None), timeout=60)
    assert next(results).batch_id == 1
    return requests, results


def _settled(read: callable, limit: float = 15) -> int:
    """Waits until `read()` has not changed for a second (the server stopped taking work)."""
    value, since, start = read(), time.monotonic(), time.monotonic()
    while time.monotonic() - start < limit:
        time.sleep(0.2)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since > 1.0:
            break
    return value


def test_a_stream_never_read_holds_at_most_max_stream_bytes() -> None:
    # A batch of 100 rows of dim 384 weighs about 154 KB (its result) + its request:
    # 400,000 bytes let in two batches at a time.
    rows, batches = 100, 60
    server = RunningServer(
        make_config(["--engine", "debug", "--max-stream-bytes", "400000", "--max-streams", "4"])
    )
    try:
        # The client's own buffer kept small (no window growth), so that what the server
        # holds is what it took and has not sent.
        options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 65536)]
        with grpc.insecure_channel(server.target, options=options) as channel:
            stub = pb_grpc.InferenceStub(channel)
            key = stub.LoadModel(pb.LoadModelRequest(model_id="m")).model_key
            texts = {b: [f"row {b} {j}" for j in range(rows)] for b in range(batches)}
            requests = [pb.EmbedBatch(batch_id=b, model_key=key, texts=texts[b]) for b in texts]
            gate = threading.Event()

            def held_requests() -> Iterator[pb.EmbedBatch]:
                yield from requests
                gate.wait(60)  # stays open (unread) until the test has looked

            results = stub.Embed(held_requests(), timeout=120)

            def tokenized() -> int:
                info = stub.Info(pb.InfoRequest(), timeout=10)
                return sum(m.tokenized_rows for m in info.models)

            seen = _settled(tokenized)
            # Bounded by count only, the pipeline and gRPC took 13 batches here.
            assert 0 < seen <= 3 * rows, f"{seen // rows} batches taken by a stream nobody reads"
            assert server.server.runtime.streams.held_bytes <= 400_000
            got = {}
            for result in results:
                got[result.batch_id] = vectors(result)
                if len(got) == batches:
                    gate.set()
            assert sorted(got) == list(range(batches))
            for b in (0, batches - 1):
                assert np.array_equal(got[b], debug_vectors(seeds_of(texts[b]), 384))
            assert server.server.runtime.streams.held_bytes == 0
    finally:
        server.close()
