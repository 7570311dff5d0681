#!/usr/bin/env bash
# The whole test suite, from a clean checkout: set-up, build, tests. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
. tools/env.sh
# Kyutai's sphn + an aiohttp websocket client, for the interop test against `duplex serve`
# (KyutaiInteropTests); required here, so a missing venv fails instead of skipping.
./tools/interop/setup.sh >/dev/null
export DUPLEX_REQUIRE_INTEROP=1
swift build --build-tests
swift test --skip-build "$@"
# The release binary end to end on the embedded default model (pipe, generate, bench, serve).
./tools/e2e.sh
