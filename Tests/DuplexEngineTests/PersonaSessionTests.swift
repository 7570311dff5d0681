import DuplexAudio
import DuplexCore
@testable import DuplexEngine
import Foundation
import XCTest

/// A PersonaPlex Session replays its persona before the conversation and then answers as NVIDIA's
/// code does (the fixture of PersonaPlexTests, driven through the engine's Session).
final class PersonaSessionTests: XCTestCase {
    private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("DuplexCoreTests/Fixtures")

    private func engine() throws -> (EngineModel, SafetensorsFile) {
        let weights = try SafetensorsFile(path: fixtures.appendingPathComponent("personaplex_tiny.safetensors").path)
        let records = try SafetensorsFile(path: fixtures.appendingPathComponent("personaplex_tiny_records.safetensors").path)
        var json = try JSONSerialization.jsonObject(with: Data(weights.metadata["config"]!.utf8)) as! [String: Any]
        json["model_type"] = "personaplex"
        let config = try LMConfig(kyutaiConfigJSON: JSONSerialization.data(withJSONObject: json))
        let store = try WeightStore(files: [weights])
        let lm = LMModel(store: store, config: config)
        try store.finish()
        let tokenizer = try SentencePieceTokenizer(path: fixtures.appendingPathComponent("tokenizer_tiny.model").path)
        return (try EngineModel(mimi: nil, lm: lm, tokenizer: tokenizer, name: "personaplex_tiny", kvCache: .f32), records)
    }

    func testTheRoleTextIsTokenizedAsNVIDIAsServerDoes() throws {
        let (engine, records) = try engine()
        let expected = try records.intTensor("fixture.text_prompt_ids").values.map { Int($0) }
        let text = records.metadata["text_prompt"]!
        XCTAssertEqual(engine.tokenizer!.encode(PersonaPlexPrompt.wrapWithSystemTags(text)), expected)
    }

    func testASessionReplaysThePersonaAndAnswersAsNVIDIA() throws {
        let (engine, records) = try engine()
        let voice = fixtures.appendingPathComponent("personaplex_tiny_voice.pt").path
        // The fixture's context (16) is shorter than its prompt (49 frames), which the CLI refuses for
        // a real model; the prompt is made directly so the ring's wrap stays covered.
        let prompt = try PersonaPlexPrompt(voice: PersonaPrompts.readVoice(voice, engine: engine),
                                           textTokens: engine.tokenizer!.encode(PersonaPlexPrompt.wrapWithSystemTags(records.metadata["text_prompt"]!)),
                                           config: engine.config)
        let session = engine.makeSession(sampling: .greedy, prompt: prompt)
        XCTAssertNil(session.failure)
        XCTAssertEqual(session.frames, prompt.frameCount, "the prompt counts as frames under way (no first-frame rule after it)")
        let (uShape, user) = try records.intTensor("fixture.user_codes")
        let (rShape, returned) = try records.intTensor("fixture.returned")
        func conversation() throws -> [[Int32]] {
            try (0..<(uShape[1] - 1)).map { t in
                let codes = (0..<uShape[0]).map { Int32(user[$0 * uShape[1] + t]) }
                return try XCTUnwrap(session.step(userCodes: codes))
            }
        }
        let first = try conversation()
        for (t, frame) in first.enumerated() {
            let call = prompt.frameCount + t
            let nvidia = (0..<9).map { Int32(returned[(call + 1) * rShape[1] + $0]) }
            XCTAssertEqual(frame, nvidia, "conversation frame \(t)")
        }
        session.reset()
        XCTAssertEqual(session.frames, prompt.frameCount, "a reset replays the persona")
        XCTAssertEqual(try conversation(), first, "and answers the same again")
    }

    /// A random-weights PersonaPlex with a small Mimi (2048 codes, as the LM's card): what a WAV voice needs.
    private func speakingEngine() throws -> EngineModel {
        var c = LMConfig.personaplex7B
        c.dim = 32; c.numHeads = 2; c.numLayers = 1; c.textCard = 40; c.textCardOut = 40; c.context = 64
        c.depformerDim = 16; c.depformerNumHeads = 2; c.depformerNumLayers = 1; c.depformerDimFeedforward = 32
        let store = WeightStore(randomSeed: 5)
        let lm = LMModel(store: store, config: c)
        try store.finish()
        var m = MimiConfig.released()
        m.filters = 8; m.dimension = 64; m.transformerLayers = 1; m.transformerHeads = 2; m.transformerFeedforward = 128; m.codebookDimension = 32
        return try EngineModel(mimi: try Mimi(store: WeightStore(randomSeed: 6), config: m), lm: lm, tokenizer: nil, name: "personaplex-random")
    }

