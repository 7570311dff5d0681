import DuplexCore
import DuplexEngine
import XCTest

/// A tiny random model of the real structure (8 codebooks, 7B-shaped delays), made in milliseconds.
func tinyEngine(mimiSeed: UInt64, lmSeed: UInt64) throws -> EngineModel {
    var mimi = MimiConfig()
    mimi.dimension = 32
    mimi.filters = 4
    mimi.transformerHeads = 2
    mimi.transformerLayers = 1
    mimi.transformerFeedforward = 64
    mimi.codebookDimension = 16
    mimi.bins = 64
    mimi.numCodebooks = 8
    var lm = LMConfig.moshi7B
    lm.dim = 32; lm.numHeads = 2; lm.numLayers = 2; lm.context = 8
    lm.textCard = 50; lm.textCardOut = 50; lm.card = 64
    lm.depformerDim = 16; lm.depformerNumHeads = 2; lm.depformerNumLayers = 1
    lm.depformerDimFeedforward = Int(4.125 * 16)
    return try EngineModel(mimi: Mimi(store: WeightStore(randomSeed: mimiSeed), config: mimi),
                           lm: LMModel(store: WeightStore(randomSeed: lmSeed), config: lm), tokenizer: nil, name: "tiny")
}

/// A conversation on a tiny random model of the real structure: one model, many sessions, each
/// with its own state; reset starts a fresh conversation; the session equals the blocks it runs.
final class SessionTests: XCTestCase {
    private static let engine = Result { try tinyEngine(mimiSeed: 11, lmSeed: 12) }

    private func voice(_ frames: Int) -> [Float] {
        (0..<(frames * 1920)).map { i in
            let t = Float(i) / 24_000
            return 0.3 * sinf(2 * .pi * 150 * t) * (0.5 + 0.5 * sinf(2 * .pi * 3 * t))
        }
    }

    /// Runs `frames` frames; returns the audio out and the text tokens.
    private func converse(_ session: Session, _ input: [Float], frames: Int) -> (audio: [Float], text: [Int32?]) {
        var audio = [Float](repeating: 0, count: frames * 1920)
        var text: [Int32?] = []
        var stamps = FrameTimestamps()
        for f in 0..<frames {
            let token = input.withUnsafeBufferPointer { i in
                audio.withUnsafeMutableBufferPointer { o in
                    session.process(i.baseAddress! + f * 1920, output: o.baseAddress! + f * 1920, stamps: &stamps, clock: MonotonicClock())
                }
            }
            text.append(token)
        }
        return (audio, text)
    }

    func testTheFirstAnswerIsSilenceThenTheModelSpeaks() throws {
        let engine = try Self.engine.get()
        let session = engine.makeSession(sampling: .greedy)
        let (audio, text) = converse(session, voice(6), frames: 6)
        XCTAssertEqual(Array(audio[0..<1920]), [Float](repeating: 0, count: 1920), "Moshi's first call returns nothing")
        XCTAssertGreaterThan(audio[1920...].map { abs($0) }.max() ?? 0, 0, "then it answers")
        XCTAssertNil(text[0])
        XCTAssertNil(session.failure)
        XCTAssertTrue(audio.allSatisfy(\.isFinite))
    }

    func testResetReplaysTheConversationExactly() throws {
        let engine = try Self.engine.get()
        var sampling = SamplingParameters()
        sampling.seed = 5
        let session = engine.makeSession(sampling: sampling)
        let input = voice(7)
        let first = converse(session, input, frames: 7)
        session.reset()
        let again = converse(session, input, frames: 7)
        XCTAssertEqual(again.audio, first.audio, "reset must clear every codec buffer, both transformers, the LM ring and caches")
        XCTAssertEqual(again.text, first.text, "and restart the sampler's random stream")
    }

