import DuplexCore
import Foundation
import XCTest

/// `--quantize` (in memory, as a model loads) and `duplex quantize` (a GGUF in candle's layout)
/// on a model whose widths fit every format (multiples of 256, as the 7B's are): the file, read
/// back, holds exactly the matrices the in-memory path makes, and each format follows the f32
/// model within its precision, teacher-forced.
final class QuantizeExportTests: XCTestCase {
    /// Widths that are multiples of one K-quant block (256): dim 256, gated hidden 512,
    /// depformer 256 with hidden 256; a context of 8 so the comparison runs past it.
    static let config: LMConfig = {
        var c = LMConfig()
        c.dim = 256; c.numHeads = 4; c.numLayers = 2; c.hiddenScale = 3; c.context = 8
        c.textCard = 48; c.textCardOut = 48; c.card = 64
        c.depformerDim = 256; c.depformerNumHeads = 4; c.depformerNumLayers = 1; c.depformerDimFeedforward = 384
        return c
    }()

    static func model(_ recipe: QuantizeRecipe?) throws -> LMModel {
        let store = WeightStore(randomSeed: 11, matrixType: .f32)
        store.quantizeRecipe = recipe
        let m = LMModel(store: store, config: config)
        try store.finish()
        return m
    }

    static let codes: [Int32] = {
        var g = SplitMix64(seed: 5)
        return (0..<(40 * config.userStreams)).map { _ in Int32(g.next() % UInt64(config.card)) }
    }()

    func testEachFormatFollowsTheF32Model() throws {
        let reference = try Self.model(nil)
        // Relative logit error bounds, a few times the formats' measured error on this model
        // (random weights are the hardest case for 4 bits: no outliers to spend precision on).
        let bounds: [(String, Double, Double)] = [("q8_0", 0.02, 0.95), ("q6_k", 0.04, 0.9), ("q4_k_m", 0.15, 0.75),
                                                  ("q4_k", 0.15, 0.6), ("iq4_nl", 0.18, 0.6), ("q4_0", 0.2, 0.55)]
        var errors: [String: Double] = [:]
        for (name, maxError, minTop1) in bounds {
            let recipe = try XCTUnwrap(QuantizeRecipe.lm(named: name))
            let q = try Self.model(recipe)
            let expectedFormats: Set<String> = switch name {
            case "q4_k_m": ["Q4_K", "Q6_K", "Q8_0"]
            default: [QuantType.ggmlTypes.first { $0.description.lowercased() == name }!.description]
            }
            XCTAssertEqual(Set(q.matrixFormats.keys), expectedFormats, name)
            let heads = try QuantizationQuality.teacherForced(reference: reference, candidate: q, userCodes: Self.codes, steps: 24)
            for h in heads {
                XCTAssertLessThanOrEqual(h.relativeError, maxError, "\(name) \(h.name)")
                XCTAssertGreaterThanOrEqual(h.top1Agreement, minTop1, "\(name) \(h.name)")
            }
            errors[name] = heads.map(\.relativeError).reduce(0, +) / Double(heads.count)
            print("quantize \(name): " + heads.map { String(format: "%@ %.4f/%.2f", $0.name, $0.relativeError, $0.top1Agreement) }.joined(separator: ", "))
        }
        // More bits, less error: the formats must rank as their precision does.
        XCTAssertLessThan(errors["q8_0"]!, errors["q6_k"]!)
        XCTAssertLessThan(errors["q6_k"]!, errors["q4_k"]!)
        XCTAssertLessThan(errors["q4_k"]!, errors["q4_0"]!, "Q4_K's searched scales must beat Q4_0's round-to-nearest")
    }

