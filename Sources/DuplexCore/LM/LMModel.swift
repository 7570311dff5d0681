import Foundation

/// What can go wrong while running the LM, each with a message naming the thing.
public enum LMError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A caller-supplied token outside the stream's vocabulary.
    case tokenOutOfRange(stream: String, token: Int, valid: ClosedRange<Int>)
    /// The caller gave the wrong number of user codebooks.
    case wrongStreamCount(got: Int, expected: Int)
    /// NaN or ±Inf among the logits (poisoned weights or activations blew up).
    case nonFiniteLogits(what: String, step: Int)
    /// Classifier-free guidance asked of a model that has no conditioning to guide with.
    case guidanceWithoutConditioning(coefficient: Float)

    public var description: String {
        switch self {
        case let .tokenOutOfRange(stream, token, valid):
            return "token \(token) for \(stream) is out of range (valid: \(valid.lowerBound)…\(valid.upperBound), −1 = no input)"
        case let .wrongStreamCount(got, expected):
            return "got \(got) user codebooks per frame, expected at least \(expected)"
        case let .guidanceWithoutConditioning(coefficient):
            return "classifier-free guidance (cfg \(coefficient)) needs a conditioned model (Hibiki); this one has no conditioners"
        case let .nonFiniteLogits(what, step):
            return "\(what) at step \(step) contain NaN or Inf: the weights are poisoned or the activations overflowed "
                + "(check the checkpoint with `duplex info --scan --model …`)"
        }
    }
}

/// A weight file that does not fit the config, with the loader's list of problems and a hint.
public struct LMLoadError: Error, CustomStringConvertible, Sendable {
    public let underlying: SafetensorsError
    public let hint: String
    public var description: String { "\(underlying)\n\(hint)" }
}

/// Kyutai's Moshi LM (`moshi/models/lm.py` `LMModel`): per step, the embeddings of all streams
/// (text + `nQ` audio) summed, the temporal transformer, `out_norm`, the text head; then the
/// depformer (`Depformer`) for the audio codebooks. Immutable over memory-mapped weights (bf16
/// stays bf16); everything that changes lives in `State`.
public final class LMModel: Sendable {
    public let config: LMConfig
    let textEmb: WeightMatrix          // text_emb.weight [textCard + 1, dim]
    let emb: [WeightMatrix]            // emb.{s}.weight [card + 1, dim], s < nQ
    public let transformer: StreamingTransformer   // transformer.layers.{l}.…
    let outNorm: Norm                  // out_norm.alpha [1, 1, dim]
    let textLinear: WeightMatrix       // text_linear.weight [textCardOut, dim]
    public let depformer: Depformer
    let extraHeads: [WeightMatrix]     // extra_heads.{i}.weight [extraHeadsDim, dim]
    /// Hibiki's conditioning, one `dim` vector per possible value: output_proj(embed[value]),
    /// computed once (Kyutai computes it once per generation, in f32) [values, dim].
    let conditionVectors: [Float]

    /// Asks `store` for every tensor by its checkpoint name (`LMTensorNames`), after the store
    /// has checked its file against `LMTensorNames.table(config)`; problems are collected in the
    /// store (call `store.finish()` after, or use `load`).
    public init(store: WeightStore, config c: LMConfig) {
        typealias N = LMTensorNames
        config = c
        store.expect(N.table(c), layout: N.layout(ofNames: store.names, config: c))
        textEmb = store.matrix(N.textEmb, shape: [c.textCard + 1, c.dim])
        emb = (0..<c.nQ).map { store.matrix(N.emb($0), shape: [c.card + 1, c.dim]) }
        transformer = StreamingTransformer(store: store, names: N.transformer, config: c.temporalTransformer)
        outNorm = Norm(store: store, names: N.outNorm, kind: .rmsNorm(eps: 1e-8), dim: c.dim)
        textLinear = store.matrix(N.textLinear, shape: [c.textCardOut, c.dim])
        depformer = Depformer(store: store, config: c)
        extraHeads = (0..<c.extraHeadsNumHeads).map { store.matrix(N.extraHeads($0), shape: [c.extraHeadsDim, c.dim]) }
        if let lut = c.conditioning {
            let n = N.conditioner(lut.name)
            let embed = store.matrix(n.embed, shape: [lut.bins + 1, lut.dim])
            let project = store.matrix(n.outputProj, shape: [c.dim, lut.dim])
            _ = store.tensor(n.learntPadding, shape: [1, 1, c.dim])
            let usable = lut.usableValues
            var vectors = [Float](repeating: 0, count: usable.count * c.dim)
            var row = [Float](repeating: 0, count: lut.dim)
            if embed.rows == lut.bins + 1, project.rows == c.dim {   // else the store has recorded the problem
                for (v, value) in usable.enumerated() {
                    guard let r = lut.row(of: value) else { continue }
                    row.withUnsafeMutableBufferPointer { embed.copyRow(r, into: $0.baseAddress!) }
                    vectors.withUnsafeMutableBufferPointer { project.apply(row, into: $0.baseAddress! + v * c.dim) }
                }
            }
            conditionVectors = vectors
        } else {
            conditionVectors = []
        }
    }

