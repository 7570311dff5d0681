# Sourced by tools/test.sh and tools/tsan.sh: the packages, the toolchain, and Kyutai's sphn +
# an aiohttp websocket client for the interop tests (required: a missing venv fails, not skips).
./tools/setup.sh
. tools/env.sh
./tools/interop/setup.sh >/dev/null
export DUPLEX_REQUIRE_INTEROP=1
