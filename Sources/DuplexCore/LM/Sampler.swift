import Foundation

/// How LMGen picks tokens, for the text stream and the audio codebooks separately. Defaults are
/// LMGen's (and Kyutai's web client's): text 0.7 / top-25, audio 0.8 / top-250. A temperature of
/// 0 (or less) means greedy: the arg-max, as Kyutai's `sample_token` does.
public struct SamplingParameters: Sendable, Equatable {
    public var textTemperature: Float = 0.7
    public var textTopK = 25
    public var audioTemperature: Float = 0.8
    public var audioTopK = 250
    /// Seed of the one random stream all draws of a session come from (Kyutai's server seeds 42424242).
    public var seed: UInt64 = 42_424_242
    /// Classifier-free guidance (Kyutai's `cfg_coef`, Hibiki): 1 = off; otherwise every step also
    /// runs unconditioned and the logits become null + (conditioned − null) · coefficient.
    public var cfgCoefficient: Float = 1

    public init() {}

    public init(textTemperature: Float, textTopK: Int, audioTemperature: Float, audioTopK: Int, seed: UInt64) {
        self.textTemperature = textTemperature
        self.textTopK = textTopK
        self.audioTemperature = audioTemperature
        self.audioTopK = audioTopK
        self.seed = seed
    }

    /// Arg-max everywhere.
    public static let greedy = SamplingParameters(textTemperature: 0, textTopK: 0, audioTemperature: 0, audioTopK: 0, seed: 0)
}

/// Temperature + top-k sampling (`moshi/utils/sampling.py` `sample_token`): probabilities =
/// softmax(logits / T) restricted to the k largest, one categorical draw. Kyutai draws with the
/// "exponential race" (argmax of p / Exp(1) noise); a cumulative draw has the same distribution.
/// Seeded, so a session replays exactly. No allocation per draw: the top-k heap is preallocated
/// (and grows once if a caller asks for a larger k).
public struct Sampler: Sendable {
    private var rng: SplitMix64
    private var heapValues: [Float]
    private var heapIndices: [Int32]

    public init(seed: UInt64, maxTopK: Int = 256) {
        rng = SplitMix64(seed: seed)
        heapValues = [Float](repeating: 0, count: max(1, maxTopK))
        heapIndices = [Int32](repeating: 0, count: max(1, maxTopK))
    }

    /// Index of the first largest finite value, or nil if any value is NaN or ±Inf.
    public static func argmax(_ logits: UnsafePointer<Float>, count: Int) -> Int? {
        var best = 0
        var bestValue = -Float.infinity
        var finite = true
        for i in 0..<count {
            let v = logits[i]
            finite = finite && v.isFinite
            if v > bestValue { bestValue = v; best = i }
        }
        return finite && count > 0 ? best : nil
    }

    /// One token from `logits[0..<count]`; nil if the logits hold NaN or ±Inf (poisoned weights).
    public mutating func sample(_ logits: UnsafePointer<Float>, count: Int, temperature: Float, topK: Int) -> Int? {
        guard let best = Self.argmax(logits, count: count) else { return nil }
        if temperature <= 0 { return best }
        let maxValue = logits[best]
        let invT = 1 / Double(temperature)
        if topK <= 0 || topK >= count {
            var total = 0.0
            for i in 0..<count { total += Foundation.exp((Double(logits[i]) - Double(maxValue)) * invT) }
            var u = uniform() * total
            for i in 0..<count {
                u -= Foundation.exp((Double(logits[i]) - Double(maxValue)) * invT)
                if u < 0 { return i }
            }
            return best   // rounding left a sliver: the most probable token
        }
        let k = topK
        if heapValues.count < k {
            heapValues = [Float](repeating: 0, count: k)
            heapIndices = [Int32](repeating: 0, count: k)
        }
        let draw = uniform()
        return heapValues.withUnsafeMutableBufferPointer { valuesBuf in
            heapIndices.withUnsafeMutableBufferPointer { indicesBuf in
                let values = valuesBuf.baseAddress!, indices = indicesBuf.baseAddress!
                Self.selectTopK(logits, count: count, k: k, values: values, indices: indices)
                var total = 0.0
                for j in 0..<k { total += Foundation.exp((Double(values[j]) - Double(maxValue)) * invT) }
                var u = draw * total
                for j in 0..<k {
                    u -= Foundation.exp((Double(values[j]) - Double(maxValue)) * invT)
                    if u < 0 { return Int(indices[j]) }
                }
                return best
            }
        }
    }

    /// Uniform in [0, 1) with 53 bits.
    private mutating func uniform() -> Double {
        Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// The k largest of `logits` into values/indices (in heap order): a min-heap of size k, so
    /// one pass over the vocabulary costs O(n log k) and nothing is sorted.
    static func selectTopK(_ logits: UnsafePointer<Float>, count: Int, k: Int,
                           values: UnsafeMutablePointer<Float>, indices: UnsafeMutablePointer<Int32>) {
        func siftDown(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var smallest = i
                if l < k && values[l] < values[smallest] { smallest = l }
                if r < k && values[r] < values[smallest] { smallest = r }
                if smallest == i { return }
                values.swapAt(i, smallest)
                indices.swapAt(i, smallest)
                i = smallest
            }
        }
        for j in 0..<k {
            values[j] = logits[j]
            indices[j] = Int32(j)
        }
        for j in stride(from: k / 2 - 1, through: 0, by: -1) { siftDown(j) }
        for i in k..<count where logits[i] > values[0] {
            values[0] = logits[i]
            indices[0] = Int32(i)
            siftDown(0)
        }
    }
}

extension UnsafeMutablePointer {
    @inline(__always)
    fileprivate func swapAt(_ i: Int, _ j: Int) {
        let t = self[i]
        self[i] = self[j]
        self[j] = t
    }
}
