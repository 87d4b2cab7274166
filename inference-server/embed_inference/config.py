"""The server's configuration: one frozen object, built once from argv + environment.

This is the only module that reads the environment, so every setting has one
visible origin and tests can build a configuration from plain dicts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import devices
from .errors import ConfigError, InvalidArgument

# sentence-transformers: real models, forward by the fastest engine that passes its check at
# load (OpenVINO on the CPU, the packed path on CUDA); openvino and torch name the CPU one.
ENGINES = ("sentence-transformers", "openvino", "torch", "debug")
FAST_PATH_MODES = ("auto", "on", "off")
MiB = 1024 * 1024
# gRPC message size options are C ints.
MAX_MESSAGE_CEILING = 2**31 - 1

ENV_MODEL_DIR = "EMBED_MODEL_DIR"
ENV_AUTH_TOKEN = "EMBED_AUTH_TOKEN"
ENV_FAST_PATH = "EMBED_FAST_PATH"
ENV_CACHE_DIR = "EMBED_CACHE_DIR"
ENV_LOG_LEVEL = "EMBED_LOG_LEVEL"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Limits:
    """What one request may ask; reported by Info so that clients plan within them."""

    max_batch_size: int = 1024
    max_batch_tokens: int = 131072
    max_message_bytes: int = 64 * MiB
    max_text_chars: int = 200_000


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    model_dir: Path | None = None
    device: str = "cpu"
    # The default dtype for models loaded without one, already resolved from `auto`.
    dtype: str = "float32"
    engine: str = "sentence-transformers"
    debug_dim: int = 384
    # torch intra-op threads; None leaves torch's default (every core).
    threads: int | None = None
    limits: Limits = field(default_factory=Limits)
    trust_remote_code: bool = False
    preload: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_token: str | None = None
    # DEBUG adds a line per answered batch (server.log_batch).
    log_level: str = "INFO"
    # Embed streams open at once; one more is refused (RESOURCE_EXHAUSTED).
    max_streams: int = 32
    # Per stream: bytes of batches received and not yet answered (streams.StreamWindow).
    max_stream_bytes: int = 32 * MiB
    # The packed BERT forward (encoders/fast_bert.py): auto = on CUDA only; on and off force
    # it (still checked against the reference path at load, which it falls back to).
    fast_path: str = "auto"
    # Where engines keep what they derive from weights (OpenVINO's converted graphs);
    # None: nowhere, derived again at every start.
    cache_dir: Path | None = None
    # Stop when stdin reaches EOF: an embedded server never outlives its parent.
    exit_on_stdin_eof: bool = False
    # Prometheus /metrics on this port of --host (0 picks a free one); None = not served.
    metrics_port: int | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @staticmethod
    def from_args(
        args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> ServerConfig:
        """Validates everything once; raises ConfigError with a one-line message."""
        env = os.environ if environ is None else environ
        engine = args.engine
        if engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}")
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port {args.port} is out of range 0..65535")
        metrics_port = getattr(args, "metrics_port", None)
        if metrics_port is not None and not 0 <= metrics_port <= 65535:
            raise ConfigError(f"--metrics-port {metrics_port} is out of range 0..65535")

        model_dir_text = args.model_dir or env.get(ENV_MODEL_DIR) or None
        # Not required to exist: it is only the first place a model is looked for (the
        # server warns at start), and an orchestrator passes its default one blindly.
        model_dir = Path(model_dir_text).expanduser() if model_dir_text else None

        for flag, value in (
            ("--debug-dim", args.debug_dim),
            ("--max-batch-size", args.max_batch_size),
            ("--max-batch-tokens", args.max_batch_tokens),
            ("--max-message-bytes", args.max_message_bytes),
            ("--max-text-chars", args.max_text_chars),
            ("--max-streams", args.max_streams),
            ("--max-stream-bytes", args.max_stream_bytes),
        ):
            if not 0 < value < 2**32:  # uint32 in the Info reply
                raise ConfigError(f"{flag} must be in 1..{2**32 - 1}, got {value}")
        if args.threads is not None and args.threads <= 0:
            raise ConfigError(f"--threads must be positive, got {args.threads}")
        if args.max_message_bytes > MAX_MESSAGE_CEILING:
            raise ConfigError(f"--max-message-bytes must be at most {MAX_MESSAGE_CEILING}")

        if (args.tls_cert is None) != (args.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        tls_cert = _existing_file("--tls-cert", args.tls_cert)
        tls_key = _existing_file("--tls-key", args.tls_key)
        log_level = (args.log_level or env.get(ENV_LOG_LEVEL) or "INFO").strip().upper()
        if log_level not in LOG_LEVELS:
            raise ConfigError(
                f"--log-level (or {ENV_LOG_LEVEL}) must be one of {', '.join(LOG_LEVELS)} "
                f"(any case), got {log_level.lower()!r}"
            )
        fast_flag = getattr(args, "fast_path", None)
        fast_path = (fast_flag or env.get(ENV_FAST_PATH) or "auto").strip().lower()
        if fast_path not in FAST_PATH_MODES:
            raise ConfigError(
                f"--fast-path (or {ENV_FAST_PATH}) must be one of {', '.join(FAST_PATH_MODES)}, "
                f"got {fast_path!r}"
            )
        # Last: without --device it imports torch to ask about CUDA.
        device, dtype = _device_and_dtype(args.device, args.dtype, engine)

        return ServerConfig(
            host=args.host,
            port=args.port,
            metrics_port=metrics_port,
            model_dir=model_dir,
            device=device,
            dtype=dtype,
            engine=engine,
            debug_dim=args.debug_dim,
            threads=args.threads,
            limits=Limits(
                max_batch_size=args.max_batch_size,
                max_batch_tokens=args.max_batch_tokens,
                max_message_bytes=args.max_message_bytes,
                max_text_chars=args.max_text_chars,
            ),
            trust_remote_code=args.trust_remote_code,
            preload=tuple(args.preload or ()),
            tls_cert=tls_cert,
            tls_key=tls_key,
            # A token from `$(cat file)` or a secret mount often ends in a newline.
            auth_token=env.get(ENV_AUTH_TOKEN, "").strip() or None,
            log_level=log_level,
            max_streams=args.max_streams,
            max_stream_bytes=args.max_stream_bytes,
            exit_on_stdin_eof=args.exit_on_stdin_eof,
            fast_path=fast_path,
            cache_dir=_cache_dir(env),
        )


def _device_and_dtype(device_flag: str | None, dtype_flag: str, engine: str) -> tuple[str, str]:
    try:
        if engine == "debug":
            # The debug engine computes on the CPU with numpy: no torch, no CUDA question.
            device = devices.parse_device(device_flag) if device_flag else "cpu"
            return device, devices.resolve_dtype(dtype_flag, "cpu")
        if device_flag:
            device = devices.parse_device(device_flag)
            devices.check_available(device)
        else:
            device = devices.default_device()
        return device, devices.resolve_dtype(dtype_flag, device)
    except InvalidArgument as error:
        raise ConfigError(str(error)) from None


def _cache_dir(env: Mapping[str, str]) -> Path | None:
    """$EMBED_CACHE_DIR, else $XDG_CACHE_HOME/embed-multi, else ~/.cache/embed-multi;
    "off" keeps nothing on disk."""
    given = env.get(ENV_CACHE_DIR, "").strip()
    if given.lower() == "off":
        return None
    if given:
        return Path(given).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "embed-multi"


def _existing_file(flag: str, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{flag}: no such file: {path}")
    return path
