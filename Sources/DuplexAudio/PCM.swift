/// Sample formats duplex reads and writes on pipes and in files.
public enum SampleFormat: String, Sendable, CaseIterable {
    /// Signed 16-bit little-endian integers.
    case s16le
    /// 32-bit little-endian IEEE floats.
    case f32le

    public var bytesPerSample: Int { self == .s16le ? 2 : 4 }
}
