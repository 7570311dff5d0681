#!/usr/bin/env bash
# Creates (or reuses) tools/reference/.venv with Kyutai's reference package moshi==0.2.13 and the
# peers the benchmarks compare against (rustymimi), plus sentencepiece and sphn, and the writers
# of quantized files the CQuant fixtures come from: gguf-py (gguf==0.19.0) and MLX (mlx[cpu]==0.32.4,
# with moshi-mlx==0.3.0 for Kyutai's MLX model code), and pyloudnorm==0.1.1 (with scipy and future,
# its dependencies), the loudness meter PersonaPlex normalises voice prompts with.
# Prints the venv's python path on stdout. The venv stays out of git.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.duplex-reference-v3"
MOSHI_VERSION=0.2.13

if [ ! -f "$stamp" ]; then
    python3 -m venv "$venv"
    pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
    # moshi 0.2.13 pins torch<2.10. A CPU-only torch wheel avoids gigabytes of CUDA libraries:
    # use a local CPU wheel where the machine has one (moshi runs unchanged on it), else PyPI's.
    cpu_wheel=$(ls /opt/wheels/torch-*+cpu-*.whl 2>/dev/null | head -n1 || true)
    if [ -n "$cpu_wheel" ]; then
        "${pip[@]}" "$cpu_wheel"
    else
        "${pip[@]}" "torch>=2.2,<2.10"
    fi
    # --no-deps: skip bitsandbytes (CUDA int8) and sounddevice (PortAudio), unused here.
    "${pip[@]}" --no-deps "moshi==$MOSHI_VERSION"
    "${pip[@]}" "numpy>=1.26,<2.3" "safetensors>=0.4,<0.8" "huggingface-hub>=0.24,<1" "einops>=0.7,<0.9" \
        "sentencepiece>=0.2,<0.3" "sphn>=0.2,<0.3" "aiohttp>=3.10.5,<3.12" "tqdm>=4.48" "rustymimi==0.4.1"
    "${pip[@]}" "gguf==0.19.0" "mlx[cpu]==0.32.4"
    # --no-deps: moshi-mlx pulls in audio and UI packages; fixtures need only its model code and mlx.
    "${pip[@]}" --no-deps "moshi-mlx==0.3.0"
    # PersonaPlex does not pin pyloudnorm; 0.1.1 is the last 0.1.x (0.2.0 measures the same).
    "${pip[@]}" "pyloudnorm==0.1.1" "scipy==1.15.3" "future==1.0.0"
    "$venv/bin/python" -c "import moshi, torch; assert moshi.__version__ == '$MOSHI_VERSION', moshi.__version__"
    "$venv/bin/python" -c "import gguf, mlx.core, moshi_mlx, pyloudnorm"
    touch "$stamp"
fi
echo "$venv/bin/python"
