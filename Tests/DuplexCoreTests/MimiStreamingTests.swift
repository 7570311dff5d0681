import DuplexCore
import XCTest

/// Streaming contract of the codec on the tiny fixture model: chunking does not change results,
/// reset starts a fresh conversation, bad input is named or neutralised.
final class MimiStreamingTests: XCTestCase {
    private struct Run {
        var codes: [Int32] = []     // frame-major
        var latent: [Float] = []
        var audio: [Float] = []
    }

    /// Encodes `audio` and decodes the codes back, `chunk` frames per call, on one state.
    private func stream(_ mimi: Mimi, _ audio: [Float], chunk: Int, state given: Mimi.State? = nil) throws -> Run {
        let n = mimi.numCodebooks
        let fs = mimi.frameSize
        let frames = audio.count / fs
        let state = given ?? mimi.makeState(maxFrames: chunk)
        var run = Run()
        var codes = [Int32](repeating: 0, count: chunk * n)
        var out = [Float](repeating: 0, count: chunk * fs)
        var f = 0
        while f < frames {
            let take = min(chunk, frames - f)
            audio.withUnsafeBufferPointer { x in
                codes.withUnsafeMutableBufferPointer { mimi.encode(x.baseAddress! + f * fs, frames: take, codes: $0.baseAddress!, state: state) }
            }
            run.latent += state.lastLatent(frames: take)
            try codes.withUnsafeBufferPointer { c in
                try out.withUnsafeMutableBufferPointer { try mimi.decode(c.baseAddress!, codebooks: n, frames: take, output: $0.baseAddress!, state: state) }
            }
            run.codes += codes[0..<(take * n)]
            run.audio += out[0..<(take * fs)]
            f += take
        }
        return run
    }

    private func frameMajor(_ codes: MimiCodes) -> [Int32] {
        (0..<(codes.frames * codes.codebooks)).map { codes[$0 % codes.codebooks, $0 / codes.codebooks] }
    }

    func testStreamingEqualsOfflineOverChunkSizes() throws {
        let mimi = try MimiReferenceTests.tinyMimi(codebooks: 8)
        let audio = try MimiReferenceTests.input()
        let offline = mimi.encode(audio)
        let offlineAudio = try mimi.decode(offline)
        let one = try stream(mimi, audio, chunk: 1)
        for chunk in [1, 2, 3] {
            let run = try stream(mimi, audio, chunk: chunk)
            XCTAssertEqual(run.codes, frameMajor(offline), "codes, \(chunk) frames per call")
            XCTAssertLessThanOrEqual(maxAbsDiff(run.audio, offlineAudio), 1e-5, "decoded audio, \(chunk) frames per call")
            XCTAssertLessThanOrEqual(maxAbsDiff(run.latent, one.latent), 1e-5, "latent, \(chunk) frames per call")
        }
    }

    func testFrameBufferAcceptsAnyChunkSize() throws {
        let mimi = try MimiReferenceTests.tinyMimi(codebooks: 8)
        var audio = try MimiReferenceTests.input()
        audio += audio[0..<777]  // a partial last frame
        let offline = mimi.encode(audio)
        XCTAssertEqual(offline.frames, 11)

        let state = mimi.makeState()
        var buffer = MimiFrameBuffer(frameSize: mimi.frameSize)
        var codes: [Int32] = []
        var frame = [Int32](repeating: 0, count: 8)
        let emit: (UnsafePointer<Float>) -> Void = { samples in
            frame.withUnsafeMutableBufferPointer { mimi.encodeStep(samples, codes: $0.baseAddress!, state: state) }
            codes += frame
        }
        var offset = 0
        var sizes = [1, 1000, 7, 1920, 3840, 4001, 0, 2]
        while offset < audio.count {
            let n = min(sizes.isEmpty ? 5000 : sizes.removeFirst(), audio.count - offset)
            audio.withUnsafeBufferPointer { buffer.push(UnsafeBufferPointer(rebasing: $0[offset..<(offset + n)]), emit) }
            offset += n
        }
        XCTAssertEqual(buffer.count, 777)
        XCTAssertEqual(buffer.flush(emit), mimi.frameSize - 777)
        XCTAssertEqual(buffer.count, 0)
        XCTAssertEqual(codes, frameMajor(offline))
    }