    func testSessionsOnOneModelDoNotShareState() throws {
        let engine = try Self.engine.get()
        let input = voice(6)
        let solo = converse(engine.makeSession(sampling: .greedy), input, frames: 6)
        // Two conversations interleaved frame by frame on the same model: each equals the solo run.
        let a = engine.makeSession(sampling: .greedy), b = engine.makeSession(sampling: .greedy)
        var outA = [Float](), outB = [Float]()
        for f in 0..<6 {
            let frame = Array(input[(f * 1920)..<((f + 1) * 1920)])
            outA += converse(a, frame, frames: 1).audio
            outB += converse(b, frame.map { $0 * -0.5 }, frames: 1).audio  // b hears something else
        }
        XCTAssertEqual(outA, solo.audio)
        XCTAssertNotEqual(outB, solo.audio)
    }

    /// Mimi encode → LMGen.step → Mimi decode by hand, under `rule`: the session must equal it.
    private func byHand(_ engine: EngineModel, _ input: [Float], frames: Int, rule: FirstFrameRule) throws -> [Float] {
        let mimi = try XCTUnwrap(engine.mimi), codec = mimi.makeState()
        let gen = LMGen(model: engine.lm, sampling: .greedy)
        var lm = gen.makeState()
        var codes = [Int32](repeating: 0, count: mimi.numCodebooks)
        var audio = [Float]()
        for f in 0..<frames {
            input.withUnsafeBufferPointer { mimi.encodeStep($0.baseAddress! + f * 1920, codes: &codes, state: codec) }
            if f == 0 {
                // Kyutai's server restarts the codec after the first frame; run_inference feeds it twice.
                if rule == .kyutaiServer { codec.reset() } else { _ = try gen.step(userCodes: codes, state: &lm) }
            }
            var pcm = [Float](repeating: 0, count: 1920)
            if let out = try gen.step(userCodes: codes, state: &lm) {
                try mimi.decodeStep(Array(out[1...8]), codebooks: 8, output: &pcm, state: codec)
            } else {
                XCTAssertEqual(rule, .kyutaiServer, "under run_inference's rule every call answers")
            }
            audio += pcm
        }
        return audio
    }

    func testTheSessionIsTheBlocksItRuns() throws {
        let engine = try Self.engine.get()
        let input = voice(5)
        let viaSession = converse(engine.makeSession(sampling: .greedy), input, frames: 5)
        XCTAssertEqual(viaSession.audio, try byHand(engine, input, frames: 5, rule: .kyutaiServer))
    }

    func testRunInferenceRuleFeedsTheFirstFrameTwiceAndKeepsTheCodec() throws {
        // Kyutai's run_inference: n frames in give n answers (none silent).
        let engine = try Self.engine.get()
        let input = voice(5)
        let viaSession = converse(engine.makeSession(sampling: .greedy, firstFrame: .runInference), input, frames: 5)
        XCTAssertEqual(viaSession.audio, try byHand(engine, input, frames: 5, rule: .runInference))
        XCTAssertNotEqual(viaSession.audio, converse(engine.makeSession(sampling: .greedy), input, frames: 5).audio,
                          "the two rules answer differently: the option is not ignored")
    }

    func testCodesInGiveTheSameTokensAsAudioIn() throws {
        // generate --input-codes runs the same Session step: the tokens of an audio conversation,
        // replayed from its user codes, come out identical.
        let engine = try Self.engine.get()
        let mimi = try XCTUnwrap(engine.mimi)
        let input = voice(6)
        let session = engine.makeSession(sampling: .greedy)
        var fromAudio: [[Int32]] = []
        session.onTokens = { fromAudio.append(Array($0)) }
        _ = converse(session, input, frames: 6)
        // The user codes the session saw (the codec restarted after frame 0, as the server rule says).
        let codec = mimi.makeState()
        var userCodes: [[Int32]] = []
        var codes = [Int32](repeating: 0, count: mimi.numCodebooks)
        for f in 0..<6 {
            input.withUnsafeBufferPointer { mimi.encodeStep($0.baseAddress! + f * 1920, codes: &codes, state: codec) }
            if f == 0 { codec.reset() }
            userCodes.append(codes)
        }
        let replay = engine.makeSession(sampling: .greedy)
        var fromCodes: [[Int32]] = []
        for c in userCodes { if let out = try replay.step(userCodes: c) { fromCodes.append(out) } }
        XCTAssertEqual(fromAudio.count, 5)
        XCTAssertEqual(fromCodes, fromAudio)
    }

