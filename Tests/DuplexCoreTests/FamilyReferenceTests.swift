import DuplexCore
import Foundation
import XCTest

/// The other members of the Kyutai family against Kyutai's `moshi==0.2.13` on tiny models built
/// by its own loader (fixtures: tools/reference/fixtures_stt.py, fixtures_hibiki.py): greedy
/// tokens identical over 3× the context, logits within relative L2 1e-4 (f32 KV rings, as the
/// reference keeps on CPU).
final class FamilyReferenceTests: XCTestCase {
    struct Fixture {
        let file: SafetensorsFile
        let config: LMConfig
        let model: LMModel
        let user: [[Int32]]        // [calls][userStreams]

        func rows(_ name: String) throws -> [[Int32]] {
            let (shape, values) = try file.intTensor(name)
            return (0..<shape[0]).map { t in (0..<shape[1]).map { Int32(values[t * shape[1] + $0]) } }
        }

        func floats(_ name: String) throws -> [Float] { try file.floatTensor(name).data }
    }

    static func load(_ name: String) throws -> Fixture {
        let file = try loadFixture(name)
        let config = try LMConfig(kyutaiConfigJSON: Data(file.metadata["config"]!.utf8))
        let store = try WeightStore(files: [file])
        let model = LMModel(store: store, config: config)
        try store.finish(allowUnused: { $0.hasPrefix("fixture.") })
        let (userShape, userValues) = try file.intTensor("fixture.user_codes")
        let calls = userShape[1]
        let user = (0..<calls).map { t in (0..<userShape[0]).map { Int32(userValues[$0 * calls + t]) } }
        return Fixture(file: file, config: config, model: model, user: user)
    }

    // MARK: Kyutai STT (dep_q 0, 32 user codebooks, semantic-VAD extra heads)

    func testSTTMatchesKyutaiTokensLogitsAndVoiceActivity() throws {
        let f = try Self.load("stt_tiny")
        let c = f.config
        XCTAssertEqual(c.kind, .stt)
        XCTAssertEqual(c.generatedStreams, 0)
        XCTAssertEqual(c.userStreams, 32)
        XCTAssertFalse(c.speaks)
        XCTAssertEqual(c.sttAudioDelaySeconds, 0.5)
        XCTAssertGreaterThanOrEqual(f.user.count, 3 * c.context, "the fixture must run past 3× the context")
        let returned = try f.rows("fixture.returned")
        let textLogits = try f.floats("fixture.text_logits")
        let heads = try f.floats("fixture.extra_heads")
        let headValues = c.extraHeadsNumHeads * c.extraHeadsDim
        let gen = LMGen(model: f.model, sampling: .greedy)
        var state = gen.makeState(kvCache: .f32)
        var mismatches: [String] = []
        for (t, codes) in f.user.enumerated() {
            let out = try gen.step(userCodes: codes, state: &state)
            assertClose(state.model.textLogits, Array(textLogits[(t * c.textCard)..<((t + 1) * c.textCard)]),
                        relL2: 1e-4, "text logits, call \(t)")
            assertClose(state.model.extraHeads, Array(heads[(t * headValues)..<((t + 1) * headValues)]),
                        relL2: 1e-4, "extra heads' softmax, call \(t)")
            // No delays: every call returns its own text token, from the first.
            if out != returned[t] { mismatches.append("call \(t): \(out.map { "\($0)" } ?? "nil") vs \(returned[t])") }
        }
        XCTAssertTrue(mismatches.isEmpty, "STT text differs from Kyutai's:\n" + mismatches.prefix(5).joined(separator: "\n"))
    }

    func testSTTFileHasNoDepformerTensors() throws {
        let f = try Self.load("stt_tiny")
        XCTAssertFalse(f.file.entries.keys.contains { $0.hasPrefix("depformer") || $0.hasPrefix("linears.") })
        XCTAssertEqual(LMTensorNames.table(f.config).specs.filter { $0.name.hasPrefix("extra_heads.") }.count, 4)
        XCTAssertTrue(f.model.streamedMatrices.count > 0)
    }

    // MARK: Hibiki (LUT conditioning, text_emb hack, classifier-free guidance)

