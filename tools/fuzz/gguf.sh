#!/usr/bin/env bash
# Fuzzes the GGUF header parser (GGUFFile.parseHeader) with libFuzzer for FUZZ_SECONDS (default 60),
# under AddressSanitizer, with the checks of tools/fuzz/GGUFFuzz.swift on every accepted input.
# Exits non-zero on a crash, a trap or a failed check; the input that did it is written to
# .build-fuzz/gguf/artifacts/ and replays with: .build-fuzz/gguf/gguf-fuzz <that file>.
#
# The toolchain's swiftc builds it directly (-sanitize=fuzzer links clang's libFuzzer): only the
# parser's files and what they use are compiled, as one module with the entry point, so no
# package build is involved. The corpus (.build-fuzz/gguf/corpus, git-ignored) starts from the
# committed GGUF fixtures and keeps what earlier runs found.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/env.sh
seconds="${FUZZ_SECONDS:-60}"
out=.build-fuzz/gguf
mkdir -p "$out/corpus" "$out/artifacts"

sources=(
    Sources/DuplexCore/Weights/GGUF.swift
    Sources/DuplexCore/Weights/GGUFHeader.swift
    Sources/DuplexCore/Weights/GGUFWriter.swift
    Sources/DuplexCore/Weights/Safetensors.swift   # WeightFileError
    Sources/DuplexCore/Tensor/Tensor.swift         # used by Safetensors.swift
    Sources/DuplexCore/Tensor/HalfPrecision.swift  # used by Safetensors.swift
    Sources/DuplexCore/Weights/MappedFile.swift    # the readers' shared map
    tools/fuzz/GGUFFuzz.swift
)
# -O keeps Swift's bounds and overflow checks (they trap, and a trap is a finding). lld, because
# gold prints a warning for every local symbol ASan's instrumentation exports.
swiftc -module-name GGUFFuzz -parse-as-library -O -g -sanitize=fuzzer,address -use-ld=lld \
    "${sources[@]}" -o "$out/gguf-fuzz"

cp Tests/DuplexCoreTests/Fixtures/*.gguf "$out/corpus/"

# Swift's own crash backtracer would run inside the ASan process (and trip ASan reading its
# memory); libFuzzer's deadly-signal handler reports a trap and saves the input instead.
export SWIFT_BACKTRACE=enable=no
# Leak checking off: the Swift runtime's metadata caches live until exit and read as leaks.
set +e
"$out/gguf-fuzz" "$out/corpus" -dict=tools/fuzz/gguf.dict -max_total_time="$seconds" -max_len=8192 \
    -timeout=10 -rss_limit_mb=2048 -detect_leaks=0 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/" > "$out/last-run.log" 2>&1
status=$?
set -e
grep -E "^(stat::|==[0-9]+==|SUMMARY|Test unit written|    #[0-9]+ .* in .*(GGUF|parse|fuzz))|runtime failure|Fatal error" "$out/last-run.log" || true
if [ "$status" != 0 ]; then
    echo "gguf fuzz: FAILED (exit $status); log in $out/last-run.log, inputs in $out/artifacts/" >&2
    exit "$status"
fi
echo "gguf fuzz: no crash in ${seconds} s ($(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' "$out/last-run.log" | grep -o '[0-9]*$') inputs); corpus $out/corpus"
