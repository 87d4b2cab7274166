"""The embed-multi inference server."""

import sys

# OpenVINO's converter sends usage telemetry unasked (it imports `openvino_telemetry` and
# sends an event on `import openvino`, and more per conversion), from forked processes it
# kills with SIGTERM when the network does not answer. A server that embeds private text
# sends nothing anywhere, and those SIGTERMs reached this server's own stop handler (see
# cli.py). A None entry makes the import fail, and OpenVINO (and NNCF) fall back to their
# own no-op stubs. Set before anything here can import openvino.
if "openvino_telemetry" not in sys.modules:
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
