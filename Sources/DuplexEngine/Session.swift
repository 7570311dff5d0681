import DuplexCore
import Foundation

/// What a conversation runs on: the Mimi codec, the LM and (optionally) the text tokenizer,
/// loaded once and shared read-only by every session (design.md §3.1: one model, many sessions).
public final class EngineModel: Sendable {
    /// nil for an LM-only model, run on codes (`generate --input-codes` without audio).
    public let mimi: Mimi?
    public let lm: LMModel
    public let tokenizer: SentencePieceTokenizer?
    /// Where it came from, for reports.
    public let name: String
    /// What every session's LM keeps its KV rings in (the weights are shared, the rings are
    /// each session's own; chosen once, at load, so every way of making a session agrees).
    public let kvCache: KVCacheType

    public init(mimi: Mimi?, lm: LMModel, tokenizer: SentencePieceTokenizer?, name: String, kvCache: KVCacheType = .bf16) throws {
        let c = lm.config
        if let mimi {
            try Self.checkCodec(mimi, fits: c)
        }
        if let tokenizer, tokenizer.vocabularySize < c.textCardOut {
            throw ModelError("the tokenizer has \(tokenizer.vocabularySize) pieces; the LM emits \(c.textCardOut) text ids")
        }
        self.mimi = mimi
        self.lm = lm
        self.tokenizer = tokenizer
        self.name = name
        self.kvCache = kvCache
    }

    private static func checkCodec(_ mimi: Mimi, fits c: LMConfig) throws {
        guard mimi.numCodebooks >= max(c.generatedStreams, c.userStreams) else {
            throw ModelError("the Mimi codec has \(mimi.numCodebooks) codebooks; the LM needs \(max(c.generatedStreams, c.userStreams))")
        }
        guard mimi.bins == c.card else {
            throw ModelError("the Mimi codec has \(mimi.bins) codes per codebook; the LM's audio vocabulary (card) is \(c.card)")
        }
    }

    /// Loads a model folder (Kyutai's layout, or a random-weights folder like models/default).
    /// `codec: false` loads the LM alone (token-level runs need no Mimi file).
    /// `quantize`: matrices the folder stores as floats are quantized as they load (`progress`
    /// gets bytes done and total).
    public static func load(folder: ModelFolder, codec: Bool = true, tokenizer required: Bool = false,
                            kvCache: KVCacheType = .bf16, quantize: QuantizeRecipe? = nil,
                            progress: ((Int, Int) -> Void)? = nil) throws -> EngineModel {
        let tokenizer = required || FileManager.default.fileExists(atPath: folder.file(folder.config.tokenizerName))
            ? try folder.loadTokenizer() : nil
        return try EngineModel(mimi: codec ? folder.loadMimi() : nil, lm: folder.loadLM(quantize: quantize, progress: progress),
                               tokenizer: tokenizer, name: folder.path, kvCache: kvCache)
    }

    public var config: LMConfig { lm.config }
    public var frameSize: Int { mimi?.frameSize ?? 1920 }

    /// The text of a token as Moshi's servers show it (nil for PAD/EPAD, or without a tokenizer).
    public func displayText(_ token: Int32) -> String? {
        let special = TextStreamSpecialIds(epad: config.textEndPaddingId, pad: config.textPaddingId, start: config.textCard)
        guard let tokenizer else { return special.contains(Int(token)) ? nil : "<\(token)>" }
        return tokenizer.displayText(Int(token), special: special)
    }

    /// A conversation. A PersonaPlex model replays `prompt` (its persona) first, or without one
    /// the silences NVIDIA's server runs before every conversation.
    public func makeSession(sampling: SamplingParameters, firstFrame: FirstFrameRule = .kyutaiServer,
                            prompt: PersonaPlexPrompt? = nil) -> Session {
        Session(model: self, sampling: sampling, firstFrame: firstFrame, prompt: prompt)
    }
}

/// What happens to a conversation's first input frame, which Moshi's call 0 replaces by initial
/// tokens (moshi-spec.md §2.3). Every use (talk, pipe, serve, generate, bench) takes the same
/// rule from the one `Session` option, so the same input and seed give the same answer anywhere.
public enum FirstFrameRule: String, Sendable, CaseIterable {
    /// Kyutai's server: the first frame is encoded, its codes go to the LM once (where they have no
    /// effect), and the codec starts afresh, so the second frame is encoded as a first frame again.
    /// n frames in give n frames out, the first silent.
    case kyutaiServer = "server"
    /// Kyutai's run_inference: the first frame's codes go to the LM twice (so the first real frame
    /// is not swallowed by the initial tokens) and the codec keeps its state.
    case runInference = "run-inference"
}

