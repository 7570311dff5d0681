import Foundation

/// The depth transformer (Kyutai's depformer, `LMModel.forward_depformer` driven by
/// `LMGen.depformer_step`): after the text token of a frame is sampled, generates the frame's
/// `depQ` audio codebooks one after another. Depth step k reads
///   depformer_in.{k}(h) + (k == 0 ? depformer_text_emb(text) : depformer_emb.{k−1}(a_{k−1})),
/// runs the depformer transformer on that single position (weight set k, causal over the depth
/// steps of this frame only, no positional embedding), and `linears.{k}` gives the logits of a_k.
/// The transformer's KV ring is cleared at the start of every frame: Kyutai enters a fresh
/// streaming context for each `depformer_step`. It runs `generatedStreams` steps: all of dep_q,
/// except PersonaPlex's, whose last 8 would predict the user (outputs nobody reads; since the
/// steps are causal, skipping them changes nothing before them). STT has none (dep_q 0).
public final class Depformer: Sendable {
    public let config: LMConfig
    let inputs: [WeightMatrix]        // depformer_in.{k}.weight [depformerDim, dim] (one, or one per step)
    let textEmb: WeightMatrix         // depformer_text_emb.weight [textCard + 1, depformerDim]
    let emb: [WeightMatrix]           // depformer_emb.{k}.weight [card + 1, depformerDim], k < depQ − 1
    public let transformer: StreamingTransformer   // depformer.layers.{l}.… (per-step weights stacked step-major)
    let heads: [WeightMatrix]         // linears.{k}.weight [card, depformerDim]

    init(store: WeightStore, config c: LMConfig) {
        config = c
        let dd = c.depformerDim
        typealias N = LMTensorNames
        guard c.depQ > 0 else {
            inputs = []
            textEmb = WeightMatrix(Tensor(zeros: [1, dd]))
            emb = []
            var none = c.depformerTransformer
            none.numLayers = 0
            none.weightsPerStep = 1
            transformer = StreamingTransformer(store: store, names: N.depformer, config: none)
            heads = []
            return
        }
        inputs = (0..<(c.depformerMultiLinear ? c.depformerWeightSets : 1)).map { store.matrix(N.depformerIn($0), shape: [dd, c.dim]) }
        textEmb = store.matrix(N.depformerTextEmb, shape: [c.textCard + 1, dd])
        emb = (0..<max(0, c.depQ - 1)).map { store.matrix(N.depformerEmb($0), shape: [c.card + 1, dd]) }
        transformer = StreamingTransformer(store: store, names: N.depformer, config: c.depformerTransformer)
        heads = (0..<c.depQ).map { store.matrix(N.linears($0), shape: [c.card, dd]) }
    }

    public struct State: Sendable {
        public var transformer: StreamingTransformer.State
        var x: [Float]      // [depformerDim]
        var row: [Float]    // [depformerDim]
        /// Logits of every depth step of the last frame [depQ, card] (before sampling).
        public internal(set) var logits: [Float]

        public mutating func reset() { transformer.reset() }
    }

    public func makeState(kvCache: KVCacheType = .bf16) -> State {
        let dd = config.depformerDim
        return State(transformer: transformer.makeState(maxSteps: 1, kvCache: kvCache), x: [Float](repeating: 0, count: dd),
                     row: [Float](repeating: 0, count: dd), logits: [Float](repeating: 0, count: config.depQ * config.card))
    }

    /// Generates the frame's `generatedStreams` audio tokens into `tokens` from the temporal output
    /// `hidden` [dim] and the text token just sampled, drawing each with `sampler`.
    /// With `forced`, depth step k+1 reads `forced[k]` instead of the token just drawn where it is
    /// ≥ 0 (teacher forcing: the quality comparison feeds one model the other's tokens, PersonaPlex's
    /// prompt its prompt's); `tokens` still gets the draws.
    public func step(hidden: UnsafePointer<Float>, textToken: Int32, sampler: inout Sampler, temperature: Float, topK: Int,
                     tokens: UnsafeMutablePointer<Int32>, frame: Int, state: inout State,
                     forced: UnsafePointer<Int32>? = nil) throws {
        var unguided: State? = nil
        try step(hidden: hidden, textToken: textToken, sampler: &sampler, temperature: temperature, topK: topK, tokens: tokens,
                 frame: frame, state: &state, forced: forced, guidance: nil, nullState: &unguided)
    }

