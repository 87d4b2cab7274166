"""gRPC server interceptors: bearer-token auth, and exceptions mapped to statuses.

Requests are parsed by a deserializer the interceptors choose: a refused call's
message is never parsed, and one that does not parse becomes a Malformed value that
the call answers with INVALID_ARGUMENT and one log line (inside gRPC a parse error is
a traceback per call: 200 bad calls made 1,400 log lines).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from .errors import Unauthenticated, status_of

_UNSET: Any = object()

log = logging.getLogger("embed_inference.server")


def _replace_behavior(
    handler: grpc.RpcMethodHandler,
    behavior: Callable[..., Any],
    request_deserializer: Callable[[bytes], Any] | None = _UNSET,
) -> grpc.RpcMethodHandler:
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    if request_deserializer is _UNSET:
        request_deserializer = handler.request_deserializer
    return make(
        behavior,
        request_deserializer=request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _behavior_of(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    for name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, name)
        if behavior is not None:
            return behavior
    raise RuntimeError("a method handler without behavior")


class Malformed:
    """A request message that did not parse, handed to the call instead of an exception."""

    def __init__(self, error: Exception) -> None:
        detail = " ".join(str(error).split()) or type(error).__name__
        self.message = f"malformed request: {detail}"[:300]


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as error:
            return Malformed(error)

    return parse


def _log_malformed(method: str, context: grpc.aio.ServicerContext, bad: Malformed) -> None:
    log.warning("%s from %s: %s", method, context.peer(), bad.message)


async def _checked(
    requests: Any, method: str, context: grpc.aio.ServicerContext, seen: list[Malformed]
) -> Any:
    """A request stream that ends at its first malformed message (the call then fails
    with INVALID_ARGUMENT once the batches before it are answered)."""
    async for request in requests:
        if isinstance(request, Malformed):
            _log_malformed(method, context, request)
            seen.append(request)
            return
        yield request


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
        method = details.method
        parse = _tolerant(handler.request_deserializer)
        if handler.response_streaming:

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
                seen: list[Malformed] = []
                if handler.request_streaming:
                    request = _checked(request, method, context, seen)
                elif isinstance(request, Malformed):
                    seen.append(request)
                    _log_malformed(method, context, request)
                try:
                    if not seen:
                        async for item in behavior(request, context):
                            yield item
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as error:
                    await _abort_with(error, context)
                if seen:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, seen[0].message)

            return _replace_behavior(handler, streaming, parse)

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            seen: list[Malformed] = []
            if handler.request_streaming:
                request = _checked(request, method, context, seen)
            elif isinstance(request, Malformed):
                _log_malformed(method, context, request)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            try:
                reply = await behavior(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as error:
                await _abort_with(error, context)
            if seen:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, seen[0].message)
            return reply

        return _replace_behavior(handler, unary, parse)


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

        # No deserializer: the message of a caller without the token is never parsed.
        return _replace_behavior(handler, refuse, None)
