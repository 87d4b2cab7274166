"""The packed BERT fast path on the CPU: its vectors against a float32 SentenceTransformer
forward of the same offline all-MiniLM-L6-v2, its fallbacks, and the server with it forced."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    MODEL_ID,
    MODEL_PATH,
    RunningServer,
    cosine_rows,
    embed,
    float32_weights,
    make_config,
    model_config,
    run_stages,
    st_backend,
    vectors,
)
from faulty_server import Faults, FaultyEncoder

from embed_inference.encoders import fast_bert
from embed_inference.encoders.base import Settings, Weights
from embed_inference.encoders.fast_bert import FastBertEncoder, Packed, pack, padded_attention
from embed_inference.encoders.hf_text import TextTokenizer
from embed_inference.encoders.select import SentenceTransformerBackend
from embed_inference.encoders.st import SentenceTransformerEncoder
from embedmulti.v1 import inference_pb2 as pb
from embedmulti.v1 import inference_pb2_grpc as pb_grpc

MIN_COSINE = 0.9995
# Short, long (truncated at 256 tokens), non-ASCII, one character, and mixed lengths in one
# batch so that the packing has real work.
TEXTS = [
    "Hello.",
    "a",
    "Die Übersetzung ins Deutsche, 日本語のテキスト, и немного кириллицы — café, naïve.",
    "Graph neural networks aggregate messages from neighbours; we bound their expressivity "
    "by the Weisfeiler-Lehman test and show when attention helps.",
    " ".join(["The estimator is consistent under mild regularity conditions."] * 60),
    "∑ᵢ xᵢ² ≤ ε, 🙂 emoji and math ∀x∈Ω.",
    "Short one.",
    " ".join(f"token{i}" for i in range(150)),
]


@pytest.fixture(scope="module")
def backend() -> SentenceTransformerBackend:
    backend = st_backend("on", "torch")
    backend.start()
    return backend


@pytest.fixture(scope="module")
def weights32(backend: SentenceTransformerBackend) -> Weights:
    return float32_weights(backend)


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    """The reference: a bare float32 SentenceTransformer forward (encode), normalized."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(MODEL_PATH), device="cpu")
    return model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)


def reference_encoder(weights: Weights, settings: Settings) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(weights, settings, TextTokenizer(weights, settings))


def test_fast_path_matches_a_float32_forward(
    backend: SentenceTransformerBackend, weights32: Weights, expected: np.ndarray
) -> None:
    encoder = backend.encoder(weights32, Settings("", True, 256))
    assert isinstance(encoder, FastBertEncoder), "forced on, MiniLM takes the fast path"
    got = run_stages(encoder, TEXTS)
    assert got.shape == expected.shape == (len(TEXTS), 384)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert cosine_rows(got, expected).min() >= MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Token counts and truncation flags are the reference path's.
    prepared = encoder.pre(TEXTS)
    settings = Settings("", True, 256)
    reference = reference_encoder(weights32, settings).pre(TEXTS)
    assert prepared.token_counts.tolist() == reference.token_counts.tolist()
    assert prepared.truncated.tolist() == reference.truncated.tolist()
    assert prepared.truncated.any(), "the long text is truncated at 256"


def test_unnormalized_mean_has_the_reference_norms(
    backend: SentenceTransformerBackend, weights32: Weights
) -> None:
    settings = Settings("query: ", False, 128)
    fast = backend.encoder(weights32, settings)
    assert isinstance(fast, FastBertEncoder)
    reference = reference_encoder(weights32, settings)
    got, want = run_stages(fast, TEXTS), run_stages(reference, TEXTS)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fast_path_in_bfloat16_stays_close_to_float32(
    backend: SentenceTransformerBackend, expected: np.ndarray
) -> None:
    weights = backend.load(MODEL_ID, MODEL_PATH, "", "cpu", "bfloat16")
    encoder = backend.encoder(weights, Settings("", True, 256))
    assert isinstance(encoder, FastBertEncoder)
    assert encoder.packed.dtype == torch.bfloat16
    got = run_stages(encoder, TEXTS)
    assert got.dtype == np.float32
    assert cosine_rows(got, expected).min() >= MIN_COSINE


def test_out_of_memory_split_of_a_packed_batch(
    backend: SentenceTransformerBackend, weights32: Weights
) -> None:
    settings = Settings("", True, 256)
    whole = run_stages(backend.encoder(weights32, settings), TEXTS)
    # Every batch over 2 rows "runs out of memory": 8 -> 4 + 4 -> four pieces of 2.
    fast = FastBertEncoder(
        weights32, settings, TextTokenizer(weights32, settings), fast_bert.packed_model(weights32)
    )
    split = FaultyEncoder(fast, Faults(oom_above=2))
    np.testing.assert_allclose(run_stages(split, TEXTS), whole, atol=1e-5)


def test_packing_keeps_real_tokens_and_their_columns() -> None:
    features = {
        "input_ids": torch.tensor([[101, 7, 8, 102], [101, 9, 102, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        "token_type_ids": torch.zeros(2, 4, dtype=torch.long),
    }
    packed = pack(features, torch.device("cpu"))
    assert packed.ids.tolist() == [101, 7, 8, 102, 101, 9, 102]
    assert packed.positions.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert packed.rows_of.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert packed.cu_seqlens.tolist() == [0, 4, 7]
    assert packed.max_len == 4
    first, second = fast_bert.split_packed(packed, 1)
    assert second.ids.tolist() == [101, 9, 102]
    assert second.cu_seqlens.tolist() == [0, 3] and second.rows_of.tolist() == [0, 0, 0]
    assert first.cu_seqlens.tolist() == [0, 4] and first.max_len == 4


def test_padded_attention_equals_attention_per_row() -> None:
    lengths = [3, 1, 6]
    cu = torch.tensor([0, 3, 4, 10], dtype=torch.int32)
    rows_of = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths)).to(torch.int32)
    zeros = torch.zeros(10, dtype=torch.int32)
    packed = Packed(zeros, zeros, zeros, rows_of, cu, np.array(lengths), 6)
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(10, 2, 8, generator=generator) for _ in range(3))
    got = padded_attention(q, k, v, packed)
    for row in range(3):
        s, e = int(cu[row]), int(cu[row + 1])
        one = torch.nn.functional.scaled_dot_product_attention(
            q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1)
        ).transpose(0, 1)
        torch.testing.assert_close(got[s:e], one, atol=1e-5, rtol=1e-5)


