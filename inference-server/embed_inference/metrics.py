"""Prometheus metrics of the server, from the maintained `prometheus-client`.

Counted always (a counter costs an increment), served only with --metrics-port, on
the gRPC server's host. One registry per process: what a scrape reports is the
whole server. The pipeline reports through the few functions below; queue depths,
loaded models and device memory are read when a scrape asks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

BATCHES = Counter(
    "embed_batches",
    "Embed batches answered, by model and outcome (ok or error)",
    ["model", "outcome"],
    registry=REGISTRY,
)
ROWS = Counter("embed_rows", "Rows (texts) embedded", ["model"], registry=REGISTRY)
TOKENS = Counter("embed_tokens", "Tokens of the rows embedded", ["model"], registry=REGISTRY)
FORWARD_SECONDS = Histogram(
    "embed_forward_seconds",
    "Seconds of one batch's forward pass",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
ERRORS = Counter(
    "embed_batch_errors",
    "Batches answered with an error, by gRPC status code",
    ["code"],
    registry=REGISTRY,
)


class _Live(Collector):
    """Values read at scrape time: queue depths of the open streams, models, memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[int, Sequence[tuple[str, Any]]] = {}
        self._models: Callable[[], Iterable[str]] | None = None

    def add_queues(self, queues: Sequence[tuple[str, Any]]) -> int:
        with self._lock:
            key = id(queues)
            self._queues[key] = queues
            return key

    def remove_queues(self, key: int) -> None:
        with self._lock:
            self._queues.pop(key, None)

    def set_models(self, models: Callable[[], Iterable[str]]) -> None:
        self._models = models

    def collect(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "embed_queue_depth",
            "Jobs waiting between the stages, over open streams",
            labels=["stage"],
        )
        totals: dict[str, int] = {}
        with self._lock:
            streams = len(self._queues)
            for queues in self._queues.values():
                for stage, queue in queues:
                    totals[stage] = totals.get(stage, 0) + queue.qsize()
        for stage in ("received", "tokenized", "computed", "results"):
            depth.add_metric([stage], totals.get(stage, 0))
        yield depth
        yield GaugeMetricFamily("embed_streams", "Open Embed streams", value=streams)
        loaded = GaugeMetricFamily(
            "embed_model_loaded", "1 for each loaded model", labels=["model"]
        )
        for key in self._models() if self._models else ():
            loaded.add_metric([key], 1)
        yield loaded
        memory = _device_memory()
        if memory is not None:
            yield memory


def _device_memory() -> GaugeMetricFamily | None:
    """torch's allocated and reserved bytes per CUDA device; None without a device."""
    import sys

    torch = sys.modules.get("torch")  # never imported for this: the debug engine has none
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    family = GaugeMetricFamily(
        "embed_device_memory_bytes", "CUDA memory held by torch", labels=["device", "kind"]
    )
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        family.add_metric([device, "allocated"], torch.cuda.memory_allocated(index))
        family.add_metric([device, "reserved"], torch.cuda.memory_reserved(index))
    return family


LIVE = _Live()
REGISTRY.register(LIVE)


def batch_done(model: str, rows: int, tokens: int) -> None:
    BATCHES.labels(model, "ok").inc()
    ROWS.labels(model).inc(rows)
    TOKENS.labels(model).inc(tokens)


def batch_failed(model: str, code: str) -> None:
    BATCHES.labels(model, "error").inc()
    ERRORS.labels(code).inc()


def forward_seconds(model: str, seconds: float) -> None:
    FORWARD_SECONDS.labels(model).observe(seconds)


def serve(host: str, port: int, models: Callable[[], Iterable[str]]) -> int:
    """Starts the /metrics HTTP server on host:port (0 picks one); returns the port."""
    LIVE.set_models(models)
    server, _thread = start_http_server(port, addr=host.strip("[]"), registry=REGISTRY)
    return int(server.server_address[1])
