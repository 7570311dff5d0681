import Foundation

/// One checkpoint tensor of a model: its name in Kyutai's released files, its shape for a given
/// config, what kind of weight it is and what it does. The tables built from these
/// (`MimiTensorNames.table`, `LMTensorNames.table`) are the source of truth for loading (the
/// `WeightStore` checks a file against them), for `duplex info` and for random weights.
/// Room for other formats: a later column can carry a tensor's GGUF/MLX name or quantization.
public struct TensorSpec: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// A dense projection [out, in] (a 1×1 conv weight [out, in, 1] too).
        case matrix
        /// A lookup table [vocabulary + 1, dim]: one row read per token.
        case embedding
        /// A conv kernel [out, in, kernel]; files saved with weight norm may hold `weight_g`/`weight_v`.
        case conv
        /// A transposed conv kernel [in, out, kernel] (depthwise: [channels, 1, kernel]).
        case convTranspose
        /// A norm's scale (LayerNorm weight, RMSNorm alpha).
        case norm
        /// An additive bias (convs, LayerNorm).
        case bias
        /// A per-channel residual scale (`layer_scale_{1,2}.scale`).
        case layerScale
        /// A codebook's `embedding_sum` [bins, dim] (centroids = sum / usage).
        case codebookSum
        /// A codebook's `cluster_usage` [bins].
        case codebookUsage
        /// A buffer the model does not read (`_initialized`).
        case buffer
    }

    /// What element types a file may store the tensor as.
    public enum DTypeClass: String, Sendable {
        /// F32, F16, BF16 or F64 (converted on load; bf16 matrices are used as stored).
        case float
        /// Anything: the tensor is never read (Kyutai's loaders ignore it too).
        case any

        public func accepts(_ dtype: DType) -> Bool { self == .any || dtype.isFloatingPoint }

        /// Quantized formats are accepted for matrices and embeddings only (norms, biases and
        /// codebooks are read as floats).
        public func accepts(_ stored: StoredType, kind: Kind) -> Bool {
            switch stored {
            case .plain(let d): accepts(d)
            case .quantized: self == .any || kind == .matrix || kind == .embedding
            }
        }
    }

    public var name: String
    public var shape: [Int]
    public var kind: Kind
    public var dtype: DTypeClass
    /// A short human description, e.g. "temporal layer 3 attention in-projection (q,k,v stacked)".
    public var role: String
    /// False for tensors a file may leave out (`_initialized`).
    public var required: Bool

    public init(_ name: String, _ shape: [Int], _ kind: Kind, role: String, dtype: DTypeClass = .float, required: Bool = true) {
        self.name = name
        self.shape = shape
        self.kind = kind
        self.role = role
        self.dtype = dtype
        self.required = required
    }

    public var elementCount: Int { shape.reduce(1, *) }

    /// Conv kernels may come from a file saved with weight norm: `<stem>weight_g` [shape₀, 1, 1]
    /// and `<stem>weight_v` [shape], folded at load (`ConvWeights`).
    public var weightNormPair: (g: TensorSpec, v: TensorSpec)? {
        guard kind == .conv || kind == .convTranspose, name.hasSuffix("weight") else { return nil }
        let stem = String(name.dropLast("weight".count))
        return (TensorSpec(stem + "weight_g", [shape.first ?? 0, 1, 1], .norm, role: role + ", weight-norm magnitude"),
                TensorSpec(stem + "weight_v", shape, kind, role: role + ", weight-norm direction"))
    }
}

/// Every checkpoint tensor of one model for one config, in load order.
public struct TensorTable: Sendable {
    /// "Mimi", "Moshi LM".
    public let model: String
    public let specs: [TensorSpec]
    private let index: [String: Int]

    public init(model: String, specs: [TensorSpec]) {
        self.model = model
        self.specs = specs
        var index: [String: Int] = [:]
        for (i, s) in specs.enumerated() {
            precondition(index[s.name] == nil, "\(model) tensor table names \(s.name) twice")
            index[s.name] = i
        }
        self.index = index
    }

    public subscript(name: String) -> TensorSpec? { index[name].map { specs[$0] } }
    public var names: [String] { specs.map(\.name) }
    public var parameterCount: Int { specs.reduce(0) { $0 + $1.elementCount } }

    /// The spec a requested name stands for: a table entry, or one half of a conv's weight-norm pair.
    public func resolve(_ name: String) -> TensorSpec? {
        if let s = self[name] { return s }
        for suffix in ["weight_g", "weight_v"] where name.hasSuffix(suffix) {
            if let pair = self[String(name.dropLast(suffix.count)) + "weight"]?.weightNormPair {
                return suffix == "weight_g" ? pair.g : pair.v
            }
        }
        return nil
    }