    /// Greedy frames and every call's text and depth logits against a Hibiki-shaped fixture's run
    /// (`prefix` "cfg_" for its CFG run).
    static func checkHibiki(_ f: Fixture, cfg: Float, prefix: String, expectEOS: Bool = true,
                            file: StaticString = #filePath, line: UInt = #line) throws {
        let c = f.config
        var sampling = SamplingParameters.greedy
        sampling.cfgCoefficient = cfg
        let returned = try f.rows("fixture.\(prefix)returned")
        let textLogits = try f.floats("fixture.\(prefix)text_logits")
        let depthLogits = try f.floats("fixture.\(prefix)depth_logits")
        let gen = LMGen(model: f.model, sampling: sampling)
        XCTAssertEqual(gen.guided, cfg != 1)
        var state = gen.makeState(kvCache: .f32)
        var frames: [[Int32]] = []
        var sawEOS = false
        for (t, codes) in f.user.enumerated() {
            if let out = try gen.step(userCodes: codes, state: &state) { frames.append(out) }
            sawEOS = sawEOS || state.output[0] == 2
            assertClose(state.model.textLogits, Array(textLogits[(t * c.textCard)..<((t + 1) * c.textCard)]),
                        relL2: 1e-4, "cfg \(cfg): text logits, call \(t)")
            let n = c.depQ * c.card
            assertClose(state.model.depformer.logits, Array(depthLogits[(t * n)..<((t + 1) * n)]),
                        relL2: 1e-4, "cfg \(cfg): depth logits, call \(t)")
        }
        XCTAssertEqual(frames.count, returned.count, "cfg \(cfg): frames returned (the first two calls return none)", file: file, line: line)
        let mismatches = zip(frames, returned).enumerated().filter { $0.element.0 != $0.element.1 }
        XCTAssertTrue(mismatches.isEmpty, "cfg \(cfg): Hibiki frames differ from Kyutai's: "
                      + mismatches.prefix(3).map { "frame \($0.offset): \($0.element.0) vs \($0.element.1)" }.joined(separator: "; "),
                      file: file, line: line)
        if expectEOS { XCTAssertTrue(sawEOS, "the fixture must exercise the EOS → PAD embedding rule", file: file, line: line) }
    }

    func testHibikiMatchesKyutaiWithoutGuidance() throws {
        let f = try Self.load("hibiki_tiny")
        XCTAssertEqual(f.config.kind, .hibiki)
        XCTAssertEqual(f.config.conditioning?.values, ["very_bad", "bad", "neutral", "good", "very_good"])
        try Self.checkHibiki(f, cfg: 1, prefix: "")
    }

    func testHibikiMatchesKyutaiWithClassifierFreeGuidance() throws {
        let f = try Self.load("hibiki_tiny")
        XCTAssertEqual(f.file.metadata["cfg_coef"], "3.0")
        try Self.checkHibiki(f, cfg: 3, prefix: "cfg_")
    }

    func testHibikiConditionVectorsAreKyutais() throws {
        let f = try Self.load("hibiki_tiny")
        for value in ["very_good", "very_bad"] {
            var state = f.model.makeState(kvCache: .f32, condition: value)
            // A step on all −1 tokens (zero embeddings) feeds exactly the condition vector; compare
            // against a model state whose input is the reference's vector given as an embedding.
            var probe = f.model.makeState(kvCache: .f32, condition: nil)
            probe.condition = -1
            let reference = try f.floats("fixture.condition_\(value)")
            let none = [Int32](repeating: -1, count: f.config.numStreams)
            try none.withUnsafeBufferPointer { try f.model.temporalStep($0, state: &state) }
            try none.withUnsafeBufferPointer { tokens in
                try reference.withUnsafeBufferPointer { try f.model.temporalStep(tokens, state: &probe, embedding: $0.baseAddress!) }
            }
            assertClose(state.textLogits, probe.textLogits, relL2: 1e-5, "\(value): the condition vector summed into the input")
        }
    }

    func testGuidanceOnAnUnconditionedModelIsAnError() throws {
        let f = try Self.load("stt_tiny")
        var sampling = SamplingParameters.greedy
        sampling.cfgCoefficient = 2
        let gen = LMGen(model: f.model, sampling: sampling)
        var state = gen.makeState(kvCache: .f32)
        XCTAssertThrowsError(try gen.step(userCodes: f.user[0], state: &state)) { error in
            XCTAssertTrue("\(error)".contains("classifier-free guidance"), "\(error)")
        }
    }
}

/// Hibiki 2B's depformer weight sharing (`depformer_weights_per_step_schedule`) against Kyutai's
/// moshi 0.2.13 (fixture: tools/reference/fixtures_hibiki2b.py): n_q 32 / dep_q 16, depth steps
/// 8–15 on one weight set, with and without CFG.
final class WeightScheduleReferenceTests: XCTestCase {
    func testHibiki2BShapeWithSharedDepthWeightsMatchesKyutai() throws {
        let f = try FamilyReferenceTests.load("hibiki2b_tiny")
        let c = f.config
        XCTAssertEqual(c.depformerWeightsSchedule, Array(0..<8) + Array(repeating: 8, count: 8))
        XCTAssertEqual(c.depformerWeightSets, 9)
        XCTAssertEqual(c.userStreams, 16)
        XCTAssertGreaterThanOrEqual(f.user.count, 3 * c.context)
        try FamilyReferenceTests.checkHibiki(f, cfg: 1, prefix: "", expectEOS: false)
        try FamilyReferenceTests.checkHibiki(f, cfg: 3, prefix: "cfg_", expectEOS: false)
    }

    func testABadScheduleIsRefusedByKey() {
        for (schedule, mentions) in [("[0, 1]", "entries"), ("[0, 1, 2, 3, 4, 5, 6, 9]", "outside"), ("[0, 0, 0, 0, 0, 0, 0, 2]", "unused")] {
            XCTAssertThrowsError(try LMConfig(kyutaiConfigJSON: Data("{\"depformer_weights_per_step_schedule\": \(schedule)}".utf8))) { error in
                XCTAssertTrue("\(error)".contains("depformer_weights_per_step_schedule") && "\(error)".contains(mentions), "\(error)")
            }
        }
    }
}
