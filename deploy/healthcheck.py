#!/usr/bin/env python3
"""Health probe of the inference server through the standard grpc.health.v1 service.

Exit status 0 when the server answers SERVING, 1 otherwise: Docker's HEALTHCHECK
contract (Dockerfile.inference, docker-compose.yml). Kubernetes needs no script: its
native `grpc:` probes ask the same service (deploy/k8s/inference-deployment.yaml).

The server reports NOT_SERVING until its engine is ready and again while it shuts
down, so "healthy" means "will take batches now". Health calls are exempt from the
bearer token (EMBED_AUTH_TOKEN), so the probe never needs it.

TLS: when the server runs with --tls-cert/--tls-key, set EMBED_HEALTHCHECK_TLS_CA to
the CA file, and EMBED_HEALTHCHECK_TLS_NAME to a name on the certificate when that
is not the probed address (the probe connects to 127.0.0.1).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address",
        default=env.get("EMBED_HEALTHCHECK_ADDRESS", "127.0.0.1:50051"),
        help="host:port of the server (default: %(default)s)",
    )
    parser.add_argument(
        "--service", default="", help="service name to ask about; empty = the whole server"
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default: 3)")
    parser.add_argument("--tls-ca", default=env.get("EMBED_HEALTHCHECK_TLS_CA") or None)
    parser.add_argument("--tls-name", default=env.get("EMBED_HEALTHCHECK_TLS_NAME") or None)
    args = parser.parse_args(argv)

    if args.tls_ca:
        with open(args.tls_ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        options = [("grpc.ssl_target_name_override", args.tls_name)] if args.tls_name else []
        channel = grpc.secure_channel(args.address, credentials, options)
    else:
        channel = grpc.insecure_channel(args.address)

    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as error:
            print(f"unhealthy: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    state = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: {state}", file=sys.stderr)
        return 1
    print(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
