#!/usr/bin/env bash
# The whole test suite, from a clean checkout: set-up, build, tests. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/test-env.sh
# The built-in web client embedded in the binary is exactly tools/webclient/site (no drift).
python3 tools/webclient/embed.py --check
swift build --build-tests
swift test --skip-build "$@"
# The release binary end to end on the embedded default model (pipe, generate, bench, talk, serve).
./tools/e2e.sh
# The whole suite again under ThreadSanitizer: no data race anywhere (its own build folder).
./tools/tsan.sh
