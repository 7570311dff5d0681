import Foundation

/// How closely a quantized LM follows a reference one (bf16 or f32), measured teacher-forced:
/// both see the same input streams, the reference's greedy tokens. Per head (text, then each
/// audio codebook of the depformer): the relative logit error ‖b − a‖ / ‖a‖ averaged over steps,
/// and how often the two agree on the most likely token.
public enum QuantizationQuality {
    public struct Head: Sendable, Equatable {
        /// "text", "audio 0", …
        public let name: String
        public var relativeError: Double
        public var top1Agreement: Double
    }

    /// Runs `steps` greedy steps of `reference` on `userCodes` ([steps × userStreams], cycled)
    /// and, at each, `candidate` on the same inputs with the depformer fed the reference's tokens.
    /// Both keep their KV caches as `kvCache` (f32 by default: the weights' error alone).
    public static func teacherForced(reference: LMModel, candidate: LMModel, userCodes: [Int32], steps: Int,
                                     kvCache: KVCacheType = .f32) throws -> [Head] {
        precondition(reference.config == candidate.config, "the two models must share one config")
        let c = reference.config
        let gen = LMGen(model: reference, sampling: .greedy)
        var state = gen.makeState(kvCache: kvCache)
        var candidateState = candidate.makeState(kvCache: kvCache)
        var heads = (0...c.generatedStreams).map { Head(name: $0 == 0 ? "text" : "audio \($0 - 1)", relativeError: 0, top1Agreement: 0) }
        var sampler = Sampler(seed: 0)
        var drawn = [Int32](repeating: 0, count: c.generatedStreams)
        let users = max(1, c.userStreams)
        for i in 0..<steps {
            let offset = (i * users) % max(1, userCodes.count - users + 1)
            _ = try userCodes.withUnsafeBufferPointer {
                try gen.step(userCodes: UnsafeBufferPointer(rebasing: $0[offset..<(offset + users)]), state: &state)
            }
            // The reference's inputs of this step and the tokens it drew.
            try state.input.withUnsafeBufferPointer { try candidate.temporalStep($0, state: &candidateState) }
            if c.generatedStreams > 0 {
            try candidateState.hidden.withUnsafeBufferPointer { hidden in
                try state.generated.withUnsafeBufferPointer { generated in
                    try drawn.withUnsafeMutableBufferPointer { tokens in
                        try candidate.depformer.step(hidden: hidden.baseAddress!, textToken: generated[0], sampler: &sampler,
                                                     temperature: 0, topK: 0, tokens: tokens.baseAddress!, frame: i,
                                                     state: &candidateState.depformer, forced: generated.baseAddress! + 1)
                    }
                }
            }
            }
            accumulate(&heads[0], state.model.textLogits[...], candidateState.textLogits[...])
            for k in 0..<c.generatedStreams {
                let range = (k * c.card)..<((k + 1) * c.card)
                accumulate(&heads[k + 1], state.model.depformer.logits[range], candidateState.depformer.logits[range])
            }
        }
        for h in heads.indices {
            heads[h].relativeError /= Double(steps)
            heads[h].top1Agreement /= Double(steps)
        }
        return heads
    }

    private static func accumulate(_ head: inout Head, _ a: ArraySlice<Float>, _ b: ArraySlice<Float>) {
        var diff = 0.0, norm = 0.0
        for (x, y) in zip(a, b) {
            diff += Double(y - x) * Double(y - x)
            norm += Double(x) * Double(x)
        }
        head.relativeError += norm > 0 ? (diff / norm).squareRoot() : 0
        let top = { (v: ArraySlice<Float>) in v.indices.max { v[$0] < v[$1] } ?? 0 }
        head.top1Agreement += top(a) == top(b) ? 1 : 0
    }
}
