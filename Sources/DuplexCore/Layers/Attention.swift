import Foundation

/// Causal multi-head self-attention with a fused Q|K|V in-projection and a ring KV cache,
/// as Kyutai's `StreamingMultiheadAttention` (no biases, no GQA). With `weightsPerStep`, call
/// number s of a stream uses projection set s (the depformer: one set per depth step).
public final class StreamingAttention: Sendable {
    public let dim: Int
    public let numHeads: Int
    public let headDim: Int
    /// Mask window: query − key < context (nil = unlimited).
    public let context: Int?
    /// Ring capacity (the context, or the number of per-step weight sets).
    public let capacity: Int
    public let rope: RoPE?
    /// One set, or one per step: [3·dim, dim] each.
    let inProjs: [WeightMatrix]
    /// [dim, dim] each.
    let outProjs: [WeightMatrix]

    public struct State: Sendable {
        public internal(set) var cache: KVCache
        /// Steps seen so far (query offset, and which per-step weights to use): the KV ring's
        /// write position, the one counter of this stream.
        public var offset: Int { cache.end }
        var qkv: [Float]       // [maxSteps, 3·dim]
        var attended: [Float]  // [maxSteps, dim]
        var scores: [Float]    // [maxSteps, capacity]
        var maxSteps: Int

        mutating func reserve(steps: Int, dim: Int) {
            guard steps > maxSteps else { return }
            maxSteps = steps
            qkv = [Float](repeating: 0, count: steps * 3 * dim)
            attended = [Float](repeating: 0, count: steps * dim)
            scores = [Float](repeating: 0, count: steps * cache.capacity)
        }

        public mutating func reset() { cache.reset() }
    }

    /// Loads `in_proj_weight` [steps·3·dim, dim] and `out_proj.weight` [steps·dim, dim] under `prefix`
    /// (the names Kyutai's files use; stacked step-major when `weightsPerStep` > 1).
    public convenience init(store: WeightStore, prefix: String, dim: Int, numHeads: Int, context: Int?,
                            ropeMaxPeriod: Float?, weightsPerStep: Int = 1) {
        self.init(store: store, names: AttentionTensorNames(prefix), dim: dim, numHeads: numHeads, context: context,
                  ropeMaxPeriod: ropeMaxPeriod, weightsPerStep: weightsPerStep)
    }

    public init(store: WeightStore, names: AttentionTensorNames, dim: Int, numHeads: Int, context: Int?,
                ropeMaxPeriod: Float?, weightsPerStep: Int = 1) {
        precondition(dim % numHeads == 0, "dim \(dim) not divisible by \(numHeads) heads")
        self.dim = dim
        self.numHeads = numHeads
        headDim = dim / numHeads
        self.context = context
        capacity = context ?? weightsPerStep
        rope = ropeMaxPeriod.map { RoPE(headDim: dim / numHeads, maxPeriod: $0) }
        let steps = max(1, weightsPerStep)
        // Per-step sets: views of one stacked tensor (Kyutai's files) or of separate ones (candle, MLX).
        inProjs = store.matrices(names.inProj, shape: [steps * 3 * dim, dim], parts: steps)
        outProjs = store.matrices(names.outProj, shape: [steps * dim, dim], parts: steps)
    }

    public func makeState(maxSteps: Int = 1) -> State {
        State(cache: KVCache(capacity: capacity, dim: dim), qkv: [Float](repeating: 0, count: maxSteps * 3 * dim),
              attended: [Float](repeating: 0, count: maxSteps * dim), scores: [Float](repeating: 0, count: maxSteps * capacity),
              maxSteps: maxSteps)
    }

    /// output[steps, dim] = attention over x[steps, dim] and the cached past; advances the state.
    public func step(_ x: UnsafePointer<Float>, steps: Int, output: UnsafeMutablePointer<Float>, state: inout State) {
        state.reserve(steps: steps, dim: dim)
        let d = dim
        let perStep = inProjs.count > 1
        let start = state.offset
        state.qkv.withUnsafeMutableBufferPointer { qkvBuf in
            let qkv = qkvBuf.baseAddress!
            // Projections: one weight set → one call over all steps; per-step sets → one each.
            if perStep {
                for t in 0..<steps {
                    inProjs[min(start + t, inProjs.count - 1)].apply(x + t * d, into: qkv + t * 3 * d)
                }
            } else {
                inProjs[0].apply(rows: x, steps: steps, into: qkv)
            }
            // RoPE on Q and K, then every new key/value goes into the ring before anyone attends.
            for t in 0..<steps {
                let row = qkv + t * 3 * d
                if let rope {
                    rope.apply(row, heads: numHeads, position: start + t)
                    rope.apply(row + d, heads: numHeads, position: start + t)
                }
                state.cache.append(key: row + d, value: row + 2 * d)
            }
            let scale = 1 / Float(headDim).squareRoot()
            state.cache.keys.withUnsafeBufferPointer { keysBuf in
            state.cache.values.withUnsafeBufferPointer { valuesBuf in
            state.cache.positions.withUnsafeBufferPointer { positions in
            state.scores.withUnsafeMutableBufferPointer { scoresBuf in
            state.attended.withUnsafeMutableBufferPointer { attendedBuf in
                let keys = keysBuf.baseAddress!, values = valuesBuf.baseAddress!
                let scores = scoresBuf.baseAddress!, attended = attendedBuf.baseAddress!
                // Per head, every step's scores against the whole ring in one sgemm, then the
                // masked softmax row by row, then one sgemm for the weighted sum of values.
                // (Two small BLAS calls per head beat per-slot dot/axpy loops several times over
                // once the ring holds hundreds of steps.)
                let window = context ?? Int.max
                // Slots are filled in order from 0, so until the ring wraps only the first `end`
                // hold anything: a conversation's early steps must not pay for the whole context.
                let used = min(state.cache.end, capacity)
                for h in 0..<numHeads {
                    Kernels.matmul(qkv + h * headDim, keys + h * headDim, scores, m: steps, n: used, k: headDim,
                                   transposeB: true, lda: 3 * d, ldb: d, ldc: capacity)
                    for t in 0..<steps {
                        let queryPosition = start + t
                        let row = scores + t * capacity
                        var maxScore = -Float.infinity
                        for slot in 0..<used {
                            let p = positions[slot]
                            let delta = queryPosition - p
                            if p < 0 || delta < 0 || delta >= window {
                                row[slot] = -Float.infinity
                            } else {
                                row[slot] *= scale
                                maxScore = max(maxScore, row[slot])
                            }
                        }
                        var total: Float = 0
                        for slot in 0..<used {
                            if row[slot] == -Float.infinity {
                                row[slot] = 0
                            } else {
                                let w = expf(row[slot] - maxScore)
                                row[slot] = w
                                total += w
                            }
                        }
                        let inv: Float = total > 0 ? 1 / total : 0
                        for slot in 0..<used { row[slot] *= inv }
                    }
                    Kernels.matmul(scores, values + h * headDim, attended + h * headDim, m: steps, n: headDim, k: used,
                                   lda: capacity, ldb: d, ldc: d)
                }
                if perStep {
                    for t in 0..<steps {
                        outProjs[min(start + t, outProjs.count - 1)].apply(attended + t * d, into: output + t * d)
                    }
                } else {
                    outProjs[0].apply(rows: attended, steps: steps, into: output)
                }
            }
            }
            }
            }
            }
        }
    }
}
