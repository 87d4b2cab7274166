"""The reference engine: a SentenceTransformer's own modules on torch (CPU or CUDA).

The stages use the model's own `preprocess` and forward (which yields
'sentence_embedding'), so the numbers match `SentenceTransformer.encode` of the
same text; the prefix is prepended to every text, as a client would do by hand.
Every other engine is checked against this one when a model loads (select.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidArgument, NotFound
from .base import Weights
from .hf_text import TextEncoder, split_features

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class SentenceTransformerEncoder(TextEncoder):
    """The padded forward through the model's own modules."""

    @property
    def engine(self) -> str:
        return "torch"

    def device_features(self, features: dict[str, Any]) -> dict[str, Any]:
        if self.device.type != "cuda":
            return features
        # Pinned host memory lets the copy run asynchronously, overlapping the
        # forward pass of the previous batch.
        return {
            key: value.pin_memory().to(self.device, non_blocking=True)
            if isinstance(value, torch.Tensor)
            else value
            for key, value in features.items()
        }

    def core(self, features: Any) -> torch.Tensor:
        with torch.inference_mode():
            # A copy: the modules add their outputs to the dict they are given, and an
            # OOM retry must split the inputs alone.
            return self.weights.model(dict(features))["sentence_embedding"]

    def split(self, features: Any, at: int) -> tuple[Any, Any]:
        return split_features(features, at)


def load_weights(
    model_id: str,
    local_path: Path | None,
    revision: str,
    device: str,
    dtype: str,
    trust_remote_code: bool,
) -> Weights:
    """Loads a SentenceTransformer from `local_path`, or else `model_id` from the hub/cache."""
    from sentence_transformers import SentenceTransformer

    source = str(local_path) if local_path is not None else model_id
    kwargs: dict[str, Any] = {
        "device": device,
        "trust_remote_code": trust_remote_code,
    }
    if local_path is None and revision:
        kwargs["revision"] = revision
    try:
        try:
            # SDPA attention where the architecture supports selecting it.
            model = SentenceTransformer(
                source, model_kwargs={"attn_implementation": "sdpa"}, **kwargs
            )
        except (ValueError, TypeError) as error:
            if "attn" not in str(error).lower() and "sdpa" not in str(error).lower():
                raise
            model = SentenceTransformer(source, **kwargs)
    except OSError as error:
        where = "at revision " + revision + " " if revision else ""
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NotFound(
            f"model {model_id!r} {where}not found in the model directory nor in the "
            f"Hugging Face cache/hub: {first}"
        ) from None
    model.eval()
    model.to(dtype=TORCH_DTYPES[dtype])

    dim = model.get_embedding_dimension()
    if not dim:
        raise InvalidArgument(f"model {model_id!r} does not report an embedding dimension")
    limit = _position_limit(model)
    own = model.max_seq_length or limit
    return Weights(
        model=model,
        dim=int(dim),
        pooling=_pooling_of(model),
        dtype=dtype,
        device=device,
        default_max_length=int(min(own, limit)),
        position_limit=int(limit),
        revision=None if local_path is not None else _hub_commit(model_id, revision),
    )


def _pooling_of(model: Any) -> str:
    for module in model:
        mode = getattr(module, "pooling_mode", None)
        if isinstance(mode, str):
            return mode
        getter = getattr(module, "get_pooling_mode_str", None)
        if callable(getter):
            return str(getter())
    return "model"  # the model pools by itself (no Pooling module)


def _position_limit(model: Any) -> int:
    """The longest input the position embeddings allow (RoBERTa-style models
    reserve padding_idx + 1 positions)."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        # A model without position embeddings (StaticEmbedding) reports an infinite length.
        own = getattr(model, "max_seq_length", None)
        finite = isinstance(own, int | float) and 0 < own < float("inf")
        return int(own) if finite else 512
    model_type = str(getattr(config, "model_type", ""))
    if "roberta" in model_type or model_type in ("camembert", "longformer"):
        positions -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return positions


def _hub_commit(model_id: str, revision: str) -> str:
    """The commit hash of the snapshot the hub cache resolved, which names the
    weights exactly (a branch name like "main" moves)."""
    if _COMMIT_RE.match(revision):
        return revision
    from huggingface_hub import try_to_load_from_cache

    for filename in ("modules.json", "config.json"):
        found = try_to_load_from_cache(model_id, filename, revision=revision or None)
        if isinstance(found, str):
            snapshot = Path(found).parent.name
            if _COMMIT_RE.match(snapshot):
                return snapshot
    return revision or "unknown"
