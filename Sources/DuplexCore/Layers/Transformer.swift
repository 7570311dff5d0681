import Foundation

/// Everything that distinguishes the transformers Kyutai's models use (Mimi's encoder/decoder
/// transformers, Moshi's temporal transformer, the depformer).
public struct TransformerConfig: Sendable, Equatable {
    public enum FeedForward: Sendable, Equatable {
        /// linear1 [hidden, dim] → GELU (erf) → linear2 [dim, hidden] (Mimi).
        case gelu(hidden: Int)
        /// gating.linear_in [2·hidden, dim] → SiLU(first half) ⊙ second half → gating.linear_out [dim, hidden] (Moshi).
        case siluGated(hidden: Int)
    }

    public var dim: Int
    public var numHeads: Int
    public var numLayers: Int
    public var feedForward: FeedForward
    public var norm: Norm.Kind
    public var layerScale: Bool
    /// Attention window in steps (nil = unlimited, ring sized by `weightsPerStep`).
    public var context: Int?
    /// RoPE max period, nil for no positional embedding (the depformer).
    public var ropeMaxPeriod: Float?
    /// 1, or the number of per-step weight sets (the depformer's depth steps).
    public var weightsPerStep: Int
    /// Kyutai's `weights_per_step_schedule`: step k uses weight set schedule[k], so steps may
    /// share a set (Hibiki 2B's depformer); nil = one set per step.
    public var weightSchedule: [Int]?

    /// Weight sets stored (fewer than the steps when a schedule shares them).
    public var weightSets: Int { weightSchedule.map { ($0.max() ?? 0) + 1 } ?? max(1, weightsPerStep) }

    /// The weight set step `step` uses, of `count` stored.
    public func weightSet(step: Int, count: Int) -> Int {
        if let weightSchedule { return weightSchedule[min(step, weightSchedule.count - 1)] }
        return min(step, count - 1)
    }

    public init(dim: Int, numHeads: Int, numLayers: Int, feedForward: FeedForward, norm: Norm.Kind,
                layerScale: Bool, context: Int?, ropeMaxPeriod: Float?, weightsPerStep: Int = 1) {
        self.dim = dim
        self.numHeads = numHeads
        self.numLayers = numLayers
        self.feedForward = feedForward
        self.norm = norm
        self.layerScale = layerScale
        self.context = context
        self.ropeMaxPeriod = ropeMaxPeriod
        self.weightsPerStep = weightsPerStep
    }

    /// Kyutai's rule for the gated hidden size: 21·dim/8 when dim_feedforward == 4·dim,
    /// else 2·dim_feedforward/3 (integer division).
    public static func gatedHidden(dim: Int, dimFeedforward: Int) -> Int {
        dimFeedforward == 4 * dim ? 21 * dim / 8 : 2 * dimFeedforward / 3
    }
}

/// One pre-norm layer: x += ls1 ⊙ Attn(norm1(x)); x += ls2 ⊙ FFN(norm2(x)).
public final class TransformerLayer: Sendable {
    public let config: TransformerConfig
    let norm1: Norm
    let norm2: Norm
    public let attention: StreamingAttention
    /// Per step set (or one): (in, out) matrices of the feed-forward block.
    let ffnIn: [WeightMatrix]
    let ffnOut: [WeightMatrix]
    let layerScale1: [Float]
    let layerScale2: [Float]

    public convenience init(store: WeightStore, prefix: String, config c: TransformerConfig) {
        self.init(store: store, names: TransformerLayerTensorNames(prefix), config: c)
    }

    public init(store: WeightStore, names n: TransformerLayerTensorNames, config c: TransformerConfig) {
        config = c
        norm1 = Norm(store: store, names: n.norm1, kind: c.norm, dim: c.dim)
        norm2 = Norm(store: store, names: n.norm2, kind: c.norm, dim: c.dim)
        attention = StreamingAttention(store: store, names: n.attention, dim: c.dim, numHeads: c.numHeads,
                                       context: c.context, ropeMaxPeriod: c.ropeMaxPeriod, weightsPerStep: c.weightsPerStep,
                                       weightSchedule: c.weightSchedule)
        switch c.feedForward {
        case .gelu(let hidden):
            ffnIn = [store.matrix(n.linear1, shape: [hidden, c.dim])]
            ffnOut = [store.matrix(n.linear2, shape: [c.dim, hidden])]
        case .siluGated(let hidden):
            let sets = TransformerLayerTensorNames.gatingSets(c)
            ffnIn = sets.map { store.matrix(n.gatingIn($0), shape: [2 * hidden, c.dim]) }
            ffnOut = sets.map { store.matrix(n.gatingOut($0), shape: [c.dim, hidden]) }
        }
        if c.layerScale {
            layerScale1 = store.tensor(n.layerScale1, shape: [c.dim]).data
            layerScale2 = store.tensor(n.layerScale2, shape: [c.dim]).data
        } else {
            layerScale1 = []
            layerScale2 = []
        }
    }

    var hidden: Int {
        switch config.feedForward {
        case .gelu(let h): h
        case .siluGated(let h): h
        }
    }