    /// The index of a conditioning value (Hibiki's "very_good", …), nil when the model has none or lacks it.
    public func conditionIndex(_ value: String) -> Int? { config.conditioning?.usableValues.firstIndex(of: value) }

    /// Loads an LM checkpoint strictly: every tensor the config implies must be there with its
    /// shape, and nothing else may be. Kyutai's PyTorch safetensors, candle's GGUF
    /// (`model.q8.gguf`) and MLX's quantized safetensors (`model.q4.safetensors`) load by their
    /// own names (`LMTensorNames.layout(ofNames:config:)`). With `quantize`, matrices stored as
    /// floats are quantized as they load (`progress` gets bytes done and total).
    public static func load(path: String, config: LMConfig, quantize: QuantizeRecipe? = nil,
                            progress: ((Int, Int) -> Void)? = nil) throws -> LMModel {
        try config.validate()
        let store = try WeightStore(path: path)
        try refuseForeignFormats(store, path: path)
        if let quantize, let stored = store.storedTypes.keys.first(where: { !["F32", "F16", "BF16", "F64"].contains($0) }) {
            // Requantizing would stack a second rounding on the first: say so rather than ignore the option.
            throw SafetensorsError(path: path, .wrongDType, "is already quantized (\(stored)): --quantize \(quantize.name) would round "
                + "its weights a second time; drop --quantize (or quantize the bf16 checkpoint)")
        }
        store.quantizeRecipe = quantize
        store.onQuantizeProgress = progress
        let model = LMModel(store: store, config: config)
        do {
            try store.finish()
        } catch let error as SafetensorsError {
            var hint = "expected the LM of config dim \(config.dim), \(config.numLayers) layers, text_card \(config.textCard), "
                + "n_q \(config.nQ), dep_q \(config.depQ), card \(config.card), depformer \(config.depformerDim)×\(config.depformerNumLayers)"
                + " (read in the \(store.layout.name) layout)"
            if let shape = store.shape(of: LMTensorNames.textEmb), shape.count == 2 {
                hint += "; the file's text_emb is \(shape[0])×\(shape[1])"
            }
            hint += ". Does config.json (or its absence, meaning moshiko 7B) match this checkpoint?"
            throw LMLoadError(underlying: error, hint: hint)
        }
        return model
    }

