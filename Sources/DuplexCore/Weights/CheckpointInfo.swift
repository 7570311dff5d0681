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

/// Another port's layout of a Kyutai model, recognised by its names so the user is sent to the
/// repository duplex reads instead of getting a thousand "missing tensor" lines.
public struct ForeignLayout: Sendable, Equatable {
    /// What the file is, in words.
    public let what: String
    /// What to download instead.
    public let use: String

    public var description: String { "\(what); duplex reads Kyutai's own names: \(use)" }

    public static func detect(names: some Collection<String>) -> ForeignLayout? {
        func any(_ test: (String) -> Bool) -> Bool { names.contains(where: test) }
        if any({ $0.hasSuffix(".weight_scb") || $0.hasSuffix(".SCB") }) {
            return ForeignLayout(what: "Kyutai's bitsandbytes int8 export (kyutai/moshiko-pytorch-q8, CUDA only)",
                                 use: "use kyutai/moshiko-candle-q8 (model.q8.gguf), an MLX q4/q8 repo, or kyutai/moshiko-pytorch-bf16 with --quantize")
        }
        // Hugging Face transformers' conversions (MimiModel, MoshiForConditionalGeneration, KyutaiSpeechToText).
        let hfMimi = any { $0.hasPrefix("encoder.layers.") || $0.contains("semantic_residual_vector_quantizer") || $0.hasSuffix(".embed_sum") }
        if hfMimi && !any({ $0.hasPrefix("model.") || $0.hasPrefix("codec_model.") }) {
            return ForeignLayout(what: "Hugging Face transformers' Mimi (kyutai/mimi, MimiModel)",
                                 use: "take tokenizer-e351c8d8-checkpoint125.safetensors from kyutai/moshiko-pytorch-bf16 (the same weights, Kyutai's names)")
        }
        if any({ $0.hasPrefix("codec_model.") }) && any({ $0.contains(".self_attn.q_proj.") }) {
            return ForeignLayout(what: "Hugging Face transformers' Kyutai STT (kyutai/stt-*-trfs, KyutaiSpeechToTextForConditionalGeneration)",
                                 use: "use kyutai/stt-2.6b-en or kyutai/stt-1b-en_fr (model.safetensors + config.json)")
        }
        if any({ $0.hasPrefix("depth_decoder.") }) || (any({ $0.hasPrefix("model.decoder.layers.") }) && any({ $0.contains(".q_proj.") })) {
            return ForeignLayout(what: "Hugging Face transformers' Moshi (kmhf/hf-moshiko, MoshiForConditionalGeneration)",
                                 use: "use kyutai/moshiko-pytorch-bf16 or kyutai/moshika-pytorch-bf16")
        }
        if any({ $0.hasPrefix("blk.") || $0 == "token_embd.weight" }) {
            return ForeignLayout(what: "a llama.cpp-style model (blk.N.…, token_embd.weight), not a Moshi LM",
                                 use: "for a quantized Moshi use kyutai/moshiko-candle-q8 or `duplex quantize`")
        }
        return nil
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
    /// Another port's layout the file is in, if recognised.
    public let foreign: ForeignLayout?

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
        foreign = ForeignLayout.detect(names: file.entries.keys)
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

/// A weight file checked against the tensor table of the model it holds (`duplex info`).
public struct TableCheck: Sendable {
    public let table: TensorTable
    /// Which config the table was built for, in words.
    public let configSource: String
    public let comparison: TensorTable.Comparison

    public init(table: TensorTable, configSource: String, file: SafetensorsFile) {
        self.table = table
        self.configSource = configSource
        comparison = table.compare(file)
    }

    /// The table for `file` by its recognised kind: Mimi by the config its metadata records
    /// (files made by duplex's tools) or the released one; the LM by `lmConfig` (a folder's
    /// config.json), else its metadata's config, else moshiko 7B, as Kyutai assumes. Nil for other kinds.
    public static func check(_ file: SafetensorsFile, kind: CheckpointKind, lmConfig: (LMConfig, String)? = nil) -> TableCheck? {
        switch kind {
        case .mimi:
            if let json = file.metadata["config"], let c = try? MimiConfig(kyutaiJSON: json) {
                return TableCheck(table: MimiTensorNames.table(c), configSource: "the config in the file's metadata", file: file)
            }
            return TableCheck(table: MimiTensorNames.table(.released()), configSource: "the released Mimi", file: file)
        case .moshiLM, .moshiLMCandle:
            var fromMetadata: (LMConfig, String)?
            if let json = file.metadata["config"], let c = try? LMConfig(kyutaiConfigJSON: Data(json.utf8)) {
                fromMetadata = (c, "the config in the file's metadata")
            }
            let (c, source) = lmConfig ?? fromMetadata ?? (.moshi7B, "moshiko 7B (no config.json)")
            return TableCheck(table: LMTensorNames.table(c), configSource: source, file: file)
        case .unknown:
            return nil
        }
    }

    /// One line per problem kind and entry, at most `limit` of each kind (nil: all).
    public func reportLines(limit: Int? = 10) -> [String] {
        let c = comparison
        var lines: [String] = []
        func add<T>(_ items: [T], _ label: String, _ line: (T) -> String) {
            let shown = limit.map { Array(items.prefix($0)) } ?? items
            for item in shown { lines.append("\(label) \(line(item))") }
            if shown.count < items.count { lines.append("\(label) … and \(items.count - shown.count) more") }
        }
        add(c.missing, "missing:   ") { "\($0.name) \($0.shape) — \($0.role)" }
        add(c.misshaped, "misshaped: ") { "\($0.spec.name) is \($0.shape), the table says \($0.spec.shape) — \($0.spec.role)" }
        add(c.wrongType, "wrong type:") { "\($0.spec.name) is \($0.dtype.rawValue), expected a float type — \($0.spec.role)" }
        add(c.unexpected, "extra:     ") { "\($0.name) \($0.shape) \($0.dtype.rawValue) (no entry of the table)" }
        return lines
    }

    /// Every tensor: table entries in load order (name, shape, dtype as stored, role), then the
    /// file's tensors that are no entry.
    public func listing(_ file: SafetensorsFile) -> [(name: String, shape: String, dtype: String, role: String)] {
        var rows: [(name: String, shape: String, dtype: String, role: String)] = []
        for s in table.specs {
            if let e = file.entries[s.name] {
                let note = e.shape == s.shape ? "" : " [MISSHAPED: the table says \(s.shape)]"
                rows.append((s.name, "\(e.shape)", e.dtype.rawValue, s.role + note))
            } else if let pair = s.weightNormPair, let v = file.entries[pair.v.name] {
                rows.append((pair.v.name, "\(v.shape)", v.dtype.rawValue, pair.v.role))
                if let g = file.entries[pair.g.name] { rows.append((pair.g.name, "\(g.shape)", g.dtype.rawValue, pair.g.role)) }
            } else {
                rows.append((s.name, "\(s.shape)", "-", s.role + (s.required ? " [MISSING]" : " [absent, optional]")))
            }
        }
        for u in comparison.unexpected { rows.append((u.name, "\(u.shape)", u.dtype.rawValue, "[EXTRA: no entry of the \(table.model) table]")) }
        return rows
    }
}
