#!/usr/bin/env bash
# Generates from protos/: the Python stubs (xcron.v1) into the folder given first (default: client/); the API
# reference rendered from the proto's comments into the file given second (default: docs/api.md); the
# server's Connect (HTTP) bindings into the folder given third (default: server/xcron/server/api/connect_gen/);
# the jobs panel's TypeScript messages and service descriptor into the folder given fourth (default:
# web/src/gen/). One command for `make proto` and for the freshness check in `make test`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$here/client"}
api_doc=${2:-"$here/docs/api.md"}
connect_out=${3:-"$here/server/xcron/server/api/connect_gen"}
es_out=${4:-"$here/web/src/gen"}
venv_bin="$here/.venv/bin"
protos=$(cd "$here/protos" && find xcron -name '*.proto' | sort)
mkdir -p "$out" "$connect_out" "$es_out"
PATH="$venv_bin:$PATH" "$venv_bin/python" -m grpc_tools.protoc \
  -I "$here/protos" \
  --python_out="$out" \
  --grpc_python_out="$out" \
  --mypy_out="$out" \
  --mypy_grpc_out="$out" \
  --include_source_info \
  --descriptor_set_out="$out/xcron/v1/descriptor_set.binpb" \
  $protos
"$venv_bin/python" "$here/scripts/gen_api_doc.py" "$out/xcron/v1/descriptor_set.binpb" "$api_doc"

# Connect for Python (connectrpc), targeting the google protobuf classes above (protobuf=google) and asyncio.
# The server's copy lives apart from the client's stubs (the client does not depend on connectrpc), so the
# relative import of the _pb2 module is made absolute.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
PATH="$venv_bin:$PATH" "$venv_bin/python" -m grpc_tools.protoc -I "$here/protos" \
  --connectrpc_out="$scratch" --connectrpc_opt=protobuf=google,io=async $protos
for f in "$scratch"/xcron/v1/*_connect.py; do
  sed -e 's/^from \.\([a-z_]*_pb2\) import/from xcron.v1.\1 import/' "$f" > "$connect_out/$(basename "$f")"
done

# TypeScript for the panel (protoc-gen-es 2: messages and the service descriptor connect-web uses), and
# google.rpc's error details (from googleapis-common-protos) so it can read BadRequest field violations.
rpc_root=$("$venv_bin/python" -c 'import pathlib, google.rpc.error_details_pb2 as m; print(pathlib.Path(m.__file__).parents[2])')
PATH="$venv_bin:$PATH" "$venv_bin/python" -m grpc_tools.protoc -I "$here/protos" -I "$rpc_root" \
  --plugin=protoc-gen-es="$here/node_modules/.bin/protoc-gen-es" \
  --es_out="$es_out" --es_opt=target=ts,import_extension=none $protos google/rpc/error_details.proto
