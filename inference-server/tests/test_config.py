"""ServerConfig: defaults, the environment, and refusals (ConfigError, exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MODEL_DIR

from embed_inference.cli import parse_config
from embed_inference.config import Limits
from embed_inference.errors import ConfigError, InvalidArgument
from embed_inference.models import validate_model_id


def test_defaults() -> None:
    config = parse_config(["--engine", "debug"], {})
    assert (config.host, config.port) == ("127.0.0.1", 50051)
    assert (config.device, config.dtype, config.debug_dim) == ("cpu", "float32", 384)
    assert config.limits == Limits(1024, 131072, 64 * 1024 * 1024, 200_000)
    assert config.model_dir is None and config.auth_token is None
    assert config.threads is None and config.preload == () and not config.trust_remote_code
    assert not config.tls


def test_flags_and_environment() -> None:
    config = parse_config(
        [
            "--engine",
            "debug",
            "--port",
            "0",
            "--threads",
            "3",
            "--preload",
            "a",
            "--preload",
            "b/c",
        ],
        {"EMBED_MODEL_DIR": str(MODEL_DIR), "EMBED_AUTH_TOKEN": "t"},
    )
    assert config.port == 0 and config.threads == 3 and config.preload == ("a", "b/c")
    assert config.model_dir == MODEL_DIR and config.auth_token == "t"
    flag_wins = parse_config(
        ["--engine", "debug", "--model-dir", str(MODEL_DIR.parent)],
        {"EMBED_MODEL_DIR": str(MODEL_DIR)},
    )
    assert flag_wins.model_dir == MODEL_DIR.parent


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        (["--dtype", "float16"], {}),
        (["--dtype", "float64"], {}),
        (["--device", "gpu"], {}),
        (["--max-text-chars", "-1"], {}),
        (["--max-message-bytes", str(2**31)], {}),
        (["--threads", "0"], {}),
        (["--tls-cert", __file__], {}),
    ],
)
def test_refusals(argv: list[str], environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        parse_config(["--engine", "debug", *argv], environ)


def test_a_missing_model_dir_is_not_fatal() -> None:
    """It is only the first place to look; the HF cache/hub comes next."""
    config = parse_config(["--engine", "debug"], {"EMBED_MODEL_DIR": "/nonexistent/models"})
    assert config.model_dir == Path("/nonexistent/models")


def test_cuda_is_refused_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():  # the refusal only exists on a machine without CUDA
        assert parse_config(["--device", "cuda"], {}).device == "cuda:0"
        return
    with pytest.raises(ConfigError, match="not available"):
        parse_config(["--device", "cuda:0"], {})
    config = parse_config([], {})
    assert (config.device, config.dtype) == ("cpu", "float32")


@pytest.mark.parametrize("model_id", ["m", "BAAI/bge-large-en-v1.5", "intfloat/e5-small-v2"])
def test_model_ids_that_pass(model_id: str) -> None:
    validate_model_id(model_id)


@pytest.mark.parametrize(
    "model_id",
    ["", "..", "../x", "a/../b", "a/b/c", "/abs", ".hidden", "a/.b", "a b", "a\\b", "a..b"],
)
def test_model_ids_that_cannot_escape_the_model_directory(model_id: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_model_id(model_id)


def test_tls_files_must_exist(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="no such file"):
        parse_config(
            ["--engine", "debug", "--tls-cert", str(cert), "--tls-key", str(tmp_path / "k")]
        )