    func testAWAVVoiceIsNormalisedToMinus24LUFSAndEncodedFrameByFrame() throws {
        let engine = try speakingEngine()
        let mimi = try XCTUnwrap(engine.mimi)
        // 0.9 s of a quiet tone with noise at 24 kHz: 11.25 frames → 12, the last padded.
        var rng = SplitMix64(seed: 9)
        let samples = (0..<21_600).map { i in Float(0.02 * sin(Double(i) * 0.05)) + Float(rng.nextGaussian()) * 0.005 }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("voice-\(getpid()).wav").path
        try WAV(sampleRate: 24_000, channels: 1, samples: samples).write(to: path)
        guard case .codes(let frames) = try PersonaPrompts.readVoice(path, engine: engine) else { return XCTFail("a WAV gives codes") }
        XCTAssertEqual(frames.count, 12)
        XCTAssertTrue(frames.allSatisfy { $0.count == 8 })
        // The same by hand: pyloudnorm's normalisation (LoudnessTests check it), then Mimi.
        let written = try WAV.read(path).samples
        var normalised = try Loudness.normalized(written, sampleRate: 24_000, targetLUFS: -24)
        normalised += [Float](repeating: 0, count: 12 * 1920 - normalised.count)
        let state = mimi.makeState()
        var codes = [Int32](repeating: 0, count: mimi.numCodebooks)
        for f in 0..<12 {
            normalised.withUnsafeBufferPointer { x in codes.withUnsafeMutableBufferPointer { mimi.encodeStep(x.baseAddress! + f * 1920, codes: $0.baseAddress!, state: state) } }
            XCTAssertEqual(frames[f], Array(codes.prefix(8)), "frame \(f)")
        }
        let silent = FileManager.default.temporaryDirectory.appendingPathComponent("silent-\(getpid()).wav").path
        try WAV(sampleRate: 24_000, channels: 1, samples: [Float](repeating: 0, count: 24_000)).write(to: silent)
        XCTAssertThrowsError(try PersonaPrompts.readVoice(silent, engine: engine)) {
            XCTAssertTrue("\($0)".contains("silent") && "\($0)".contains(silent), "\($0)")
        }
        let prompt = try PersonaPrompts(engine: engine).prompt(voice: path, text: nil)
        XCTAssertEqual(prompt.frameCount, 12 + 2 * PersonaPlexPrompt.silenceFrames)
        let session = engine.makeSession(sampling: .greedy, prompt: prompt)
        XCTAssertNil(session.failure)
    }

    func testAPersonaOnAnotherModelIsRefused() throws {
        let store = WeightStore(randomSeed: 1)
        var c = LMConfig()
        c.dim = 32; c.numHeads = 2; c.numLayers = 1; c.textCard = 40; c.textCardOut = 40; c.card = 16; c.context = 8
        c.depformerDim = 16; c.depformerNumHeads = 2; c.depformerNumLayers = 1; c.depformerDimFeedforward = 32
        let lm = LMModel(store: store, config: c)
        try store.finish()
        let engine = try EngineModel(mimi: nil, lm: lm, tokenizer: nil, name: "moshi-tiny")
        XCTAssertThrowsError(try PersonaPrompts(engine: engine)) { XCTAssertTrue("\($0)".contains("PersonaPlex"), "\($0)") }
        XCTAssertNil(engine.makeSession(sampling: .greedy).prompt, "a Moshi session has no persona")
    }

    func testBadVoiceFilesAreClearErrorsNamingTheFile() throws {
        let (engine, _) = try engine()
        let personas = try PersonaPrompts(engine: engine, voiceDirectory: fixtures.path)
        let text = FileManager.default.temporaryDirectory.appendingPathComponent("not-a-voice-\(getpid()).txt")
        try Data("hello".utf8).write(to: text)
        for (voice, mentions) in [(text.path, "neither a WAV"), (fixtures.appendingPathComponent("personaplex_voice_bad_global.pt").path, "os.system"),
                                  ("/nonexistent/voice.wav", "does not exist"),
                                  (fixtures.appendingPathComponent("personaplex_voice_not_voice.pt").path, "personaplex_voice_not_voice.pt")] {
            XCTAssertThrowsError(try personas.prompt(voice: voice, text: nil)) { XCTAssertTrue("\($0)".contains(mentions), "\($0)") }
        }
        XCTAssertThrowsError(try personas.prompt(voice: "../secret.pt", text: nil, fromDirectory: true)) {
            XCTAssertTrue("\($0)".contains("not a file name"), "\($0)")
        }
        XCTAssertThrowsError(try personas.prompt(voice: nil, text: String(repeating: "long words here ", count: 200))) {
            XCTAssertTrue("\($0)".contains("shorten the text prompt"), "\($0)")
        }
    }
}
