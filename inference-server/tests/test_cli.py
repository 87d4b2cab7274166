"""The console script as the orchestrator runs it: one listening line on stdout,
logs on stderr, clean exit on SIGTERM/SIGINT, one-line errors for bad flags."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import MODEL_PATH
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

SCRIPT = str(Path(sys.executable).with_name("embed-inference-server"))
LISTENING = re.compile(r"listening on (\S+):(\d+)")


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SCRIPT, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def first_line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            proc.kill()
            pytest.fail("no listening line")
    return proc.stdout.readline()


def stop(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def test_listening_line_and_sigterm() -> None:
    proc = start(["--engine", "debug"])
    line = first_line(proc)
    match = LISTENING.search(line)
    assert match and match.group(1) == "127.0.0.1", line
    assert line == f"embed-inference-server listening on 127.0.0.1:{match.group(2)}\n"
    with grpc.insecure_channel(f"127.0.0.1:{match.group(2)}") as channel:
        info = pb_grpc.InferenceStub(channel).Info(pb.InfoRequest(), timeout=10)
    assert info.engine == "debug"
    code, out, err = stop(proc)
    assert code == 0, err
    assert out == "", "stdout carries the listening line only"
    assert "Traceback" not in err


def test_exit_on_stdin_eof() -> None:
    """The embedded server's lifeline: the parent's end of the stdin pipe."""
    proc = subprocess.Popen(
        [SCRIPT, "--port", "0", "--engine", "debug", "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert LISTENING.search(first_line(proc))
    assert proc.poll() is None, "still serving while stdin is open"
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_sigint_stops_cleanly() -> None:
    proc = start(["--engine", "debug"])
    assert LISTENING.search(first_line(proc))
    code, _, err = stop(proc, signal.SIGINT)
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-flag"],
        ["--port", "not-a-number"],
        ["--engine", "onnx"],
        ["--port", "70000"],
        ["--max-batch-size", "0"],
        ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
        ["--engine", "debug", "--dtype", "float16"],
        ["--engine", "debug", "--max-streams", "0"],
        ["--engine", "debug", "--max-stream-bytes", "-1"],
        ["--engine", "debug", "--log-level", "chatty"],
    ],
)
def test_bad_flags_give_one_line_and_exit_2(args: list[str]) -> None:
    done = subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embed-inference-server: error:"), done.stderr


@pytest.fixture
def hf_cache(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A Hugging Face cache holding the offline model under a made-up id and commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--testorg--cached-minilm"
    snapshot = repo / "snapshots" / commit
    for source in MODEL_PATH.rglob("*"):
        if source.is_file():
            target = snapshot / source.relative_to(MODEL_PATH)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    yield tmp_path / "hub", commit


def test_preload_from_the_hf_cache_then_serving(hf_cache: tuple[Path, str]) -> None:
    cache, commit = hf_cache
    proc = start(
        ["--device", "cpu", "--threads", "1", "--preload", "testorg/cached-minilm"],
        {"HF_HUB_CACHE": str(cache), "EMBED_MODEL_DIR": ""},
    )
    try:
        match = LISTENING.search(first_line(proc))
        assert match
        with grpc.insecure_channel(f"127.0.0.1:{match.group(2)}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="embedmulti.v1.Inference"), timeout=90
            )
            seen = []
            for reply in watch:
                seen.append(reply.status)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    watch.cancel()
                    break
            assert seen[0] == health_pb2.HealthCheckResponse.NOT_SERVING
            assert seen[-1] == health_pb2.HealthCheckResponse.SERVING
            info = pb_grpc.InferenceStub(channel).Info(pb.InfoRequest(), timeout=10)
        [model] = info.models
        assert (model.model_id, model.revision, model.dim) == ("testorg/cached-minilm", commit, 384)
    finally:
        code, _, err = stop(proc)
    assert code == 0, err


def test_a_failed_preload_exits_1_with_one_line() -> None:
    proc = start(["--device", "cpu", "--threads", "1", "--preload", "nobody/no-such-model"])
    assert LISTENING.search(first_line(proc))
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("embed-inference-server: error: model 'nobody/no-such-model'"), err
    assert "Traceback" not in err


def test_a_server_exposed_without_token_or_tls_warns_loudly() -> None:
    proc = start(["--engine", "debug", "--host", "0.0.0.0"], {"EMBED_AUTH_TOKEN": ""})
    assert LISTENING.search(first_line(proc))
    code, _, err = stop(proc)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "WARNING" in line and "0.0.0.0" in line]
    assert len(warnings) == 1, err
    assert "EMBED_AUTH_TOKEN" in warnings[0] and "TLS" in warnings[0]


@pytest.mark.parametrize(
    ("host", "env"),
    [("127.0.0.1", {"EMBED_AUTH_TOKEN": ""}), ("0.0.0.0", {"EMBED_AUTH_TOKEN": "s3cret"})],
)
def test_no_warning_on_loopback_or_with_a_token(host: str, env: dict[str, str]) -> None:
    proc = start(["--engine", "debug", "--host", host], env)
    assert LISTENING.search(first_line(proc))
    code, _, err = stop(proc)
    assert code == 0, err
    assert "no TLS" not in err, err


BATCH_LINE = re.compile(
    r"batch (\d+) from \S+: model (\S+) \(([0-9a-f]+)\) rows (\d+) tokens (\d+) in ([\d.]+) s"
)


@pytest.mark.parametrize(
    ("args", "env"),
    [([], {"EMBED_LOG_LEVEL": "debug"}), (["--log-level", "debug"], {})],
)
def test_debug_logs_each_batch_without_secrets(args: list[str], env: dict[str, str]) -> None:
    token = "tok-never-logged-7f3a"
    proc = start(["--engine", "debug", *args], {"EMBED_AUTH_TOKEN": token, **env})
    port = LISTENING.search(first_line(proc)).group(2)  # type: ignore[union-attr]
    secret_text = "the text of row one stays private"
    good = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        key = stub.LoadModel(pb.LoadModelRequest(model_id="org/m"), metadata=good).model_key
        batches = [
            pb.EmbedBatch(batch_id=7, model_key=key, texts=[secret_text, "two words"]),
            pb.EmbedBatch(batch_id=8, model_key=key, texts=["x"] * 5),
            pb.EmbedBatch(batch_id=9, model_key="no-such-key", texts=["y"]),
        ]
        results = list(stub.Embed(iter(batches), metadata=good, timeout=30))
    assert len(results) == 3
    code, _, err = stop(proc)
    assert code == 0, err
    found = {int(m.group(1)): m.groups()[1:] for m in BATCH_LINE.finditer(err)}
    # Debug engine tokens: words + 2 per text.
    assert found[7][:4] == ("org/m", key, "2", str(7 + 2 + 2 + 2))
    assert found[8][:4] == ("org/m", key, "5", str(5 * 3))
    assert float(found[7][4]) >= 0
    assert re.search(r"batch 9 from \S+: model \? \(no-such-key\) failed after", err), err
    assert token not in err and secret_text not in err


def test_info_level_logs_no_batch_lines() -> None:
    proc = start(["--engine", "debug"])
    port = LISTENING.search(first_line(proc)).group(2)  # type: ignore[union-attr]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        key = stub.LoadModel(pb.LoadModelRequest(model_id="m")).model_key
        batch = pb.EmbedBatch(batch_id=1, model_key=key, texts=["a"])
        assert len(list(stub.Embed(iter([batch]), timeout=30))) == 1
    code, _, err = stop(proc)
    assert code == 0 and not BATCH_LINE.search(err), err


def test_a_forked_worker_stopped_with_sigterm_does_not_stop_the_server() -> None:
    """A library's forked worker shares the asyncio loop's signal wakeup socket; a SIGTERM
    sent to it was read by the server as its own (the compose stack's OpenVINO first load:
    telemetry workers killed after a network timeout stopped the server)."""
    driver = str(Path(__file__).with_name("forking_server.py"))
    proc = subprocess.Popen(
        [sys.executable, driver, "--port", "0", "--engine", "debug"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    match = LISTENING.search(first_line(proc))
    assert match
    assert proc.stdin is not None and proc.stdout is not None
    for _ in range(2):
        proc.stdin.write("fork\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("worker stopped (-15)")
    # The loop has read whatever the worker's signal left on the socket by now: a call
    # answered after it shows the server still serving.
    with grpc.insecure_channel(f"127.0.0.1:{match.group(2)}") as channel:
        info = pb_grpc.InferenceStub(channel).Info(pb.InfoRequest(), timeout=10)
    assert info.engine == "debug"
    assert proc.poll() is None, "the server is still running"
    code, _, err = stop(proc)
    assert code == 0, err
    assert err.count("stopping") == 1, err


def test_openvino_sends_no_telemetry() -> None:
    """Importing the server blocks OpenVINO's telemetry package: its converter then uses
    its own no-op stub (nothing is sent anywhere, no worker is forked)."""
    probe = (
        "import sys, embed_inference, openvino\n"
        "from openvino.tools.ovc import telemetry_utils\n"
        "print(sys.modules['openvino_telemetry'], telemetry_utils.tm.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "openvino.tools.ovc.telemetry_stub"]