    /// Files that are no Moshi LM duplex can run, refused by what they hold rather than by a
    /// list of a thousand missing names: a llama-style GGUF, bitsandbytes int8 (PyTorch q8).
    static func refuseForeignFormats(_ store: WeightStore, path: String) throws {
        let names = store.names
        if let foreign = ForeignLayout.detect(names: names), !foreign.what.hasPrefix("a llama.cpp") {
            throw SafetensorsError(path: path, .unexpectedTensor, "is \(foreign.description)")
        }
        if let lora = names.first(where: { $0.contains(".lora_A.") || $0.contains(".lora_B.") || $0.contains(".frozen_W.") }) {
            throw SafetensorsError(path: path, .unexpectedTensor, "holds unmerged LoRA tensors (\(lora), …): duplex runs merged weights; "
                + "merge the adapters into the model first (moshi's replace_lora_with_linear, or moshi-finetune's merged export)")
        }
        if let arch = store.ggufArchitecture, arch != "moshi" {
            throw SafetensorsError(path: path, .unexpectedTensor, "is a GGUF of architecture \"\(arch)\", not a Moshi LM "
                + "(Kyutai's candle files carry no architecture; duplex's say \"moshi\")")
        }
        if names.contains(where: { $0.hasPrefix("blk.") || $0 == "token_embd.weight" || $0 == "output_norm.weight" }) {
            throw SafetensorsError(path: path, .unexpectedTensor, "is a llama.cpp-style model (tensors `blk.N.…`, `token_embd.weight`), "
                + "not a Moshi LM: duplex loads Kyutai's names (PyTorch, candle or MLX layout)")
        }
    }

    // MARK: state

    public struct State: Sendable {
        public var transformer: StreamingTransformer.State
        public var depformer: Depformer.State
        /// The temporal transformer's normalised output for the last step (what the depformer and the text head read) [dim].
        public internal(set) var hidden: [Float]
        /// Text logits of the last step [textCardOut].
        public internal(set) var textLogits: [Float]
        /// The extra heads' softmax of the last step [extraHeadsNumHeads, extraHeadsDim]
        /// (Kyutai STT's semantic voice activity: `step_with_extra_heads`).
        public internal(set) var extraHeads: [Float]
        /// Which conditioning vector is summed into every input (Hibiki), −1 for none.
        public var condition: Int
        var row: [Float]                // [dim] scratch for embedding rows
        /// Temporal steps taken (the next step's position; never wraps): the temporal
        /// transformer's position, the one counter of this stream.
        public var steps: Int { transformer.position }
        /// What the KV rings store (chosen at `makeState`; a reset keeps it).
        public var kvCache: KVCacheType { transformer.layers.first?.attention.kvCache ?? .f32 }

        public mutating func reset() {
            transformer.reset()
            depformer.reset()
        }
    }

    /// A fresh stream. `kvCache` is what both transformers' KV rings store: bf16 by default
    /// (half the bytes a step at a full context reads, and what Kyutai's GPU caches hold); f32
    /// for exact parity with Kyutai's f32 CPU reference; q8 for a quarter of f32's bytes.
    /// `condition`: the conditioning value summed into every step (Hibiki; default its conditioned value).
    public func makeState(kvCache: KVCacheType = .bf16, condition: String? = nil) -> State {
        let value = condition ?? config.conditioning?.conditioned
        return State(transformer: transformer.makeState(maxSteps: 1, kvCache: kvCache), depformer: depformer.makeState(kvCache: kvCache),
                     hidden: [Float](repeating: 0, count: config.dim), textLogits: [Float](repeating: 0, count: config.textCardOut),
                     extraHeads: [Float](repeating: 0, count: config.extraHeadsNumHeads * config.extraHeadsDim),
                     condition: value.flatMap(conditionIndex) ?? -1, row: [Float](repeating: 0, count: config.dim))
    }

    /// Checks one input token of stream `s` (0 = text, 1… = audio): −1 means "no input"
    /// (a zero embedding); otherwise an index into that stream's table.
    func checkToken(_ token: Int32, stream s: Int) throws {
        let last = s == 0 ? config.textCard : config.card
        guard token >= -1 && Int(token) <= last else {
            throw LMError.tokenOutOfRange(stream: s == 0 ? "the text stream" : "audio stream \(s - 1)", token: Int(token),
                                          valid: -1...last)
        }
    }

