"""The grpc.aio server: Inference, Health and reflection, auth, error mapping.

Service methods stay a few lines: checks live on the request types, work in
models/pipeline, and every exception becomes a status in one interceptor.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

from .config import ServerConfig
from .encoders.base import Backend
from .errors import Unauthenticated, status_of
from .models import LoadRequest, ModelInfo, ModelRegistry
from .pipeline import EmbedStream, StagePools, check_text_lengths

log = logging.getLogger("embed_inference.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
_HEALTH_PREFIX = f"/{health.SERVICE_NAME}/"
_INFERENCE_PREFIX = f"/{SERVICE_NAME}/"
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

        return DebugBackend(config.debug_dim, config.test_oom_above)
    from .encoders.st import SentenceTransformerBackend

    return SentenceTransformerBackend(
        config.threads, config.trust_remote_code, config.test_oom_above, config.fast_path
    )


def model_info_pb(info: ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(**vars(info))


class Runtime:
    """What the service methods share: the engine, once it has started."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.pools = StagePools()
        self.registry: ModelRegistry | None = None
        self._ready = asyncio.Event()

    async def start_engine(self) -> None:
        def start() -> ModelRegistry:
            backend = make_backend(self.config)
            backend.start()
            return ModelRegistry(self.config, backend)

        self.registry = await asyncio.to_thread(start)
        self._ready.set()

    async def models(self) -> ModelRegistry:
        """Calls that need the engine wait for it rather than fail during start-up."""
        await self._ready.wait()
        assert self.registry is not None
        return self.registry

    def info(self) -> pb.InfoResponse:
        limits = self.config.limits
        infos = self.registry.infos() if self.registry is not None else []
        return pb.InfoResponse(
            server_version=server_version(),
            device=self.config.device,
            dtype=self.config.dtype,
            engine=self.config.engine,
            models=[model_info_pb(info) for info in infos],
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
        load = LoadRequest(
            model_id=request.model_id,
            revision=request.revision,
            device=request.device,
            dtype=request.dtype,
            max_length=request.max_length,
            prefix=request.prefix,
            normalize=request.normalize,
        )
        model = await asyncio.to_thread(registry.load, load)
        return model_info_pb(model.info)

    async def CountTokens(
        self, request: pb.CountTokensRequest, context: Any
    ) -> pb.CountTokensResponse:
        model = (await self._rt.models()).get(request.model_key)
        texts = list(request.texts)
        check_text_lengths(texts, self._rt.config.limits)
        loop = asyncio.get_running_loop()
        counts = await loop.run_in_executor(self._rt.pools.pre, model.encoder.count_tokens, texts)
        return pb.CountTokensResponse(counts=counts)

    async def Embed(
        self, request_iterator: AsyncIterator[pb.EmbedBatch], context: Any
    ) -> AsyncIterator[pb.EmbedResult]:
        registry = await self._rt.models()
        config = self._rt.config
        stream = EmbedStream(registry, config.limits, self._rt.pools, config.test_poison)
        async for result in stream.run(request_iterator):
            yield result


def _replace_behavior(
    handler: grpc.RpcMethodHandler, behavior: Callable[..., Any]
) -> grpc.RpcMethodHandler:
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _behavior_of(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    for name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, name)
        if behavior is not None:
            return behavior
    raise RuntimeError("a method handler without behavior")


async def _abort_with(error: BaseException, context: grpc.aio.ServicerContext) -> None:
    code, message = status_of(error)
    if code == grpc.StatusCode.INTERNAL:
        log.error("call failed", exc_info=error)
    await context.abort(code, message)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps every exception that escapes an Inference method to a status: ServiceError
    subclasses to their code, anything else to INTERNAL with a one-line message."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(_INFERENCE_PREFIX):
            return handler
        behavior = _behavior_of(handler)
        if handler.response_streaming:

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    async for item in behavior(request, context):
                        yield item
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as error:
                    await _abort_with(error, context)

            return _replace_behavior(handler, streaming)

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behavior(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as error:
                await _abort_with(error, context)

        return _replace_behavior(handler, unary)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """With EMBED_AUTH_TOKEN set, every call but health checks must carry
    `authorization: Bearer <token>`; health stays open for load balancers and probes."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_HEALTH_PREFIX):
            return handler
        given = ""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value if isinstance(value, str) else value.decode(errors="replace")
        if hmac.compare_digest(given.encode(), self._expected):
            return handler

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            await _abort_with(Unauthenticated("missing or wrong bearer token"), context)

        return _replace_behavior(handler, refuse)


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

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.runtime = Runtime(config)
        self.health = health.aio.HealthServicer()
        self.port = 0
        interceptors: list[grpc.aio.ServerInterceptor] = [ErrorInterceptor()]
        if config.auth_token:
            interceptors.insert(0, AuthInterceptor(config.auth_token))
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
        self.runtime.pools.shutdown()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()

    async def _set_health(self, status: int) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)
