#!/usr/bin/env bash
# Builds the jobs panel (web/src) into the folder given (default: the server package's web/static): app.js
# bundled and minified by esbuild (deterministic: the same sources give the same bytes), app.css and
# index.html as written. Used by `make web` and, into a scratch folder, by the freshness check.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$here/server/xcron/server/web/static"}
mkdir -p "$out"
"$here/node_modules/.bin/esbuild" "$here/web/src/main.ts" --bundle --format=esm --target=es2022 --minify \
  --legal-comments=none --charset=utf8 --log-level=warning --outfile="$out/app.js"
cp "$here/web/src/app.css" "$here/web/src/index.html" "$out/"
