"""The packed (unpadded) fast path for BERT-family sentence-transformers models.

A padded batch spends its attention and feed-forward FLOPs on pad tokens too. Here the real
tokens of a batch are gathered into one (tokens, hidden) tensor on the host, copied to the
device in one transfer, and the transformer layers run on them directly: the linear layers
see only real tokens, and attention is variable-length over cumulative sequence offsets
(`cu_seqlens`, as TEI and FlashAttention do). Pooling (CLS or mean) reads the packed tokens
per row and is computed in float32.

It runs the model's own weights (the `BertModel` inside the sentence-transformers
Transformer module), so nothing is loaded twice except a fused Q/K/V weight per layer. It is
used only for what it recognises (absolute positions, an encoder without cross-attention,
Transformer + Pooling(cls|mean) [+ Normalize]), and only after a check at load that its
vectors match the reference path's on a few texts; anything else keeps the reference path
(the selector in select.py).

Attention kernels, the first that works on this torch, device and dtype (probed at load):
`torch.nn.attention.varlen.varlen_attn` (FlashAttention/cuDNN over cu_seqlens, CUDA,
half precision), `torch.ops.aten._flash_attention_forward` with cu_seqlens (older torch), and
everywhere else a padded SDPA over the packed tokens scattered back into rows (the CPU, float32:
exact, not faster; it exists so that the fast path can be tested on any machine).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import Settings, Weights, first_line
from .hf_text import TextEncoder, TextTokenizer

log = logging.getLogger("embed_inference.encoders.fast_bert")

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "Packed"], torch.Tensor]


class Unsupported(Exception):
    """The model is not one the fast path knows; the reason goes into the log line."""


@dataclass
class Packed:
    """A batch's real tokens, on the device, plus the offsets that say whose they are."""

    ids: torch.Tensor  # (tokens,) int32
    token_types: torch.Tensor  # (tokens,) int32
    positions: torch.Tensor  # (tokens,) int32
    rows_of: torch.Tensor  # (tokens,) int32: the row each token belongs to
    cu_seqlens: torch.Tensor  # (rows + 1,) int32
    lengths: np.ndarray  # (rows,) on the host: for the split and max_len
    max_len: int

    @property
    def rows(self) -> int:
        return len(self.lengths)


def pack(features: dict[str, Any], device: torch.device) -> Packed:
    """Gathers the real tokens of a padded batch on the host and sends them in ONE copy.

    Position ids are those the padded forward gives each real token (its column), so left
    padding would be handled as the reference path handles it."""
    input_ids = features["input_ids"]
    rows, width = input_ids.shape
    mask = features.get("attention_mask")
    real = mask.bool() if mask is not None else torch.ones(rows, width, dtype=torch.bool)
    types = features.get("token_type_ids")
    if types is None:
        types = torch.zeros_like(input_ids)
    lengths = real.sum(dim=1)
    columns = torch.arange(width).expand(rows, width)
    row_index = torch.arange(rows).unsqueeze(1).expand(rows, width)
    cu = torch.zeros(rows + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=cu[1:])
    total = int(cu[-1])
    # One int32 buffer: ids, types, positions, rows, cu_seqlens; pinned on CUDA so that the
    # copy is asynchronous (one pinned allocation and one transfer instead of one per key).
    host = torch.empty(4 * total + rows + 1, dtype=torch.int32, pin_memory=device.type == "cuda")
    for slot, source in enumerate((input_ids, types, columns, row_index)):
        host[slot * total : (slot + 1) * total] = source[real]
    host[4 * total :] = cu
    moved = host.to(device, non_blocking=True) if device.type == "cuda" else host
    parts = moved[: 4 * total].view(4, total)
    lengths_np = lengths.numpy().astype(np.int64)
    return Packed(
        ids=parts[0],
        token_types=parts[1],
        positions=parts[2],
        rows_of=parts[3],
        cu_seqlens=moved[4 * total :],
        lengths=lengths_np,
        max_len=int(lengths_np.max()) if rows else 0,
    )


def split_packed(packed: Packed, at: int) -> tuple[Packed, Packed]:
    """Rows [0, at) and [at, rows), for the out-of-memory retry (offsets from the host)."""
    cut = int(packed.lengths[:at].sum())

    def part(first: int, last: int, start: int, stop: int) -> Packed:
        lengths = packed.lengths[first:last]
        cu = packed.cu_seqlens[first : last + 1] - start
        return Packed(
            ids=packed.ids[start:stop],
            token_types=packed.token_types[start:stop],
            positions=packed.positions[start:stop],
            rows_of=packed.rows_of[start:stop] - first,
            cu_seqlens=cu,
            lengths=lengths,
            max_len=int(lengths.max()) if len(lengths) else 0,
        )

    total = int(packed.lengths.sum())
    return part(0, at, 0, cut), part(at, packed.rows, cut, total)


# --------------------------------------------------------------------------- attention


