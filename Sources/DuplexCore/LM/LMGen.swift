import Foundation

/// Streaming generation, exactly Kyutai's `LMGen._step` (spec §3.7). Streams: 0 = text,
/// 1…G = Moshi's audio codebooks (G = `generatedStreams`: dep_q, 8 for PersonaPlex, 0 for STT),
/// G+1… = the user's. Each has a delay d_s (text and the
/// semantic codebooks 0, acoustic ones 1 for moshiko).
///
/// The state keeps a ring `cache[stream][CT]`, CT = maxDelay + 2, filled with −2 ("not generated
/// yet"), and the call counter o. One call:
///   1. writes the user's code of stream s at column (o + d_s) mod CT;
///   2. reads every stream's input from column o mod CT, replacing it by the initial token
///      (textCard for text, card for audio) while o ≤ d_s;
///   3. temporal transformer → text logits → text token; depformer → depQ audio tokens;
///   4. o += 1; the generated tokens go to column o mod CT;
///   5. while o ≤ maxDelay returns nothing; afterwards returns, per generated stream,
///      column (o − maxDelay + d_s) mod CT: the text and semantic tokens of the previous call with
///      the acoustic tokens of this one — one whole frame for Mimi to decode.
///
/// Trace (spec §3.7): call 0 sees initial tokens everywhere and returns nothing; call 1 returns
/// call 0's text + semantic token with call 1's acoustic tokens; user frame o's semantic code is
/// read in call o, its acoustic codes in call o + 1.
public struct LMGen: Sendable {
    public let model: LMModel
    public let sampling: SamplingParameters

    public init(model: LMModel, sampling: SamplingParameters = SamplingParameters()) {
        self.model = model
        self.sampling = sampling
    }

    public var config: LMConfig { model.config }
    /// Classifier-free guidance is on (a coefficient other than 1 on a conditioned model).
    public var guided: Bool { sampling.cfgCoefficient != 1 && model.config.conditioning != nil }
    /// Columns of the delay ring.
    public var ringLength: Int { config.maxDelay + 2 }

    public struct State: Sendable {
        public var model: LMModel.State
        /// The unconditioned branch of classifier-free guidance (its own KV rings), nil without CFG.
        public var null: LMModel.State?
        var nullDepformer: Depformer.State?
        var cache: [Int32]       // [numStreams, ringLength]
        var input: [Int32]       // [numStreams]
        var generated: [Int32]   // [1 + G]: this call's text + audio tokens
        /// The last frame returned: text token, then G audio codes [1 + G].
        public internal(set) var output: [Int32]
        var sampler: Sampler
        let seed: UInt64
        /// Calls so far (Kyutai's offset); grows forever. Every call takes one temporal step,
        /// so this is the temporal transformer's position: one counter for the whole stream.
        public var offset: Int { model.steps }

        public mutating func reset() {
            model.reset()
            null?.reset()
            for i in cache.indices { cache[i] = -2 }
            sampler = Sampler(seed: seed)
        }
    }

    /// A fresh conversation whose KV rings store `kvCache` (see `LMModel.makeState(kvCache:)`).
    public func makeState(kvCache: KVCacheType = .bf16) -> State {
        let c = config
        let g = c.generatedStreams
        let null = guided ? model.makeState(kvCache: kvCache, condition: c.conditioning?.unconditioned) : nil
        return State(model: model.makeState(kvCache: kvCache), null: null, nullDepformer: null?.depformer,
                     cache: [Int32](repeating: -2, count: c.numStreams * ringLength),
                     input: [Int32](repeating: 0, count: c.numStreams), generated: [Int32](repeating: 0, count: 1 + g),
                     output: [Int32](repeating: -2, count: 1 + g),
                     sampler: Sampler(seed: sampling.seed, maxTopK: max(256, sampling.textTopK, sampling.audioTopK)),
                     seed: sampling.seed)
    }

    /// One 80 ms step. `userCodes` holds at least `userStreams` codes (extra ones are ignored,
    /// as Kyutai drops them); each in −1…card (−1 = no input). Returns true when a frame came out,
    /// then `state.output` holds it (text token, then depQ audio codes). Allocation-free.
    public func step(userCodes: UnsafeBufferPointer<Int32>, state: inout State) throws -> Bool {
        try step(userCodes: userCodes, state: &state, temporalDone: {})
    }

    /// As `step(userCodes:state:)`, calling `temporalDone` between the temporal transformer and the
    /// depformer (the engine stamps the time there to report the two stages apart).
    public func step(userCodes: UnsafeBufferPointer<Int32>, state: inout State, temporalDone: () -> Void) throws -> Bool {
        try step(userCodes: userCodes, state: &state, forcing: nil, temporalDone: temporalDone)
    }

    /// What a prompt phase imposes on one call (PersonaPlex's system prompts, NVIDIA's lm.py
    /// `step_system_prompts`): the values of the next ring column for the generated streams
    /// (text, then G audio codebooks; a negative entry is left to the model, which samples it and
    /// feeds it on as usual), and optionally an input embedding that replaces the tokens'
    /// embedding sum (a precomputed voice prompt). A forced audio token is also what the depth
    /// steps after it read, as in NVIDIA's depformer; when every audio stream is forced the
    /// depformer is not run at all.
    public struct Forcing {
        /// [1 + G] values of column o + 1, or −1 where the model chooses.
        public var column: UnsafeBufferPointer<Int32>
        public var embedding: UnsafePointer<Float>?

