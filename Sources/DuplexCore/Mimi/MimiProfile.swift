import Foundation

/// Where a stream's codec time goes, block by block (the benchmark's `--profile`). Attach one
/// to a `Mimi.State`; each block boundary then costs one clock read. Preallocated: marking
/// never allocates.
public final class MimiProfile: @unchecked Sendable {
    /// Block names, in pipeline order.
    public let names: [String]
    private var totals: [UInt64]
    private var last: UInt64 = 0
    let stages: Int

    public init(stages: Int) {
        self.stages = stages
        var n = ["encode.seanet.conv_in"]
        for i in 0..<stages { n += ["encode.seanet.stage\(i).resblock", "encode.seanet.stage\(i).downconv"] }
        n += ["encode.seanet.conv_out", "encode.transformer", "encode.downsample", "encode.quantizer",
              "decode.quantizer", "decode.upsample", "decode.transformer", "decode.seanet.conv_in"]
        for i in 0..<stages { n += ["decode.seanet.stage\(i).upconv", "decode.seanet.stage\(i).resblock"] }
        n += ["decode.seanet.conv_out"]
        names = n
        totals = [UInt64](repeating: 0, count: n.count)
    }

    /// The blocks a stream passes through (stage i of the SEANet counted from the signal side).
    enum Block {
        case encoderIn, encoderRes(Int), encoderDown(Int), encoderOut, encoderTransformer, downsample, quantizerEncode
        case quantizerDecode, upsample, decoderTransformer, decoderIn, decoderUp(Int), decoderRes(Int), decoderOut
    }

    /// Index of a block in `names`.
    private func index(_ b: Block) -> Int {
        let encoderOut = 1 + 2 * stages
        let decoderIn = encoderOut + 7
        switch b {
        case .encoderIn: return 0
        case .encoderRes(let i): return 1 + 2 * i
        case .encoderDown(let i): return 2 + 2 * i
        case .encoderOut: return encoderOut
        case .encoderTransformer: return encoderOut + 1
        case .downsample: return encoderOut + 2
        case .quantizerEncode: return encoderOut + 3
        case .quantizerDecode: return encoderOut + 4
        case .upsample: return encoderOut + 5
        case .decoderTransformer: return encoderOut + 6
        case .decoderIn: return decoderIn
        case .decoderUp(let i): return decoderIn + 1 + 2 * i
        case .decoderRes(let i): return decoderIn + 2 + 2 * i
        case .decoderOut: return decoderIn + 1 + 2 * stages
        }
    }

    @inline(__always)
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Starts timing (the next `mark` charges the time since now).
    @inline(__always)
    func start() { last = MimiProfile.now() }

    /// Charges the time since the previous mark to `block`.
    @inline(__always)
    func mark(_ block: Block) {
        let t = MimiProfile.now()
        totals[index(block)] &+= t &- last
        last = t
    }

    /// Seconds spent in each block so far.
    public var seconds: [Double] { totals.map { Double($0) / 1e9 } }

    public func reset() {
        for i in totals.indices { totals[i] = 0 }
    }
}
