"""gRPC server interceptors: bearer-token auth, and exceptions mapped to statuses."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from .errors import Unauthenticated, status_of

log = logging.getLogger("embed_inference.server")


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
    """Maps every exception that escapes a method of `service` to a status: ServiceError
    subclasses to their code, anything else to INTERNAL with a one-line message."""

    def __init__(self, service: str) -> None:
        self._prefix = f"/{service}/"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefix):
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

    def __init__(self, token: str, health_service: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._open_prefix = f"/{health_service}/"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(self._open_prefix):
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