def padded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Packed) -> torch.Tensor:
    """Variable-length attention by scattering the packed tokens back into padded rows and
    masking the pad keys: works on every device and dtype, exact, not faster than padding."""
    tokens, heads, head_dim = q.shape
    rows, width = p.rows, p.max_len
    starts = p.cu_seqlens[:-1].long()
    rows_of = p.rows_of.long()
    slot = rows_of * width + (torch.arange(tokens, device=q.device) - starts[rows_of])

    def rows_first(x: torch.Tensor) -> torch.Tensor:
        padded = x.new_zeros(rows * width, heads, head_dim)
        padded[slot] = x
        return padded.view(rows, width, heads, head_dim).transpose(1, 2)

    lengths = (p.cu_seqlens[1:] - p.cu_seqlens[:-1]).long()
    keep = torch.arange(width, device=q.device).unsqueeze(0) < lengths.unsqueeze(1)
    out = F.scaled_dot_product_attention(
        rows_first(q), rows_first(k), rows_first(v), attn_mask=keep[:, None, None, :]
    )
    return out.transpose(1, 2).reshape(rows * width, heads, head_dim)[slot]


def _varlen_api() -> AttentionFn | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    extra: dict[str, Any] = {}
    # Some releases take is_causal (default False); say it, in case a release flips it.
    if "is_causal" in inspect.signature(varlen_attn).parameters:
        extra["is_causal"] = False

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Packed) -> torch.Tensor:
        out = varlen_attn(q, k, v, p.cu_seqlens, p.cu_seqlens, p.max_len, p.max_len, **extra)
        return out[0] if isinstance(out, tuple) else out

    return attend


def _aten_flash() -> AttentionFn | None:
    op = getattr(torch.ops.aten, "_flash_attention_forward", None)
    if op is None:
        return None

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Packed) -> torch.Tensor:
        # (query, key, value, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p, is_causal,
        # return_debug_mask): returns (output, logsumexp, ...).
        return op(q, k, v, p.cu_seqlens, p.cu_seqlens, p.max_len, p.max_len, 0.0, False, False)[0]

    return attend


def _contiguous(attend: AttentionFn) -> AttentionFn:
    def wrapped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Packed) -> torch.Tensor:
        return attend(q.contiguous(), k.contiguous(), v.contiguous(), p)

    return wrapped


Candidates = Sequence[tuple[str, Callable[[], AttentionFn | None]]]


def choose_attention(
    device: torch.device,
    dtype: torch.dtype,
    heads: int,
    head_dim: int,
    candidates: Candidates | None = None,
) -> tuple[str, AttentionFn]:
    """The first kernel that runs here and agrees with the padded SDPA on a random probe laid
    out as the model's are (views of one fused Q/K/V tensor), as is, else on copies."""
    if candidates is None:
        candidates = []
        if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
            candidates = [
                ("varlen_attn", _varlen_api),
                ("aten._flash_attention_forward", _aten_flash),
            ]
    if not candidates:
        return "padded-sdpa", padded_attention
    generator = torch.Generator(device="cpu").manual_seed(0)
    lengths = [5, 17, 1, 64]
    probe = _probe_packed(lengths, device)
    fused = torch.randn(sum(lengths), 3, heads, head_dim, generator=generator).to(device, dtype)
    q, k, v = fused.unbind(1)
    with torch.inference_mode():
        expected = padded_attention(q.float(), k.float(), v.float(), probe)
        for name, make in candidates:
            try:
                found = make()
            except Exception as error:
                log.info("attention kernel %s unavailable: %s", name, first_line(error))
                continue
            if found is None:
                continue
            for label, attend in ((name, found), (f"{name} (contiguous)", _contiguous(found))):
                try:
                    got = attend(q, k, v, probe).float()
                except Exception as error:  # a kernel this build or card lacks
                    log.info("attention kernel %s unavailable: %s", label, first_line(error))
                    continue
                error = float((got - expected).abs().max()) if got.shape == expected.shape else 1e9
                if error < 2e-2:
                    return label, attend
                log.info("attention kernel %s disagrees on the probe (error %.3g)", label, error)
    return "padded-sdpa", padded_attention


def _probe_packed(lengths: Sequence[int], device: torch.device) -> Packed:
    total = sum(lengths)
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    rows_of = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    zeros = torch.zeros(total, dtype=torch.int32, device=device)
    return Packed(
        ids=zeros,
        token_types=zeros,
        positions=zeros,
        rows_of=rows_of.to(device=device, dtype=torch.int32),
        cu_seqlens=cu.to(device),
        lengths=np.asarray(lengths, dtype=np.int64),
        max_len=max(lengths),
    )


# --------------------------------------------------------------------------- the model


