#!/usr/bin/env bash
# The main job, from a clean checkout on a machine with or without a sound card: set-up, release
# build, then a conversation with the embedded default model over the bundled speech sample —
# its reply (audio + transcript) and the latency harness's table.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/setup.sh
. tools/env.sh
swift build -c release --product duplex 2>&1 | grep -vE "^\[|^Building|^Compiling|^Write|^Linking" || true
duplex=.build/release/duplex
mkdir -p out
echo "== the model"
$duplex info --model models/default
echo
echo "== a conversation: models/default/sample.wav in, out/reply.wav and out/reply.txt out"
$duplex generate --input models/default/sample.wav --output out/reply.wav --text out/reply.txt
echo "inner monologue: $(cat out/reply.txt)"
echo
echo "== latency, real-time paced, as a live microphone and speaker would run it"
$duplex bench --input models/default/sample.wav --frames 150 --json out/bench.json --plot out/bench.svg
echo
echo "Wrote out/reply.wav, out/reply.txt, out/bench.json, out/bench.svg."
echo "With a sound card: $duplex talk   (see README: duplex talk, and Kyutai's checkpoints with --model DIR)"
