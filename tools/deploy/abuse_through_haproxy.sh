#!/usr/bin/env bash
# Abuse through HAProxy (tools/deploy/haproxy.cfg in front of one `duplex serve` release instance
# with two session slots): an oversized message, garbage frames, a slow reader beside a normal
# conversation, a flood of upgrades, then a whole
# conversation; the server must stay up throughout (tools/deploy/abuse_client.py says what is checked).
# Run by tools/e2e.sh; needs haproxy (tools/setup.sh) and tools/interop/setup.sh's venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/env.sh
duplex=${DUPLEX:-.build/release/duplex}
[ -x "$duplex" ] || swift build -c release --product duplex >/dev/null
command -v haproxy >/dev/null || ./tools/setup.sh
py="$(tools/interop/setup.sh)"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
base=$((21000 + RANDOM % 20000))
lb=$base; server=$((base + 1)); unused=$((base + 2))
$duplex serve --port "$server" --max-sessions 2 -t 1 --max-message-bytes 65536 > "$work/serve.log" 2>&1 &
server_pid=$!; pids+=($server_pid)
for _ in $(seq 300); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/healthz', timeout=1)" "$server" 2>/dev/null && break
    sleep 0.2
done
# Server b points at a closed port: HAProxy marks it down and sends everything to a.
DUPLEX_LB_BIND="127.0.0.1:$lb" DUPLEX_A="127.0.0.1:$server" DUPLEX_B="127.0.0.1:$unused" DUPLEX_MAXCONN=2 \
    haproxy -db -f tools/deploy/haproxy.cfg > "$work/haproxy.log" 2>&1 &
pids+=($!)
sleep 2
rc=0
timeout 120 "$py" tools/deploy/abuse_client.py --url "ws://127.0.0.1:$lb/api/chat" || rc=$?
if ! kill -0 "$server_pid" 2>/dev/null; then echo "abuse: the server died"; tail -20 "$work/serve.log"; exit 1; fi
if grep -qE "Fatal error|Segmentation|Stack dump" "$work/serve.log"; then echo "abuse: the server crashed"; tail -20 "$work/serve.log"; exit 1; fi
[ "$rc" = 0 ] || { tail -20 "$work/serve.log"; tail -5 "$work/haproxy.log"; }
exit "$rc"