    func testResetStartsAFreshConversation() throws {
        let mimi = try MimiReferenceTests.tinyMimi(codebooks: 8)
        let audio = try MimiReferenceTests.input()
        let state = mimi.makeState()
        let first = try stream(mimi, audio, chunk: 1, state: state)
        XCTAssertEqual(state.encodedFrames, 10)
        // Without a reset, the second pass sees the first one's history and differs.
        let continued = try stream(mimi, audio, chunk: 1, state: state)
        XCTAssertGreaterThan(maxAbsDiff(continued.audio, first.audio), 1e-3)
        state.reset()
        XCTAssertEqual(state.encodedFrames, 0)
        XCTAssertEqual(state.decodedFrames, 0)
        let again = try stream(mimi, audio, chunk: 1, state: state)
        XCTAssertEqual(again.codes, first.codes)
        XCTAssertEqual(again.latent, first.latent)
        XCTAssertEqual(again.audio, first.audio, "reset must clear every conv and both transformers")
    }

    func testNonFiniteSamplesAreReplacedWithoutPoisoningTheStream() throws {
        let mimi = try MimiReferenceTests.tinyMimi(codebooks: 8)
        let audio = try MimiReferenceTests.input()
        var bad = audio, clean = audio
        for (i, v) in [(3 * 1920 + 5, Float.nan), (3 * 1920 + 6, .infinity), (3 * 1920 + 7, -.infinity), (4 * 1920, .nan)] {
            bad[i] = v
            clean[i] = v.isNaN ? 0 : (v > 0 ? 1 : -1)
        }
        let state = mimi.makeState()
        let got = try stream(mimi, bad, chunk: 1, state: state)
        XCTAssertEqual(state.sanitizedSamples, 4)
        let expected = try stream(mimi, clean, chunk: 1)
        XCTAssertEqual(got.codes, expected.codes)
        XCTAssertEqual(got.audio, expected.audio)
        XCTAssertTrue(got.latent.allSatisfy(\.isFinite) && got.audio.allSatisfy(\.isFinite))
    }

    func testOutOfRangeCodesAreNamedAndLeaveTheStateUntouched() throws {
        let mimi = try MimiReferenceTests.tinyMimi(codebooks: 8)
        let audio = try MimiReferenceTests.input()
        let codes = mimi.encode(audio)
        let reference = try mimi.decode(codes)
        for badValue: Int32 in [Int32(mimi.bins), -1, 1_000_000] {
            var bad = codes
            bad.values[3 * codes.frames + 4] = badValue  // codebook 3, frame 4
            XCTAssertThrowsError(try mimi.decode(bad)) { error in
                XCTAssertEqual(error as? MimiError, .codeOutOfRange(frame: 4, codebook: 3, value: badValue, bins: mimi.bins))
                XCTAssertTrue("\(error)".contains("frame 4, codebook 3"), "\(error)")
            }
        }
        // Streaming: the error names the stream's frame index and the state is left as it was.
        let state = mimi.makeState()
        let fm = frameMajor(codes)
        var out = [Float](repeating: 0, count: mimi.frameSize)
        var decoded: [Float] = []
        for f in 0..<codes.frames {
            if f == 6 {
                var bad = Array(fm[(f * 8)..<((f + 1) * 8)])
                bad[7] = -5
                XCTAssertThrowsError(try bad.withUnsafeBufferPointer { c in
                    try out.withUnsafeMutableBufferPointer { try mimi.decodeStep(c.baseAddress!, codebooks: 8, output: $0.baseAddress!, state: state) }
                }) { XCTAssertEqual($0 as? MimiError, .codeOutOfRange(frame: 6, codebook: 7, value: -5, bins: mimi.bins)) }
            }
            try fm.withUnsafeBufferPointer { c in
                try out.withUnsafeMutableBufferPointer { try mimi.decodeStep(c.baseAddress! + f * 8, codebooks: 8, output: $0.baseAddress!, state: state) }
            }
            decoded += out
        }
        XCTAssertLessThanOrEqual(maxAbsDiff(decoded, reference), 1e-5)
    }

