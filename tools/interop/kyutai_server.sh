#!/usr/bin/env bash
# Interop the other way round: Kyutai's own server (`moshi.server` from moshi==0.2.13, on the CPU,
# with the tiny random model from make_tiny_moshi.py) and duplex's client — `ChatClient` from a
# test, and the `duplex talk --connect --pipe` command itself fed raw audio on stdin — plus
# Kyutai's client as a control. Prints the results; exit status 0 only if all pass.
#
#   tools/interop/kyutai_server.sh            # needs tools/reference/.venv (tools/reference/setup_venv.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/env.sh
ref_python="$(tools/reference/setup_venv.sh)"
client_python="$(tools/interop/setup.sh)"
out="tools/interop/out"
model="$out/tiny-moshi"
port="${PORT:-18998}"
mkdir -p "$out"
"$ref_python" tools/interop/make_tiny_moshi.py "$model" >/dev/null
abs="$(cd "$model" && pwd)"

"$ref_python" tools/interop/run_moshi_server.py --device cpu --host 127.0.0.1 --port "$port" --static none \
    --config-path "$abs/config.json" --moshi-weight "$abs/moshi.safetensors" \
    --mimi-weight "$abs/mimi.safetensors" --tokenizer "$abs/tokenizer.model" >"$out/moshi-server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then echo "moshi.server exited:"; cat "$out/moshi-server.log"; exit 1; fi
    sleep 0.5
done
url="ws://127.0.0.1:$port/api/chat"
echo "== moshi.server up at $url"

status=0
echo "== Kyutai's client (sphn + aiohttp) → moshi.server (control)"
"$client_python" tools/interop/kyutai_client.py --url "$url" --frames 25 --min-text 0 --max-gap 2 --tail-seconds 20 \
    || status=1
echo "== duplex ChatClient → moshi.server (pipe-fed: frames sent as fast as the socket takes them)"
swift build --build-tests >/dev/null
if ! DUPLEX_KYUTAI_SERVER_URL="$url" swift test --skip-build --filter ChatClientKyutaiServerTests >"$out/chatclient.log" 2>&1; then
    status=1
fi
grep -E "kyutai-server|error:|Executed|skipped" "$out/chatclient.log" | sort -u || true

echo "== duplex talk --connect --pipe → moshi.server (4 s of speech-like s16le in, the answer out)"
swift build -c release --product duplex >/dev/null
python3 -c "
import math, struct, sys
s = [int(6000 * sum(math.sin(h * 2 * math.pi * 140 * i / 24000) / h for h in range(1, 6))) for i in range(96000)]
sys.stdout.buffer.write(struct.pack('<%dh' % len(s), *s))" > "$out/talk-in.raw"
if .build/release/duplex talk --connect "$url" --pipe < "$out/talk-in.raw" > "$out/talk-out.raw" 2> "$out/talk.log"; then
    got=$(stat -c %s "$out/talk-out.raw")
    echo "   sent 4.0 s, received $(python3 -c "print(round($got / 48000, 2))") s of audio; text: $(grep -v "with ws" "$out/talk.log" | tr -d '\n' | head -c 120)"
    tail -1 "$out/talk.log"
    [ "$got" -ge 96000 ] || status=1
else
    cat "$out/talk.log"; status=1
fi
echo "== result: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
exit $status
