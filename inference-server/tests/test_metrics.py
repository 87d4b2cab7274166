"""The server's Prometheus metrics: served on --metrics-port of --host, counting what
the Embed streams did (a real server, a real gRPC client, a real HTTP scrape)."""

from __future__ import annotations

import urllib.request

import pytest
from conftest import RunningServer, embed, make_config
from prometheus_client.parser import text_string_to_metric_families

from embed_inference.cli import parse_config
from embed_inference.errors import ConfigError
from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_batches_rows_and_errors_by_code() -> None:
    server = RunningServer(make_config(["--engine", "debug", "--metrics-port", "0"]))
    try:
        port = server.server.metrics_port
        assert port
        with server.channel() as channel:
            stub = pb_grpc.InferenceStub(channel)
            key = stub.LoadModel(pb.LoadModelRequest(model_id="m")).model_key
            before = scrape(port)
            results = embed(stub, [(1, key, ["a", "b", "c"]), (2, key, ["d"]), (3, "nope", ["e"])])
        assert results[3].HasField("error")
        after = scrape(port)

        def delta(name: str, **labels: str) -> float:
            k = (name, tuple(sorted(labels.items())))
            return after.get(k, 0.0) - before.get(k, 0.0)

        assert delta("embed_batches_total", model=key, outcome="ok") == 2
        assert delta("embed_rows_total", model=key) == 4
        assert delta("embed_forward_seconds_count", model=key) == 2
        assert delta("embed_batch_errors_total", code="NOT_FOUND") == 1
        assert after[("embed_model_loaded", (("model", key),))] == 1
        assert ("embed_queue_depth", (("stage", "received"),)) in after
    finally:
        server.close()


def test_metrics_port_is_off_by_default_and_checked() -> None:
    assert parse_config([], {}).metrics_port is None
    with pytest.raises(ConfigError, match="--metrics-port 70000"):
        parse_config(["--metrics-port", "70000", "--engine", "debug"], {})
