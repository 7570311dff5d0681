#!/usr/bin/env bash
# Regenerates Tests/Fixtures/aec/far.wav and near.wav, the two talkers the echo-cancellation tests
# play through SimulatedRoom: "far" is the system's voice (what the loudspeaker plays), "near" a
# clearly different person at the microphone. espeak-ng's native output (22050 Hz, mono, 16-bit) is
# kept as is: the tests resample to 24 kHz with DuplexAudio's own Resampler, so no sox is needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v espeak-ng >/dev/null; then
    echo "make_speech.sh needs espeak-ng (Debian package espeak-ng: apt-get install espeak-ng)" >&2
    exit 1
fi
out=Tests/Fixtures/aec
mkdir -p "$out"

# A low male voice at a steady pace, like a system reading out facts.
espeak-ng -v en-us+m3 -s 150 -p 40 -w "$out/far.wav" \
    "Your appointment is on Tuesday the fourteenth at three thirty in the afternoon. \
The total comes to forty seven dollars and twenty cents. \
On Friday the forecast says nineteen degrees with light rain until noon."

# A higher female voice, faster, talking about something else: easy to tell apart from the echo.
espeak-ng -v en+f3 -s 165 -p 70 -w "$out/near.wav" \
    "Hang on, I think the kitchen window is still open and the cat is sitting on the ledge. \
Could you remind me to buy apples, bread and a bag of coffee beans? \
Let me grab a pen so I can write this down properly."

for f in "$out/far.wav" "$out/near.wav"; do
    bytes=$(stat -c %s "$f")
    if [ "$bytes" -ge 1000000 ]; then
        echo "$f is $bytes bytes: fixtures must stay under 1 MB, shorten the text" >&2
        exit 1
    fi
    echo "$f: $bytes bytes"
done
