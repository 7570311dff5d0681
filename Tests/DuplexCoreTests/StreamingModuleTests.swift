import DuplexCore
import Foundation
import XCTest

/// The streaming contract as a protocol, and one position counter per stream.
final class StreamingModuleTests: XCTestCase {
    /// Runs `calls` through any streaming module from a fresh state.
    func run<M: StreamingModule>(_ module: M, _ calls: [M.Input]) throws -> (M.State, [M.Output]) {
        var state = module.makeState()
        var outputs: [M.Output] = []
        for c in calls { outputs.append(try module.step(c, state: &state)) }
        return (state, outputs)
    }

    func tinyLM() -> LMConfig {
        var c = LMConfig()
        (c.dim, c.numHeads, c.numLayers, c.textCard, c.textCardOut, c.card, c.context) = (32, 2, 2, 40, 40, 32, 4)
        (c.depformerDim, c.depformerNumHeads, c.depformerNumLayers, c.depformerDimFeedforward) = (16, 2, 1, 66)
        return c
    }

    func testLMGenPositionsAreOneCounter() throws {
        let gen = LMGen(model: LMModel(store: WeightStore(randomSeed: 11), config: tinyLM()),
                        sampling: SamplingParameters(textTemperature: 0, textTopK: 25, audioTemperature: 0, audioTopK: 250, seed: 1))
        let codes = [Int32](repeating: 3, count: 8)
        let (state, produced) = try codes.withUnsafeBufferPointer { b in try run(gen, Array(repeating: b, count: 7)) }
        XCTAssertEqual(produced, [false, true, true, true, true, true, true])
        XCTAssertEqual(state.offset, 7)
        XCTAssertEqual(state.model.steps, 7)
        XCTAssertEqual(state.model.transformer.position, 7)
        XCTAssertTrue(state.model.transformer.layers.allSatisfy { $0.offset == 7 && $0.attention.offset == 7 })
        // The same calls by the old entry point give the same frames.
        var direct = gen.makeState()
        var again = gen.makeState()
        for _ in 0..<7 {
            _ = try gen.step(userCodes: codes, state: &direct)
            _ = try codes.withUnsafeBufferPointer { try gen.step($0, state: &again) }
            XCTAssertEqual(direct.output, again.output)
        }
        var reset = state
        gen.reset(&reset)
        XCTAssertEqual(reset.offset, 0)
        var inPlace = state
        inPlace.reset()
        XCTAssertEqual(inPlace.offset, 0)
        XCTAssertEqual(inPlace.model.transformer.position, 0)
    }

    func testMimiFrameCountsComeFromItsTransformers() throws {
        let config = try MimiConfig(kyutaiJSON: #"{"seanet": {"dimension": 32, "n_filters": 4}, "quantizer": {"dimension": 8, "bins": 64}, "transformer": {"d_model": 32, "num_heads": 4, "num_layers": 2, "dim_feedforward": 64}}"#)
        let mimi = try Mimi(store: WeightStore(randomSeed: 12), config: config)
        let audio = randomArray(3 * 1920, seed: 1, scale: 0.1)
        var codes = [Int32](repeating: 0, count: 3 * 8)
        var out = [Float](repeating: 0, count: 1920)
        var state = mimi.makeState()
        try audio.withUnsafeBufferPointer { a in
            try codes.withUnsafeMutableBufferPointer { c in
                for f in 0..<3 { try mimi.step(.encode(a.baseAddress! + f * 1920, codes: c.baseAddress! + f * 8), state: &state) }
                try out.withUnsafeMutableBufferPointer { o in
                    try mimi.step(.decode(c.baseAddress!, codebooks: 8, output: o.baseAddress!), state: &state)
                }
            }
        }
        XCTAssertEqual(state.encodedFrames, 3)
        XCTAssertEqual(state.decodedFrames, 1)
        let offline = mimi.encode(audio)
        XCTAssertEqual(codes, codes.indices.map { offline[$0 % 8, $0 / 8] }, "streaming through the protocol = offline")
        mimi.reset(&state)
        XCTAssertEqual(state.encodedFrames, 0)
    }
}
