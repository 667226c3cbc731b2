#!/usr/bin/env bash
# Debian packages that the tests' real parts need: Mono (SanteDB's own XmlSerializer classes), promtool
# (Prometheus' metrics checker), pg_dump/pg_restore (the backup job under the PostgreSQL store), Chromium
# and its WebDriver (the jobs panel's browser tests). Installs only what is missing; needs root and
# apt-get, else says what to install and leaves it to the tests to skip, naming what is missing.
set -euo pipefail
packages=(mono-mcs mono-runtime libmono-system-xml4.0-cil prometheus postgresql-client chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "not root or no apt-get: install these yourself for the full test suite: ${missing[*]}" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
