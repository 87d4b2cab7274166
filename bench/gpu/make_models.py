"""Builds the benchmark's two models as sentence-transformers folders, with random weights.

The GPU host has no network and the kit carries no weights (bge-large alone is 1.3 GB), so the
models are made there from their real configurations: throughput depends on the shapes, not on
the values. Both use the bert-base-uncased vocabulary (30522 tokens), whose tokenizer files the
kit carries (taken from the offline all-MiniLM-L6-v2).

    python bench/gpu/make_models.py --out MODEL_DIR --tokenizer TOKENIZER_DIR [--only NAME]

Writes MODEL_DIR/bench/<name>/ (config.json, model.safetensors, the tokenizer files,
modules.json, 1_Pooling/config.json, sentence_bert_config.json); the inference server resolves
the model id `bench/<name>` to it. Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ORG = "bench"
# Both truncate at 512 in this benchmark (the real all-MiniLM-L6-v2 stops at 256).
MAX_SEQ_LENGTH = 512
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)

# The published configurations (config.json of BAAI/bge-large-en-v1.5 and of
# sentence-transformers/all-MiniLM-L6-v2), minus bookkeeping keys.
_BERT_COMMON = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
    "vocab_size": 30522,
}
MODELS = {
    "bge-large-en-v1.5-random": {
        "config": {
            **_BERT_COMMON,
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
        },
        "pooling": "cls",
    },
    "all-MiniLM-L6-v2-random": {
        "config": {
            **_BERT_COMMON,
            "hidden_size": 384,
            "num_hidden_layers": 6,
            "num_attention_heads": 12,
            "intermediate_size": 1536,
        },
        "pooling": "mean",
    },
}


def build(name: str, out: Path, tokenizer: Path, seed: int) -> dict[str, object]:
    import torch
    from transformers import BertConfig, BertModel

    spec = MODELS[name]
    folder = out / ORG / name
    started = time.perf_counter()
    # A half-written folder from an interrupted run would be loaded as if whole.
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    config = BertConfig(**spec["config"])
    model = BertModel(config)  # transformers' own init: normal(0, 0.02), LayerNorm at 1/0
    model.save_pretrained(folder, safe_serialization=True)
    for file in TOKENIZER_FILES:
        shutil.copy2(tokenizer / file, folder / file)
    hidden = config.hidden_size
    write_json(
        folder / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
        ],
    )
    write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": spec["pooling"] == "cls",
            "pooling_mode_mean_tokens": spec["pooling"] == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    write_json(
        folder / "sentence_bert_config.json",
        {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False},
    )
    return {
        "model_id": f"{ORG}/{name}",
        "path": str(folder),
        "params": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - started, 1),
    }


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory to fill")
    parser.add_argument("--tokenizer", type=Path, required=True, help="bert-base-uncased files")
    parser.add_argument("--only", choices=sorted(MODELS), action="append", help="repeatable")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    missing = [f for f in TOKENIZER_FILES if not (args.tokenizer / f).is_file()]
    if missing:
        print(f"make_models: {args.tokenizer} lacks {', '.join(missing)}", file=sys.stderr)
        return 2
    for name in args.only or list(MODELS):
        print(json.dumps(build(name, args.out, args.tokenizer, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