    /// One temporal step: `tokens[0..<1+nQ]` (text, then every audio stream, already delayed)
    /// → `state.hidden`, `state.textLogits` and `state.extraHeads`. With `embedding` [dim], that
    /// vector is the input instead of the tokens' embedding sum (PersonaPlex's voice prompts are
    /// precomputed input embeddings, Kyutai-fork `forward_embeddings`); the tokens are then unused.
    public func temporalStep(_ tokens: UnsafeBufferPointer<Int32>, state: inout State,
                             embedding: UnsafePointer<Float>? = nil) throws {
        guard tokens.count >= config.numStreams else {
            throw LMError.wrongStreamCount(got: max(0, tokens.count - 1 - config.generatedStreams), expected: config.userStreams)
        }
        if embedding == nil { for s in 0..<config.numStreams { try checkToken(tokens[s], stream: s) } }
        let d = config.dim
        let hibiki = config.kind == .hibiki
        state.hidden.withUnsafeMutableBufferPointer { xBuf in
        state.row.withUnsafeMutableBufferPointer { rowBuf in
            let x = xBuf.baseAddress!, row = rowBuf.baseAddress!
            if let embedding {
                x.update(from: embedding, count: d)
            } else {
                // Embeddings summed (Kyutai's ScaledEmbedding: −1 → zeros, other negatives clamp to row 0).
                x.update(repeating: 0, count: d)
                for s in 0..<config.numStreams {
                    var token = tokens[s]
                    if token == -1 { continue }
                    // Kyutai's Hibiki loader copies text_emb row 3 (PAD) over row 2 (EOS), so an EOS
                    // sampled before the input ends reads as PAD; reading row 3 is the same, copy-free.
                    if hibiki && s == 0 && token == 2 { token = 3 }
                    (s == 0 ? textEmb : emb[s - 1]).copyRow(Int(max(0, token)), into: row)
                    for i in 0..<d { x[i] += row[i] }
                }
            }
            if state.condition >= 0 {
                conditionVectors.withUnsafeBufferPointer { v in
                    let c = v.baseAddress! + state.condition * d
                    for i in 0..<d { x[i] += c[i] }
                }
            }
            transformer.step(x, steps: 1, state: &state.transformer)
            outNorm.apply(x, into: x)
        }
        }
        state.hidden.withUnsafeBufferPointer { h in
            state.textLogits.withUnsafeMutableBufferPointer { textLinear.apply(h.baseAddress!, into: $0.baseAddress!) }
            guard !extraHeads.isEmpty else { return }
            let width = config.extraHeadsDim
            state.extraHeads.withUnsafeMutableBufferPointer { out in
                for (i, head) in extraHeads.enumerated() {
                    let p = out.baseAddress! + i * width
                    head.apply(h.baseAddress!, into: p)
                    Activations.softmax(p, count: width)
                }
            }
        }
    }

    /// Every matrix of the model (projections, heads, embeddings), for reports and tests.
    public var matrices: [WeightMatrix] {
        var all = [textEmb] + emb + [textLinear] + extraHeads
        for layer in transformer.layers + depformer.transformer.layers { all += layer.matrices }
        if config.depQ > 0 { all += depformer.inputs + [depformer.textEmb] + depformer.emb + depformer.heads }
        return all
    }

    /// The matrices one step streams in full, each as often as a step reads it (embeddings,
    /// read one row per token, are not among them): what the bandwidth and compute floors count.
    public var streamedMatrices: [WeightMatrix] {
        var all = [textLinear] + extraHeads + depformer.streamedMatrices
        for layer in transformer.layers { all += layer.matrices }
        return all
    }

    /// How many matrices are stored in each format ("BF16": 230, "Q8_0": 12, …).
    public var matrixFormats: [String: Int] {
        matrices.reduce(into: [:]) { $0[$1.formatName, default: 0] += 1 }
    }

    /// Bytes of weights one step streams (every matrix once; embeddings one row each).
    public var weightBytesPerStep: Int { streamedMatrices.reduce(0) { $0 + $1.byteCount } }
}

extension TransformerLayer {
    /// This layer's matrices (all weight sets).
    var matrices: [WeightMatrix] { attention.inProjs + attention.outProjs + ffnIn + ffnOut }

    /// The matrices of weight set `set` (what one depth step reads).
    func matrices(set: Int) -> [WeightMatrix] {
        func pick(_ m: [WeightMatrix]) -> WeightMatrix { m[min(set, m.count - 1)] }
        return [pick(attention.inProjs), pick(attention.outProjs), pick(ffnIn), pick(ffnOut)]
    }
}