class PackedBert:
    """A BertModel's weights, run over packed tokens; built once per loaded weights."""

    def __init__(self, weights: Weights) -> None:
        model = weights.model
        modules = list(model)
        if not modules:
            raise Unsupported("no modules")
        transformer, rest = modules[0], modules[1:]
        bert = getattr(transformer, "auto_model", None)
        if type(bert).__name__ != "BertModel":
            raise Unsupported(f"the encoder is {type(bert).__name__}, not BertModel")
        config = bert.config
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise Unsupported(f"position embeddings {config.position_embedding_type!r}")
        if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
            raise Unsupported("a decoder")
        if getattr(config, "chunk_size_feed_forward", 0):
            raise Unsupported("chunked feed-forward")
        kinds = [type(m).__name__ for m in rest]
        if kinds not in (["Pooling"], ["Pooling", "Normalize"]):
            raise Unsupported(f"modules after the transformer: {kinds}")
        pooling = rest[0]
        self.pooling = str(getattr(pooling, "pooling_mode", ""))
        if self.pooling not in ("cls", "mean") or not getattr(pooling, "include_prompt", True):
            raise Unsupported(f"pooling {self.pooling!r}")
        self.normalizes = kinds[-1] == "Normalize"
        self.embeddings = bert.embeddings
        self.layers = list(bert.encoder.layer)
        self.heads = int(config.num_attention_heads)
        self.hidden = int(config.hidden_size)
        if self.hidden % self.heads:
            raise Unsupported("hidden size not a multiple of the heads")
        self.head_dim = self.hidden // self.heads
        for layer in self.layers:
            attention = layer.attention.self
            if attention.attention_head_size != self.head_dim:
                raise Unsupported("per-layer head sizes differ")
            if not math.isclose(float(attention.scaling), self.head_dim**-0.5):
                raise Unsupported("a non-standard attention scale")
        # One Q/K/V matmul per layer instead of three (a copy of those weights: for
        # bge-large 150 MB in half precision).
        with torch.no_grad():
            self.qkv = [
                (
                    torch.cat([s.query.weight, s.key.weight, s.value.weight]).contiguous(),
                    torch.cat([s.query.bias, s.key.bias, s.value.bias]).contiguous(),
                )
                for s in (layer.attention.self for layer in self.layers)
            ]
        param = next(bert.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.attention_name, self.attend = choose_attention(
            self.device, self.dtype, self.heads, self.head_dim
        )

    def __call__(self, p: Packed) -> torch.Tensor:
        """Pooled float32 (rows, hidden) embeddings, not normalized."""
        emb = self.embeddings
        x = (
            emb.word_embeddings(p.ids)
            + emb.token_type_embeddings(p.token_types)
            + emb.position_embeddings(p.positions)
        )
        x = emb.LayerNorm(x)
        tokens = x.shape[0]
        for layer, (w, b) in zip(self.layers, self.qkv, strict=True):
            q, k, v = F.linear(x, w, b).view(tokens, 3, self.heads, self.head_dim).unbind(1)
            a = self.attend(q, k, v, p).reshape(tokens, self.hidden)
            out = layer.attention.output
            x = out.LayerNorm(out.dense(a) + x)
            h = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
            x = layer.output.LayerNorm(layer.output.dense(h) + x)
        if self.pooling == "cls":
            return x[p.cu_seqlens[:-1].long()].float()
        sums = torch.zeros(p.rows, self.hidden, dtype=torch.float32, device=x.device)
        sums.index_add_(0, p.rows_of.long(), x.float())
        counts = (p.cu_seqlens[1:] - p.cu_seqlens[:-1]).to(torch.float32).clamp_min(1.0)
        return sums / counts.unsqueeze(1)


class FastBertEncoder(TextEncoder):
    """The shared tokenization and post stage, with the packed forward pass."""

    def __init__(
        self, weights: Weights, settings: Settings, text: TextTokenizer, packed: PackedBert
    ) -> None:
        super().__init__(weights, settings, text)
        self.packed = packed

    @property
    def engine(self) -> str:
        return f"torch-packed ({self.packed.attention_name})"

    def device_features(self, features: dict[str, Any]) -> Packed:
        return pack(features, self.device)

    def core(self, features: Any) -> torch.Tensor:
        with torch.inference_mode():
            return self.packed(features)

    def finish(self, output: torch.Tensor) -> Any:
        # The model's own Normalize module, which the packed forward does not run.
        if self.packed.normalizes and not self.settings.normalize:
            output = F.normalize(output, p=2, dim=1)
        return super().finish(output)

    def split(self, features: Any, at: int) -> tuple[Any, Any]:
        return split_packed(features, at)


def packed_model(weights: Weights) -> PackedBert:
    """One PackedBert per loaded weights, shared by their model keys."""
    cached = weights.extras.get("packed_bert")
    if isinstance(cached, Exception):
        raise cached
    if cached is None:
        try:
            cached = PackedBert(weights)
        except Exception as error:
            weights.extras["packed_bert"] = error
            raise
        weights.extras["packed_bert"] = cached
    return cached