        public init(column: UnsafeBufferPointer<Int32>, embedding: UnsafePointer<Float>? = nil) {
            self.column = column
            self.embedding = embedding
        }
    }

    public func step(userCodes: UnsafeBufferPointer<Int32>, state: inout State, forcing: Forcing?,
                     temporalDone: () -> Void = {}) throws -> Bool {
        let c = config
        let ct = ringLength
        let g = c.generatedStreams
        guard userCodes.count >= c.userStreams else {
            throw LMError.wrongStreamCount(got: userCodes.count, expected: c.userStreams)
        }
        for u in 0..<c.userStreams where userCodes[u] < -1 || Int(userCodes[u]) > c.card {
            throw LMError.tokenOutOfRange(stream: "user codebook \(u)", token: Int(userCodes[u]), valid: -1...c.card)
        }
        if sampling.cfgCoefficient != 1 && !guided {
            throw LMError.guidanceWithoutConditioning(coefficient: sampling.cfgCoefficient)
        }
        if let forcing {
            guard forcing.column.count >= 1 + g else { throw LMError.wrongStreamCount(got: forcing.column.count - 1, expected: g) }
            for k in 0...g where forcing.column[k] >= 0 { try model.checkToken(forcing.column[k], stream: k) }
        }
        let o = state.offset
        let firstUser = 1 + g
        for u in 0..<c.userStreams {
            let s = firstUser + u
            state.cache[s * ct + (o + c.delays[s]) % ct] = userCodes[u]
        }
        for s in 0..<c.numStreams {
            if o <= c.delays[s] {
                state.input[s] = Int32(s == 0 ? c.textInitialToken : c.audioInitialToken)
            } else {
                state.input[s] = state.cache[s * ct + o % ct]
            }
        }
        let embedding = forcing?.embedding
        try state.input.withUnsafeBufferPointer { input in
            try model.temporalStep(input, state: &state.model, embedding: embedding)
            if state.null != nil { try model.temporalStep(input, state: &state.null!, embedding: embedding) }
        }
        if let null = state.null {
            let coefficient = sampling.cfgCoefficient
            state.model.textLogits.withUnsafeMutableBufferPointer { conditioned in
                null.textLogits.withUnsafeBufferPointer { unconditioned in
                    for i in 0..<conditioned.count {
                        conditioned[i] = unconditioned[i] + (conditioned[i] - unconditioned[i]) * coefficient
                    }
                }
            }
        }
        let sampledText = state.model.textLogits.withUnsafeBufferPointer { logits in
            state.sampler.sample(logits.baseAddress!, count: c.textCardOut, temperature: sampling.textTemperature,
                                 topK: sampling.textTopK)
        }
        guard let sampled = sampledText else { throw LMError.nonFiniteLogits(what: "text logits", step: o) }
        temporalDone()
        let forcedColumn = forcing?.column
        let text = forcedColumn.map { $0[0] >= 0 ? $0[0] : Int32(sampled) } ?? Int32(sampled)
        state.generated[0] = text
        let audioForced = forcedColumn.map { column in g == 0 || (1...g).allSatisfy { column[$0] >= 0 } } ?? false
        if g > 0 && !audioForced {
            try runDepformer(text: text, frame: o, state: &state, forced: forcedColumn.map { $0.baseAddress! + 1 })
        }
        if let forcedColumn { for k in 0..<g where forcedColumn[1 + k] >= 0 { state.generated[1 + k] = forcedColumn[1 + k] } }
        let column = (o + 1) % ct
        for s in 0...g { state.cache[s * ct + column] = state.generated[s] }
        if o + 1 <= c.maxDelay { return false }
        for s in 0...g {
            state.output[s] = state.cache[s * ct + (o + 1 - c.maxDelay + c.delays[s]) % ct]
        }
        return true
    }

    private func runDepformer(text: Int32, frame o: Int, state: inout State, forced: UnsafePointer<Int32>?) throws {
        let coefficient = sampling.cfgCoefficient
        try state.model.hidden.withUnsafeBufferPointer { hidden in
            try state.generated.withUnsafeMutableBufferPointer { generated in
                if let null = state.null {
                    try null.hidden.withUnsafeBufferPointer { nullHidden in
                        try model.depformer.step(hidden: hidden.baseAddress!, textToken: text, sampler: &state.sampler,
                                                 temperature: sampling.audioTemperature, topK: sampling.audioTopK,
                                                 tokens: generated.baseAddress! + 1, frame: o, state: &state.model.depformer,
                                                 forced: forced, guidance: (nullHidden.baseAddress!, coefficient),
                                                 nullState: &state.nullDepformer)
                    }
                } else {
                    try model.depformer.step(hidden: hidden.baseAddress!, textToken: text, sampler: &state.sampler,
                                             temperature: sampling.audioTemperature, topK: sampling.audioTopK,
                                             tokens: generated.baseAddress! + 1, frame: o, state: &state.model.depformer,
                                             forced: forced)
                }
            }
        }
    }

    /// Convenience for offline callers: the returned frame, or nil on the first `maxDelay` calls.
    public func step(userCodes: [Int32], state: inout State) throws -> [Int32]? {
        let produced = try userCodes.withUnsafeBufferPointer { try step(userCodes: $0, state: &state) }
        return produced ? state.output : nil
    }
}