    func testCodebookCountIsChecked() throws {
        let mimi = try MimiReferenceTests.tinyMimi(codebooks: 8)
        let nine = MimiCodes(codebooks: 9, frames: 2, values: [Int32](repeating: 1, count: 18))
        XCTAssertThrowsError(try mimi.decode(nine)) { XCTAssertEqual($0 as? MimiError, .codebookCount(given: 9, usable: 8)) }
        // Fewer codebooks than the model's are fine (a coarser reconstruction).
        let three = MimiCodes(codebooks: 3, frames: 2, values: [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try mimi.decode(three).count, 2 * mimi.frameSize)
    }

    func testEmptyAndPartialInputArePadded() throws {
        let mimi = try MimiReferenceTests.tinyMimi(codebooks: 8)
        let empty = mimi.encode([])
        XCTAssertEqual(empty.frames, 0)
        XCTAssertEqual(empty.codebooks, 8)
        XCTAssertEqual(try mimi.decode(empty), [])
        let audio = try MimiReferenceTests.input()
        let partial = Array(audio[0..<(2 * 1920 + 5)])
        let padded = partial + [Float](repeating: 0, count: 1920 - 5)
        XCTAssertEqual(mimi.encode(partial), mimi.encode(padded))
        XCTAssertEqual(mimi.encode(partial).frames, 3)
    }

    func testMissingMisshapedAndExtraTensorsAreNamed() throws {
        let weights = try loadFixture("mimi_weights")
        var w = SafetensorsWriter()
        for name in weights.names {
            var t = try weights.floatTensor(name)
            if name == "encoder.model.0.conv.conv.bias" { continue }
            if name == "downsample.conv.conv.conv.weight" { t = Tensor(zeros: [t.shape[0], t.shape[1], 3]) }
            w.add(name, t)
        }
        w.add("encoder.model.99.conv.conv.weight", Tensor(zeros: [2]))
        let path = temporaryPath("broken-mimi.safetensors")
        try w.write(to: path)
        let config = try MimiConfig(kyutaiJSON: weights.metadata["config"] ?? "")
        XCTAssertThrowsError(try Mimi.load(path: path, config: config)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("missing tensor encoder.model.0.conv.conv.bias"), text)
            XCTAssertTrue(text.contains("downsample.conv.conv.conv.weight has shape [32, 32, 3], expected [32, 32, 4]"), text)
            XCTAssertTrue(text.contains("unexpected tensor encoder.model.99.conv.conv.weight"), text)
        }
    }

    func testConfigParsingRefusesWhatItCannotRun() throws {
        XCTAssertThrowsError(try MimiConfig(kyutaiJSON: #"{"seanet": {"pad_mode": "reflect"}}"#))
        XCTAssertThrowsError(try MimiConfig(kyutaiJSON: #"{"seanet": {"causal": false}}"#))
        XCTAssertThrowsError(try MimiConfig(kyutaiJSON: #"{"transformer": {"d_model": 256}}"#))
        XCTAssertThrowsError(try MimiConfig(kyutaiJSON: "{}", codebooks: 33))
        let released = try MimiConfig(kyutaiJSON: "{}")
        XCTAssertEqual(released, .released())
        XCTAssertEqual(released.frameSize, 1920)
        XCTAssertEqual(released.hopLength, 960)
    }
}
