"""The grpc.aio server: Inference, Health and reflection.

Service methods stay a few lines: checks live on the request types, work in
models/pipeline, and every exception becomes a status in one interceptor
(interceptors.py, with auth).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from importlib import metadata
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

from . import metrics
from .config import ServerConfig
from .encoders.base import Backend
from .interceptors import AuthInterceptor, ErrorInterceptor
from .models import LoadRequest, ModelInfo, ModelRegistry
from .pipeline import EmbedStream, StagePools, check_text_lengths, token_ids_pb
from .streams import Admitted, StreamLimits

log = logging.getLogger("embed_inference.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_version() -> str:
    try:
        return metadata.version("embed-inference-server")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def make_backend(config: ServerConfig) -> Backend:
    """Imports the engine's module only when chosen: `debug` must not import torch."""
    if config.engine == "debug":
        from .encoders.debug import DebugBackend

        return DebugBackend(config.debug_dim)
    from .encoders.select import CPU_ENGINES, SentenceTransformerBackend

    return SentenceTransformerBackend(
        config.threads,
        config.trust_remote_code,
        config.fast_path,
        CPU_ENGINES[config.engine],
        config.cache_dir,
    )


def model_info_pb(info: ModelInfo, **extra: Any) -> pb.ModelInfo:
    fields = dict(vars(info))
    fidelity = fields.pop("quantize_fidelity")
    if fidelity is not None:
        fields["quantize_fidelity"] = pb.QuantizeFidelity(**vars(fidelity))
    return pb.ModelInfo(**fields, **extra)


class Runtime:
    """What the service methods share: the engine, once it has started."""

    def __init__(
        self, config: ServerConfig, backend_of: Callable[[ServerConfig], Backend] = make_backend
    ) -> None:
        self.config = config
        self.pools = StagePools()
        self.streams = StreamLimits(config.max_streams, config.max_stream_bytes)
        self.registry: ModelRegistry | None = None
        self._backend_of = backend_of
        self._backend: Backend | None = None
        self._ready = asyncio.Event()

    async def start_engine(self) -> None:
        def start() -> ModelRegistry:
            self._backend = self._backend_of(self.config)
            self._backend.start()
            return ModelRegistry(self.config, self._backend)

        self.registry = await asyncio.to_thread(start)
        self._ready.set()

    def stop(self) -> None:
        self.pools.shutdown()
        if self._backend is not None:
            self._backend.stop()

    def loaded_model_keys(self) -> list[str]:
        """For the metrics: no models before the engine has started."""
        registry = self.registry
        return [m.info.model_key for m in registry.loaded()] if registry else []

    async def models(self) -> ModelRegistry:
        """Calls that need the engine wait for it rather than fail during start-up."""
        await self._ready.wait()
        assert self.registry is not None
        return self.registry

    def info(self) -> pb.InfoResponse:
        limits = self.config.limits
        loaded = self.registry.loaded() if self.registry is not None else []
        return pb.InfoResponse(
            server_version=server_version(),
            device=self.config.device,
            dtype=self.config.dtype,
            engine=self.config.engine,
            models=[model_info_pb(m.info, tokenized_rows=m.encoder.tokenized_rows) for m in loaded],
            limits=pb.Limits(
                max_batch_size=limits.max_batch_size,
                max_batch_tokens=limits.max_batch_tokens,
                max_message_bytes=limits.max_message_bytes,
                max_text_chars=limits.max_text_chars,
            ),
        )


