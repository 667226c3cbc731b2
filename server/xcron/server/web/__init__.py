"""The jobs panel: static files built from web/ by `make web` (see scripts/build-web.sh)."""
