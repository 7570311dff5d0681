#!/usr/bin/env bash
# The whole test suite, from a clean checkout: set-up, build, tests. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
. tools/env.sh
swift build --build-tests
swift test --skip-build "$@"
