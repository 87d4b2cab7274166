"""`embed-inference-server`: flags -> ServerConfig -> serve until SIGTERM/SIGINT.

stdout carries exactly one line, `embed-inference-server listening on HOST:PORT`,
printed once the port is bound (the orchestrator reads a port picked with
--port 0 from it); every log line goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn

from .config import (
    ENGINES,
    ENV_AUTH_TOKEN,
    ENV_FAST_PATH,
    ENV_LOG_LEVEL,
    ENV_MODEL_DIR,
    FAST_PATH_MODES,
    Limits,
    ServerConfig,
)
from .errors import ConfigError, ServiceError

if TYPE_CHECKING:
    from .encoders.base import Backend

BackendFactory = Callable[[ServerConfig], "Backend"]

PROG = "embed-inference-server"
STOP_GRACE_SECONDS = 2.0
log = logging.getLogger("embed_inference")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block: the orchestrator shows it verbatim.
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    defaults = Limits()
    parser = _Parser(
        prog=PROG,
        description="gRPC inference server for embed-multi: streams embeddings of text batches "
        "from sentence-transformers models (or a deterministic debug engine).",
        epilog=f"Environment: {ENV_MODEL_DIR} (default for --model-dir); {ENV_AUTH_TOKEN} (when "
        "set, every call except health checks must carry 'authorization: Bearer <token>'). "
        "Set HF_HUB_OFFLINE=1 where the hub is unreachable.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    add("--port", type=int, default=50051, help="port; 0 picks a free one (default: %(default)s)")
    add(
        "--metrics-port",
        "--metrics_port",
        dest="metrics_port",
        type=int,
        help="serve Prometheus metrics at /metrics on this port of --host; 0 picks a free one "
        "(default: not served)",
    )
    add(
        "--model-dir",
        help=f"folder of models, one sub-folder per model id, searched before the "
        f"Hugging Face cache (default: ${ENV_MODEL_DIR})",
    )
    add("--device", help="cpu, cuda or cuda:N (default: cuda:0 if CUDA is available, else cpu)")
    add(
        "--dtype",
        default="auto",
        help="default dtype for loaded models: auto, float32, float16 "
        "or bfloat16; auto = float16 on CUDA, float32 on CPU (default: %(default)s)",
    )
    add(
        "--engine",
        default="sentence-transformers",
        choices=ENGINES,
        help="sentence-transformers (real models; on the CPU through OpenVINO where its vectors "
        "match torch float32 on a check at load, else torch), openvino (the same, said "
        "explicitly), torch (the reference torch path only) or debug (deterministic vectors, "
        "no model, no torch) (default: %(default)s)",
    )
    add(
        "--debug-dim",
        type=int,
        default=384,
        help="vector size of the debug engine (default: %(default)s)",
    )
    add(
        "--fast-path",
        choices=FAST_PATH_MODES,
        help="the packed (unpadded) forward pass for BERT-family models: auto = on CUDA only, "
        "on, off; it is checked against the reference path when a model loads and falls back "
        f"to it (default: ${ENV_FAST_PATH}, else auto)",
    )
    add("--threads", type=int, help="torch intra-op threads (default: torch's own, every core)")
    add(
        "--max-batch-size",
        type=int,
        default=defaults.max_batch_size,
        help="most texts in one batch (default: %(default)s)",
    )
    add(
        "--max-batch-tokens",
        type=int,
        default=defaults.max_batch_tokens,
        help="most tokens, after truncation, in one batch (default: %(default)s)",
    )
    add(
        "--max-message-bytes",
        type=int,
        default=defaults.max_message_bytes,
        help="largest gRPC message received or sent (default: %(default)s = 64 MiB)",
    )
    add(
        "--max-text-chars",
        type=int,
        default=defaults.max_text_chars,
        help="longest text in characters; longer ones are refused (default: %(default)s)",
    )
    add(
        "--trust-remote-code",
        action="store_true",
        help="allow models whose code comes with their weights (off by default)",
    )
    add(
        "--preload",
        action="append",
        metavar="MODEL_ID",
        default=[],
        help="load this model (default settings) before reporting SERVING; repeatable",
    )
    add("--tls-cert", metavar="FILE", help="PEM certificate chain: serve TLS (with --tls-key)")
    add("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    add(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop, as on SIGTERM, when standard input reaches end of file: a server "
        "started by another process (with stdin a pipe) then never outlives it",
    )
    add(
        "--max-streams",
        "--max_streams",
        type=int,
        default=ServerConfig.max_streams,
        help="most Embed streams open at once; one more is refused with RESOURCE_EXHAUSTED "
        "(default: %(default)s)",
    )
    add(
        "--max-stream-bytes",
        type=int,
        default=ServerConfig.max_stream_bytes,
        help="per Embed stream, most bytes of batches received and not yet answered "
        "(requests plus their results); past it the server reads no more of that stream "
        "until the client reads results (default: %(default)s = 32 MiB)",
    )
    add(
        "--log-level",
        help="stderr log level: debug, info, warning or error; debug adds a line per batch "
        f"(rows, tokens, seconds, model) (default: ${ENV_LOG_LEVEL}, else info)",
    )
    return parser


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    return ServerConfig.from_args(build_parser().parse_args(argv), environ)


async def serve(config: ServerConfig, make_backend: BackendFactory | None = None) -> None:
    """`make_backend` replaces the engine chosen by the flags (the tests' faulty engines)."""
    from .server import InferenceServer  # after flag checks: grpc start-up is not free

    server = InferenceServer(config, make_backend)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    os.register_at_fork(after_in_child=_forget_stop_signals)
    if config.exit_on_stdin_eof:
        _stop_at_stdin_eof(loop, stop)
    model_dir = config.model_dir
    if config.engine != "debug" and model_dir is not None and not model_dir.is_dir():
        log.warning(
            "model directory %s does not exist; models come from the HF cache/hub", model_dir
        )
    await server.start()
    _warn_if_exposed(config)
    print(f"{PROG} listening on {server.address}", flush=True)
    if server.metrics_port is not None:
        print(f"{PROG} metrics on {bind_metrics(config.host, server.metrics_port)}", flush=True)
    prepare = asyncio.create_task(server.prepare())
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({prepare, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if prepare in done:
            prepare.result()
            log.info("serving (%s engine on %s)", config.engine, config.device)
            await stopping
        log.info("stopping")
    finally:
        prepare.cancel()
        stopping.cancel()
        await server.stop(STOP_GRACE_SECONDS)


def bind_metrics(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def _warn_if_exposed(config: ServerConfig) -> None:
    """Reachable from other machines with neither a token nor TLS: anyone there can use it."""
    if is_loopback(config.host) or config.auth_token or config.tls:
        return
    log.warning(
        "WARNING: listening on %s with no %s and no TLS: anyone who can reach this port can "
        "run models on this machine and read what it embeds. Set %s (and --tls-cert/--tls-key), "
        "or bind --host 127.0.0.1",
        config.host,
        ENV_AUTH_TOKEN,
        ENV_AUTH_TOKEN,
    )


def _forget_stop_signals() -> None:
    """In a process forked from the server (a library's multiprocessing worker): the
    asyncio loop's signal wakeup socket is shared with the server, so a SIGTERM sent to
    the child (a worker stopped by its parent) would be read by the server's loop as its
    own and stop it. The child drops the socket and takes the default actions."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


def _stop_at_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """A daemon thread reads stdin until EOF (any fd kind works, unlike add_reader)."""

    def watch() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        log.info("standard input closed: stopping")
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, name="stdin-eof", daemon=True).start()


def main(argv: Sequence[str] | None = None, make_backend: BackendFactory | None = None) -> int:
    try:
        config = parse_config(argv)
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(config, make_backend))
    except (OSError, ServiceError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
