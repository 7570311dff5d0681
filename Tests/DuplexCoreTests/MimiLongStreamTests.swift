import DuplexCore
import XCTest

/// Kyutai's Mimi streaming well past its transformers' attention window
/// (tools/reference/fixtures_mimi_long.py): the `mimi_weights` model with both transformers'
/// context lowered to 16 steps (Kyutai's `set_attention_context`; the weights do not depend on
/// it), 48 frames = 96 transformer steps = 6 windows, one frame per call, 8 codebooks. The
/// 10-frame `mimi` fixture never wraps a KV ring; this one wraps both, several times over.
final class MimiLongStreamTests: XCTestCase {
    func testStreamingPastTheWindowMatchesReference() throws {
        let records = try loadFixture("mimi_long_records")
        let weights = try loadFixture("mimi_weights")
        let n = Int(records.metadata["codebooks"] ?? "") ?? 0
        let context = Int(records.metadata["context"] ?? "") ?? 0
        XCTAssertEqual(n, 8)
        XCTAssertEqual(records.metadata["weights"], "mimi_weights")
        var config = try MimiConfig(kyutaiJSON: weights.metadata["config"] ?? "", codebooks: n)
        XCTAssertEqual(config.transformerContext, 250, "the committed weights carry the released context")
        config.transformerContext = context
        let store = try WeightStore(files: [weights])
        let mimi = try Mimi(store: store, config: config)
        try store.finish()

        let audio = try records.floatTensor("input").data
        let frameSize = mimi.frameSize
        let frames = audio.count / frameSize
        XCTAssertEqual(frames, Int(records.metadata["frames"] ?? ""))

        // Streaming encode, one frame per call.
        let (latent, frameMajor, state) = streamingEncode(mimi, audio, codebooks: n)
        // The proof that the window was passed: every encoder layer's ring has been written
        // several times over its capacity, and the last step attended over a full window only.
        for layer in state.encoderTransformer.layers {
            let cache = layer.attention.cache
            XCTAssertEqual(cache.capacity, context)
            XCTAssertGreaterThanOrEqual(cache.end, 4 * context, "the encoder transformer's ring must wrap")
            XCTAssertEqual(cache.visibleEntries(query: cache.end - 1, window: context), context)
        }
        assertClose(latent, try records.floatTensor("latent_streaming").data, relL2: 1e-4, "streaming latent past the window")
        let expected = try records.intTensor("codes_streaming")
        XCTAssertEqual(expected.shape, [n, frames])
        var got = [Int32](repeating: 0, count: n * frames)
        for f in 0..<frames { for k in 0..<n { got[k * frames + f] = frameMajor[f * n + k] } }
        let want = expected.values.map { Int32($0) }
        XCTAssertEqual(got, want, "streaming codes past the window")
        // Codes that vary, and that vary after the wrap too (the part the short fixture misses).
        let minDistinct = Int(records.metadata["min_distinct_codes"] ?? "") ?? 8
        let stepsPerFrame = Int(records.metadata["transformer_steps_per_frame"] ?? "") ?? 2
        let afterWrap = context / stepsPerFrame + 1
        for k in 0..<n {
            XCTAssertGreaterThanOrEqual(Set(want[(k * frames + afterWrap)..<((k + 1) * frames)]).count, minDistinct,
                                        "codebook \(k) of the fixture is degenerate after the wrap")
        }

        // Streaming decode of the reference codes, one frame per call.
        var decoded = [Float](repeating: 0, count: frames * frameSize)
        var quantized: [Float] = []
        let refFrameMajor = (0..<(frames * n)).map { want[($0 % n) * frames + $0 / n] }
        try refFrameMajor.withUnsafeBufferPointer { c in
            try decoded.withUnsafeMutableBufferPointer { y in
                for f in 0..<frames {
                    try mimi.decodeStep(c.baseAddress! + f * n, codebooks: n, output: y.baseAddress! + f * frameSize, state: state)
                    quantized += state.lastQuantized(frames: 1)
                }
            }
        }
        for layer in state.decoderTransformer.layers {
            XCTAssertGreaterThanOrEqual(layer.attention.cache.end, 4 * context, "the decoder transformer's ring must wrap")
        }
        assertClose(quantized, try records.floatTensor("quantized_streaming").data, relL2: 1e-4, "streaming quantized latent past the window")
        let reference = try records.floatTensor("decoded_streaming").data
        assertClose(decoded, reference, relL2: 1e-4, "streaming decoded audio past the window")
        // And the frames after the wrap alone (a whole-signal error could hide a bad tail).
        let tail = afterWrap * frameSize
        assertClose(Array(decoded[tail...]), Array(reference[tail...]), relL2: 1e-4, "decoded audio after the wrap")
    }
}
