"""Model resolution, the weights cache and model keys.

A model id is looked up first in the model directory (`<model_dir>/<model_id>`),
then in the Hugging Face cache/hub. Weights are cached by (model_id, revision,
device, dtype); each set of LoadModel settings on top of them (prefix, normalize,
max_length, truncate_dim) gets a stable `model_key` that Embed batches name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import devices
from .config import ServerConfig
from .encoders.base import Backend, Encoder, Fidelity, Settings, Weights, calibration_digest
from .errors import InvalidArgument, NotFound

log = logging.getLogger("embed_inference.models")

# Each component of a model id; with at most two components and no "..", an id
# cannot name anything outside the model directory. Matched whole (fullmatch): with
# re.match, "$" also matches before a trailing newline, and "ok-model\n" passed.
_COMPONENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Alternative back-ends' exports, never loaded by torch.
_SKIPPED_DIRS = {"onnx", "openvino"}
_HASH_CHUNK = 1 << 20
# The Hugging Face hub's limit on a repository or organisation name; far under NAME_MAX.
_MAX_COMPONENT_CHARS = 96
_SHOWN_ID_CHARS = 80
QUANTIZE_MODES = ("", "int8")
# Calibration texts per load at most: NNCF's own default subset is 300; the client sends 256.
MAX_CALIBRATION_TEXTS = 1024


@dataclass(frozen=True)
class LoadRequest:
    """LoadModel's request: the fields of the proto message of the same names."""

    model_id: str
    revision: str = ""
    device: str = ""
    dtype: str = ""
    max_length: int = 0
    prefix: str = ""
    normalize: bool = False
    truncate_dim: int = 0
    quantize: str = ""
    calibration_texts: tuple[str, ...] = ()

    @classmethod
    def from_pb(cls, message: object) -> LoadRequest:
        values = {f.name: getattr(message, f.name) for f in fields(cls)}
        values["calibration_texts"] = tuple(values["calibration_texts"])
        return cls(**values)


@dataclass(frozen=True)
class ModelInfo:
    model_key: str
    model_id: str
    revision: str
    # Of the embeddings returned: truncate_dim when set.
    dim: int
    max_length: int
    pooling: str
    normalize: bool
    prefix: str
    dtype: str
    device: str
    truncate_dim: int
    # "" or "int8", as asked.
    quantize: str = ""
    # What made the vectors ("torch", "openvino", ...) and in which precision: recorded,
    # not compared (a server with another engine is held to the probe vectors).
    engine: str = ""
    precision: str = ""
    # A quantized model's vectors against float32 on its calibration texts.
    quantize_fidelity: Fidelity | None = None


@dataclass(frozen=True)
class LoadedModel:
    info: ModelInfo
    encoder: Encoder


def validate_model_id(model_id: str) -> None:
    """Refuses, as INVALID_ARGUMENT, any id that cannot be a model folder or a hub id,
    before it reaches the file system (whose errors would name the server's folders)."""
    if not model_id:
        raise InvalidArgument("model_id is empty")
    parts = model_id.split("/")
    shown = repr(model_id if len(model_id) <= _SHOWN_ID_CHARS else model_id[:_SHOWN_ID_CHARS] + "…")
    if len(parts) > 2 or ".." in model_id or not all(_COMPONENT_RE.fullmatch(p) for p in parts):
        raise InvalidArgument(
            f"bad model_id {shown}: expected NAME or ORG/NAME made of letters, digits, "
            "'.', '_' and '-'"
        )
    if any(len(p) > _MAX_COMPONENT_CHARS for p in parts):
        raise InvalidArgument(
            f"bad model_id {shown} ({len(model_id)} characters): each part of NAME or ORG/NAME "
            f"has at most {_MAX_COMPONENT_CHARS} characters"
        )


def weights_digest(folder: Path) -> str:
    """A short sha256 over the weight files' relative paths and bytes, read in chunks:
    the revision of a model-directory load, which has no commit hash."""
    digest = hashlib.sha256()
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix in _WEIGHT_SUFFIXES
        and not _SKIPPED_DIRS.intersection(path.relative_to(folder).parts[:-1])
    )
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