    public struct State: Sendable {
        public var attention: StreamingAttention.State
        var normed: [Float]   // [maxSteps, dim]
        var update: [Float]   // [maxSteps, dim]
        var inner: [Float]    // [maxSteps, 2·hidden]
        var maxSteps: Int
        /// Steps seen (selects per-step FFN weights), as the attention's KV ring counts them.
        public var offset: Int { attention.offset }

        public mutating func reset() { attention.reset() }
    }

    public func makeState(maxSteps: Int = 1, kvCache: KVCacheType = .f32) -> State {
        State(attention: attention.makeState(maxSteps: maxSteps, kvCache: kvCache),
              normed: [Float](repeating: 0, count: maxSteps * config.dim),
              update: [Float](repeating: 0, count: maxSteps * config.dim),
              inner: [Float](repeating: 0, count: maxSteps * 2 * hidden), maxSteps: maxSteps)
    }

    /// x[steps, dim] updated in place.
    public func step(_ x: UnsafeMutablePointer<Float>, steps: Int, state: inout State) {
        let d = config.dim
        if steps > state.maxSteps {
            state.maxSteps = steps
            state.normed = [Float](repeating: 0, count: steps * d)
            state.update = [Float](repeating: 0, count: steps * d)
            state.inner = [Float](repeating: 0, count: steps * 2 * hidden)
        }
        let h = hidden
        let start = state.offset  // before the attention advances it
        state.normed.withUnsafeMutableBufferPointer { normedBuf in
        state.update.withUnsafeMutableBufferPointer { updateBuf in
        state.inner.withUnsafeMutableBufferPointer { innerBuf in
            let normed = normedBuf.baseAddress!, update = updateBuf.baseAddress!, inner = innerBuf.baseAddress!
            // Attention block.
            norm1.apply(x, into: normed, steps: steps)
            attention.step(normed, steps: steps, output: update, state: &state.attention)
            addResidual(x, update, scale: layerScale1, steps: steps)
            // Feed-forward block.
            norm2.apply(x, into: normed, steps: steps)
            switch config.feedForward {
            case .gelu:
                ffnIn[0].apply(rows: normed, steps: steps, into: inner)
                Activations.gelu(inner, count: steps * h)
                ffnOut[0].apply(rows: inner, steps: steps, into: update)
            case .siluGated:
                for t in 0..<steps {
                    let set = config.weightSet(step: start + t, count: ffnIn.count)
                    let row = inner + t * 2 * h
                    if ffnIn.count == 1 && steps > 1 {
                        if t == 0 { ffnIn[0].apply(rows: normed, steps: steps, into: inner) }
                    } else {
                        ffnIn[set].apply(normed + t * d, into: row)
                    }
                    Activations.silu(row, count: h)
                    for i in 0..<h { row[i] *= row[h + i] }
                    ffnOut[set].apply(row, into: update + t * d)
                }
            }
            addResidual(x, update, scale: layerScale2, steps: steps)
        }
        }
        }
    }

    private func addResidual(_ x: UnsafeMutablePointer<Float>, _ update: UnsafePointer<Float>, scale: [Float], steps: Int) {
        let d = config.dim
        if scale.isEmpty {
            for i in 0..<(steps * d) { x[i] += update[i] }
        } else {
            scale.withUnsafeBufferPointer { s in
                for t in 0..<steps { for i in 0..<d { x[t * d + i] += s[i] * update[t * d + i] } }
            }
        }
    }
}

/// A stack of layers under `<prefix>layers.<i>.`; the streaming contract of every stateful block.
public final class StreamingTransformer: Sendable {
    public let config: TransformerConfig
    public let layers: [TransformerLayer]

    public convenience init(store: WeightStore, prefix: String, config: TransformerConfig) {
        self.init(store: store, names: TransformerTensorNames(prefix), config: config)
    }

    public init(store: WeightStore, names: TransformerTensorNames, config: TransformerConfig) {
        self.config = config
        layers = (0..<config.numLayers).map { TransformerLayer(store: store, names: names.layer($0), config: config) }
    }

    public struct State: Sendable {
        public var layers: [TransformerLayer.State]
        /// Steps this stream has taken (the next step's RoPE position), read from the layers'
        /// KV rings, which all count the same steps.
        public var position: Int { layers.first?.offset ?? 0 }

        public mutating func reset() {
            for i in layers.indices { layers[i].reset() }
        }
    }

    /// A fresh stream; every layer's KV ring stores `kvCache` (f32 unless asked, as Mimi's
    /// transformers keep it).
    public func makeState(maxSteps: Int = 1, kvCache: KVCacheType = .f32) -> State {
        State(layers: layers.map { $0.makeState(maxSteps: maxSteps, kvCache: kvCache) })
    }

    /// x[steps, dim] updated in place (time-major rows).
    public func step(_ x: UnsafeMutablePointer<Float>, steps: Int, state: inout State) {
        for i in layers.indices { layers[i].step(x, steps: steps, state: &state.layers[i]) }
    }
}
