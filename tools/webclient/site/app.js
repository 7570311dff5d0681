// duplex's web client: Kyutai's chat protocol over a websocket (kind byte first: 0 handshake,
// 1 audio as Ogg Opus pages, 2 text, 5 error), microphone → WebCodecs AudioEncoder (Opus, 24 kHz
// mono, 20 ms) → Ogg pages, server Ogg pages → AudioDecoder → playback worklet.
import { OggOpusMuxer, OggDemuxer } from "./ogg.js";

const RATE = 24000;
const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const stats = { framesSent: 0, framesDecoded: 0, textPieces: 0, errors: 0, bytesSent: 0, bytesReceived: 0,
                underruns: 0, lagMs: null, bufferedMs: 0, state: "idle", lastError: null, handshake: false };
window.duplexStats = stats;

let session = null;

function wsURL() {
  const base = query.get("server") ||
    (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/chat";
  const url = new URL(base, location.href);
  const form = new FormData($("params"));
  for (const [name, value] of form.entries()) {
    let v = String(value).trim();
    if (v === "" && name.endsWith("_seed")) v = String(Math.floor(Math.random() * 1000000));
    if (v !== "") url.searchParams.set(name, v);
  }
  return url.toString();
}

function setState(s) {
  stats.state = s;
  $("status").textContent = s;
  const live = s !== "idle" && s !== "closed" && s !== "failed";
  $("connect").textContent = live ? "Disconnect" : "Connect";
  $("connect").classList.toggle("live", live);
}

function showError(message) {
  stats.errors++;
  stats.lastError = message;
  $("error").hidden = false;
  $("error").textContent = message;
  console.error("duplex:", message);
}

function appendText(piece) {
  const box = $("text");
  const nearBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 20;
  box.append(piece);
  if (nearBottom) box.scrollTop = box.scrollHeight;
}

// Streaming linear resampler for decoded audio at a rate other than the context's.
class Resampler {
  constructor(from, to) { this.step = from / to; this.pos = 0; this.last = 0; }
  process(input) {
    if (this.step === 1) return input;
    const out = [];
    while (this.pos < input.length - 1) {
      const i = Math.floor(this.pos), f = this.pos - i;
      const a = i < 0 ? this.last : input[i];
      out.push(a + (input[i + 1] - a) * f);
      this.pos += this.step;
    }
    this.pos -= input.length;
    this.last = input[input.length - 1];
    return Float32Array.from(out);
  }
}

async function start() {
  if (session) return;
  if (!("AudioEncoder" in window) || !("AudioDecoder" in window)) {
    showError("This browser has no WebCodecs audio (AudioEncoder/AudioDecoder): use a recent Chromium, Chrome or Edge.");
    setState("failed");
    return;
  }
  $("error").hidden = true;
  $("text").textContent = "";
  const s = { closed: false, sentMs: 0, receivedMs: 0 };
  stats.handshake = false;
  stats.sessions = (stats.sessions || 0) + 1;
  session = s;
  setState("starting");
  try {
    // ?context_rate=48000 runs the audio graph at another rate (tests the resampling paths).
    const rate = Number(query.get("context_rate")) || RATE;
    try { s.ctx = new AudioContext({ sampleRate: rate, latencyHint: "interactive" }); }
    catch { s.ctx = new AudioContext({ latencyHint: "interactive" }); }
    stats.contextRate = s.ctx.sampleRate;
    await s.ctx.audioWorklet.addModule("worklet.js");
    if (s.ctx.state !== "running") await Promise.race([s.ctx.resume(), new Promise(r => setTimeout(r, 500))]);
    if (s.ctx.state !== "running") {
      showError("The browser wants a click before it plays audio: press Connect.");
      throw new Error("audio context suspended");
    }
    s.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    if (s.closed) return;
    s.source = s.ctx.createMediaStreamSource(s.stream);
    s.capture = new AudioWorkletNode(s.ctx, "capture", { numberOfOutputs: 0 });
    s.playback = new AudioWorkletNode(s.ctx, "playback", { numberOfInputs: 0, outputChannelCount: [1],
                                                           processorOptions: { targetMs: 120, maxMs: 600 } });
    s.source.connect(s.capture);
    s.playback.connect(s.ctx.destination);
    s.playback.port.onmessage = (e) => {
      const m = e.data;
      $("out-level").style.width = meter(m.rms);
      stats.bufferedMs = m.bufferedMs;
      stats.outRmsMax = Math.max(stats.outRmsMax || 0, m.rms);
      stats.underruns = m.underruns;
    };
    setupDecoder(s);
    connect(s);
    s.capture.port.onmessage = (e) => {
      $("in-level").style.width = meter(e.data.rms);
      stats.inRmsMax = Math.max(stats.inRmsMax || 0, e.data.rms);
      if (s.encoder && s.encoder.state === "configured") {
        const data = e.data.samples;
        s.encoder.encode(new AudioData({ format: "f32", sampleRate: RATE, numberOfFrames: data.length,
                                         numberOfChannels: 1, timestamp: s.inputTime, data }));
        s.inputTime += data.length * 1e6 / RATE;
      }
    };
  } catch (err) {
    if (!s.closed) { if (stats.lastError === null || !String(err).includes("suspended")) showError(String(err.message || err)); }
    stop("failed");
  }
}

function meter(rms) {
  const db = 20 * Math.log10(Math.max(rms, 1e-6));
  return Math.max(0, Math.min(100, (db + 60) / 60 * 100)).toFixed(1) + "%";
}

function connect(s) {
  const url = wsURL();
  $("ws-url").textContent = url.replace(/\?.*/, "");
  s.ws = new WebSocket(url);
  s.ws.binaryType = "arraybuffer";
  setState("connecting");
  s.ws.onmessage = (e) => {
    if (!(e.data instanceof ArrayBuffer)) return;
    const bytes = new Uint8Array(e.data);
    if (bytes.length === 0) return;
    const payload = bytes.subarray(1);
    switch (bytes[0]) {
      case 0: onHandshake(s); break;
      case 1: stats.bytesReceived += payload.length; onAudio(s, payload); break;
      case 2: stats.textPieces++; appendText(new TextDecoder().decode(payload)); break;
      case 5: showError("server: " + new TextDecoder().decode(payload)); break;
      default: break;  // control, metadata, ping and unknown kinds are ignored
    }
  };
  s.ws.onerror = () => { if (!s.closed) showError("websocket error (" + url.replace(/\?.*/, "") + ")"); };
  s.ws.onclose = (e) => {
    if (s.closed) return;
    if (!stats.handshake) showError(`the server closed the connection before its handshake (code ${e.code}${e.reason ? ": " + e.reason : ""})`);
    stop("closed");
  };
}

function onHandshake(s) {
  if (s.muxer) return;
  stats.handshake = true;
  setState("live");
  s.muxer = new OggOpusMuxer({ sampleRate: RATE });
  for (const page of s.muxer.headers()) send(s, page);
  s.inputTime = 0;
  s.encoder = new AudioEncoder({
    output: (chunk) => {
      const packet = new Uint8Array(chunk.byteLength);
      chunk.copyTo(packet);
      const samples48k = Math.round((chunk.duration || 20000) * 48000 / 1e6);
      send(s, s.muxer.audio(packet, samples48k));
      stats.framesSent++;
      s.sentMs += samples48k / 48;
      stats.sentMs = Math.round(s.sentMs);
      $("sent").textContent = (s.sentMs / 1000).toFixed(1) + " s";
    },
    error: (err) => showError("Opus encoder: " + err.message),
  });
  s.encoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1, bitrate: 24000,
                        opus: { frameDuration: 20000, complexity: 5, application: "voip" } });
  s.ticker = setInterval(() => updateLag(s), 200);
}

