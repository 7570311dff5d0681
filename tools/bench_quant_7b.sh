#!/usr/bin/env bash
# The quantized 7B on this machine, at moshiko's exact shape with seeded random weights (no
# checkpoint is downloadable here; a step streams the same bytes whatever the values are):
#
#   1. a random-weights 7B folder (Kyutai's config.json keys + duplex.random_weights_seed);
#   2. `duplex quantize --to q8` and `--to q4` write it as GGUFs in candle's layout
#      (OUT/q8/model.gguf, OUT/q4/model.gguf, with a config.json naming them);
#   3. `duplex bench-lm` on the bf16 (random, made up at load), q8 and q4 folders, at frame 10 and
#      after a 3000-step context fill, with --kv-cache bf16 and q8, on 2 threads and 1, each under
#      /usr/bin/time for the peak RSS. Each JSON line goes to OUT/results.jsonl.
#
# Takes about half an hour on a 2-core machine and ~13 GB of disk; needs ~17 GB of RAM for the
# bf16 run (skip it with SKIP_BF16=1). Run on a quiet machine: the figures are bandwidth-bound.
# Usage: tools/bench_quant_7b.sh   (env: OUT, DUPLEX, STEPS, THREADS="2 1", KV="bf16 q8", SKIP_BF16)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
duplex="${DUPLEX:-$root/.build/release/duplex}"
out="${OUT:-$root/tools/reference/out/quant7b}"
steps="${STEPS:-8}"
threads="${THREADS:-2 1}"
kvs="${KV:-bf16 q8}"
[ -x "$duplex" ] || { echo "build first: swift build -c release" >&2; exit 1; }
mkdir -p "$out/random" "$out/q8" "$out/q4"

config='{"dim": 4096, "text_card": 32000, "existing_text_padding_id": 3, "n_q": 16, "dep_q": 8, "card": 2048,
 "num_heads": 32, "num_layers": 32, "hidden_scale": 4.125, "causal": true, "context": 3000, "max_period": 10000,
 "gating": "silu", "norm": "rms_norm_f32", "positional_embedding": "rope", "depformer_dim": 1024,
 "depformer_dim_feedforward": 4224, "depformer_num_heads": 16, "depformer_num_layers": 6,
 "depformer_multi_linear": true, "depformer_context": 8, "depformer_max_period": 10000, "depformer_gating": "silu",
 "depformer_pos_emb": "none", "depformer_weights_per_step": true,
 "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]'
echo "$config, \"duplex\": {\"random_weights_seed\": 7}}" > "$out/random/config.json"
for q in q8 q4; do
    echo "$config, \"moshi_name\": \"model.gguf\"}" > "$out/$q/config.json"
    if [ ! -f "$out/$q/model.gguf" ]; then
        /usr/bin/time -f "quantize $q: %e s, peak RSS %M KiB" "$duplex" quantize --to "$q" "$out/random" "$out/$q/model.gguf"
    fi
done

results="$out/results.jsonl"
run() {   # run FOLDER THREADS KV
    local log; log=$(mktemp)
    /usr/bin/time -f "%M" -o "$log.rss" "$duplex" bench-lm --model "$1" --steps "$steps" --warmup 2 --context-fill 3000 \
        -t "$2" --kv-cache "$3" --json > "$log"
    python3 - "$log" "$log.rss" "$1" "$2" "$3" >> "$results" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
r["peak_rss_kib"] = int(open(sys.argv[2]).read().split()[-1])
r["folder"], r["threads_asked"], r["kv_asked"] = sys.argv[3], int(sys.argv[4]), sys.argv[5]
print(json.dumps(r))
PY
    python3 - "$results" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
f = r.get("filled", {})
print(f"{r['folder'].split('/')[-1]:>6} t={r['threads']} kv={r['kv_cache']}: frame 10 {r['ms_per_step_median']:.0f} ms "
      f"(floor {r['floor_ms']:.0f}, x{r['ratio_to_floor']:.2f}); full {f.get('ms_per_step_median', float('nan')):.0f} ms "
      f"(floor {f.get('floor_ms', float('nan')):.0f}, x{f.get('ratio_to_floor', float('nan')):.2f}, {f.get('ratio_to_fresh', float('nan')):.2f} of fresh); "
      f"load {r['load_seconds']:.1f} s, first step {r['first_step_ms']:.0f} ms, peak RSS {r['peak_rss_kib'] / 1048576:.1f} GiB")
PY
    rm -f "$log" "$log.rss"
}
for t in $threads; do
    for kv in $kvs; do
        for q in q4 q8; do run "$out/$q" "$t" "$kv"; done
        [ -n "${SKIP_BF16:-}" ] || run "$out/random" "$t" "$kv"
    done
done
echo "results: $results"
