"""The baseline for an OpenAI-compatible server: what a user's own client does.

Plain HTTP POSTs of `batch_size` texts in input order, one after the other, to
{base}/embeddings (infinity's documented usage), JSON floats parsed into a
numpy array. Prints JSON with the seconds of the requests and the shape.
    python bench/http_client.py BASE_URL INPUT.jsonl MODEL [BATCH_SIZE] [FORMAT]
"""

import base64
import json
import sys
import time

import numpy as np
import requests

base, path, model = sys.argv[1], sys.argv[2], sys.argv[3]
batch_size = int(sys.argv[4]) if len(sys.argv) > 4 else 32
encoding = sys.argv[5] if len(sys.argv) > 5 else "float"
with open(path, encoding="utf-8") as f:
    texts = [json.loads(line)["text"] for line in f if line.strip()]
session = requests.Session()
rows = []
started = time.perf_counter()
for first in range(0, len(texts), batch_size):
    res = session.post(
        f"{base}/embeddings",
        json={
            "input": texts[first : first + batch_size],
            "model": model,
            "encoding_format": encoding,
        },
        timeout=600,
    )
    res.raise_for_status()
    data = sorted(res.json()["data"], key=lambda d: d["index"])
    for d in data:
        e = d["embedding"]
        rows.append(
            np.frombuffer(base64.b64decode(e), "<f4")
            if isinstance(e, str)
            else np.asarray(e, "f4")
        )
done = time.perf_counter()
print(
    json.dumps(
        {
            "rows": len(rows),
            "seconds": done - started,
            "shape": [len(rows), len(rows[0])],
        }
    )
)
