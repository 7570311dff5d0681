import Foundation

/// Causal multi-head self-attention with a fused Q|K|V in-projection and a ring KV cache,
/// as Kyutai's `StreamingMultiheadAttention` (no biases, no GQA). With `weightsPerStep`, call
/// number s of a stream uses projection set s (the depformer: one set per depth step).
/// The ring stores what the state was made with (`KVCacheType`); a query attends through
/// `CachedAttention` (its heads over the worker pool, straight from the storage type), except
/// calls of several f32 steps (Mimi), which keep two sgemms per head.
public final class StreamingAttention: Sendable {
    public let dim: Int
    public let numHeads: Int
    public let headDim: Int
    /// Mask window: query − key < context (nil = unlimited).
    public let context: Int?
    /// Which weight set each step uses when steps share them (nil: step k uses set k).
    let weightSchedule: [Int]?
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
        /// What the KV ring stores.
        public var kvCache: KVCacheType { cache.type }
        var qkv: [Float]       // [maxSteps, 3·dim]
        var attended: [Float]  // [maxSteps, dim]
        /// [max(maxSteps, numHeads), capacity]: a multi-step call's rows per head in turn, or
        /// one step's row per head, all at once (its heads run in parallel).
        var scores: [Float]
        var splitQuery: [Float]  // [dim]
        var partials: [Float]    // [numHeads, maxChunks, headDim + 2]
        let maxChunks: Int
        var maxSteps: Int

        init(cache: KVCache, maxSteps: Int) {
            self.cache = cache
            self.maxSteps = maxSteps
            let d = cache.dim
            qkv = [Float](repeating: 0, count: maxSteps * 3 * d)
            attended = [Float](repeating: 0, count: maxSteps * d)
            scores = [Float](repeating: 0, count: max(maxSteps, cache.numHeads) * cache.capacity)
            splitQuery = [Float](repeating: 0, count: d)
            maxChunks = CachedAttention.maxChunksPerHead(heads: cache.numHeads, capacity: cache.capacity)
            partials = [Float](repeating: 0, count: cache.numHeads * maxChunks * CachedAttention.partialStride(headDim: cache.headDim))
        }

        mutating func reserve(steps: Int, dim: Int) {
            guard steps > maxSteps else { return }
            maxSteps = steps
            qkv = [Float](repeating: 0, count: steps * 3 * dim)
            attended = [Float](repeating: 0, count: steps * dim)
            scores = [Float](repeating: 0, count: max(steps, cache.numHeads) * cache.capacity)
        }

