#!/usr/bin/env bash
# Creates (or reuses) tools/interop/.venv with what the interop client needs: Kyutai's sphn (their
# Ogg Opus streaming, as moshi.client and moshi.server use it), aiohttp (the websocket client
# moshi.client uses) and numpy. Idempotent; prints the venv's python on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"
stamp="$venv/.duplex-interop-1"
if [ ! -f "$stamp" ]; then
    echo "interop: creating $venv (sphn==0.2.1, aiohttp, numpy)" >&2
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "sphn==0.2.1" "aiohttp>=3.9,<4" "numpy>=1.26" >&2
    touch "$stamp"
fi
echo "$venv/bin/python"