    /// What a file holds against this table.
    public struct Comparison: Sendable {
        /// Required entries the file lacks (with no weight-norm pair standing in).
        public var missing: [TensorSpec] = []
        /// Optional entries the file lacks (no problem).
        public var absentOptional: [TensorSpec] = []
        /// File tensors that are no entry of the table, sorted by name.
        public var unexpected: [(name: String, shape: [Int], dtype: StoredType)] = []
        public var misshaped: [(spec: TensorSpec, shape: [Int])] = []
        public var wrongType: [(spec: TensorSpec, dtype: StoredType)] = []
        /// Conv entries present as a weight-norm pair.
        public var weightNorm: [TensorSpec] = []
        /// Entries present with the right shape and type.
        public var matched = 0

        public var isExact: Bool { missing.isEmpty && unexpected.isEmpty && misshaped.isEmpty && wrongType.isEmpty }

        /// The loader's problems, worded as `WeightStore` always worded them (table order, then
        /// the unexpected tensors by name).
        public var problems: [SafetensorsError.Problem] {
            var all: [SafetensorsError.Problem] = []
            for s in missing { all.append(.init(kind: .missingTensor, message: "missing tensor \(s.name) (expected shape \(s.shape))")) }
            for (s, shape) in misshaped { all.append(.init(kind: .wrongShape, message: "\(s.name) has shape \(shape), expected \(s.shape)")) }
            for (s, dtype) in wrongType {
                let quantizedToo = s.kind == .matrix || s.kind == .embedding ? " or a quantized format duplex implements" : ""
                all.append(.init(kind: .wrongDType,
                                 message: "\(s.name) is stored as \(dtype.rawValue), expected a float type (F32, F16, BF16 or F64)\(quantizedToo)"))
            }
            for u in unexpected {
                all.append(.init(kind: .unexpectedTensor, message: "unexpected tensor \(u.name) \(u.shape) (not part of this model)"))
            }
            return all
        }
    }

    /// Compares a file's tensors (name → shape, dtype) with the table.
    public func compare(_ entries: [String: (shape: [Int], dtype: DType)]) -> Comparison {
        compare(entries.mapValues { (shape: $0.shape, dtype: StoredType.plain($0.dtype)) })
    }

    /// Compares a file's tensors (name → shape, how stored) with the table.
    public func compare(_ entries: [String: (shape: [Int], dtype: StoredType)]) -> Comparison {
        var c = Comparison()
        var accounted: Set<String> = []
        func check(_ s: TensorSpec, _ e: (shape: [Int], dtype: StoredType)) -> Bool {
            var ok = true
            if e.shape != s.shape { c.misshaped.append((s, e.shape)); ok = false }
            if !s.dtype.accepts(e.dtype, kind: s.kind) { c.wrongType.append((s, e.dtype)); ok = false }
            return ok
        }
        for s in specs {
            if let e = entries[s.name] {
                accounted.insert(s.name)
                if check(s, e) { c.matched += 1 }
            } else if let pair = s.weightNormPair, let v = entries[pair.v.name] {
                accounted.insert(pair.v.name)
                c.weightNorm.append(s)
                var ok = check(pair.v, v)
                if let g = entries[pair.g.name] {
                    accounted.insert(pair.g.name)
                    ok = check(pair.g, g) && ok
                } else {
                    c.missing.append(pair.g)
                    ok = false
                }
                if ok { c.matched += 1 }
            } else if s.required {
                c.missing.append(s)
            } else {
                c.absentOptional.append(s)
            }
        }
        for name in entries.keys.sorted() where !accounted.contains(name) {
            c.unexpected.append((name, entries[name]!.shape, entries[name]!.dtype))
        }
        return c
    }

    public func compare(_ file: SafetensorsFile) -> Comparison {
        compare(file.entries.mapValues { (shape: $0.shape, dtype: $0.dtype) })
    }
}

// MARK: names of the blocks both models share (one place for their leaf names)

/// A conv's tensors under `prefix` (Kyutai's `….conv.conv.` / `….convtr.convtr.`).
public struct ConvTensorNames: Sendable, Equatable {
    public let prefix: String
    public init(_ prefix: String) { self.prefix = prefix }
    public var weight: String { prefix + "weight" }
    public var bias: String { prefix + "bias" }
    public var weightG: String { prefix + "weight_g" }
    public var weightV: String { prefix + "weight_v" }

    /// `shape` as stored ([out, in, K], or [in, out, K] for a transposed conv); `bias`: its
    /// output channels, nil for a conv without bias.
    func specs(shape: [Int], transposed: Bool = false, bias channels: Int?, role: String) -> [TensorSpec] {
        var s = [TensorSpec(weight, shape, transposed ? .convTranspose : .conv, role: role + " kernel")]
        if let channels { s.append(TensorSpec(bias, [channels], .bias, role: role + " bias")) }
        return s
    }
}