/// One conversation: Mimi's streaming state for both directions, the LM's delay ring and caches,
/// the sampler. Every 80 ms frame: encode the user's audio, step the LM, decode Moshi's frame.
/// Allocates nothing per frame once made. Owned by one thread at a time (the model thread): its
/// `failure` is read there, and published to other threads by whoever runs it (`LiveLoop`).
public final class Session: FrameProcessor {
    public let model: EngineModel
    public let sampling: SamplingParameters
    public let firstFrame: FirstFrameRule
    private let generator: LMGen
    private var lmState: LMGen.State
    private let codecState: Mimi.State?
    private var userCodes: [Int32]
    private var moshiCodes: [Int32]
    /// Frames processed since the last reset.
    public private(set) var frames = 0
    /// LM steps written into the context by `fillContext` since the last reset.
    public private(set) var contextFill = 0
    /// The first error that stopped the model (NaN logits from poisoned weights, …). Once set the
    /// session answers silence; whoever runs it should report this and stop.
    public private(set) var failure: Error?
    /// Called with every frame the LM produces: text token, then its depQ audio codes (offline
    /// callers keep them; nil costs nothing per frame).
    public var onTokens: ((UnsafeBufferPointer<Int32>) -> Void)?

    public var frameSize: Int { model.frameSize }
    /// PersonaPlex's system prompts, replayed at the start and after every reset (nil for other models).
    public let prompt: PersonaPlexPrompt?

    /// Bytes of keys and values the LM's next step reads (`LMModel.State.nextStepKVBytes`), for
    /// reports beside `model.lm.weightBytesPerStep`. Read it on the thread that runs the session.
    public var nextStepKVBytes: Int { lmState.model.nextStepKVBytes }

    init(model: EngineModel, sampling: SamplingParameters, firstFrame: FirstFrameRule, prompt: PersonaPlexPrompt?) {
        self.model = model
        self.sampling = sampling
        self.firstFrame = firstFrame
        generator = LMGen(model: model.lm, sampling: sampling)
        lmState = generator.makeState(kvCache: model.kvCache)
        codecState = model.mimi?.makeState()
        userCodes = [Int32](repeating: 0, count: max(model.mimi?.numCodebooks ?? 0, model.config.userStreams))
        moshiCodes = [Int32](repeating: 0, count: model.config.generatedStreams)
        if model.config.kind == .personaplex {
            self.prompt = prompt ?? (try? PersonaPlexPrompt(voice: nil, textTokens: [], config: model.config))
        } else {
            self.prompt = nil
        }
        replayPrompt()
    }

    /// Runs the persona prompt into the fresh LM state. The conversation then continues from it:
    /// no first-frame rule (the model's context is under way, as after a context fill).
    private func replayPrompt() {
        guard let prompt else { return }
        do {
            try prompt.run(generator, state: &lmState)
            frames = prompt.frameCount
        } catch {
            failure = error
        }
    }

    /// A fresh conversation: every codec buffer, both transformers' caches, the LM's delay ring
    /// and KV caches, the sampler's random stream.
    public func reset() {
        codecState?.reset()
        lmState.reset()
        frames = 0
        contextFill = 0
        failure = nil
        replayPrompt()
    }

    /// Brings the LM's context to `steps` steps already taken (for measurements at a filled
    /// context, where attention reads the whole window): the LM restarts and its caches, offsets
    /// and delay ring are left as `steps` calls would leave them (`LMGen.fillContext`); `exact`
    /// runs those calls on silent user codes instead. The codec keeps its state.
    public func fillContext(steps: Int, exact: Bool = false) throws {
        guard steps > 0 else { return }
        try generator.fillContext(&lmState, steps: steps, seed: sampling.seed, exact: exact)
        contextFill = steps
        frames = steps   // the conversation is under way: no first-frame rule after a fill
    }

