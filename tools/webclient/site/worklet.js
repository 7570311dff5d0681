// AudioWorklet processors: "capture" forwards the microphone in 20 ms blocks at 24 kHz (resampling
// linearly when the context runs at another rate) with each block's RMS; "playback" plays decoded
// audio from a jitter buffer that fills to a target before it starts and again after an underrun,
// and drops the oldest audio when it grows past a bound so the lag cannot creep up.

const RATE = 24000;
const BLOCK = 480;  // 20 ms at 24 kHz

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / RATE;  // input samples per output sample
    this.pos = 0;                   // fractional read position in `prev`+input
    this.last = 0;
    this.block = new Float32Array(BLOCK);
    this.fill = 0;
  }
  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    if (this.step === 1) {
      for (let i = 0; i < input.length; i++) this.emit(input[i]);
    } else {
      // Linear interpolation between the previous call's last sample (index -1) and this input.
      while (this.pos < input.length - 1) {
        const i = Math.floor(this.pos), f = this.pos - i;
        const a = i < 0 ? this.last : input[i];
        this.emit(a + (input[i + 1] - a) * f);
        this.pos += this.step;
      }
      this.pos -= input.length;
      this.last = input[input.length - 1];
    }
    return true;
  }
  emit(x) {
    this.block[this.fill++] = x;
    if (this.fill === BLOCK) {
      let sum = 0;
      for (let i = 0; i < BLOCK; i++) sum += this.block[i] * this.block[i];
      this.port.postMessage({ samples: this.block, rms: Math.sqrt(sum / BLOCK) }, [this.block.buffer]);
      this.block = new Float32Array(BLOCK);
      this.fill = 0;
    }
  }
}

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.target = Math.round((o.targetMs || 120) * sampleRate / 1000);   // buffered before playing
    this.max = Math.round((o.maxMs || 600) * sampleRate / 1000);         // dropped beyond this
    this.queue = [];
    this.offset = 0;      // read position in queue[0]
    this.buffered = 0;    // samples queued
    this.playing = false;
    this.underruns = 0;
    this.dropped = 0;
    this.sumSq = 0; this.count = 0; this.frames = 0;
    this.port.onmessage = (e) => {
      if (e.data === "reset") { this.queue = []; this.offset = 0; this.buffered = 0; this.playing = false; return; }
      const s = e.data;
      this.queue.push(s);
      this.buffered += s.length;
      while (this.buffered > this.max && this.queue.length > 1) {
        const head = this.queue.shift();
        this.buffered -= head.length - this.offset;
        this.dropped += head.length - this.offset;
        this.offset = 0;
      }
    };
  }
  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.buffered >= this.target) this.playing = true;
    let i = 0;
    if (this.playing) {
      while (i < out.length && this.queue.length) {
        const head = this.queue[0];
        const n = Math.min(out.length - i, head.length - this.offset);
        out.set(head.subarray(this.offset, this.offset + n), i);
        i += n; this.offset += n; this.buffered -= n;
        if (this.offset === head.length) { this.queue.shift(); this.offset = 0; }
      }
      if (i < out.length) { this.playing = false; this.underruns++; }
    }
    for (; i < out.length; i++) out[i] = 0;
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    for (let k = 0; k < out.length; k++) this.sumSq += out[k] * out[k];
    this.count += out.length;
    if (++this.frames % 8 === 0) {  // ~ every 43 ms at 24 kHz
      this.port.postMessage({ rms: Math.sqrt(this.sumSq / this.count), bufferedMs: this.buffered * 1000 / sampleRate,
                              underruns: this.underruns, droppedMs: this.dropped * 1000 / sampleRate });
      this.sumSq = 0; this.count = 0;
    }
    return true;
  }
}

registerProcessor("capture", CaptureProcessor);
registerProcessor("playback", PlaybackProcessor);
