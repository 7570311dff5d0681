#!/usr/bin/env python3
"""The built-in web client in a real browser: starts `duplex serve` on the embedded default model
(plain http, then https with --tls-self-signed), opens /?autostart=1 in headless Chromium with a
fake microphone playing a speech-like WAV, and checks through the Chrome DevTools Protocol that the
page sends Opus frames, decodes the server's, reports no error, and that /metrics counts the
session. Saves a screenshot of each page. Needs aiohttp (tools/interop/setup.sh's python).

Usage: browser_test.py [--duplex BIN] [--static DIR] [--screenshot PATH] [--work DIR] [--only http|https]
                       [--url URL]   (a server already running, e.g. Kyutai's moshi.server)
Exit 0 when every phase passes; one FAIL line per problem otherwise. Bounded (about 90 s)."""
import argparse, asyncio, json, math, os, re, shutil, signal, socket, ssl, struct, subprocess, sys, tempfile, time, wave
import urllib.request

try:
    import aiohttp
except ImportError:
    sys.exit("FAIL browser test: no aiohttp (run with the python tools/interop/setup.sh prints)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def speech_wav(path, rate=48000, seconds=3.0):
    # The speech-like signal tools/e2e.sh synthesises: a voiced tone with a moving pitch, amplitude-modulated.
    samples, phase = [], 0.0
    for i in range(int(rate * seconds)):
        t = i / rate
        f0 = 130 + 35 * math.sin(2 * math.pi * 0.6 * t)
        phase += 2 * math.pi * f0 / rate
        s = sum(math.sin(h * phase) / h for h in range(1, 8)) * (0.5 + 0.5 * math.sin(2 * math.pi * 3 * t))
        samples.append(int(max(-32768, min(32767, 6000 * s))))
    with wave.open(path, "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url, timeout=2):
    ctx = ssl._create_unverified_context() if url.startswith("https") else None
    return urllib.request.urlopen(url, timeout=timeout, context=ctx).read().decode()


def kill(proc):
    if proc and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class CDP:
    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    async def call(self, method, **params):
        self.next_id += 1
        my = self.next_id
        await self.ws.send_json({"id": my, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def evaluate(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")


async def drive(devtools_port, deadline, min_decoded, reconnect):
    """Attaches to the page, polls window.duplexStats until frames flow; returns (stats, screenshot bytes)."""
    async with aiohttp.ClientSession() as http:
        page = None
        while page is None:
            if time.monotonic() > deadline:
                raise RuntimeError("Chromium's DevTools did not come up")
            try:
                async with http.get(f"http://127.0.0.1:{devtools_port}/json/list") as r:
                    page = next((t for t in await r.json() if t.get("type") == "page"), None)
            except aiohttp.ClientError:
                pass
            if page is None:
                await asyncio.sleep(0.2)
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=64 << 20) as ws:
            cdp = CDP(ws)
            await cdp.call("Runtime.enable")
            stats = None
            while time.monotonic() < deadline:
                raw = await cdp.evaluate("window.duplexStats ? JSON.stringify(window.duplexStats) : null")
                stats = json.loads(raw) if raw else None
                if stats and (stats["errors"] or stats["state"] in ("failed", "closed")):
                    break
                if stats and stats["framesSent"] > 0 and stats["framesDecoded"] >= min_decoded and stats["textPieces"] > 0:
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(0.3)  # let the meters and figures repaint
            shot = await cdp.call("Page.captureScreenshot", format="png")
            if reconnect and stats and not stats["errors"] and stats["framesDecoded"] >= min_decoded:
                # Disconnect, then Connect again: the server (--max-sessions 1) must have let the
                # first conversation go, and the second must flow too.
                await cdp.evaluate("document.getElementById('connect').click()")
                await asyncio.sleep(0.5)
                closed = json.loads(await cdp.evaluate("JSON.stringify(window.duplexStats)"))
                if closed["state"] != "closed":
                    raise RuntimeError(f"Disconnect left the page {closed['state']}")
                await cdp.evaluate("document.getElementById('connect').click()")
                before = closed["framesDecoded"]
                while time.monotonic() < deadline:
                    stats = json.loads(await cdp.evaluate("JSON.stringify(window.duplexStats)"))
                    if stats["errors"] or stats["framesDecoded"] >= before + 10:
                        break
                    await asyncio.sleep(0.25)
                stats["reconnected"] = stats["framesDecoded"] >= before + 10 and stats["state"] == "live"
            import base64
            return stats, base64.b64decode(shot["data"])


def phase(name, args, wav, work, tls, budget):
    """One server + one browser; returns a list of failures."""
    t0 = time.monotonic()
    failures = []
    port, dport = free_port(), free_port()
    scheme = "https" if tls else "http"
    cmd = [args.duplex, "serve", "--host", "127.0.0.1", "--port", str(port), "--max-sessions", "1", "-t", "1"]
    if tls:
        cmd.append("--tls-self-signed")
    if args.static:
        cmd += ["--static", args.static]
    server = browser = None
    # The https phase also runs the page's audio at 48 kHz, so its resamplers are exercised.
    page_url = f"{scheme}://127.0.0.1:{port}/?autostart=1" + ("&context_rate=48000" if tls else "")
    if args.url:  # someone else's server (Kyutai's moshi.server --static tools/webclient/site)
        page_url, scheme = args.url, args.url.split(":")[0]
    else:
        log = open(os.path.join(work, f"serve-{scheme}.txt"), "w")
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while server:
            try:
                fetch(f"{scheme}://127.0.0.1:{port}/healthz", timeout=1)
                break
            except Exception:
                if server.poll() is not None or time.monotonic() - t0 > budget / 2:
                    return [f"{scheme}: the server did not come up (see {log.name})"]
                time.sleep(0.2)
        profile = tempfile.mkdtemp(prefix="chromium-", dir=work)
        chrome = [args.chromium, "--headless=new", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
                  "--disable-gpu", "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}",
                  "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}",
                  "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required",
                  f"--remote-debugging-port={dport}", "--remote-allow-origins=*", "--window-size=1000,900"]
        if tls:
            chrome.append("--ignore-certificate-errors")
        chrome.append(page_url)
        blog = open(os.path.join(work, f"chromium-{scheme}.txt"), "w")
        browser = subprocess.Popen(chrome, stdout=blog, stderr=subprocess.STDOUT, start_new_session=True)
        stats, png = asyncio.run(drive(dport, t0 + budget, args.min_decoded, reconnect=not tls and not args.url))
        seconds = time.monotonic() - t0
        shot = args.screenshot if not tls else re.sub(r"(\.png)?$", "-https.png", args.screenshot, count=1)
        with open(shot, "wb") as f:
            f.write(png)
        print(f"{scheme}: {json.dumps(stats)} after {seconds:.1f} s; screenshot {shot}")
        if not stats:
            failures.append(f"{scheme}: window.duplexStats never appeared")
        else:
            if stats["framesSent"] <= 0:
                failures.append(f"{scheme}: no Opus frame sent")
            if stats["framesDecoded"] < args.min_decoded:
                failures.append(f"{scheme}: {stats['framesDecoded']} frames decoded (< {args.min_decoded})")
            if stats.get("reconnected") is False:
                failures.append(f"{scheme}: after Disconnect and Connect no audio came back")
            if not stats.get("inRmsMax") or not stats.get("outRmsMax"):
                failures.append(f"{scheme}: silence: microphone RMS {stats.get('inRmsMax')}, playback RMS {stats.get('outRmsMax')}")
            if tls and stats.get("contextRate") != 48000:
                failures.append(f"{scheme}: the page's audio ran at {stats.get('contextRate')} Hz, not the 48000 asked for")
            if stats["errors"]:
                failures.append(f"{scheme}: the page reported an error: {stats['lastError']}")
        if not server:
            return failures
        metrics = fetch(f"{scheme}://127.0.0.1:{port}/metrics")
        corrupt = re.search(r"^duplex_audio_corrupt_packets_total (\d+)", metrics, re.M)
        if corrupt and int(corrupt.group(1)) > 0:
            failures.append(f"{scheme}: the server found {corrupt.group(1)} corrupt packets or pages in the page's Ogg Opus")
        frames = re.search(r"^duplex_frames_total (\d+)", metrics, re.M)
        sessions = re.search(r"^duplex_sessions_total (\d+)", metrics, re.M)
        print(f"{scheme}: /metrics duplex_sessions_total {sessions and sessions.group(1)}, duplex_frames_total {frames and frames.group(1)}")
        if not (frames and int(frames.group(1)) > 0 and sessions and int(sessions.group(1)) >= 1):
            failures.append(f"{scheme}: /metrics does not count the session's frames")
    except Exception as e:
        failures.append(f"{scheme}: {type(e).__name__}: {e}")
    finally:
        kill(browser)
        kill(server)
    return failures


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--duplex", default=os.path.join(ROOT, ".build/release/duplex"))
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    p.add_argument("--static", help="serve this folder instead of the built-in page (to try edits without a rebuild)")
    p.add_argument("--work", default=None)
    p.add_argument("--screenshot", default=None)
    p.add_argument("--only", choices=["http", "https"])
    p.add_argument("--url", help="open this page (with ?autostart=1) on a server already running instead of starting duplex serve")
    p.add_argument("--min-decoded", type=int, default=50, help="Opus packets (40 ms from duplex) to decode")
    p.add_argument("--budget", type=float, default=40, help="seconds per phase at most (85 for the whole test)")
    args = p.parse_args()
    if not shutil.which(args.chromium):
        print(f"FAIL browser test: no chromium ({args.chromium}); tools/setup.sh installs it")
        return 1
    work = args.work or tempfile.mkdtemp(prefix="duplex-browser-")
    os.makedirs(work, exist_ok=True)
    args.screenshot = args.screenshot or os.path.join(work, "webclient.png")
    version = subprocess.run([args.chromium, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"browser test: {version}; work {work}")
    wav = os.path.join(work, "speech48.wav")
    speech_wav(wav)
    # A SIGTERM (e2e's timeout) still runs the finally blocks that kill chromium and the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failures = []
    end = time.monotonic() + 85  # the whole test, both phases
    for tls in (False, True):
        if (args.only and args.only != ("https" if tls else "http")) or (args.url and tls):
            continue
        budget = min(args.budget, end - time.monotonic())
        if budget < 5:
            failures.append(("https" if tls else "http") + ": no time left for this phase")
            continue
        failures += phase("tls" if tls else "plain", args, wav, work, tls, budget)
    for f in failures:
        print("FAIL " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
