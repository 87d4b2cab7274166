"""Exceptions that carry their gRPC status code.

Everything the server refuses on purpose raises one of these; the one mapping
to a status (status_of below) reads `code` and never guesses from a message.
Anything else that escapes a handler is a bug and becomes INTERNAL.
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """Base class: a refusal with a gRPC status code and a one-line message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        # One line, so that it reads well in the orchestrator's logs and errors.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class InvalidArgument(ServiceError):
    """The request itself is wrong: empty ids, unknown dtypes, over-long texts."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    """A model id or model_key that names nothing the server has or can find."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ServiceError):
    """Over a limit: too many texts or tokens, too large a message, out of memory."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(ServiceError):
    """A missing or wrong bearer token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ConfigError(Exception):
    """A bad flag, environment variable or missing file: the CLI exits with 2."""


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping from an exception to a gRPC status and a one-line message,
    used for failed calls and for per-batch error results alike."""
    if isinstance(error, ServiceError):
        return error.code, error.message
    text = " ".join(str(error).split()) or "no details"
    return grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {text}"[:1000]


def code_number(code: grpc.StatusCode) -> int:
    """The google.rpc.Code value, as BatchError.code carries it."""
    return int(code.value[0])