class ModelRegistry:
    def __init__(self, config: ServerConfig, backend: Backend) -> None:
        self._config = config
        self._backend = backend
        self._weights: dict[tuple[str, str, str, str], Weights] = {}
        self._models: dict[str, LoadedModel] = {}
        # One load at a time: weights are large, and two clients asking for the same
        # model should share one copy.
        self._lock = threading.Lock()

    def get(self, model_key: str) -> LoadedModel:
        if not model_key:
            raise InvalidArgument("model_key is empty")
        model = self._models.get(model_key)
        if model is None:
            raise NotFound(f"unknown model_key {model_key!r}: call LoadModel first")
        return model

    def infos(self) -> list[ModelInfo]:
        return [model.info for model in self.loaded()]

    def loaded(self) -> list[LoadedModel]:
        return list(self._models.values())

    def load(self, request: LoadRequest) -> LoadedModel:
        """Blocking (reads weights); the server calls it from a worker thread."""
        validate_model_id(request.model_id)
        device, dtype = self._device_and_dtype(request)
        with self._lock:
            weights = self._load_weights(request.model_id, request.revision, device, dtype)
            max_length = request.max_length or weights.default_max_length
            if max_length > weights.position_limit:
                raise InvalidArgument(
                    f"max_length {max_length} exceeds the {weights.position_limit} positions "
                    f"that {request.model_id!r} supports"
                )
            _check_quantize(request, weights.dtype)
            if request.truncate_dim > weights.dim:
                raise InvalidArgument(
                    f"truncate_dim {request.truncate_dim} is more than the {weights.dim} "
                    f"dimensions of {request.model_id!r}"
                )
            # The settings that change the vectors travel as one value: into the
            # encoder, and into the ModelInfo the client compares.
            settings = Settings(
                **{
                    **{f.name: getattr(request, f.name) for f in fields(Settings)},
                    "max_length": max_length,
                }
            )
            info = ModelInfo(
                model_key="",
                model_id=request.model_id,
                revision=weights.revision or "",
                dim=settings.truncate_dim or weights.dim,
                pooling=weights.pooling,
                dtype=weights.dtype,
                device=weights.device,
                **asdict(settings),
            )
            calibration = request.calibration_texts if request.quantize else ()
            key = self._model_key(info, calibration)
            model = self._models.get(key)
            if model is None:
                encoder = self._backend.encoder(weights, settings, calibration)
                info = ModelInfo(
                    **{
                        **asdict(info),
                        "model_key": key,
                        "engine": encoder.engine,
                        "precision": encoder.precision or weights.dtype,
                        "quantize_fidelity": encoder.fidelity,
                    }
                )
                model = LoadedModel(info, encoder)
                self._models[key] = model
                log.info("model %s ready as %s (%s)", request.model_id, key, info)
            return model

    def _device_and_dtype(self, request: LoadRequest) -> tuple[str, str]:
        config = self._config
        device = devices.parse_device(request.device) if request.device else config.device
        if not self._backend.uses_model_files:
            # The debug engine computes float32 on the CPU whatever the device label.
            return device, devices.resolve_dtype(request.dtype, "cpu")
        if device != config.device:
            devices.check_available(device)
        if not request.dtype and device == config.device:
            return device, config.dtype
        return device, devices.resolve_dtype(request.dtype, device)

    def _load_weights(self, model_id: str, revision: str, device: str, dtype: str) -> Weights:
        cache_key = (model_id, revision, device, dtype)
        weights = self._weights.get(cache_key)
        if weights is not None:
            return weights
        local = self._local_folder(model_id) if self._backend.uses_model_files else None
        digest = None
        if local is not None:
            digest = weights_digest(local)
            if revision and revision != digest:
                # The folder holds other weights than the ones asked for: try the cache/hub.
                log.info("%s: model directory holds %s, not %s", model_id, digest, revision)
                local = None
        log.info(
            "loading %s from %s on %s as %s", model_id, local or self._source_name(), device, dtype
        )
        weights = self._backend.load(model_id, local, revision, device, dtype)
        if local is not None:
            weights.revision = digest
        self._weights[cache_key] = weights
        return weights

    def _source_name(self) -> str:
        return "the HF cache/hub" if self._backend.uses_model_files else "the debug engine"

    def _local_folder(self, model_id: str) -> Path | None:
        model_dir = self._config.model_dir
        if model_dir is None:
            return None
        folder = model_dir / model_id
        return folder if folder.is_dir() else None

    def _model_key(self, info: ModelInfo, calibration: tuple[str, ...]) -> str:
        """Stable across restarts for the same weights and settings: a hash, not a counter.
        A quantized model is also keyed by its calibration texts (another sample, other
        int8 scales)."""
        settings = {**asdict(info), "engine": self._backend.name}
        settings.pop("model_key")
        settings.pop("quantize_fidelity")
        if not settings["quantize"]:
            settings.pop("quantize")  # the keys of unquantized models stay as they were
        if calibration:
            settings["calibration"] = calibration_digest(calibration)
        blob = json.dumps(settings, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _check_quantize(request: LoadRequest, dtype: str) -> None:
    """What a quantized load needs, whatever the engine: a known mode, texts to calibrate on,
    and the float32 model to start from."""
    if request.quantize not in QUANTIZE_MODES:
        raise InvalidArgument(f"quantize must be empty or 'int8' (got {request.quantize!r})")
    if not request.quantize:
        return
    texts = request.calibration_texts
    if not texts:
        raise InvalidArgument(
            "quantize int8 needs calibration_texts (a sample of the run's own texts)"
        )
    if len(texts) > MAX_CALIBRATION_TEXTS:
        raise InvalidArgument(
            f"{len(texts)} calibration_texts, more than the {MAX_CALIBRATION_TEXTS} accepted"
        )
    if dtype != "float32":
        raise InvalidArgument(
            f"quantize int8 starts from the float32 model (got dtype {dtype}); "
            "leave the dtype at auto or float32"
        )
