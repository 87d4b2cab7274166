"""Test only (issue 16): the inference server, right for its first N Embed batches and wrong
for every batch after them: a server that passes the probe and then goes wrong (a failing
GPU, a corrupted weight). The orchestrator's spot checks must catch it. Production code knows
nothing of this: the fault is installed here, from outside, before the server starts.

    python inference-server/tests/spot_fault_server.py --wrong-after N [SERVER FLAGS]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
from collections.abc import Sequence
from typing import Any

from embed_inference import cli, pipeline

# As far from the right vectors as another model's: cosine about 0.45 for a unit vector.
STRENGTH = 2.0


def install(wrong_after: int) -> None:
    """From the (wrong_after + 1)-th batch the server answers on, every vector is perturbed."""
    counter = itertools.count()
    lock = threading.Lock()

    def post(self: pipeline.EmbedStream, job: Any) -> Any:
        with lock:
            n = next(counter)
        data = job.model.encoder.post(job.output)
        job.output = None
        if n >= wrong_after:
            data = pipeline.perturbed(data, STRENGTH, job.model.info.normalize)
        return job.to_result(data)

    pipeline.EmbedStream._post = post  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spot_fault_server.py", add_help=False)
    parser.add_argument("--wrong-after", type=int, required=True)
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    install(known.wrong_after)
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
