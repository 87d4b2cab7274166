"""Tokenizing on every core: one Rust batch call vs one tokenizer copy per thread.

Usage: python bench/tokenize_cores.py [MODEL_DIR] — times the server's own tokenize path
(TextTokenizer._tokenize_rows: encode_batch + ids to numpy) on the example
paragraphs, repeated to 4,000 texts, three ways. Prints one JSON line per way.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = (
    Path(sys.argv[1])
    if len(sys.argv) > 1
    else REPO / "models/sentence-transformers/all-MiniLM-L6-v2"
)


def main() -> None:
    from embed_inference.encoders.base import Settings
    from embed_inference.encoders.select import SentenceTransformerBackend

    backend = SentenceTransformerBackend(None, False)
    backend.start()
    weights = backend.load("m", MODEL, "", "cpu", "float32")
    encoder = backend.encoder(weights, Settings("", False, 256))
    lines = (
        (REPO / "examples/paragraphs.jsonl").read_text(encoding="utf-8").splitlines()
    )
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    texts = (texts * (4000 // len(texts) + 1))[:4000]
    cores = os.cpu_count() or 1

    def timed(name: str, run) -> None:
        run()  # warm: thread-local copies, rayon pool
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        print(
            json.dumps(
                {
                    "way": name,
                    "cores": cores,
                    "texts": len(texts),
                    "texts_per_s": round(len(texts) / best),
                }
            )
        )

    timed(
        "one encode_batch call (Rust threads)",
        lambda: encoder.text._tokenize_rows(texts),
    )
    with ThreadPoolExecutor(cores) as pool:
        chunk = -(-len(texts) // cores)
        parts = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
        timed(
            f"{cores} threads, a copy each, a part each",
            lambda: list(pool.map(encoder.text._tokenize_rows, parts)),
        )
        parts64 = [texts[i : i + 64] for i in range(0, len(texts), 64)]
        timed(
            f"{cores} threads, a copy each, batches of 64",
            lambda: list(pool.map(encoder.text._tokenize_rows, parts64)),
        )


if __name__ == "__main__":
    main()
