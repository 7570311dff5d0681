#!/usr/bin/env bash
# Installs the Debian packages duplex builds against, only those that are missing.
# Idempotent and quiet when there is nothing to do.
set -euo pipefail

# haproxy and python3-yaml: tools/deploy/ (haproxy -c on its config, the rolling-restart test, the k8s yaml check).
# chromium: tools/webclient/browser_test.py runs the built-in web client in it (tools/e2e.sh).
packages=(pkg-config libopenblas-dev libasound2-dev libopus-dev libogg-dev alsa-utils haproxy python3-yaml chromium
          libwebrtc-audio-processing-dev libspeexdsp-dev espeak-ng)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tools/env.sh (sourced by every script) finds a toolchain at /opt/swift, so only its absence is news.
. "$(dirname "$0")/env.sh"
if ! command -v swift >/dev/null 2>&1; then
    echo "setup: no Swift toolchain found on PATH or in /opt/swift: install Swift 6.x (https://swift.org/install)" >&2
    exit 1
fi