    func testGGUFRoundTripHoldsTheInMemoryQuantization() throws {
        for name in ["q8", "q4_k_m"] {
            let recipe = try XCTUnwrap(QuantizeRecipe.lm(named: name))
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("export-\(name)-\(getpid()).gguf").path
            defer { try? FileManager.default.removeItem(atPath: path) }
            let source = WeightStore(randomSeed: 11, matrixType: .f32)
            let summary = try LMGGUFExport.write(store: source, config: Self.config, recipe: recipe, to: path)
            XCTAssertGreaterThan(summary.tensors, LMTensorNames.table(Self.config).specs.count, "the depformer is written per step")
            let file = try GGUFFile(path: path)
            XCTAssertNotNil(file.entries["depformer.3.transformer.layers.0.self_attn.in_proj_weight"], "candle's names")
            XCTAssertEqual(file.entries["depformer.3.transformer.layers.0.norm1.alpha"]?.shape, [1, 1, 256], "candle's norm shape")
            let store = try WeightStore(path: path)
            let loaded = LMModel(store: store, config: Self.config)
            try store.finish()
            XCTAssertEqual(store.layout.name, "candle")
            let inMemory = try Self.model(recipe)
            XCTAssertEqual(loaded.matrixFormats, inMemory.matrixFormats, name)
            // The same bytes: the two models' logits agree exactly.
            let heads = try QuantizationQuality.teacherForced(reference: inMemory, candidate: loaded, userCodes: Self.codes, steps: 12)
            for h in heads {
                XCTAssertEqual(h.relativeError, 0, "\(name) \(h.name)")
                XCTAssertEqual(h.top1Agreement, 1, "\(name) \(h.name)")
            }
            // A folder holding only this file knows its config from the metadata.
            guard case .string(let json)? = file.metadata[LMConfig.ggufConfigKey] else { return XCTFail("no config in the GGUF") }
            XCTAssertEqual(try LMConfig(kyutaiJSON: json, source: "test"), Self.config)
        }
    }

    func testUnknownRecipeAndUnfitWidths() throws {
        XCTAssertNil(QuantizeRecipe.lm(named: "q3_k"))
        // A width no 256-block divides falls back to Q8_0 (32 values) rather than failing.
        let spec = TensorSpec("x.weight", [8, 96], .matrix, role: "test")
        let table = TensorTable(model: "t", specs: [spec])
        XCTAssertEqual(QuantizeRecipe.uniform(.q4_K).type(for: spec, table: table), .q8_0)
        XCTAssertNil(QuantizeRecipe.uniform(.q4_K).type(for: TensorSpec("n.alpha", [1, 1, 96], .norm, role: "t"), table: table))
    }
}

extension QuantizeExportTests {
    /// The CI fixture of Kyutai's LM (dim 64, depformer 32: widths only the 32-value formats fit),
    /// quantized at load against itself as stored (bf16), teacher-forced over its 40 calls.
    func testTinyFixtureQuality() throws {
        let file = try loadFixture("lm_tiny")
        let config = try LMConfig(kyutaiConfigJSON: Data(file.metadata["config"]!.utf8))
        func model(_ recipe: QuantizeRecipe?) throws -> LMModel {
            let store = try WeightStore(files: [file])
            store.quantizeRecipe = recipe
            let m = LMModel(store: store, config: config)
            try store.finish(allowUnused: { $0.hasPrefix("fixture.") })
            return m
        }
        let reference = try model(nil)
        let (shape, values) = try file.intTensor("fixture.user_codes")
        let calls = shape[1]
        let codes = (0..<calls).flatMap { t in (0..<shape[0]).map { Int32(values[$0 * calls + t]) } }
        var text: [String: Double] = [:]
        for (name, bound) in [("q8_0", 0.06), ("iq4_nl", 0.6), ("q4_0", 0.6)] {
            let q = try model(QuantizeRecipe.lm(named: name))
            let heads = try QuantizationQuality.teacherForced(reference: reference, candidate: q, userCodes: codes, steps: calls)
            print("lm_tiny \(name): " + heads.map { String(format: "%@ %.4f/%.2f", $0.name, $0.relativeError, $0.top1Agreement) }.joined(separator: ", "))
            for h in heads { XCTAssertLessThanOrEqual(h.relativeError, bound, "\(name) \(h.name)") }
            text[name] = heads[0].relativeError
        }
        XCTAssertLessThan(text["q8_0"]!, text["q4_0"]!)
    }
}
