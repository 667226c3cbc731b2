#!/usr/bin/env bash
# Generates the Python stubs (xcron.v1) from protos/ into the folder given (default: client/), and the
# API reference rendered from the proto's comments into the file given second (default: docs/api.md).
# One command for `make proto` and for the freshness check in `make test`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$here/client"}
api_doc=${2:-"$here/docs/api.md"}
venv_bin="$here/.venv/bin"
mkdir -p "$out"
PATH="$venv_bin:$PATH" "$venv_bin/python" -m grpc_tools.protoc \
  -I "$here/protos" \
  --python_out="$out" \
  --grpc_python_out="$out" \
  --mypy_out="$out" \
  --mypy_grpc_out="$out" \
  --include_source_info \
  --descriptor_set_out="$out/xcron/v1/descriptor_set.binpb" \
  $(cd "$here/protos" && find xcron -name '*.proto' | sort)
"$venv_bin/python" "$here/scripts/gen_api_doc.py" "$out/xcron/v1/descriptor_set.binpb" "$api_doc"
