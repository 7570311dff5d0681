import Foundation

/// RIFF/WAVE files: reads PCM 8/16/24/32-bit and IEEE float 32/64 (WAVE_FORMAT_EXTENSIBLE too), any
/// channel count; writes 16-bit PCM or 32-bit float. Samples are Float in [-1, 1], interleaved.
public struct WAV: Sendable, Equatable {
    public var sampleRate: Int
    public var channels: Int
    /// Interleaved frames: count = frames × channels.
    public var samples: [Float]

    public init(sampleRate: Int, channels: Int, samples: [Float]) {
        self.sampleRate = sampleRate
        self.channels = channels
        self.samples = samples
    }

    public var frameCount: Int { channels > 0 ? samples.count / channels : 0 }

    /// The average of all channels.
    public func mono() -> [Float] {
        guard channels > 1 else { return samples }
        var out = [Float](repeating: 0, count: frameCount)
        let scale = 1 / Float(channels)
        for f in 0..<frameCount {
            var s: Float = 0
            for c in 0..<channels { s += samples[f * channels + c] }
            out[f] = s * scale
        }
        return out
    }

    public struct FormatError: Error, CustomStringConvertible, Sendable {
        public let path: String
        public let message: String
        public var description: String { "\(path): \(message)" }
    }

    public static func read(_ path: String) throws -> WAV {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw FormatError(path: path, message: "cannot read: \(error.localizedDescription)")
        }
        return try decode(data, path: path)
    }

    public static func decode(_ data: Data, path: String = "<memory>") throws -> WAV {
        let bytes = [UInt8](data)
        func u32(_ o: Int) -> UInt32 { UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24 }
        func u16(_ o: Int) -> UInt16 { UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8 }
        guard bytes.count >= 12, bytes[0..<4] == [0x52, 0x49, 0x46, 0x46][...], bytes[8..<12] == [0x57, 0x41, 0x56, 0x45][...] else {
            throw FormatError(path: path, message: "not a WAV file (no RIFF/WAVE header)")
        }
        var offset = 12
        var format: (tag: UInt16, channels: Int, rate: Int, bits: Int)?
        var body: Range<Int>?
        while offset + 8 <= bytes.count {
            let id = String(decoding: bytes[offset..<(offset + 4)], as: UTF8.self)
            let size = Int(u32(offset + 4))
            let start = offset + 8
            // Streams written live often leave the data size as 0 or 0xFFFFFFFF: take what is there.
            let end = min(bytes.count, size == 0 || size == 0xFFFF_FFFF ? bytes.count : start + size)
            if id == "fmt " {
                guard end - start >= 16 else { throw FormatError(path: path, message: "fmt chunk too short") }
                var tag = u16(start)
                if tag == 0xFFFE, end - start >= 26 { tag = u16(start + 24) }  // WAVE_FORMAT_EXTENSIBLE subformat
                format = (tag, Int(u16(start + 2)), Int(u32(start + 4)), Int(u16(start + 14)))
            } else if id == "data" {
                body = start..<end
                if format != nil { break }
            }
            offset = start + size + (size & 1)
            if size == 0xFFFF_FFFF { break }
        }
        guard let f = format else { throw FormatError(path: path, message: "no fmt chunk") }
        guard let range = body else { throw FormatError(path: path, message: "no data chunk") }
        guard f.channels > 0, f.rate > 0 else { throw FormatError(path: path, message: "invalid channel count or sample rate") }
        let width = f.bits / 8
        let supported = (f.tag == 1 && [8, 16, 24, 32].contains(f.bits)) || (f.tag == 3 && [32, 64].contains(f.bits))
        guard supported else {
            throw FormatError(path: path, message: "unsupported encoding (format tag \(f.tag), \(f.bits) bits): use PCM 8/16/24/32-bit or float 32/64-bit")
        }
        let count = (range.count / (width * f.channels)) * f.channels
        var samples = [Float](repeating: 0, count: count)
        data.withUnsafeBytes { raw in
            for i in 0..<count {
                let o = range.lowerBound + i * width
                switch (f.tag, f.bits) {
                case (1, 8): samples[i] = (Float(raw[o]) - 128) / 128
                case (1, 16): samples[i] = Float(Int16(bitPattern: UInt16(raw[o]) | UInt16(raw[o + 1]) << 8)) / 32768
                case (1, 24):
                    let v = Int32(bitPattern: (UInt32(raw[o]) << 8) | (UInt32(raw[o + 1]) << 16) | (UInt32(raw[o + 2]) << 24)) >> 8
                    samples[i] = Float(v) / 8_388_608
                case (1, 32): samples[i] = Float(raw.loadUnaligned(fromByteOffset: o, as: Int32.self)) / 2_147_483_648
                case (3, 32): samples[i] = raw.loadUnaligned(fromByteOffset: o, as: Float.self)
                default: samples[i] = Float(raw.loadUnaligned(fromByteOffset: o, as: Double.self))
                }
            }
        }
        return WAV(sampleRate: f.rate, channels: f.channels, samples: samples)
    }

    public enum Encoding: Sendable { case pcm16, float32 }

    public func encoded(_ encoding: Encoding = .pcm16) -> Data {
        let bits = encoding == .pcm16 ? 16 : 32
        let dataBytes = samples.count * bits / 8
        var out = Data(capacity: 44 + dataBytes)
        func put32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func put16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        out.append(contentsOf: Array("RIFF".utf8)); put32(UInt32(36 + dataBytes)); out.append(contentsOf: Array("WAVE".utf8))
        out.append(contentsOf: Array("fmt ".utf8)); put32(16)
        put16(encoding == .pcm16 ? 1 : 3); put16(UInt16(channels)); put32(UInt32(sampleRate))
        put32(UInt32(sampleRate * channels * bits / 8)); put16(UInt16(channels * bits / 8)); put16(UInt16(bits))
        out.append(contentsOf: Array("data".utf8)); put32(UInt32(dataBytes))
        switch encoding {
        case .pcm16:
            let ints = samples.map { PCM.int16(from: $0).littleEndian }
            ints.withUnsafeBytes { out.append(contentsOf: $0) }
        case .float32:
            samples.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        return out
    }

    public func write(to path: String, encoding: Encoding = .pcm16) throws {
        do { try encoded(encoding).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw FormatError(path: path, message: "cannot write: \(error.localizedDescription)")
        }
    }
}

public enum PCM {
    /// Float in [-1, 1] → Int16 with the same 1/32768 scale as reading (so a round trip is exact),
    /// clamped to the Int16 range (NaN → 0).
    @inline(__always)
    public static func int16(from x: Float) -> Int16 {
        guard x.isFinite else { return 0 }
        let scaled = (x * 32768).rounded()
        return Int16(max(-32768, min(32767, scaled)))
    }

    @inline(__always)
    public static func float(from x: Int16) -> Float { Float(x) / 32768 }
}
