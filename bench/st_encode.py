"""The baseline: a bare SentenceTransformer.encode in one Python process.

Prints JSON with the seconds to import and load, and the seconds to encode.
    python bench/st_encode.py INPUT.jsonl [MODEL_PATH] [BATCH_SIZE] [VECTORS.npy]
(an empty MODEL_PATH: the bundled all-MiniLM-L6-v2; VECTORS.npy: where the vectors go)
"""

import json
import os
import sys
import time

started = time.perf_counter()
from sentence_transformers import SentenceTransformer

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
path = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else os.path.join(
    root, "models", "sentence-transformers", "all-MiniLM-L6-v2"
)
batch_size = int(sys.argv[3]) if len(sys.argv) > 3 else 32
texts = [json.loads(line)["text"] for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
model = SentenceTransformer(path, device="cpu")
loaded = time.perf_counter()
vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
done = time.perf_counter()
if len(sys.argv) > 4:
    import numpy as np

    np.save(sys.argv[4], vectors)
print(
    json.dumps(
        {"rows": len(texts), "load_s": loaded - started, "encode_s": done - loaded, "shape": list(vectors.shape)}
    )
)
