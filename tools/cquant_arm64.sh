#!/usr/bin/env bash
# CQuant's C kernels against their scalar reference (tools/cquant_selftest.c) natively, then
# built for arm64 and run under qemu-user twice: on a CPU with the dot-product extension
# (neon-dotprod, neon and scalar are all checked) and on a Cortex-A53, which lacks it (the
# HWCAP gate must leave neon and scalar). Last, clang compiles the sources for aarch64 with
# every warning on: that is the compiler SwiftPM uses on ARM Linux.
# The quantizers' blocks (hashed) must be the same bytes on both machines.
# Needs: apt-get install -y gcc-aarch64-linux-gnu qemu-user   (and cc, clang for the last step)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
src=("$root"/Sources/CQuant/*.c "$root/tools/cquant_selftest.c")
flags=(-O2 -std=c11 -Wall -Wextra -Werror -I "$root/Sources/CQuant/include")

echo "== native ($(uname -m), ${CC:-cc})"
"${CC:-cc}" "${flags[@]}" "${src[@]}" -lm -lpthread -o "$out/selftest-native" | tee "$out/native.txt"
"$out/selftest-native" | tee "$out/native.txt"

echo "== arm64 under qemu, -cpu max (dot product)"
aarch64-linux-gnu-gcc "${flags[@]}" "${src[@]}" -lm -lpthread -o "$out/selftest-arm64"
qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max "$out/selftest-arm64" | tee "$out/arm64.txt"
# The quantizers are plain C with unfused f32 arithmetic: their blocks must be the same bytes.
diff <(grep blocks "$out/native.txt") <(grep blocks "$out/arm64.txt") || { echo "quantized blocks differ between machines"; exit 1; }

echo "== arm64 under qemu, -cpu cortex-a53 (no dot product)"
qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a53 "$out/selftest-arm64" | tee "$out/a53.txt"
grep -q "available: neon scalar$" "$out/a53.txt" || { echo "dot product kernels offered on a CPU without it"; exit 1; }

if command -v clang > /dev/null; then
    echo "== clang --target=aarch64-linux-gnu, compile only"
    for f in "$root"/Sources/CQuant/*.c; do
        clang --target=aarch64-linux-gnu -isystem /usr/aarch64-linux-gnu/include "${flags[@]}" -c "$f" -o "$out/$(basename "$f").o"
    done
    echo "ok"
fi
