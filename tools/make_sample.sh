#!/usr/bin/env bash
# Regenerates models/default/sample.wav, the bundled speech sample the main job and the harness
# use: espeak-ng's synthetic voice, converted to 24 kHz mono 16-bit by sox (both Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v espeak-ng >/dev/null && command -v sox >/dev/null || { echo "needs: apt-get install espeak-ng sox" >&2; exit 1; }
tmp=$(mktemp --suffix .wav)
espeak-ng -v en-us -s 150 -w "$tmp" "Hello there! I was wondering whether you could tell me a little bit about yourself. What do you like to do on a rainy afternoon?"
sox "$tmp" -r 24000 -c 1 -b 16 models/default/sample.wav
rm -f "$tmp"