/// A norm's tensors: `<prefix>.weight` and `.bias` (LayerNorm) or `<prefix>.alpha` (RMSNorm).
public struct NormTensorNames: Sendable, Equatable {
    public let prefix: String
    public init(_ prefix: String) { self.prefix = prefix }
    public var weight: String { prefix + ".weight" }
    public var bias: String { prefix + ".bias" }
    public var alpha: String { prefix + ".alpha" }

    func specs(_ kind: Norm.Kind, dim: Int, role: String) -> [TensorSpec] {
        switch kind {
        case .layerNorm:
            [TensorSpec(weight, [dim], .norm, role: role + " (LayerNorm) scale"), TensorSpec(bias, [dim], .bias, role: role + " (LayerNorm) bias")]
        case .rmsNorm:
            [TensorSpec(alpha, [1, 1, dim], .norm, role: role + " (RMSNorm) scale")]
        }
    }
}

/// Attention projections under `<layer>self_attn.`, by the legacy names Kyutai's files use
/// (moshi 0.2.13 modules call them `in_projs.{s}.weight` / `out_projs.{s}.weight`; its load hook
/// splits the stacked file tensors step-major).
public struct AttentionTensorNames: Sendable, Equatable {
    public let prefix: String
    public init(_ prefix: String) { self.prefix = prefix }
    public var inProj: String { prefix + "in_proj_weight" }
    public var outProj: String { prefix + "out_proj.weight" }
}

/// One transformer layer's tensors under `prefix` (`….layers.<l>.`).
public struct TransformerLayerTensorNames: Sendable, Equatable {
    public let prefix: String
    public init(_ prefix: String) { self.prefix = prefix }
    public var norm1: NormTensorNames { NormTensorNames(prefix + "norm1") }
    public var norm2: NormTensorNames { NormTensorNames(prefix + "norm2") }
    public var attention: AttentionTensorNames { AttentionTensorNames(prefix + "self_attn.") }
    public var linear1: String { prefix + "linear1.weight" }
    public var linear2: String { prefix + "linear2.weight" }
    /// The gated FFN of weight set `set` (nil: the single set, `gating.`).
    public func gatingIn(_ set: Int?) -> String { prefix + (set.map { "gating.\($0)." } ?? "gating.") + "linear_in.weight" }
    public func gatingOut(_ set: Int?) -> String { prefix + (set.map { "gating.\($0)." } ?? "gating.") + "linear_out.weight" }
    public var layerScale1: String { prefix + "layer_scale_1.scale" }
    public var layerScale2: String { prefix + "layer_scale_2.scale" }

    /// The gating sets of a config: one unnamed set, or one per step.
    static func gatingSets(_ c: TransformerConfig) -> [Int?] { c.weightsPerStep > 1 ? (0..<c.weightSets).map { $0 } : [nil] }

    func specs(_ c: TransformerConfig, role: String) -> [TensorSpec] {
        let d = c.dim, steps = c.weightSets
        let perStep = steps > 1 ? ", \(steps) depth-step weight sets stacked step-major" : ""
        var s = norm1.specs(c.norm, dim: d, role: role + " pre-attention norm")
        s += norm2.specs(c.norm, dim: d, role: role + " pre-FFN norm")
        s.append(TensorSpec(attention.inProj, [steps * 3 * d, d], .matrix, role: role + " attention in-projection (q,k,v stacked\(perStep))"))
        s.append(TensorSpec(attention.outProj, [steps * d, d], .matrix, role: role + " attention out-projection\(perStep)"))
        switch c.feedForward {
        case .gelu(let hidden):
            s.append(TensorSpec(linear1, [hidden, d], .matrix, role: role + " FFN in (GELU)"))
            s.append(TensorSpec(linear2, [d, hidden], .matrix, role: role + " FFN out"))
        case .siluGated(let hidden):
            for set in Self.gatingSets(c) {
                let which = set.map { " of depth step \($0)" } ?? ""
                s.append(TensorSpec(gatingIn(set), [2 * hidden, d], .matrix, role: role + " gated FFN in\(which) (SiLU gate, value stacked)"))
                s.append(TensorSpec(gatingOut(set), [d, hidden], .matrix, role: role + " gated FFN out\(which)"))
            }
        }
        if c.layerScale {
            s.append(TensorSpec(layerScale1, [d], .layerScale, role: role + " attention layer scale"))
            s.append(TensorSpec(layerScale2, [d], .layerScale, role: role + " FFN layer scale"))
        }
        return s
    }
}

/// A transformer stack's tensors under `prefix` (`<prefix>layers.<l>.…`).
public struct TransformerTensorNames: Sendable, Equatable {
    public let prefix: String
    public init(_ prefix: String) { self.prefix = prefix }
    public func layer(_ l: Int) -> TransformerLayerTensorNames { TransformerLayerTensorNames(prefix + "layers.\(l).") }

    func specs(_ c: TransformerConfig, role: String) -> [TensorSpec] {
        (0..<c.numLayers).flatMap { layer($0).specs(c, role: "\(role) layer \($0)") }
    }
}
