import DuplexCore
import XCTest

/// Kyutai's Mimi (moshi 0.2.13) in a shrunk configuration of the released structure, seeded,
/// with codebooks drawn from other speech-like audio (tools/reference/fixtures_mimi.py): latents,
/// codes, quantized latents and decoded audio, streaming (one frame per call) and offline, for 8
/// and 32 codebooks.
final class MimiReferenceTests: XCTestCase {
    /// Loads the fixture model strictly by its checkpoint names: no tensor may be left over.
    static func tinyMimi(codebooks: Int) throws -> Mimi {
        let weights = try loadFixture("mimi_weights")
        let config = try MimiConfig(kyutaiJSON: weights.metadata["config"] ?? "", codebooks: codebooks)
        let store = try WeightStore(files: [weights])
        let mimi = try Mimi(store: store, config: config)
        try store.finish()
        return mimi
    }

    static func input() throws -> [Float] { try loadFixture("mimi_records").floatTensor("input").data }

    private func codes(_ f: SafetensorsFile, _ name: String) throws -> (shape: [Int], values: [Int32]) {
        let t = try f.intTensor(name)
        return (t.shape, t.values.map { Int32($0) })
    }

    private func run(codebooks n: Int) throws {
        let records = try loadFixture("mimi_records")
        let mimi = try Self.tinyMimi(codebooks: n)
        let audio = try records.floatTensor("input").data
        let frameSize = mimi.frameSize
        XCTAssertEqual(frameSize, 1920)
        let frames = audio.count / frameSize
        let d = mimi.config.dimension

        // Streaming encode, one frame per call.
        let (latent, frameMajor, state) = streamingEncode(mimi, audio, codebooks: n)
        assertClose(latent, try records.floatTensor("q\(n).latent_streaming").data, relL2: 1e-4, "q\(n) streaming latent")
        let expected = try codes(records, "q\(n).codes_streaming")
        XCTAssertEqual(expected.shape, [n, frames])
        var got = [Int32](repeating: 0, count: n * frames)
        for f in 0..<frames { for k in 0..<n { got[k * frames + f] = frameMajor[f * n + k] } }
        XCTAssertEqual(got, expected.values, "q\(n) streaming codes")

        // The codes must vary, or identical codes would prove little.
        let minDistinct = Int(records.metadata["min_distinct_codes"] ?? "") ?? 4
        for k in 0..<n {
            XCTAssertGreaterThanOrEqual(Set(expected.values[(k * frames)..<((k + 1) * frames)]).count, minDistinct,
                                        "codebook \(k) of the fixture is degenerate")
        }

        // Streaming decode of the reference codes, one frame per call.
        var decoded = [Float](repeating: 0, count: frames * frameSize)
        var quantized: [Float] = []
        let refFrameMajor = (0..<(frames * n)).map { expected.values[($0 % n) * frames + $0 / n] }
        try refFrameMajor.withUnsafeBufferPointer { c in
            try decoded.withUnsafeMutableBufferPointer { y in
                for f in 0..<frames {
                    try mimi.decodeStep(c.baseAddress! + f * n, codebooks: n, output: y.baseAddress! + f * frameSize, state: state)
                    quantized += state.lastQuantized(frames: 1)
                }
            }
        }
        assertClose(quantized, try records.floatTensor("q\(n).quantized_streaming").data, relL2: 1e-4, "q\(n) streaming quantized latent")
        assertClose(decoded, try records.floatTensor("q\(n).decoded_streaming").data, relL2: 1e-4, "q\(n) streaming decoded audio")

        // Offline: the whole input at once.
        let offline = mimi.encode(audio)
        XCTAssertEqual(offline.codebooks, n)
        XCTAssertEqual(offline.frames, frames)
        XCTAssertEqual(offline.values, try codes(records, "q\(n).codes_offline").values, "q\(n) offline codes")
        let offlineAudio = try mimi.decode(offline)
        assertClose(offlineAudio, try records.floatTensor("q\(n).decoded_offline").data, relL2: 1e-4, "q\(n) offline decoded audio")

        // Offline latent: the same path in chunks of several frames.
        let chunked = mimi.makeState(maxFrames: 4)
        var offlineLatent: [Float] = []
        var scratchCodes = [Int32](repeating: 0, count: 4 * n)
        audio.withUnsafeBufferPointer { x in
            scratchCodes.withUnsafeMutableBufferPointer { c in
                var f = 0
                while f < frames {
                    let take = min(4, frames - f)
                    mimi.encode(x.baseAddress! + f * frameSize, frames: take, codes: c.baseAddress!, state: chunked)
                    offlineLatent += chunked.lastLatent(frames: take)
                    f += take
                }
            }
        }
        XCTAssertEqual(offlineLatent.count, frames * d)
        assertClose(offlineLatent, try records.floatTensor("q\(n).latent_offline").data, relL2: 1e-4, "q\(n) offline latent")
    }

    func testEightCodebooks() throws { try run(codebooks: 8) }

    func testThirtyTwoCodebooks() throws { try run(codebooks: 32) }

    /// The fixture's config is the released structure, shrunk: same ratios, frame, codebook count.
    func testFixtureConfigKeepsTheReleasedStructure() throws {
        let mimi = try Self.tinyMimi(codebooks: 8)
        let released = MimiConfig.released()
        XCTAssertEqual(mimi.config.ratios, released.ratios)
        XCTAssertEqual(mimi.config.frameSize, released.frameSize)
        XCTAssertEqual(mimi.config.totalCodebooks, released.totalCodebooks)
        XCTAssertEqual(mimi.config.resampleStride, 2)
        XCTAssertEqual(mimi.config.transformerContext, released.transformerContext)
    }
}
