# Sourced by the tools scripts: puts a Swift toolchain on PATH if the shell has none.
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi
