// Ogg pages for Opus (RFC 3533, RFC 7845): a muxer that writes OpusHead (BOS), OpusTags and one
// audio packet per page with granule positions at 48 kHz, and a demuxer that reassembles packets
// from pages that may arrive split across or joined within websocket messages.

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let j = 0; j < 8; j++) r = (r & 0x80000000) ? ((r << 1) ^ 0x04c11db7) : (r << 1);
    t[i] = r >>> 0;
  }
  return t;
})();

// Ogg's CRC-32: polynomial 0x04c11db7, not reflected, initial value 0, no final xor.
export function oggCrc(bytes) {
  let crc = 0;
  for (let i = 0; i < bytes.length; i++) crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ bytes[i]) & 0xff]) >>> 0;
  return crc >>> 0;
}

export class OggOpusMuxer {
  constructor({ serial = 0x64757078, sampleRate = 24000, channels = 1, preSkip = 312 } = {}) {
    this.serial = serial >>> 0;
    this.sequence = 0;
    this.granule = 0;
    this.sampleRate = sampleRate;
    this.channels = channels;
    this.preSkip = preSkip;
  }

  page(packet, headerType, granule) {
    const segments = [];
    let left = packet.length;
    while (left >= 255) { segments.push(255); left -= 255; }
    segments.push(left);
    if (segments.length > 255) throw new Error("Ogg packet too large for one page");
    const out = new Uint8Array(27 + segments.length + packet.length);
    const v = new DataView(out.buffer);
    out.set([0x4f, 0x67, 0x67, 0x53], 0);  // "OggS"
    out[4] = 0;
    out[5] = headerType;
    v.setUint32(6, granule % 0x100000000, true);
    v.setUint32(10, Math.floor(granule / 0x100000000), true);
    v.setUint32(14, this.serial, true);
    v.setUint32(18, this.sequence++, true);
    v.setUint32(22, 0, true);
    out[26] = segments.length;
    out.set(segments, 27);
    out.set(packet, 27 + segments.length);
    v.setUint32(22, oggCrc(out), true);
    return out;
  }

  // The two header pages: OpusHead (beginning of stream) and OpusTags.
  headers() {
    const head = new Uint8Array(19);
    const hv = new DataView(head.buffer);
    head.set(new TextEncoder().encode("OpusHead"), 0);
    head[8] = 1;  // version
    head[9] = this.channels;
    hv.setUint16(10, this.preSkip, true);
    hv.setUint32(12, this.sampleRate, true);  // the input rate, informational
    hv.setInt16(16, 0, true);  // output gain
    head[18] = 0;  // channel mapping family 0 (mono/stereo)
    const vendor = new TextEncoder().encode("duplex web client");
    const tags = new Uint8Array(8 + 4 + vendor.length + 4);
    const tv = new DataView(tags.buffer);
    tags.set(new TextEncoder().encode("OpusTags"), 0);
    tv.setUint32(8, vendor.length, true);
    tags.set(vendor, 12);
    tv.setUint32(12 + vendor.length, 0, true);
    return [this.page(head, 0x02, 0), this.page(tags, 0x00, 0)];
  }

  // One Opus packet as one page; `samples48k` is the packet's duration at 48 kHz (960 for 20 ms).
  audio(packet, samples48k) {
    this.granule += samples48k;
    return this.page(packet, 0x00, this.granule);
  }
}

export class OggDemuxer {
  constructor() {
    this.buffer = new Uint8Array(0);
    this.partial = [];  // segments of a packet continued on the next page
  }

  // Feeds bytes; returns the complete packets they finish, in order.
  push(bytes) {
    if (this.buffer.length === 0) this.buffer = bytes.slice();
    else {
      const b = new Uint8Array(this.buffer.length + bytes.length);
      b.set(this.buffer, 0); b.set(bytes, this.buffer.length);
      this.buffer = b;
    }
    const packets = [];
    let at = 0;
    const buf = this.buffer;
    while (true) {
      // Resynchronise on "OggS" if the stream starts mid-page.
      while (at + 4 <= buf.length && !(buf[at] === 0x4f && buf[at + 1] === 0x67 && buf[at + 2] === 0x67 && buf[at + 3] === 0x53)) at++;
      if (at + 27 > buf.length) break;
      const nseg = buf[at + 26];
      if (at + 27 + nseg > buf.length) break;
      let size = 0;
      for (let i = 0; i < nseg; i++) size += buf[at + 27 + i];
      const end = at + 27 + nseg + size;
      if (end > buf.length) break;
      const page = buf.subarray(at, end);
      const stored = new DataView(page.buffer, page.byteOffset + 22, 4).getUint32(0, true);
      const check = page.slice(); check[22] = check[23] = check[24] = check[25] = 0;
      if (oggCrc(check) !== stored) { at += 4; this.partial = []; continue; }  // damaged: skip
      if ((page[5] & 0x01) === 0) this.partial = [];  // not a continuation: drop any stale fragment
      let offset = 27 + nseg;
      for (let i = 0; i < nseg; i++) {
        const len = page[27 + i];
        this.partial.push(page.subarray(offset, offset + len));
        offset += len;
        if (len < 255) {
          const total = this.partial.reduce((n, s) => n + s.length, 0);
          const packet = new Uint8Array(total);
          let o = 0;
          for (const s of this.partial) { packet.set(s, o); o += s.length; }
          packets.push(packet);
          this.partial = [];
        }
      }
      // Keep fragments alive past the buffer compaction below.
      this.partial = this.partial.map(s => s.slice());
      at = end;
    }
    this.buffer = buf.slice(at);
    return packets;
  }
}