    /// Classifier-free guidance (Kyutai's `LMGen.depformer_step` with `cfg_coef`): every depth step
    /// also runs on the unconditioned branch's temporal output `guidance.nullHidden` (its own KV
    /// ring in `nullState`, fed the same previous token), and samples from
    /// null + (conditioned − null) · coefficient.
    public func step(hidden: UnsafePointer<Float>, textToken: Int32, sampler: inout Sampler, temperature: Float, topK: Int,
                     tokens: UnsafeMutablePointer<Int32>, frame: Int, state: inout State, forced: UnsafePointer<Int32>? = nil,
                     guidance: (nullHidden: UnsafePointer<Float>, coefficient: Float)?, nullState: inout State?) throws {
        let card = config.card
        state.transformer.reset()
        nullState?.transformer.reset()
        var previous = textToken
        for k in 0..<config.generatedStreams {
            depthLogits(k, hidden: hidden, previous: previous, state: &state)
            if let guidance, nullState != nil {
                depthLogits(k, hidden: guidance.nullHidden, previous: previous, state: &nullState!)
                let coefficient = guidance.coefficient
                state.logits.withUnsafeMutableBufferPointer { conditioned in
                    nullState!.logits.withUnsafeBufferPointer { null in
                        for i in (k * card)..<((k + 1) * card) {
                            conditioned[i] = null[i] + (conditioned[i] - null[i]) * coefficient
                        }
                    }
                }
            }
            let sampled = state.logits.withUnsafeBufferPointer { logits in
                sampler.sample(logits.baseAddress! + k * card, count: card, temperature: temperature, topK: topK)
            }
            guard let token = sampled else { throw LMError.nonFiniteLogits(what: "audio logits of depth step \(k)", step: frame) }
            tokens[k] = Int32(token)
            // A forced token (≥ 0) is what the next depth step reads; −1 leaves the draw.
            if let f = forced?[k], f >= 0 { previous = f } else { previous = Int32(token) }
        }
    }

    /// Depth step k's logits into `state.logits[k·card…]`.
    private func depthLogits(_ k: Int, hidden: UnsafePointer<Float>, previous: Int32, state: inout State) {
        let dd = config.depformerDim, card = config.card
        state.x.withUnsafeMutableBufferPointer { xBuf in
        state.row.withUnsafeMutableBufferPointer { rowBuf in
            let x = xBuf.baseAddress!, row = rowBuf.baseAddress!
            inputs[config.depformerMultiLinear ? config.depformerWeightSet(step: k) : 0].apply(hidden, into: x)
            // Clamped like ScaledEmbedding; sampled tokens are always in range.
            let table = k == 0 ? textEmb : emb[k - 1]
            table.copyRow(min(table.rows - 1, max(0, Int(previous))), into: row)
            for i in 0..<dd { x[i] += row[i] }
            transformer.step(x, steps: 1, state: &state.transformer)
            state.logits.withUnsafeMutableBufferPointer { heads[k].apply(x, into: $0.baseAddress! + k * card) }
        }
        }
    }

    /// The matrices one frame streams, as often as it reads them.
    var streamedMatrices: [WeightMatrix] {
        let steps = config.generatedStreams
        guard steps > 0 else { return [] }
        var all = Array(heads.prefix(steps))
        // Every depth step reads its weight set, shared ones once per step that uses them.
        for k in 0..<steps {
            let set = config.depformerWeightSet(step: k)
            all.append(inputs[config.depformerMultiLinear ? set : 0])
            for layer in transformer.layers { all += layer.matrices(set: set) }
        }
        return all
    }

    var weightBytesPerStep: Int { streamedMatrices.reduce(0) { $0 + $1.byteCount } }
}
