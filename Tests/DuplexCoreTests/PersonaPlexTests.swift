import DuplexCore
import Foundation
import XCTest

/// PersonaPlex against NVIDIA's own LMGen (NVIDIA/personaplex@3428dfd, run on random weights by
/// tools/reference/fixtures_personaplex.py): the prompt phase (voice prompt from Mimi codes or
/// from the `.pt` file NVIDIA's code wrote, silence, the `<system>`-wrapped role text, silence)
/// then a greedy conversation past 3× the context. NVIDIA's call c + 1 is duplex's call c (its
/// LMGen steps nothing on call 0); every text logit of every step, the 8 depth steps duplex runs,
/// and every returned frame are compared.
final class PersonaPlexTests: XCTestCase {
    struct Fixture {
        let config: LMConfig
        let model: LMModel
        let records: SafetensorsFile
        let voicePath: String

        func ints(_ name: String) throws -> (shape: [Int], values: [Int32]) {
            let (shape, values) = try records.intTensor(name)
            return (shape, values.map { Int32($0) })
        }
    }

    static func load() throws -> Fixture {
        let weights = try loadFixture("personaplex_tiny")
        let records = try loadFixture("personaplex_tiny_records")
        var json = try JSONSerialization.jsonObject(with: Data(weights.metadata["config"]!.utf8)) as! [String: Any]
        json["model_type"] = "personaplex"   // NVIDIA's loader reads no config; duplex is told
        let config = try LMConfig(kyutaiConfigJSON: JSONSerialization.data(withJSONObject: json))
        let store = try WeightStore(files: [weights])
        let model = LMModel(store: store, config: config)
        try store.finish()
        guard let voice = fixturePath("personaplex_tiny_voice.pt") else { throw FixtureError(description: "missing fixture personaplex_tiny_voice.pt: run tools/reference/make_fixtures.py personaplex") }
        return Fixture(config: config, model: model, records: records, voicePath: voice)
    }

    private func prompt(_ f: Fixture, fromFile: Bool) throws -> PersonaPlexPrompt {
        let (vShape, vCodes) = try f.ints("fixture.voice_codes")
        let voice: PersonaPlexPrompt.Voice = fromFile
            ? .embeddings(try TorchVoiceFile(path: f.voicePath))
            : .codes((0..<vShape[1]).map { t in (0..<vShape[0]).map { vCodes[$0 * vShape[1] + t] } })
        return try PersonaPlexPrompt(voice: voice, textTokens: try f.ints("fixture.text_prompt_ids").values.map { Int($0) },
                                     config: f.config, silence: try f.ints("fixture.silence_tokens").values,
                                     sine: try f.ints("fixture.sine_tokens").values)
    }

