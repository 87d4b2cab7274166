"""The server as a library with forked workers sees it: a line "fork" on stdin forks a
multiprocessing worker (the fork start method, as OpenVINO's telemetry did) and stops it
with SIGTERM, as its parent library would; then prints "worker stopped" on stdout.
The server itself must go on serving (a test-only driver, run by test_cli.py)."""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time

from embed_inference import cli


def forks_on_request() -> None:
    for line in sys.stdin:
        if line.strip() == "fork":
            worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
            worker.start()
            time.sleep(0.5)
            worker.terminate()  # SIGTERM
            worker.join()
            print(f"worker stopped ({worker.exitcode})", flush=True)


if __name__ == "__main__":
    threading.Thread(target=forks_on_request, daemon=True).start()
    sys.exit(cli.main(sys.argv[1:]))