class InferenceService(pb_grpc.InferenceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def Info(self, request: pb.InfoRequest, context: Any) -> pb.InfoResponse:
        return self._rt.info()

    async def LoadModel(self, request: pb.LoadModelRequest, context: Any) -> pb.ModelInfo:
        registry = await self._rt.models()
        load = LoadRequest.from_pb(request)
        model = await asyncio.to_thread(registry.load, load)
        return model_info_pb(model.info)

    async def CountTokens(
        self, request: pb.CountTokensRequest, context: Any
    ) -> pb.CountTokensResponse:
        model = (await self._rt.models()).get(request.model_key)
        texts = list(request.texts)
        check_text_lengths(texts, self._rt.config.limits)
        loop = asyncio.get_running_loop()
        encoder = model.encoder
        if request.return_ids and encoder.supports_ids:
            tokens = await loop.run_in_executor(self._rt.pools.pre, encoder.tokenize, texts)
            return pb.CountTokensResponse(tokens=token_ids_pb(tokens))
        counts = await loop.run_in_executor(self._rt.pools.pre, encoder.count_tokens, texts)
        return pb.CountTokensResponse(counts=counts)

    async def Embed(
        self, request_iterator: AsyncIterator[pb.EmbedBatch], context: Any
    ) -> AsyncIterator[pb.EmbedResult]:
        with self._rt.streams.open() as window:
            registry = await self._rt.models()
            stream = EmbedStream(registry, self._rt.config.limits, self._rt.pools)
            peer = context.peer()
            async for result in stream.run(window.admit(request_iterator, registry)):
                yield result
                entry = window.answered(result.batch_id)
                if entry is not None and log.isEnabledFor(logging.DEBUG):
                    log_batch(peer, result, entry)


def log_batch(peer: str, result: pb.EmbedResult, entry: Admitted) -> None:
    """EMBED_LOG_LEVEL=debug: one line per answered batch. The client's address, the
    model and counts only: never texts, tokens' ids or metadata (which holds the token)."""
    seconds = time.monotonic() - entry.started
    model = f"{entry.model_id or '?'} ({entry.model_key[:16] or 'no key'})"
    if result.WhichOneof("outcome") == "error":
        log.debug(
            "batch %d from %s: model %s failed after %.3f s: code %d: %s",
            result.batch_id,
            peer,
            model,
            seconds,
            result.error.code,
            result.error.message,
        )
        return
    embeddings = result.embeddings
    log.debug(
        "batch %d from %s: model %s rows %d tokens %d in %.3f s",
        result.batch_id,
        peer,
        model,
        embeddings.rows,
        sum(embeddings.token_counts),
        seconds,
    )


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    size = config.limits.max_message_bytes
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        # A second server on the same port must fail to bind, not share it.
        ("grpc.so_reuseport", 0),
        # Long-lived streams: accept the clients' keepalive pings, even idle ones.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class InferenceServer:
    """start() binds and serves (health NOT_SERVING); prepare() starts the engine and
    the preloads, then reports SERVING; stop() drains with a short grace."""

    def __init__(
        self, config: ServerConfig, backend_of: Callable[[ServerConfig], Backend] | None = None
    ) -> None:
        self.config = config
        self.runtime = Runtime(config, backend_of or make_backend)
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.metrics_port: int | None = None
        interceptors: list[grpc.aio.ServerInterceptor] = [ErrorInterceptor(SERVICE_NAME)]
        if config.auth_token:
            interceptors.insert(0, AuthInterceptor(config.auth_token, health.SERVICE_NAME))
        self._server = grpc.aio.server(options=grpc_options(config), interceptors=interceptors)
        pb_grpc.add_InferenceServicer_to_server(InferenceService(self.runtime), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )

    @property
    def address(self) -> str:
        return bind_address(self.config.host, self.port)

    async def start(self) -> int:
        await self._set_health(NOT_SERVING)
        address = bind_address(self.config.host, self.config.port)
        try:
            if self.config.tls_cert is not None and self.config.tls_key is not None:
                credentials = grpc.ssl_server_credentials(
                    [(self.config.tls_key.read_bytes(), self.config.tls_cert.read_bytes())]
                )
                port = self._server.add_secure_port(address, credentials)
            else:
                port = self._server.add_insecure_port(address)
        except RuntimeError as error:
            raise OSError(f"cannot listen on {address}: {error}") from None
        if not port:
            raise OSError(f"cannot listen on {address}")
        self.port = port
        await self._server.start()
        if self.config.metrics_port is not None:
            self.metrics_port = metrics.serve(
                self.config.host, self.config.metrics_port, self.runtime.loaded_model_keys
            )
        return port

    async def prepare(self) -> None:
        await self.runtime.start_engine()
        registry = await self.runtime.models()
        for model_id in self.config.preload:
            info = (await asyncio.to_thread(registry.load, LoadRequest(model_id=model_id))).info
            log.info("preloaded %s as %s", model_id, info.model_key)
        await self._set_health(SERVING)

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self.runtime.stop()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()

    async def _set_health(self, status: int) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)