def test_attention_kernel_probe_picks_the_first_that_agrees() -> None:
    """The CUDA kernels cannot run here; the probe that picks among them can."""

    def broken() -> fast_bert.AttentionFn:
        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Packed) -> torch.Tensor:
            raise RuntimeError("no kernel image for this card")

        return attend

    def wrong() -> fast_bert.AttentionFn:
        return lambda q, k, v, p: v  # skips the softmax: not attention

    def needs_copies() -> fast_bert.AttentionFn:
        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Packed) -> torch.Tensor:
            if not q.is_contiguous():
                raise RuntimeError("query must be contiguous")
            return padded_attention(q, k, v, p)

        return attend

    cpu, f32 = torch.device("cpu"), torch.float32
    candidates = [("broken", broken), ("absent", lambda: None), ("wrong", wrong)]
    name, _ = fast_bert.choose_attention(cpu, f32, 2, 8, [*candidates, ("copies", needs_copies)])
    assert name == "copies (contiguous)"
    assert fast_bert.choose_attention(cpu, f32, 2, 8, candidates)[0] == "padded-sdpa"
    assert fast_bert.choose_attention(cpu, f32, 2, 8)[0] == "padded-sdpa"


@pytest.fixture(scope="module")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny non-BERT sentence-transformers model (DistilBERT, random weights) with the
    MiniLM tokenizer files."""
    from transformers import DistilBertConfig, DistilBertModel

    folder = tmp_path_factory.mktemp("models") / "tiny" / "distilbert"
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    DistilBertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy2(MODEL_PATH / name, folder / name)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (folder / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    sbert = {"max_seq_length": 128, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(sbert), encoding="utf-8")
    return folder


def test_an_unknown_model_keeps_the_reference_path(
    backend: SentenceTransformerBackend, tiny_distilbert: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sentence_transformers import SentenceTransformer

    weights = backend.load("tiny/distilbert", tiny_distilbert, "", "cpu", "float32")
    with caplog.at_level(logging.INFO, logger="embed_inference.encoders.select"):
        encoder = backend.encoder(weights, Settings("", True, 128))
    assert type(encoder) is SentenceTransformerEncoder
    assert "fast path off" in caplog.text and "DistilBertModel" in caplog.text
    got = run_stages(encoder, TEXTS)
    direct = SentenceTransformer(str(tiny_distilbert), device="cpu")
    want = direct.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    assert cosine_rows(got, want).min() >= 0.9999


def test_a_mismatch_at_load_falls_back(
    weights32: Weights, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fast path that computes the wrong thing (here: CLS instead of mean) is caught by the
    check at load, and the reference path serves."""
    backend = st_backend("on", "torch")
    weights = Weights(**{**vars(weights32), "extras": {}})
    original = fast_bert.PackedBert.__init__

    def wrong_pooling(self: fast_bert.PackedBert, w: Weights) -> None:
        original(self, w)
        self.pooling = "cls"

    monkeypatch.setattr(fast_bert.PackedBert, "__init__", wrong_pooling)
    with caplog.at_level(logging.WARNING, logger="embed_inference.encoders.select"):
        encoder = backend.encoder(weights, Settings("", True, 256))
    assert type(encoder) is SentenceTransformerEncoder
    assert "differ from the reference path" in caplog.text


def test_auto_keeps_the_torch_reference_path_on_the_cpu(weights32: Weights) -> None:
    for mode in ("auto", "off"):
        backend = st_backend(mode, "torch")
        encoder = backend.encoder(weights32, Settings("", True, 256))
        assert type(encoder) is SentenceTransformerEncoder, mode


@pytest.fixture(scope="module")
def fast_server() -> Iterator[RunningServer]:
    config = model_config("--device", "cpu", environ={"EMBED_FAST_PATH": "on"})
    assert config.fast_path == "on"
    server = RunningServer(config)
    yield server
    server.close()


def test_server_with_the_fast_path_forced_gives_the_same_vectors(
    fast_server: RunningServer, expected: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="embed_inference.encoders.select"),
        fast_server.channel() as channel,
    ):
        stub = pb_grpc.InferenceStub(channel)
        info = stub.LoadModel(pb.LoadModelRequest(model_id=MODEL_ID, normalize=True))
        results = embed(stub, [(1, info.model_key, TEXTS[:5]), (2, info.model_key, TEXTS[5:])])
    assert "fast path on" in caplog.text
    got = np.concatenate([vectors(results[1]), vectors(results[2])])
    assert cosine_rows(got, expected).min() >= MIN_COSINE
    counts = list(results[1].embeddings.token_counts) + list(results[2].embeddings.token_counts)
    assert max(counts) == 256 and min(counts) == 3


def test_fast_path_flag_is_checked() -> None:
    from embed_inference.errors import ConfigError

    assert make_config(["--engine", "debug", "--fast-path", "off"]).fast_path == "off"
    with pytest.raises(ConfigError, match="EMBED_FAST_PATH"):
        make_config(["--engine", "debug"], {"EMBED_FAST_PATH": "sometimes"})
