#!/usr/bin/env bash
# The main job, from a clean checkout: set-up, release build, then duplex on the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
. tools/env.sh
swift build -c release --product duplex
.build/release/duplex info
.build/release/duplex info --model models/default
