#!/usr/bin/env bash
# Generates the code for proto/ in both languages. The only way generated
# code changes: src/gen/ (TypeScript, ts-proto through buf) and
# inference-server/embedmulti/ (Python, grpcio-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

npx --no-install buf generate

python_out=inference-server
rm -rf "$python_out/embedmulti"
"${EMBED_VENV:-.venv}/bin/python" -m grpc_tools.protoc -I proto \
  --python_out="$python_out" --pyi_out="$python_out" --grpc_python_out="$python_out" \
  proto/embedmulti/v1/inference.proto
touch "$python_out/embedmulti/__init__.py" "$python_out/embedmulti/v1/__init__.py"
echo "generated src/gen/ and $python_out/embedmulti/"