    func testAnLMOnlyModelRefusesAudioWithAnErrorNotSilence() throws {
        let full = try Self.engine.get()
        let lmOnly = try EngineModel(mimi: nil, lm: full.lm, tokenizer: nil, name: "lm only")
        let session = lmOnly.makeSession(sampling: .greedy)
        _ = converse(session, voice(1), frames: 1)
        XCTAssertNotNil(session.failure)
        XCTAssertThrowsError(try session.step(userCodes: [Int32](repeating: 1, count: 8)), "a stopped session stays stopped")
        let codesOnly = lmOnly.makeSession(sampling: .greedy)
        XCTAssertNil(try codesOnly.step(userCodes: [Int32](repeating: 1, count: 8)), "call 0 returns nothing")
        XCTAssertEqual(try codesOnly.step(userCodes: [Int32](repeating: 1, count: 8))?.count, 9, "then text + 8 codes")
    }

    /// The KV element type is the engine's (chosen at load), so every session made from it,
    /// whoever makes it, keeps its rings that way: bf16 unless asked.
    func testSessionsKeepTheirKVRingsAsTheEngineSays() throws {
        let base = try Self.engine.get()
        XCTAssertEqual(base.kvCache, .bf16)
        var bytes: [KVCacheType: Int] = [:]
        for type in KVCacheType.allCases {
            let engine = try EngineModel(mimi: base.mimi, lm: base.lm, tokenizer: nil, name: "tiny \(type)", kvCache: type)
            let session = engine.makeSession(sampling: .greedy)
            try session.fillContext(steps: 20)
            bytes[type] = session.nextStepKVBytes
            _ = converse(session, voice(2), frames: 2)
            XCTAssertNil(session.failure)
        }
        XCTAssertEqual(bytes[.f32], 2 * bytes[.bf16]!, "f32 entries are twice bf16's")
        XCTAssertLessThan(bytes[.q8]!, bytes[.bf16]!, "q8 entries are smaller than bf16's")
        let session = base.makeSession(sampling: .greedy)
        try session.fillContext(steps: 20)
        XCTAssertEqual(session.nextStepKVBytes, bytes[.bf16], "the default engine's sessions are bf16")
    }

    func testFillingTheContextAdvancesTheLMAsRealStepsWould() throws {
        let engine = try Self.engine.get()
        let filled = engine.makeSession(sampling: .greedy)
        try filled.fillContext(steps: 20, exact: true)
        XCTAssertEqual(filled.contextFill, 20)
        let byHand = engine.makeSession(sampling: .greedy)
        for _ in 0..<20 { _ = try byHand.step(userCodes: [Int32](repeating: 0, count: 8)) }
        let a = converse(filled, voice(3), frames: 3), b = converse(byHand, voice(3), frames: 3)
        XCTAssertEqual(a.text, b.text)
        XCTAssertEqual(a.audio, b.audio, "the exact fill is those steps")
        let synthetic = engine.makeSession(sampling: .greedy)
        try synthetic.fillContext(steps: 20)
        XCTAssertEqual(synthetic.contextFill, 20)
        let c = converse(synthetic, voice(3), frames: 3)
        XCTAssertEqual(c.audio.count, a.audio.count)
        XCTAssertTrue(c.audio.allSatisfy(\.isFinite), "the synthetic fill leaves a state the model runs on")
        filled.reset()
        XCTAssertEqual(filled.contextFill, 0)
    }
}
