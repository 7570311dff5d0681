import Foundation

/// What a weight file holds, recognised from Kyutai's own tensor names.
public enum CheckpointKind: String, Sendable {
    case mimi = "Mimi codec"
    case moshiLM = "Moshi LM"
    case moshiLMCandle = "Moshi LM (candle pre-split layout)"
    case unknown = "unrecognised"

    public static func detect(names: some Collection<String>) -> CheckpointKind {
        let set = Set(names)
        if set.contains("encoder.model.0.conv.conv.weight") || set.contains("encoder.model.0.conv.conv.weight_v"),
           names.contains(where: { $0.hasPrefix("quantizer.rvq_first.") }) {
            return .mimi
        }
        if set.contains("text_emb.weight") && set.contains("out_norm.alpha") {
            if set.contains("depformer_in.0.weight") || !names.contains(where: { $0.hasPrefix("depformer.0.") }) {
                return .moshiLM
            }
            return .moshiLMCandle
        }
        return .unknown
    }
}

/// Header-level statistics of one safetensors file.
public struct CheckpointSummary: Sendable {
    public let path: String
    public let tensorCount: Int
    public let parametersByDType: [DType: Int]
    public let bytes: Int
    public let kind: CheckpointKind
    public let metadata: [String: String]

    public init(file: SafetensorsFile) {
        path = file.path
        tensorCount = file.entries.count
        var byType: [DType: Int] = [:]
        var total = 0
        for e in file.entries.values {
            byType[e.dtype, default: 0] += e.elementCount
            total += e.range.count
        }
        parametersByDType = byType
        bytes = total
        kind = CheckpointKind.detect(names: file.entries.keys)
        metadata = file.metadata
    }

    public var parameterCount: Int { parametersByDType.values.reduce(0, +) }
}

/// Value statistics from reading every element (finds NaN/Inf poisoning).
public struct ValueScan: Sendable {
    public var values = 0
    public var nanCount = 0
    public var infCount = 0
    public var minimum = Float.infinity
    public var maximum = -Float.infinity
    public var badTensors: [String] = []

    public init() {}

    /// Scans float tensors of `file`; `progress(bytesDone, bytesTotal)` is called after every
    /// chunk of values (a single tensor may be gigabytes), the caller throttles what it draws.
    public static func scan(_ file: SafetensorsFile, progress: (Int, Int) -> Void = { _, _ in }) -> ValueScan {
        var scan = ValueScan()
        let entries = file.names.compactMap { file.entries[$0] }.filter { $0.dtype.isFloatingPoint }
        let total = entries.reduce(0) { $0 + $1.range.count }
        var done = 0
        let chunk = 1 << 18
        var buffer = [Float](repeating: 0, count: chunk)
        for e in entries {
            guard let src = file.bytes(e).baseAddress else { continue }
            let n = e.elementCount
            let size = e.dtype.byteSize
            var bad = 0
            buffer.withUnsafeMutableBufferPointer { buf in
                let b = buf.baseAddress!
                var start = 0
                while start < n {
                    let m = min(chunk, n - start)
                    SafetensorsFile.widen(src + start * size, e.dtype, into: b, count: m)
                    var lo = scan.minimum, hi = scan.maximum
                    for i in 0..<m {
                        let v = b[i]
                        if v.isFinite {
                            lo = min(lo, v)
                            hi = max(hi, v)
                        } else if v.isNaN {
                            scan.nanCount += 1; bad += 1
                        } else {
                            scan.infCount += 1; bad += 1
                        }
                    }
                    scan.minimum = lo
                    scan.maximum = hi
                    start += m
                    progress(done + start * size, total)
                }
            }
            scan.values += n
            if bad > 0 { scan.badTensors.append(e.name) }
            done += e.range.count
        }
        if entries.isEmpty { progress(0, 0) }
        return scan
    }
}
