#!/usr/bin/env bash
# Rolling restart behind HAProxy, end to end, on the embedded default model (about a minute):
# tools/deploy/haproxy.cfg in front of two `duplex serve` release instances (--max-sessions 4, -t 1),
# 6 Kyutai-style clients (sphn + aiohttp, real time, tools/deploy/rolling_client.py) that keep
# starting ~6 s conversations through HAProxy, while each instance in turn is sent SIGTERM (drain),
# waited for (it must exit 0 by itself) and started again. Checks:
#   * zero conversations cut: every conversation that began got its whole answer;
#   * while an instance drains, the conversations that begin go to the other one;
#   * each instance's drain cut nothing (its log line, duplex_drain_cut_total);
#   * the instances' /metrics (each process's last scrape) add up to the conversations the clients had.
#   * then, with HAProxy's checks slowed to once a minute, upgrades that reach a draining instance are
#     refused (503) and replayed on the other (retry-on 503): the clients see nothing.
# Prints the figures. Run by tools/e2e.sh; needs haproxy (tools/setup.sh) and tools/interop/setup.sh's venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/env.sh
duplex=${DUPLEX:-.build/release/duplex}
[ -x "$duplex" ] || swift build -c release --product duplex >/dev/null
command -v haproxy >/dev/null || ./tools/setup.sh
py="$(tools/interop/setup.sh)"
work=$(mktemp -d)
pids=()
cleanup() {
    [ -d "$work" ] || return 0
    touch "$work/stop"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "rolling-restart: files kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

base=$((21000 + RANDOM % 20000))
lb=$base
declare -A port=([a]=$((base + 1)) [b]=$((base + 2))) pid=() generation=([a]=0 [b]=0)
healthy() { python3 -c "import urllib.request,sys; urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/healthz', timeout=1)" "$1" 2>/dev/null; }
start_instance() {  # start_instance NAME
    local name=$1 g=$((generation[$1] + 1))
    generation[$name]=$g
    $duplex serve --port "${port[$name]}" --max-sessions 4 -t 1 --drain-timeout 60 > "$work/$name.$g.log" 2>&1 &
    pid[$name]=$!
    pids+=($!)
    for _ in $(seq 300); do healthy "${port[$name]}" && return 0; sleep 0.2; done
    echo "rolling-restart: instance $name did not come up"; cat "$work/$name.$g.log"; return 1
}
scrape() {  # scrape NAME: keeps the last /metrics of the running process (while it drains too)
    local name=$1 g=${generation[$1]}
    while kill -0 "${pid[$name]}" 2>/dev/null; do
        curl -sf --max-time 1 "http://127.0.0.1:${port[$name]}/metrics" > "$work/$name.$g.tmp" && mv "$work/$name.$g.tmp" "$work/$name.$g.metrics"
        sleep 0.2
    done
}

start_instance a
start_instance b
scrape a & pids+=($!)
scrape b & pids+=($!)
DUPLEX_LB_BIND="127.0.0.1:$lb" DUPLEX_A="127.0.0.1:${port[a]}" DUPLEX_B="127.0.0.1:${port[b]}" DUPLEX_MAXCONN=4 \
    haproxy -db -f tools/deploy/haproxy.cfg > "$work/haproxy.log" 2>&1 &
pids+=($!)
sleep 2  # two health checks bring both servers UP
"$py" tools/deploy/rolling_client.py --url "ws://127.0.0.1:$lb/api/chat" --clients 6 --frames 75 \
    --stop-file "$work/stop" --out "$work/clients.jsonl" &
client_pid=$!
pids+=($client_pid)
sleep 14  # traffic on both

: > "$work/drains.txt"
for name in a b; do
    g=${generation[$name]}
    t0=$(date +%s.%N)
    kill -TERM "${pid[$name]}"
    rc=0
    for _ in $(seq 900); do kill -0 "${pid[$name]}" 2>/dev/null || break; sleep 0.1; done  # at most 90 s
    if kill -0 "${pid[$name]}" 2>/dev/null; then echo "rolling-restart: $name still draining after 90 s"; exit 1; fi
    wait "${pid[$name]}" || rc=$?
    t1=$(date +%s.%N)
    start_instance "$name"
    t2=$(date +%s.%N)  # up again (HAProxy needs two more checks to send it conversations)
    echo "$name $g $t0 $t1 $t2 $rc" >> "$work/drains.txt"
    scrape "$name" & pids+=($!)
    sleep 8  # haproxy sees it UP again; it takes conversations before the next drain
done
touch "$work/stop"
for _ in $(seq 300); do kill -0 "$client_pid" 2>/dev/null || break; sleep 0.1; done
wait "$client_pid" || true
sleep 0.5  # a last scrape of the running instances

status=0
python3 - "$work" <<'PY' || status=$?
import glob, json, os, re, sys
work = sys.argv[1]
rows = [json.loads(l) for l in open(f"{work}/clients.jsonl")]
def metric(path, name):
    m = re.search(rf"^{name} (\d+)$", open(path).read(), re.M)
    return int(m.group(1)) if m else 0
lifetimes = {}
for path in sorted(glob.glob(f"{work}/*.metrics")):
    key = os.path.basename(path)[:-len(".metrics")]
    lifetimes[key] = {"sessions": metric(path, "duplex_sessions_total"), "cut": metric(path, "duplex_drain_cut_total"),
                      "refused_draining": metric(path, r'duplex_sessions_rejected_total\{reason="draining"\}'),
                      "refused_busy": metric(path, r'duplex_sessions_rejected_total\{reason="capacity"\}')}
drains = [l.split() for l in open(f"{work}/drains.txt")]
began = [r for r in rows if r["result"] != "refused"]
ok = [r for r in began if r["result"] == "ok"]
cut = [r for r in began if r["result"] == "cut"]
refused = [r for r in rows if r["result"] == "refused"]
failures = []
print(f"rolling-restart: {len(began)} conversations through HAProxy ({len(ok)} whole, {len(cut)} cut), "
      f"{len(refused)} attempts refused before a conversation began (retried)")
by_server = {}
for r in began:
    by_server[r["server"]] = by_server.get(r["server"], 0) + 1
print("  conversations per instance (X-Duplex-Server): " + ", ".join(f"{k}: {v}" for k, v in sorted(by_server.items(), key=str)))
for key, v in lifetimes.items():
    print(f"  {key} (instance.generation) /metrics: {v['sessions']} conversations, drain cut {v['cut']}, "
          f"refused while draining {v['refused_draining']}, refused busy {v['refused_busy']}")
for name, g, t0, t1, t2, rc in drains:
    t0, t1, t2 = float(t0), float(t1), float(t2)
    log = open(f"{work}/{name}.{g}.log").read()
    done = re.search(r"drain \(SIGTERM\) done in ([\d.]+) s: (\d+) conversations? finished, (\d+) cut", log)
    # From the drain's start until the restarted process answers, every conversation must go elsewhere.
    during = [r for r in began if t0 + 0.1 < r["admitted"] < t2]
    here = [r for r in during if r["server"] == name]
    print(f"  drain of {name}: exit {rc} after {t1 - t0:.1f} s (server: {done.group(0) if done else 'no drain line'}), "
          f"up again {t2 - t1:.1f} s later; conversations begun meanwhile: {len(during)}, {len(here)} of them on {name}")
    if rc != "0":
        failures.append(f"instance {name} exited {rc} after SIGTERM")
    if not done or done.group(3) != "0":
        failures.append(f"drain of {name}: {done.group(0) if done else 'no drain-end line in its log'}")
    if here:
        failures.append(f"{len(here)} conversations began on {name} while it drained or restarted")
    if not during:
        failures.append(f"no conversation began while {name} drained (the clients stopped?)")
if cut:
    failures.append(f"{len(cut)} conversations cut: " + "; ".join(f"client {r['client']} on {r['server']}: {r['detail']}" for r in cut[:5]))
if any(v["cut"] for v in lifetimes.values()):
    failures.append("an instance counted conversations cut at the drain timeout")
total = sum(v["sessions"] for v in lifetimes.values())
print(f"  Σ duplex_sessions_total over the 4 processes = {total}; conversations the clients began = {len(began)}")
if total != len(began):
    failures.append(f"the instances' /metrics add up to {total} conversations, the clients began {len(began)}")
if len(set(by_server) - {"a", "b"}):
    failures.append(f"conversations without a known instance: {by_server}")
if len(ok) < 20:
    failures.append(f"only {len(ok)} whole conversations")
for f in failures:
    print("FAIL " + f)
sys.exit(1 if failures else 0)
PY

# The gap before the health check notices: with checks once a minute, HAProxy still sends upgrades
# to a draining instance; it refuses them with 503 and `retry-on 503` + redispatch must replay them
# on the other, unseen by the clients.
sed 's/inter 500ms fall 1 rise 2/inter 60s fall 1 rise 1/' tools/deploy/haproxy.cfg > "$work/slow-checks.cfg"
DUPLEX_LB_BIND="127.0.0.1:$((base + 3))" DUPLEX_A="127.0.0.1:${port[a]}" DUPLEX_B="127.0.0.1:${port[b]}" DUPLEX_MAXCONN=4 \
    haproxy -db -f "$work/slow-checks.cfg" > "$work/haproxy-slow.log" 2>&1 &
pids+=($!)
sleep 1
"$py" tools/interop/kyutai_client.py --url "ws://127.0.0.1:${port[a]}/api/chat" --frames 100 --min-text 0 > "$work/held.json" 2>&1 &
pids+=($!)
sleep 1.5
kill -TERM "${pid[a]}"  # a drains, holding that conversation; HAProxy has not noticed
sleep 0.3
retry_ok=0
for i in 1 2 3 4; do
    "$py" tools/interop/kyutai_client.py --url "ws://127.0.0.1:$((base + 3))/api/chat" --frames 20 --min-text 0 > "$work/retry$i.json" 2>&1 &
    retried+=($!)
    sleep 0.2
done
for p in "${retried[@]}"; do wait "$p" && retry_ok=$((retry_ok + 1)); done
refused=$(curl -s "http://127.0.0.1:${port[a]}/metrics" | sed -n 's/^duplex_sessions_rejected_total{reason="draining"} //p')
echo "  slow health checks: $retry_ok of 4 conversations whole through HAProxy while a drained unnoticed; a refused ${refused:-?} upgrades (503), replayed on b"
if [ "$retry_ok" != 4 ] || [ "${refused:-0}" -lt 1 ]; then
    echo "FAIL an upgrade refused by a draining instance was not replayed on the other (retry-on 503)"
    status=1
fi
exit "$status"