function send(s, page) {
  if (s.ws.readyState !== WebSocket.OPEN) return;
  const msg = new Uint8Array(page.length + 1);
  msg[0] = 1;
  msg.set(page, 1);
  s.ws.send(msg);
  stats.bytesSent += page.length;
}

function setupDecoder(s) {
  s.demux = new OggDemuxer();
  s.packets = 0;
  s.outTime = 0;
  s.decoder = new AudioDecoder({
    output: (data) => {
      const n = data.numberOfFrames;
      const plane = new Float32Array(n);
      data.copyTo(plane, { planeIndex: 0, format: "f32-planar" });
      if (!s.resampler || s.resampler.from !== data.sampleRate) {
        s.resampler = new Resampler(data.sampleRate, s.ctx.sampleRate);
        s.resampler.from = data.sampleRate;
      }
      stats.decodedRate = data.sampleRate;
      s.receivedMs += n * 1000 / data.sampleRate;
      stats.receivedMs = Math.round(s.receivedMs);
      data.close();
      const out = s.resampler.process(plane);
      if (out.length) s.playback.port.postMessage(out, [out.buffer]);
      stats.framesDecoded++;
      $("received").textContent = (s.receivedMs / 1000).toFixed(1) + " s";
    },
    error: (err) => showError("Opus decoder: " + err.message),
  });
}

function onAudio(s, bytes) {
  for (const packet of s.demux.push(bytes)) {
    s.packets++;
    const magic = packet.length >= 8 ? String.fromCharCode(...packet.subarray(0, 8)) : "";
    if (magic === "OpusHead") {
      const channels = packet[9] || 1;
      if (s.decoder.state === "configured") s.decoder.reset();
      s.decoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: channels });
      continue;
    }
    if (magic === "OpusTags") continue;
    if (s.decoder.state !== "configured") {  // a server that sends no OpusHead: assume mono 24 kHz
      s.decoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1 });
    }
    s.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: s.outTime, data: packet }));
    s.outTime += 20000;
  }
}

// Lag: audio sent but not yet answered (network, the model's frame and delay), plus what waits
// in the jitter buffer before it is heard.
function updateLag(s) {
  if (s.closed) return;
  const pipeline = Math.max(0, s.sentMs - s.receivedMs);
  stats.lagMs = Math.round(pipeline + stats.bufferedMs);
  $("lag").textContent = stats.lagMs + " ms";
  $("buffer").textContent = Math.round(stats.bufferedMs) + " ms" + (stats.underruns ? ` (${stats.underruns} underrun${stats.underruns === 1 ? "" : "s"})` : "");
}

function stop(state = "closed") {
  const s = session;
  if (!s) return;
  s.closed = true;
  session = null;
  clearInterval(s.ticker);
  try { if (s.ws && s.ws.readyState <= 1) s.ws.close(1000); } catch {}
  if (s.stream) for (const t of s.stream.getTracks()) t.stop();
  for (const codec of [s.encoder, s.decoder]) { try { if (codec && codec.state !== "closed") codec.close(); } catch {} }
  if (s.ctx) s.ctx.close().catch(() => {});
  $("in-level").style.width = $("out-level").style.width = "0";
  setState(state);
}

$("connect").addEventListener("click", () => { session ? stop("closed") : start(); });
$("ws-url").textContent = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/chat";
for (const input of $("params").elements) {  // settings from the page's own query (?text_temperature=…)
  if (input.name && query.has(input.name)) input.value = query.get(input.name);
}
if (query.get("autostart") === "1") start();
