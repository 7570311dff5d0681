#!/usr/bin/env bash
# Interop the other way round: Kyutai's own server (`moshi.server` from moshi==0.2.13, on the CPU,
# with the tiny random model from make_tiny_moshi.py) and duplex's client (`ChatClient`, the client
# side of `duplex talk --connect`) streaming speech to it pipe-fed, plus Kyutai's client as a
# control. Prints both results; exit status 0 only if both pass.
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
echo "== result: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
exit $status
