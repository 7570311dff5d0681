import DuplexCore
import Foundation
import XCTest

/// Kyutai's LMModel + LMGen (moshi 0.2.13) at a tiny width with the 7B's structure, run greedily
/// for 40 calls (5× its context of 8): every returned frame identical, the temporal (text) and
/// depth logits of every call within relative L2 1e-4 (fixture: tools/reference/fixtures_lm.py).
/// Kyutai's reference keeps its KV cache in f32 on CPU, so the parity runs with f32 KV rings;
/// what bf16 and q8 rings cost against it is `KVCacheTypeLMTests`'.
final class LMReferenceTests: XCTestCase {
    struct Fixture {
        let file: SafetensorsFile
        let config: LMConfig
        let model: LMModel
        let user: [[Int32]]        // [calls][8]
        let returned: [[Int32]]    // [calls − 1][9]
        let textLogits: Tensor     // [calls, textCard]
        let depthLogits: Tensor    // [calls, depQ, card]
    }

    static func loadLMFixture() throws -> Fixture {
        let file = try loadFixture("lm_tiny")
        let config = try LMConfig(kyutaiConfigJSON: Data(file.metadata["config"]!.utf8))
        let store = try WeightStore(files: [file])
        let model = LMModel(store: store, config: config)
        try store.finish(allowUnused: { $0.hasPrefix("fixture.") })
        let (userShape, userValues) = try file.intTensor("fixture.user_codes")
        let (retShape, retValues) = try file.intTensor("fixture.returned")
        let calls = userShape[1]
        let user = (0..<calls).map { t in (0..<userShape[0]).map { Int32(userValues[$0 * calls + t]) } }
        let returned = (0..<retShape[0]).map { t in (0..<retShape[1]).map { Int32(retValues[t * retShape[1] + $0]) } }
        return Fixture(file: file, config: config, model: model, user: user, returned: returned,
                       textLogits: try file.floatTensor("fixture.text_logits"),
                       depthLogits: try file.floatTensor("fixture.depth_logits"))
    }

    func testGreedyGenerationMatchesKyutai() throws {
        let f = try Self.loadLMFixture()
        let c = f.config
        XCTAssertEqual(f.user.count, 5 * c.context, "the fixture must run well past the context")
        let gen = LMGen(model: f.model, sampling: .greedy)
        var state = gen.makeState(kvCache: .f32)
        var mismatches: [String] = []
        for (t, codes) in f.user.enumerated() {
            let out = try gen.step(userCodes: codes, state: &state)
            assertClose(state.model.textLogits, Array(f.textLogits.data[(t * c.textCard)..<((t + 1) * c.textCard)]),
                        relL2: 1e-4, "text logits, call \(t)")
            let n = c.depQ * c.card
            assertClose(state.model.depformer.logits, Array(f.depthLogits.data[(t * n)..<((t + 1) * n)]),
                        relL2: 1e-4, "depth logits, call \(t)")
            if t == 0 {
                XCTAssertNil(out, "the first call returns nothing")
            } else if out != f.returned[t - 1] {
                mismatches.append("call \(t): \(out.map { "\($0)" } ?? "nil") vs \(f.returned[t - 1])")
            }
        }
        XCTAssertEqual(state.offset, f.user.count)
        XCTAssertTrue(mismatches.isEmpty, "greedy frames differ from Kyutai's:\n" + mismatches.prefix(5).joined(separator: "\n"))
    }

    func testResetReplaysTheSameConversation() throws {
        let f = try Self.loadLMFixture()
        let gen = LMGen(model: f.model, sampling: SamplingParameters(textTemperature: 0.7, textTopK: 5, audioTemperature: 0.8,
                                                                     audioTopK: 10, seed: 7))
        var state = gen.makeState()
        func run() throws -> [[Int32]?] { try f.user.prefix(20).map { try gen.step(userCodes: $0, state: &state) } }
        let first = try run()
        state.reset()
        XCTAssertEqual(try run(), first, "reset must replay exactly (ring, KV caches, sampler seed)")
        let reseeded = LMGen(model: f.model, sampling: SamplingParameters(textTemperature: 0.7, textTopK: 5, audioTemperature: 0.8,
                                                                          audioTopK: 10, seed: 8))
        var s8 = reseeded.makeState()
        let seed8 = try f.user.prefix(20).map { try reseeded.step(userCodes: $0, state: &s8) }
        XCTAssertNotEqual(seed8, first, "another seed samples another conversation")
    }

    // MARK: bad input

    func testUserTokenOutOfRangeIsAnError() throws {
        let f = try Self.loadLMFixture()
        let gen = LMGen(model: f.model, sampling: .greedy)
        var state = gen.makeState()
        var codes = f.user[0]
        codes[2] = Int32(f.config.card + 1)
        XCTAssertThrowsError(try gen.step(userCodes: codes, state: &state)) { error in
            XCTAssertEqual(error as? LMError, .tokenOutOfRange(stream: "user codebook 2", token: f.config.card + 1,
                                                                valid: -1...f.config.card))
            XCTAssertTrue("\(error)".contains("user codebook 2"), "\(error)")
        }
        codes[2] = -2
        XCTAssertThrowsError(try gen.step(userCodes: codes, state: &state))
        XCTAssertThrowsError(try gen.step(userCodes: Array(codes.prefix(5)), state: &state)) { error in
            XCTAssertEqual(error as? LMError, .wrongStreamCount(got: 5, expected: 8))
        }
        XCTAssertEqual(state.offset, 0, "a rejected step leaves the state untouched")
    }

