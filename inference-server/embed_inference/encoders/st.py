"""The sentence-transformers engine: real models on torch (CPU or CUDA).

The stages use the model's own `preprocess` and forward (which yields
'sentence_embedding'), so the numbers match `SentenceTransformer.encode` of the
same text; the prefix is prepended to every text, as a client would do by hand.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidArgument, NotFound
from .base import Backend, Encoder, Prepared, Settings, TokenBatch, Weights

log = logging.getLogger("embed_inference.encoders.st")

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# Feature keys that pre_ids can build from ids alone.
_ID_FEATURES = {"input_ids", "attention_mask", "token_type_ids", "modality"}
# Texts that pre_ids must turn into exactly what the model's own preprocess gives.
_PROBES = (
    "  Hello, World!  ",
    "Ünïcödé façade naïve ÉCOLE 漢字かな한국어 x\u00a0y \t tab",
    "word " * 700,
    "a" * 150 + " " + "漢" * 600,
)


@dataclass
class _Copying:
    """A batch's vectors on their way to pinned host memory."""

    host: torch.Tensor
    copied: Any  # torch.cuda.Event


class SentenceTransformerEncoder(Encoder):
    def __init__(self, weights: Weights, settings: Settings, oom_above: int | None) -> None:
        super().__init__(settings, oom_above)
        self.weights = weights
        self.model = weights.model
        self.device = torch.device(weights.device)
        self._cuda = self.device.type == "cuda"
        # One tokenizer copy per thread: a fast tokenizer's truncation settings live in
        # the Rust object, and two threads using one fail ("Already borrowed").
        self._local = threading.local()
        self._feature_keys: set[str] = set()
        self._cut_margin: int | None = None
        self._ids_ok = self._check_ids_path()
        if self._ids_ok:
            self.vocab_size = int(self.model.tokenizer.backend_tokenizer.get_vocab_size(True))
            self._cut_margin = _cut_margin(self.model.tokenizer.backend_tokenizer)
        else:
            log.info("%s: tokenizing through the model's preprocess (no token ids)", weights.model)

    @property
    def dim(self) -> int:
        return self.settings.truncate_dim or self.weights.dim

    def _prefixed(self, texts: Sequence[str]) -> list[str]:
        prefix = self.settings.prefix
        return [prefix + t for t in texts] if prefix else list(texts)

    def _check_ids_path(self) -> bool:
        """Whether ids from our own tokenizer copies, padded by pre_ids, give exactly the
        features of the model's preprocess: a fast tokenizer, text-only features."""
        tokenizer = getattr(self.model, "tokenizer", None)
        if getattr(tokenizer, "backend_tokenizer", None) is None:
            return False
        try:
            kwargs = {"text": {"max_length": self.settings.max_length}}
            with self.weights.lock:
                expected = self.model.preprocess(list(_PROBES), processing_kwargs=kwargs)
            if not set(expected) <= _ID_FEATURES or "input_ids" not in expected:
                return False
            self._feature_keys = set(expected)
            got = self._pad(self._tokenize_rows(_PROBES, cut=False))
        except Exception as error:  # an unusual model: the preprocess path still works
            log.info("token ids disabled: %s", error)
            return False
        return all(
            key in got and torch.equal(got[key], value)
            for key, value in expected.items()
            if isinstance(value, torch.Tensor)
        ) and got.get("modality") == expected.get("modality")

    @property
    def supports_ids(self) -> bool:
        return self._ids_ok

    def _tokenizer(self) -> Any:
        """This thread's copy of the Rust tokenizer, truncating at max_length."""
        local = getattr(self._local, "tokenizer", None)
        if local is None:
            hf = self.model.tokenizer
            with self.weights.lock:  # deepcopy reads the shared tokenizer
                local = copy.deepcopy(hf.backend_tokenizer)
            local.no_padding()
            local.enable_truncation(
                self.settings.max_length, stride=0, direction=hf.truncation_side
            )
            self._local.tokenizer = local
        return local

    def _tokenize_rows(self, texts: Sequence[str], cut: bool = True) -> TokenBatch:
        tokenizer = self._tokenizer()
        margin = self._cut_margin if cut else None
        # A text far longer than max_length needs only its start: cut it well past the
        # last token kept, and keep the cut only where the cut text still overflows and
        # its last kept token ends `margin` characters before the cut (so no word that
        # the cut changed is among them); otherwise tokenize the whole text.
        reach = max(1024, 8 * self.settings.max_length) + (margin or 0)
        inputs = [t[:reach] if margin is not None and len(t) > reach else t for t in texts]
        encodings = tokenizer.encode_batch(inputs, add_special_tokens=True)
        if margin is not None:
            redo = [
                i
                for i, (t, e) in enumerate(zip(texts, encodings, strict=True))
                if len(t) > reach
                and not (e.overflowing and max(end for _, end in e.offsets) <= reach - margin)
            ]
            if redo:
                again = tokenizer.encode_batch([texts[i] for i in redo], add_special_tokens=True)
                for i, encoding in zip(redo, again, strict=True):
                    encodings[i] = encoding
        lengths = np.fromiter((len(e.ids) for e in encodings), np.uint32, len(encodings))
        ids = np.fromiter((i for e in encodings for i in e.ids), np.uint32, int(lengths.sum()))
        truncated = np.fromiter((bool(e.overflowing) for e in encodings), bool, len(encodings))
        return TokenBatch(ids=ids, lengths=lengths, truncated=truncated)

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        self._count_tokenized(len(texts))
        return self._tokenize_rows(self._prefixed(texts))

    def _pad(self, tokens: TokenBatch) -> dict[str, Any]:
        """The padded features the model's preprocess would give for these ids."""
        hf = self.model.tokenizer
        rows = tokens.rows
        width = int(tokens.lengths.max()) if rows else 0
        input_ids = torch.full((rows, width), int(hf.pad_token_id or 0), dtype=torch.int64)
        mask = torch.zeros((rows, width), dtype=torch.int64)
        flat = torch.from_numpy(tokens.ids.astype(np.int64))
        lengths = tokens.lengths.astype(np.int64)
        left = hf.padding_side == "left"
        start = 0
        for row, length in enumerate(lengths.tolist()):
            columns = slice(width - length, width) if left else slice(0, length)
            input_ids[row, columns] = flat[start : start + length]
            mask[row, columns] = 1
            start += length
        features: dict[str, Any] = {"input_ids": input_ids}
        if "token_type_ids" in self._feature_keys:
            # One sequence per row: type 0 throughout, padding included.
            features["token_type_ids"] = torch.full(
                (rows, width), int(hf.pad_token_type_id or 0), dtype=torch.int64
            ) * (1 - mask)
        if "attention_mask" in self._feature_keys:
            features["attention_mask"] = mask
        if "modality" in self._feature_keys:
            features["modality"] = "text"
        return features

    def pre_ids(self, tokens: TokenBatch) -> Prepared:
        features = self._pad(tokens)
        return Prepared(
            features=self._to_device(features),
            rows=tokens.rows,
            token_counts=tokens.lengths.astype(np.uint32),
            truncated=tokens.truncated.astype(bool),
        )

    def _to_device(self, features: dict[str, Any]) -> dict[str, Any]:
        """The features as `core` takes them, on the device (the fast path packs them)."""
        if not self._cuda:
            return features
        # Pinned host memory lets the copy run asynchronously, overlapping the
        # forward pass of the previous batch.
        return {
            key: value.pin_memory().to(self.device, non_blocking=True)
            if isinstance(value, torch.Tensor)
            else value
            for key, value in features.items()
        }

    def pre(self, texts: Sequence[str]) -> Prepared:
        if self._ids_ok:
            return self.pre_ids(self.tokenize(texts))
        self._count_tokenized(len(texts))
        max_length = self.settings.max_length
        full = self._prefixed(texts)
        # Fast tokenizers keep truncation/padding state and fail ("Already borrowed")
        # when two threads call them at once; model keys sharing weights share the lock.
        with self.weights.lock:
            features = self.model.preprocess(
                full, processing_kwargs={"text": {"max_length": max_length}}
            )
        input_ids = features["input_ids"]
        rows = int(input_ids.shape[0])
        mask = features.get("attention_mask")
        if mask is not None:
            counts = mask.sum(dim=1).numpy().astype(np.uint32)
        else:
            counts = np.full(rows, input_ids.shape[1], dtype=np.uint32)
        truncated = self._truncated(features, full, counts, max_length)
        features = self._to_device(dict(features))
        return Prepared(features=features, rows=rows, token_counts=counts, truncated=truncated)

    def _truncated(
        self, features: Any, texts: list[str], counts: np.ndarray, max_length: int
    ) -> np.ndarray:
        """Only rows exactly at max_length can have been cut. A fast tokenizer already
        knows (its overflow pieces); otherwise those few rows are counted again uncut."""
        truncated = np.zeros(len(counts), dtype=bool)
        candidates = np.flatnonzero(counts >= max_length)
        if len(candidates) == 0:
            return truncated
        encodings = getattr(features, "encodings", None)
        if encodings is not None and len(encodings) == len(counts):
            for i in candidates:
                truncated[i] = len(encodings[i].overflowing) > 0
            return truncated
        full = self._untruncated_counts([texts[i] for i in candidates])
        truncated[candidates] = np.asarray(full) > max_length
        return truncated

    def _untruncated_counts(self, texts: Sequence[str]) -> list[int]:
        with self.weights.lock:
            encoded = self.model.tokenizer(
                list(texts),
                add_special_tokens=True,
                truncation=False,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        return [len(ids) for ids in encoded["input_ids"]]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self._count_tokenized(len(texts))
        return self._untruncated_counts(self._prefixed(texts))

    def core(self, features: Any) -> torch.Tensor:
        with torch.inference_mode():
            # A copy: the modules add their outputs to the dict they are given, and an
            # OOM retry must split the inputs alone.
            return self.model(dict(features))["sentence_embedding"]

    def forward(self, prepared: Prepared) -> Any:
        return self._finish(super().forward(prepared))

    def _finish(self, output: torch.Tensor) -> Any:
        """float32, normalization and the start of the copy to the host, queued on the
        forward thread right behind the forward pass. In `post` (another thread) they were
        queued behind whatever the forward thread had launched since, i.e. the next batch's
        forward, and its `stream.synchronize()` waited for that too; now `post` waits on an
        event recorded after this batch's copy only."""
        with torch.inference_mode():
            embeddings = self.truncated(output).float()
            if self.settings.normalize:
                embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
            if not embeddings.is_cuda:
                return embeddings
            # From the caching host allocator: after the first batches this reuses blocks.
            host = torch.empty(embeddings.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(embeddings, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(torch.cuda.current_stream(embeddings.device))
            return _Copying(host, copied)

    def post(self, output: Any) -> np.ndarray:
        if isinstance(output, _Copying):
            output.copied.synchronize()
            output = output.host
        return np.ascontiguousarray(output.numpy())

    def split(self, features: Any, at: int) -> tuple[Any, Any]:
        rows = int(features["input_ids"].shape[0])

        def part(start: int, stop: int) -> dict[str, Any]:
            return {
                key: value[start:stop]
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows
                else value
                for key, value in features.items()
            }

        return part(0, at), part(at, rows)

    def concat(self, outputs: list[Any]) -> torch.Tensor:
        return torch.cat(outputs, dim=0)

    def release_memory(self) -> None:
        if self._cuda:
            torch.cuda.empty_cache()

    def _simulated_oom(self, rows: int) -> BaseException:
        message = f"CUDA out of memory (simulated by EMBED_TEST_OOM_ABOVE={self.oom_above})"
        try:
            return torch.cuda.OutOfMemoryError(message)
        except TypeError:  # not constructible in this torch build
            return super()._simulated_oom(rows)


class SentenceTransformerBackend(Backend):
    name = "sentence-transformers"

    def __init__(
        self,
        threads: int | None,
        trust_remote_code: bool,
        oom_above: int | None,
        fast_path: str = "auto",
    ) -> None:
        self._threads = threads
        self._trust_remote_code = trust_remote_code
        self._oom_above = oom_above
        # auto: the packed fast path on CUDA, the reference path on the CPU (where padding
        # costs less than the packing, and a bare SentenceTransformer.encode is the bar).
        self._fast_path = fast_path

    def start(self) -> None:
        if self._threads is not None:
            torch.set_num_threads(self._threads)
        import sentence_transformers  # noqa: F401 - the slow import, done before SERVING

    def load(
        self, model_id: str, local_path: Path | None, revision: str, device: str, dtype: str
    ) -> Weights:
        from sentence_transformers import SentenceTransformer

        source = str(local_path) if local_path is not None else model_id
        kwargs: dict[str, Any] = {
            "device": device,
            "trust_remote_code": self._trust_remote_code,
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
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise NotFound(
                f"model {model_id!r} {where}not found in the model directory nor in the "
                f"Hugging Face cache/hub: {first}"
            ) from None
        model.eval()
        model.to(dtype=_TORCH_DTYPES[dtype])

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

    def encoder(self, weights: Weights, settings: Settings) -> Encoder:
        reference = SentenceTransformerEncoder(weights, settings, self._oom_above)
        wanted = self._fast_path == "on" or (
            self._fast_path == "auto" and weights.device.startswith("cuda")
        )
        if not wanted:
            return reference
        from .fast_bert import try_fast_encoder

        # Checked against `reference` at load; on any doubt the reference path it is.
        return try_fast_encoder(reference, weights, settings, self._oom_above)


def _cut_margin(tokenizer: Any) -> int | None:
    """How far before a cut the last kept token must end for the cut to change none of
    the kept ids; None where cutting is not known to be safe. WordPiece behind BERT's
    pre-tokenizer tokenizes each word alone, and turns a word longer than
    max_input_chars_per_word into one [UNK]: a cut word that reached into the kept
    tokens would be that long, and show as one token ending at the cut."""
    try:
        config = json.loads(tokenizer.to_str())
    except Exception:
        return None
    model = config.get("model") or {}
    pre = config.get("pre_tokenizer") or {}
    normalizer = config.get("normalizer") or {"type": "BertNormalizer"}
    if model.get("type") != "WordPiece" or pre.get("type") != "BertPreTokenizer":
        return None
    if normalizer.get("type") != "BertNormalizer":
        return None
    return int(model.get("max_input_chars_per_word", 100)) + 28


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
        own = model.max_seq_length
        return int(own) if own else 512
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
