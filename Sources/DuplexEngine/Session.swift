import DuplexCore
import Foundation

/// What a conversation runs on: the Mimi codec, the LM and (optionally) the text tokenizer,
/// loaded once and shared read-only by every session (design.md §3.1: one model, many sessions).
public final class EngineModel: Sendable {
    public let mimi: Mimi
    public let lm: LMModel
    public let tokenizer: SentencePieceTokenizer?
    /// Where it came from, for reports.
    public let name: String

    public init(mimi: Mimi, lm: LMModel, tokenizer: SentencePieceTokenizer?, name: String) throws {
        let c = lm.config
        guard mimi.numCodebooks >= max(c.depQ, c.userStreams) else {
            throw ModelError("the Mimi codec has \(mimi.numCodebooks) codebooks; the LM needs \(max(c.depQ, c.userStreams))")
        }
        guard mimi.bins == c.card else {
            throw ModelError("the Mimi codec has \(mimi.bins) codes per codebook; the LM's audio vocabulary (card) is \(c.card)")
        }
        if let tokenizer, tokenizer.vocabularySize < c.textCardOut {
            throw ModelError("the tokenizer has \(tokenizer.vocabularySize) pieces; the LM emits \(c.textCardOut) text ids")
        }
        self.mimi = mimi
        self.lm = lm
        self.tokenizer = tokenizer
        self.name = name
    }

    /// Loads a model folder (Kyutai's layout, or a random-weights folder like models/default).
    public static func load(folder: ModelFolder) throws -> EngineModel {
        let tokenizer = FileManager.default.fileExists(atPath: folder.file(folder.config.tokenizerName))
            ? try folder.loadTokenizer() : nil
        return try EngineModel(mimi: folder.loadMimi(), lm: folder.loadLM(), tokenizer: tokenizer, name: folder.path)
    }

    public var config: LMConfig { lm.config }
    public var frameSize: Int { mimi.frameSize }

    /// The text of a token as Moshi's servers show it (nil for PAD/EPAD, or without a tokenizer).
    public func displayText(_ token: Int32) -> String? {
        let special = TextStreamSpecialIds(epad: config.textEndPaddingId, pad: config.textPaddingId, start: config.textCard)
        guard let tokenizer else { return special.contains(Int(token)) ? nil : "<\(token)>" }
        return tokenizer.displayText(Int(token), special: special)
    }

    public func makeSession(sampling: SamplingParameters) -> Session {
        Session(model: self, sampling: sampling)
    }
}

/// One conversation: Mimi's streaming state for both directions, the LM's delay ring and caches,
/// the sampler. Every 80 ms frame: encode the user's audio, step the LM, decode Moshi's frame.
/// Allocates nothing per frame once made. Owned by one thread at a time.
public final class Session: FrameProcessor {
    public let model: EngineModel
    public let sampling: SamplingParameters
    private let generator: LMGen
    private var lmState: LMGen.State
    private let codecState: Mimi.State
    private var userCodes: [Int32]
    private var moshiCodes: [Int32]
    /// Frames processed since the last reset.
    public private(set) var frames = 0
    /// The first error that stopped the model (NaN logits from poisoned weights, …). Once set the
    /// session answers silence; whoever runs it should report this and stop.
    public private(set) var failure: Error?

    public var frameSize: Int { model.frameSize }

    init(model: EngineModel, sampling: SamplingParameters) {
        self.model = model
        self.sampling = sampling
        generator = LMGen(model: model.lm, sampling: sampling)
        lmState = generator.makeState()
        codecState = model.mimi.makeState()
        userCodes = [Int32](repeating: 0, count: model.mimi.numCodebooks)
        moshiCodes = [Int32](repeating: 0, count: model.config.depQ)
    }

    /// A fresh conversation: every codec buffer, both transformers' caches, the LM's delay ring
    /// and KV caches, the sampler's random stream.
    public func reset() {
        codecState.reset()
        lmState.reset()
        frames = 0
        failure = nil
    }

    public func process(_ input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        stamps: inout FrameTimestamps, clock: any FrameClock) -> Int32? {
        guard failure == nil else {
            output.update(repeating: 0, count: frameSize)
            return nil
        }
        let mimi = model.mimi
        userCodes.withUnsafeMutableBufferPointer { mimi.encodeStep(input, codes: $0.baseAddress!, state: codecState) }
        stamps.encoded = clock.now()
        // Kyutai's server starts the codec afresh after the first frame: from the model's point of
        // view that frame is in the past (LMGen replaces it by initial tokens anyway).
        if frames == 0 { codecState.reset() }
        frames += 1
        let produced: Bool
        do {
            produced = try userCodes.withUnsafeBufferPointer { codes in
                try generator.step(userCodes: codes, state: &lmState, temporalDone: { stamps.temporalDone = clock.now() })
            }
        } catch {
            failure = error
            output.update(repeating: 0, count: frameSize)
            return nil
        }
        stamps.lmDone = clock.now()
        guard produced else {
            // Moshi's first call returns nothing: the first answer frame is silence.
            output.update(repeating: 0, count: frameSize)
            stamps.decoded = clock.now()
            return nil
        }
        let depQ = model.config.depQ
        for k in 0..<depQ { moshiCodes[k] = lmState.output[1 + k] }
        do {
            try moshiCodes.withUnsafeBufferPointer { codes in
                try mimi.decodeStep(codes.baseAddress!, codebooks: depQ, output: output, state: codecState)
            }
        } catch {
            failure = error
            output.update(repeating: 0, count: frameSize)
            return nil
        }
        stamps.decoded = clock.now()
        let text = lmState.output[0]
        let c = model.config
        return Int(text) == c.textPaddingId || Int(text) == c.textEndPaddingId ? nil : text
    }
}