    public func process(_ input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        stamps: inout FrameTimestamps, clock: any FrameClock) -> Int32? {
        guard failure == nil, let mimi = model.mimi, let codecState else {
            if model.mimi == nil && failure == nil { failure = ModelError("\(model.name) was loaded without its codec: it runs on codes only") }
            output.update(repeating: 0, count: frameSize)
            return nil
        }
        userCodes.withUnsafeMutableBufferPointer { mimi.encodeStep(input, codes: $0.baseAddress!, state: codecState) }
        stamps.encoded = clock.now()
        if frames == 0 && firstFrame == .kyutaiServer {
            // From the model's point of view the first frame is in the past (LMGen replaces it by
            // initial tokens anyway): the codec starts afresh, as Kyutai's server does.
            codecState.reset()
        }
        let produced = stepLM(stamps: &stamps, clock: clock)
        guard produced, decodeAnswer(into: output) else {
            // Moshi's first call returns nothing: the first answer frame is silence.
            output.update(repeating: 0, count: frameSize)
            stamps.decoded = clock.now()
            return nil
        }
        stamps.decoded = clock.now()
        let text = lmState.output[0]
        let c = model.config
        return Int(text) == c.textPaddingId || Int(text) == c.textEndPaddingId ? nil : text
    }

    /// One frame from the user's codes instead of audio (`generate --input-codes`): the same LM
    /// step and first-frame rule as `process`; with `output` the answer is decoded into it too.
    /// Returns the produced frame (text token, then depQ audio codes), or nil when there is none yet.
    public func step(userCodes codes: [Int32], output: UnsafeMutablePointer<Float>? = nil) throws -> [Int32]? {
        for k in 0..<min(codes.count, userCodes.count) { userCodes[k] = codes[k] }
        var stamps = FrameTimestamps()
        let produced = stepLM(stamps: &stamps, clock: MonotonicClock())
        if let failure { throw failure }
        guard produced else {
            output?.update(repeating: 0, count: frameSize)
            return nil
        }
        if let output, !decodeAnswer(into: output), let failure { throw failure }
        return lmState.output
    }

    /// The LM's step (twice for the first frame under run_inference's rule). Returns whether a
    /// frame came out; on an error, sets `failure` and returns false.
    private func stepLM(stamps: inout FrameTimestamps, clock: any FrameClock) -> Bool {
        let repeats = frames == 0 && firstFrame == .runInference ? 2 : 1
        frames += 1
        var produced = false
        do {
            for _ in 0..<repeats {
                produced = try userCodes.withUnsafeBufferPointer { codes in
                    try generator.step(userCodes: codes, state: &lmState, temporalDone: { stamps.temporalDone = clock.now() })
                }
            }
        } catch {
            failure = error
            return false
        }
        stamps.lmDone = clock.now()
        if produced, let onTokens { lmState.output.withUnsafeBufferPointer { onTokens($0) } }
        return produced
    }

    /// The text token of the last frame the LM produced (PAD and EPAD included), nil before the first.
    public var lastTextToken: Int32? { lmState.output[0] >= 0 ? lmState.output[0] : nil }

    /// Extra head `head`'s probability of class `index` at the last step (Kyutai STT's semantic
    /// voice activity: head 2, class 0 is the end of the speaker's turn).
    public func extraHeadProbability(head: Int, index: Int) -> Float? {
        let c = model.config
        guard head >= 0, head < c.extraHeadsNumHeads, index >= 0, index < c.extraHeadsDim else { return nil }
        return lmState.model.extraHeads[head * c.extraHeadsDim + index]
    }

    /// Decodes the LM's last frame into `output`; on an error sets `failure` and returns false.
    private func decodeAnswer(into output: UnsafeMutablePointer<Float>) -> Bool {
        let depQ = model.config.generatedStreams
        guard depQ > 0 else {
            // A listening model (STT) has no voice: its answer is silence.
            output.update(repeating: 0, count: frameSize)
            return true
        }
        for k in 0..<depQ { moshiCodes[k] = lmState.output[1 + k] }
        guard let mimi = model.mimi, let codecState else {
            failure = ModelError("\(model.name) was loaded without its codec: it cannot decode audio")
            return false
        }
        do {
            try moshiCodes.withUnsafeBufferPointer { codes in
                try mimi.decodeStep(codes.baseAddress!, codebooks: depQ, output: output, state: codecState)
            }
            return true
        } catch {
            failure = error
            return false
        }
    }
}
