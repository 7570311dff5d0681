import DuplexCore
import XCTest

/// Kyutai's StreamingTransformer streamed two steps per call past its context: ring KV cache
/// wrap-around, absolute RoPE positions, both norm/FFN flavours.
final class TransformerReferenceTests: XCTestCase {
    private func run(_ name: String, config: (Int) -> TransformerConfig) throws {
        let f = try loadFixture("transformer_\(name)")
        let store = try WeightStore(files: [f])
        let context = Int(f.metadata["context"]!)!
        let perCall = Int(f.metadata["steps_per_call"]!)!
        let model = StreamingTransformer(store: store, prefix: "weights.", config: config(context))
        try store.finish(allowUnused: { !$0.hasPrefix("weights.") })
        let input = try f.floatTensor("input")
        let expected = try f.floatTensor("output_streaming")
        let (steps, dim) = (input.shape[0], input.shape[1])
        XCTAssertGreaterThan(steps, context + 2, "the fixture must run past the context")

        var state = model.makeState(maxSteps: perCall)
        var output = input.data
        output.withUnsafeMutableBufferPointer { p in
            for t in stride(from: 0, to: steps, by: perCall) {
                model.step(p.baseAddress! + t * dim, steps: min(perCall, steps - t), state: &state)
            }
        }
        assertClose(output, expected.data, relL2: 1e-5, "\(name) streaming output")

        // A reset state gives the same answer again (nothing leaks from the first run).
        state.reset()
        var again = input.data
        again.withUnsafeMutableBufferPointer { p in
            for t in stride(from: 0, to: steps, by: perCall) {
                model.step(p.baseAddress! + t * dim, steps: min(perCall, steps - t), state: &state)
            }
        }
        XCTAssertEqual(again, output, "\(name): reset must give a fresh stream")
    }

    func testMimiLikeTransformer() throws {
        try run("mimi_like") { context in
            TransformerConfig(dim: 32, numHeads: 4, numLayers: 2, feedForward: .gelu(hidden: 64), norm: .layerNorm(eps: 1e-5),
                              layerScale: true, context: context, ropeMaxPeriod: 10000)
        }
    }

    func testLMLikeTransformer() throws {
        try run("lm_like") { context in
            TransformerConfig(dim: 32, numHeads: 2, numLayers: 2,
                              feedForward: .siluGated(hidden: TransformerConfig.gatedHidden(dim: 32, dimFeedforward: 132)),
                              norm: .rmsNorm(eps: 1e-8), layerScale: false, context: context, ropeMaxPeriod: 10000)
        }
    }
}