    /// Copies the fixture's weights to a new file, changed by `edit` (name, raw bf16 bytes) → (name, bytes)?.
    private func rewrite(_ f: Fixture, _ edit: (String, Data) -> (String, Data)?) throws -> String {
        var writer = SafetensorsWriter()
        for name in f.file.names where !name.hasPrefix("fixture.") {
            let entry = f.file.entries[name]!
            guard let (newName, bytes) = edit(name, Data(f.file.bytes(entry))) else { continue }
            writer.add(newName, raw: bytes, dtype: entry.dtype, shape: entry.shape)
        }
        let path = temporaryPath("lm-\(UUID().uuidString).safetensors")
        try writer.write(to: path)
        return path
    }

    func testPoisonedWeightsRaiseInsteadOfEmittingGarbage() throws {
        let f = try Self.loadLMFixture()
        let path = try rewrite(f) { name, bytes in
            guard name == "transformer.layers.1.gating.linear_out.weight" else { return (name, bytes) }
            var poisoned = bytes
            poisoned[0] = 0xC0; poisoned[1] = 0x7F   // bf16 NaN, little-endian
            return (name, poisoned)
        }
        let model = try LMModel.load(path: path, config: f.config)
        let gen = LMGen(model: model, sampling: SamplingParameters())
        var state = gen.makeState()
        XCTAssertThrowsError(try gen.step(userCodes: f.user[0], state: &state)) { error in
            guard case .nonFiniteLogits(let what, let step)? = error as? LMError else {
                return XCTFail("expected nonFiniteLogits, got \(error)")
            }
            XCTAssertEqual(what, "text logits")
            XCTAssertEqual(step, 0)
        }
    }

    func testMissingAndMisshapedTensorsAreNamed() throws {
        let f = try Self.loadLMFixture()
        let path = try rewrite(f) { name, bytes in
            if name == "depformer_emb.3.weight" { return nil }
            if name == "linears.7.weight" { return ("linears.8.weight", bytes) }
            return (name, bytes)
        }
        XCTAssertThrowsError(try LMModel.load(path: path, config: f.config)) { error in
            let text = "\(error)"
            for expected in ["missing tensor depformer_emb.3.weight", "missing tensor linears.7.weight", "unexpected tensor linears.8.weight"] {
                XCTAssertTrue(text.contains(expected), "\(expected) not in: \(text)")
            }
        }
        // A config that disagrees with the weights: every misshaped tensor named, with a hint.
        var wrong = f.config
        wrong.card = 64
        let good = try rewrite(f) { ($0, $1) }
        XCTAssertThrowsError(try LMModel.load(path: good, config: wrong)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("emb.0.weight has shape [33, 64], expected [65, 64]"), text)
            XCTAssertTrue(text.contains("Does config.json"), text)
        }
    }

    func testConfigJSONErrorsNameTheKey() throws {
        func error(_ json: String) -> String {
            do {
                _ = try LMConfig(kyutaiConfigJSON: Data(json.utf8))
                return "no error"
            } catch { return "\(error)" }
        }
        XCTAssertTrue(error(#"{"dim": "big"}"#).contains("dim: expected an integer"))
        XCTAssertTrue(error(#"{"gating": "gelu"}"#).contains("gating: \"gelu\" is not supported"))
        XCTAssertTrue(error(#"{"delays": [0, 1]}"#).contains("delays: has 2 entries, expected 1 + n_q = 17"))
        XCTAssertTrue(error(#"{"num_heads": 3}"#).contains("num_heads"))
        XCTAssertTrue(error(#"{"kv_repeat": 2}"#).contains("kv_repeat"))
        XCTAssertTrue(error(#"{"dep_q": 0}"#).contains("dep_q"))
        XCTAssertTrue(error("[1, 2]").contains("JSON object"))
        XCTAssertTrue(error("{").contains("not valid JSON"))
        let config = try LMConfig(kyutaiConfigJSON: Data(#"{"dim": 2048, "num_heads": 16, "lm_gen_config": {"temp": 0.6}, "foo": 1}"#.utf8))
        XCTAssertEqual(config.dim, 2048)
        XCTAssertEqual(config.lmGenConfig["temp"], 0.6)
        XCTAssertEqual(config.ignoredKeys, ["foo"])
    }

    /// The defaults are moshiko 7B: spec §3.1's sizes and §3.10's parameter count.
    func testDefaultConfigIsMoshi7B() throws {
        let c = LMConfig.moshi7B
        XCTAssertEqual(c.hidden, 11264)
        XCTAssertEqual(c.depformerHidden, 2816)
        XCTAssertEqual(c.delays, [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1])
        XCTAssertEqual(c.parameterCount, 7_687_729_152)
        try c.validate()
        // Kyutai's own 7B kwargs, as a config.json, decode to the same thing.
        let json = #"""
        {"dim": 4096, "text_card": 32000, "existing_text_padding_id": 3, "n_q": 16, "dep_q": 8, "card": 2048,
         "num_heads": 32, "num_layers": 32, "hidden_scale": 4.125, "causal": true, "layer_scale": null, "context": 3000,
         "max_period": 10000, "gating": "silu", "norm": "rms_norm_f32", "positional_embedding": "rope",
         "depformer_dim": 1024, "depformer_dim_feedforward": 4224, "depformer_num_heads": 16, "depformer_num_layers": 6,
         "depformer_layer_scale": null, "depformer_multi_linear": true, "depformer_context": 8, "depformer_max_period": 10000,
         "depformer_gating": "silu", "depformer_pos_emb": "none", "depformer_weights_per_step": true,
         "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]}
        """#
        XCTAssertEqual(try LMConfig(kyutaiConfigJSON: Data(json.utf8)), c)
    }
}