    private func check(fromFile: Bool) throws {
        let f = try Self.load()
        let c = f.config
        let p = try prompt(f, fromFile: fromFile)
        XCTAssertEqual(p.frameCount, Int(f.records.metadata["first_conversation_offset"]!), "prompt frames")
        let gen = LMGen(model: f.model, sampling: .greedy)
        var state = gen.makeState(kvCache: .f32)
        let textLogits = try f.records.floatTensor("fixture.text_logits").data
        let depthLogits = try f.records.floatTensor("fixture.depth_logits").data
        let (rShape, returned) = try f.ints("fixture.returned")
        let (uShape, user) = try f.ints("fixture.user_codes")
        let steps = Int(f.records.metadata["steps"]!)!
        XCTAssertGreaterThan(steps, 3 * c.context, "prompt and conversation must run past 3× the context")
        XCTAssertGreaterThan(steps - p.frameCount, 2 * c.context, "the conversation alone past 2× the context")
        var frames: [Int: [Int32]] = [:]
        // The prompt, then the conversation, one call at a time (the prompt's own loop is what
        // `run` does; here every call's logits are checked).
        var promptState = gen.makeState(kvCache: .f32)
        try p.run(gen, state: &promptState)
        var mismatches: [String] = []
        for call in 0..<steps {
            if call < p.frameCount {
                try p.step(call: call, gen: gen, state: &state)
            } else {
                let t = call - p.frameCount
                let codes = (0..<uShape[0]).map { user[$0 * uShape[1] + t] }
                _ = try gen.step(userCodes: codes, state: &state)
            }
            if call >= c.maxDelay { frames[call] = state.output }
            assertClose(state.model.textLogits, Array(textLogits[(call * c.textCard)..<((call + 1) * c.textCard)]), relL2: 1e-4,
                        "text logits, step \(call)")
            if call >= p.frameCount - 1 {
                // Depth steps 0…7 (NVIDIA's 8…15 predict the user and are overwritten by the input).
                let n = 16 * c.card
                assertClose(Array(state.model.depformer.logits.prefix(8 * c.card)), Array(depthLogits[(call * n)..<(call * n + 8 * c.card)]), relL2: 1e-4,
                            "depth logits, step \(call)")
            }
            let nvidia = Array(returned[((call + 1) * rShape[1])..<((call + 1) * rShape[1] + 9)])
            if let mine = frames[call], call + 1 >= 2, (!fromFile || call >= 4), mine != nvidia {
                mismatches.append("call \(call): \(mine) vs NVIDIA's \(nvidia)")
            }
        }
        XCTAssertTrue(mismatches.isEmpty, "frames differ from NVIDIA's:\n" + mismatches.prefix(5).joined(separator: "\n"))
        // `run` leaves the state exactly where the call-by-call prompt did.
        XCTAssertEqual(promptState.offset, p.frameCount)
    }

    func testPromptFromVoiceCodesThenConversationMatchNVIDIA() throws { try check(fromFile: false) }

    func testPromptFromNVIDIAsVoiceFileMatchesToo() throws { try check(fromFile: true) }

    func testSystemTagsAreNVIDIAs() {
        XCTAssertEqual(PersonaPlexPrompt.wrapWithSystemTags("  You are a wise teacher. \n"), "<system> You are a wise teacher. <system>")
        XCTAssertEqual(PersonaPlexPrompt.wrapWithSystemTags("<system> kept <system>"), "<system> kept <system>")
    }

    // MARK: bad input

    func testPromptsOnAnotherModelAreRefused() throws {
        XCTAssertThrowsError(try PersonaPlexPrompt(voice: nil, textTokens: [5], config: .moshi7B)) { error in
            XCTAssertTrue("\(error)".contains("PersonaPlex"), "\(error)")
        }
    }

    func testAVoiceFileOfAnotherWidthIsRefusedNamingTheFile() throws {
        let f = try Self.load()
        var other = LMConfig.personaplex7B
        other.dim = 128
        XCTAssertThrowsError(try PersonaPlexPrompt(voice: .embeddings(try TorchVoiceFile(path: f.voicePath)), textTokens: [], config: other)) { error in
            XCTAssertTrue("\(error)".contains("personaplex_tiny_voice.pt") && "\(error)".contains("64 wide"), "\(error)")
        }
    }

    func testATextPromptLongerThanTheContextIsRefused() throws {
        let f = try Self.load()
        let p = try PersonaPlexPrompt(voice: nil, textTokens: Array(repeating: 10, count: 40), config: f.config,
                                      silence: try f.ints("fixture.silence_tokens").values, sine: try f.ints("fixture.sine_tokens").values)
        XCTAssertThrowsError(try p.checkFitsContext(f.config)) { error in
            XCTAssertTrue("\(error)".contains("shorten the text prompt"), "\(error)")
        }
        XCTAssertThrowsError(try PersonaPlexPrompt(voice: nil, textTokens: [600], config: f.config,
                                                   silence: try f.ints("fixture.silence_tokens").values,
                                                   sine: try f.ints("fixture.sine_tokens").values))
    }
}
