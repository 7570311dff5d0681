/// Sample formats duplex reads and writes on pipes and in files.
public enum SampleFormat: String, Sendable, CaseIterable {
    /// Signed 16-bit little-endian integers.
    case s16le
    /// 32-bit little-endian IEEE floats.
    case f32le

    public var bytesPerSample: Int { self == .s16le ? 2 : 4 }
}

extension SampleFormat {
    /// Reads `count` little-endian samples from `raw` as floats in [-1, 1] (s16le: x / 32768, as
    /// WAV reading does). Non-finite floats become 0: NaN/Inf would poison a codec's history.
    public func decode(_ raw: UnsafeRawBufferPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch self {
        case .s16le:
            for i in 0..<count { out[i] = PCM.float(from: Int16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
        case .f32le:
            for i in 0..<count {
                let v = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                out[i] = v.isFinite ? v : 0
            }
        }
    }

    /// Writes `count` floats as little-endian samples into `raw` (s16le: rounded and clipped).
    public func encode(_ samples: UnsafePointer<Float>, count: Int, into raw: UnsafeMutableRawBufferPointer) {
        switch self {
        case .s16le:
            for i in 0..<count { raw.storeBytes(of: PCM.int16(from: samples[i]).littleEndian, toByteOffset: 2 * i, as: Int16.self) }
        case .f32le:
            for i in 0..<count { raw.storeBytes(of: samples[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
        }
    }
}
