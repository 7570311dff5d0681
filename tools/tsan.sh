#!/usr/bin/env bash
# The whole test suite under ThreadSanitizer (its own build folder, .build-tsan). Any data race
# report fails the run: TSan's reports are fatal (halt_on_error) and the summary is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/test-env.sh
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
swift build --build-tests --sanitize=thread --scratch-path .build-tsan
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
swift test --skip-build --sanitize=thread --scratch-path .build-tsan "$@" 2>&1 | tee "$log" || status=$?
if grep -q "WARNING: ThreadSanitizer" "$log"; then
    echo "tsan: data races reported (above)" >&2
    exit 1
fi
[ "$status" = 0 ] || { echo "tsan: tests failed (exit $status)" >&2; exit "$status"; }
echo "tsan: clean"