        public mutating func reset() { cache.reset() }
    }

    /// Loads `in_proj_weight` [steps·3·dim, dim] and `out_proj.weight` [steps·dim, dim] under `prefix`
    /// (the names Kyutai's files use; stacked step-major when `weightsPerStep` > 1).
    public convenience init(store: WeightStore, prefix: String, dim: Int, numHeads: Int, context: Int?,
                            ropeMaxPeriod: Float?, weightsPerStep: Int = 1, weightSchedule: [Int]? = nil) {
        self.init(store: store, names: AttentionTensorNames(prefix), dim: dim, numHeads: numHeads, context: context,
                  ropeMaxPeriod: ropeMaxPeriod, weightsPerStep: weightsPerStep, weightSchedule: weightSchedule)
    }

    public init(store: WeightStore, names: AttentionTensorNames, dim: Int, numHeads: Int, context: Int?,
                ropeMaxPeriod: Float?, weightsPerStep: Int = 1, weightSchedule: [Int]? = nil) {
        precondition(dim % numHeads == 0, "dim \(dim) not divisible by \(numHeads) heads")
        self.dim = dim
        self.numHeads = numHeads
        headDim = dim / numHeads
        self.context = context
        capacity = context ?? weightsPerStep
        rope = ropeMaxPeriod.map { RoPE(headDim: dim / numHeads, maxPeriod: $0) }
        self.weightSchedule = weightSchedule
        let steps = weightSchedule.map { ($0.max() ?? 0) + 1 } ?? max(1, weightsPerStep)
        // Per-step sets: views of one stacked tensor (Kyutai's files) or of separate ones (candle, MLX).
        inProjs = store.matrices(names.inProj, shape: [steps * 3 * dim, dim], parts: steps)
        outProjs = store.matrices(names.outProj, shape: [steps * dim, dim], parts: steps)
    }

    /// The weight set of step `step` (steps past the last set keep using it).
    func weightSet(_ step: Int) -> Int {
        if let weightSchedule { return weightSchedule[min(step, weightSchedule.count - 1)] }
        return min(step, inProjs.count - 1)
    }

    /// A fresh stream whose KV ring stores `kvCache` (f32 unless asked: Mimi keeps f32; the LM
    /// passes its own choice).
    public func makeState(maxSteps: Int = 1, kvCache: KVCacheType = .f32) -> State {
        State(cache: KVCache(capacity: capacity, numHeads: numHeads, headDim: headDim, type: kvCache), maxSteps: maxSteps)
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
                    inProjs[weightSet(start + t)].apply(x + t * d, into: qkv + t * 3 * d)
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
            let window = context ?? Int.max
            if steps > 1 && state.cache.type == .f32 {
                attendBatched(qkv, steps: steps, start: start, window: window, cache: state.cache, scores: &state.scores,
                              attended: &state.attended)
            } else {
                // One query at a time (a batch-1 step; the steps of a call in turn otherwise):
                // its heads over the pool, straight from the ring's storage type.
                state.splitQuery.withUnsafeMutableBufferPointer { split in
                state.scores.withUnsafeMutableBufferPointer { scores in
                state.partials.withUnsafeMutableBufferPointer { partials in
                state.attended.withUnsafeMutableBufferPointer { attended in
                    let scratch = CachedAttention.Scratch(splitQuery: split.baseAddress!, scores: scores.baseAddress!,
                                                          partials: partials.baseAddress!, maxChunks: state.maxChunks)
                    for t in 0..<steps {
                        CachedAttention.attend(query: qkv + t * 3 * d, cache: state.cache, queryPosition: start + t, window: window,
                                               scratch: scratch, output: attended.baseAddress! + t * d)
                    }
                }
                }
                }
                }
            }
            state.attended.withUnsafeBufferPointer { attendedBuf in
                let attended = attendedBuf.baseAddress!
                if perStep {
                    for t in 0..<steps {
                        outProjs[weightSet(start + t)].apply(attended + t * d, into: output + t * d)
                    }
                } else {
                    outProjs[0].apply(rows: attended, steps: steps, into: output)
                }
            }
        }
    }

    /// Several steps of f32 keys at once (Mimi's two per frame, prefill): per head, every step's
    /// scores against the whole ring in one sgemm, the masked softmax row by row, one sgemm for
    /// the weighted sum of values. (Two small BLAS calls per head beat per-slot loops several
    /// times over once the ring holds hundreds of steps and there are several queries.)
    private func attendBatched(_ qkv: UnsafePointer<Float>, steps: Int, start: Int, window: Int, cache: KVCache,
                               scores: inout [Float], attended: inout [Float]) {
        let d = dim, hd = headDim, cap = capacity
        let scale = 1 / Float(headDim).squareRoot()
        // Slots are filled in order from 0, so until the ring wraps only the first `end`
        // hold anything: a conversation's early steps must not pay for the whole context.
        let used = min(cache.end, cap)
        cache.keys.withUnsafeBytes { keysBuf in
        cache.values.withUnsafeBytes { valuesBuf in
        cache.positions.withUnsafeBufferPointer { positions in
        scores.withUnsafeMutableBufferPointer { scoresBuf in
        attended.withUnsafeMutableBufferPointer { attendedBuf in
            // f32 rows, head-major: head h's ring is [capacity, headDim] at h·capacity·headDim.
            let keys = keysBuf.baseAddress!.assumingMemoryBound(to: Float.self)
            let values = valuesBuf.baseAddress!.assumingMemoryBound(to: Float.self)
            let scores = scoresBuf.baseAddress!, attended = attendedBuf.baseAddress!
            for h in 0..<numHeads {
                Kernels.matmul(qkv + h * hd, keys + h * cap * hd, scores, m: steps, n: used, k: hd,
                               transposeB: true, lda: 3 * d, ldb: hd, ldc: cap)
                for t in 0..<steps {
                    let queryPosition = start + t
                    let row = scores + t * cap
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
                Kernels.matmul(scores, values + h * cap * hd, attended + h * hd, m: steps, n: hd, k: used,
                               lda: cap, ldb: hd, ldc: d)
            }
        }
        }
        }
        }
        }
    }
}
