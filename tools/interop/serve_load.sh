#!/usr/bin/env bash
# How many conversations one `duplex serve` keeps in real time: for each K given (default 4 8 10 12),
# starts a server on the default model, runs K of Kyutai-style clients (sphn + aiohttp, paced in
# real time, 60 frames each) at once, and prints the worst gap between audio messages seen by any
# client and the server's own underrun count (responses that left more than 80 ms after their
# frame was complete). The clients share the machine with the server, so this is pessimistic.
# CONTEXT_FILL=3000 starts every conversation at a full context (attention reads the whole window,
# as in a conversation minutes long): the capacity that must hold for long conversations.
#
#   [CONTEXT_FILL=3000] tools/interop/serve_load.sh [K ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/env.sh
swift build -c release --product duplex >/dev/null
py="$(tools/interop/setup.sh)"
work=$(mktemp -d)
trap 'pkill -f "duplex serve --port 187" 2>/dev/null || true; rm -rf "$work"' EXIT
for k in "${@:-4 8 10 12}"; do
    for k1 in $k; do
        port=$((18700 + k1))
        .build/release/duplex serve --port "$port" -t 2 --max-sessions 64 --context-fill "${CONTEXT_FILL:-0}" >/dev/null 2>&1 &
        for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
        for i in $(seq "$k1"); do
            "$py" tools/interop/kyutai_client.py --url "ws://127.0.0.1:$port/api/chat" --frames 60 --min-text 0 > "$work/c$i.json" 2>&1 &
        done
        wait $(jobs -p | tail -n "$k1")
        worst=$(for i in $(seq "$k1"); do python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(round(r['max_gap_ms']) if r['ok'] else 99999)" "$work/c$i.json"; done | sort -n | tail -1)
        metrics=$(curl -s "http://127.0.0.1:$port/metrics")
        frames=$(echo "$metrics" | awk '/^duplex_frames_total/ {print $2}')
        under=$(echo "$metrics" | awk '/^duplex_underruns_total/ {print $2}')
        echo "sessions $k1 (context fill ${CONTEXT_FILL:-0}): worst gap between audio messages ${worst} ms; server underruns $under of $frames frames"
        pkill -f "duplex serve --port $port" || true
        sleep 1
    done
done
