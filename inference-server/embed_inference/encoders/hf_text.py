"""What every engine for a sentence-transformers model shares: its tokenization and the
stage after the forward pass (truncate_dim, float32, normalize, the copy to the host).

The reference encoder (st.py), the packed BERT path (fast_bert.py) and the CPU engine
(openvino_engine.py) are siblings on top of `TextEncoder`: each says only how the padded
host features reach its forward pass and what that forward is; none imports another.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .base import Encoder, Prepared, Settings, TokenBatch, Weights

log = logging.getLogger("embed_inference.encoders.hf_text")

# Feature keys that pad() can build from ids alone.
_ID_FEATURES = {"input_ids", "attention_mask", "token_type_ids", "modality"}
# Texts that pad(tokenize(...)) must turn into exactly what the model's own preprocess gives.
_PROBES = (
    "  Hello, World!  ",
    "Ünïcödé façade naïve ÉCOLE 漢字かな한국어 x\u00a0y \t tab",
    "word " * 700,
    "a" * 150 + " " + "漢" * 600,
)


def split_features(features: dict[str, Any], at: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rows [0, at) and [at, rows) of padded features, for the out-of-memory retry."""
    rows = int(features["input_ids"].shape[0])

    def part(start: int, stop: int) -> dict[str, Any]:
        return {
            key: value[start:stop]
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows
            else value
            for key, value in features.items()
        }

    return part(0, at), part(at, rows)


class TextTokenizer:
    """One model key's tokenization: prefix, truncation at max_length, token ids, counts."""

    def __init__(self, weights: Weights, settings: Settings) -> None:
        self.weights = weights
        self.settings = settings
        self.model = weights.model
        # One tokenizer copy per thread: a fast tokenizer's truncation settings live in
        # the Rust object, and two threads using one fail ("Already borrowed").
        self._local = threading.local()
        self._feature_keys: set[str] = set()
        self._cut_margin: int | None = None
        self.vocab_size: int | None = None
        self.supports_ids = self._check_ids_path()
        if self.supports_ids:
            backend = self.model.tokenizer.backend_tokenizer
            self.vocab_size = int(backend.get_vocab_size(True))
            self._cut_margin = cut_margin(backend)
        else:
            log.info("%s: tokenizing through the model's preprocess (no token ids)", weights.model)

    def prefixed(self, texts: Sequence[str]) -> list[str]:
        prefix = self.settings.prefix
        return [prefix + t for t in texts] if prefix else list(texts)

    def _check_ids_path(self) -> bool:
        """Whether ids from our own tokenizer copies, padded by pad(), give exactly the
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
            got = self.pad(self._tokenize_rows(_PROBES, cut=False))
        except Exception as error:  # an unusual model: the preprocess path still works
            log.info("token ids disabled: %s", error)
            return False
        return all(
            key in got and torch.equal(got[key], value)
            for key, value in expected.items()
            if isinstance(value, torch.Tensor)
        ) and got.get("modality") == expected.get("modality")

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
        """Prefix, tokenize and truncate (only where supports_ids)."""
        return self._tokenize_rows(self.prefixed(texts))

    def pad(self, tokens: TokenBatch) -> dict[str, Any]:
        """The padded host features the model's preprocess would give for these ids."""
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

    def preprocess(self, texts: Sequence[str]) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """The model's own preprocess (no token ids): (host features, counts, truncated)."""
        max_length = self.settings.max_length
        full = self.prefixed(texts)
        # Fast tokenizers keep truncation/padding state and fail ("Already borrowed")
        # when two threads call them at once; model keys sharing weights share the lock.
        with self.weights.lock:
            features = self.model.preprocess(
                full, processing_kwargs={"text": {"max_length": max_length}}
            )
        input_ids = features["input_ids"]
        mask = features.get("attention_mask")
        offsets = features.get("offsets")
        if input_ids.dim() == 1 and offsets is not None:
            # A bag of ids (StaticEmbedding): every row's ids back to back, from its offset.
            starts = offsets.numpy().astype(np.int64)
            ends = np.append(starts[1:], int(input_ids.shape[0]))
            counts = (ends - starts).astype(np.uint32)
        elif mask is not None:
            counts = mask.sum(dim=1).numpy().astype(np.uint32)
        else:
            counts = np.full(int(input_ids.shape[0]), input_ids.shape[1], dtype=np.uint32)
        truncated = self._truncated(features, full, counts, max_length)
        return dict(features), counts, truncated

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
        return self._untruncated_counts(self.prefixed(texts))


def cut_margin(tokenizer: Any) -> int | None:
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


@dataclass
class _Copying:
    """A batch's vectors on their way to pinned host memory."""

    host: torch.Tensor
    copied: Any  # torch.cuda.Event


class TextEncoder(Encoder):
    """One model key of a sentence-transformers model: the shared tokenization, then the
    engine's `device_features` and `core`; `finish` and `post` as sentence-transformers'
    own encode does them."""

    def __init__(self, weights: Weights, settings: Settings, text: TextTokenizer) -> None:
        super().__init__(settings)
        self.weights = weights
        self.text = text
        self.vocab_size = text.vocab_size
        self.device = torch.device(weights.device)

    @property
    def dim(self) -> int:
        return self.settings.truncate_dim or self.weights.dim

    @property
    def supports_ids(self) -> bool:
        return self.text.supports_ids

    @abstractmethod
    def device_features(self, features: dict[str, Any]) -> Any:
        """The padded host features as `core` takes them (on the device, packed, ...)."""

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        self._count_tokenized(len(texts))
        return self.text.tokenize(texts)

    def pre_ids(self, tokens: TokenBatch) -> Prepared:
        return Prepared(
            features=self.device_features(self.text.pad(tokens)),
            rows=tokens.rows,
            token_counts=tokens.lengths.astype(np.uint32),
            truncated=tokens.truncated.astype(bool),
        )

    def pre(self, texts: Sequence[str]) -> Prepared:
        if self.text.supports_ids:
            return self.pre_ids(self.tokenize(texts))
        self._count_tokenized(len(texts))
        features, counts, truncated = self.text.preprocess(texts)
        return Prepared(
            features=self.device_features(features),
            rows=len(counts),
            token_counts=counts,
            truncated=truncated,
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self._count_tokenized(len(texts))
        return self.text.count_tokens(texts)

    def finish(self, output: torch.Tensor) -> Any:
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

    def concat(self, outputs: list[Any]) -> torch.Tensor:
        return torch.cat(outputs, dim=0)

    def release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
