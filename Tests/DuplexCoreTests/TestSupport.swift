import DuplexCore
import Foundation
import XCTest

/// Relative L2 error ‖a − b‖ / ‖b‖ (b is the reference).
func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "length \(a.count) vs \(b.count)")
    var num = 0.0, den = 0.0
    for i in a.indices {
        let d = Double(a[i]) - Double(b[i])
        num += d * d
        den += Double(b[i]) * Double(b[i])
    }
    return den == 0 ? num.squareRoot() : (num / den).squareRoot()
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var m: Float = 0
    for i in a.indices { m = max(m, abs(a[i] - b[i])) }
    return m
}

/// Asserts a relative L2 error bound and, on failure, prints the first mismatches and the max error.
func assertClose(_ actual: [Float], _ expected: [Float], relL2 tolerance: Double, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(what): length", file: file, line: line)
    guard actual.count == expected.count else { return }
    let err = relativeL2(actual, expected)
    if !(err <= tolerance) {
        var firsts: [String] = []
        for i in actual.indices where abs(actual[i] - expected[i]) > Float(tolerance) * max(1, abs(expected[i])) {
            firsts.append("[\(i)] \(actual[i]) vs \(expected[i])")
            if firsts.count == 5 { break }
        }
        XCTFail("\(what): relative L2 \(err) > \(tolerance); max abs \(maxAbsDiff(actual, expected)); first: \(firsts.joined(separator: ", "))",
                file: file, line: line)
    }
}

func randomArray(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var g = SplitMix64(seed: seed)
    return (0..<n).map { _ in g.nextGaussian() * scale }
}

/// A fresh temporary file path, removed by the caller's test teardown or the OS.
func temporaryPath(_ name: String) -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("duplex-tests-\(getpid())")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent(name).path
}

/// The committed fixture folder of this test target.
func fixturePath(_ name: String) -> String? {
    Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil)?.path
}

/// A committed fixture that is missing or stale. Thrown, it fails the test (never skips it):
/// a fixture that silently stops being checked is a parity test that silently stops existing.
struct FixtureError: Error, CustomStringConvertible {
    let description: String
}

/// The path of a committed fixture, or a failure saying how to regenerate it.
func requireFixture(_ name: String, generator: String = "all") throws -> String {
    guard let path = fixturePath(name) else {
        throw FixtureError(description: "fixture \(name) is missing: regenerate it with "
            + "\"$(tools/reference/setup_venv.sh)\" tools/reference/make_fixtures.py \(generator)")
    }
    return path
}

/// Format version the fixtures must carry (tools/reference/make_fixtures.py FORMAT_VERSION).
let fixtureFormatVersion = "1"

/// Opens a committed reference fixture, checking its format tag.
func loadFixture(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> SafetensorsFile {
    let f = try SafetensorsFile(path: try requireFixture("\(name).safetensors"))
    guard f.metadata["format_version"] == fixtureFormatVersion else {
        throw FixtureError(description: "fixture \(name) has format_version \(f.metadata["format_version"] ?? "none"), "
            + "expected \(fixtureFormatVersion): regenerate it with \"$(tools/reference/setup_venv.sh)\" tools/reference/make_fixtures.py all")
    }
    return f
}

/// Kyutai's streaming encode, one 1920-sample frame per call: the latent of every frame, and the
/// codes frame-major ([frames, n]). Returns the state too, for tests that look inside it.
func streamingEncode(_ mimi: Mimi, _ audio: [Float], codebooks n: Int) -> (latent: [Float], frameMajor: [Int32], state: Mimi.State) {
    let frameSize = mimi.frameSize
    let frames = audio.count / frameSize
    let state = mimi.makeState()
    var latent: [Float] = []
    var frameMajor = [Int32](repeating: 0, count: frames * n)
    audio.withUnsafeBufferPointer { x in
        frameMajor.withUnsafeMutableBufferPointer { c in
            for f in 0..<frames {
                mimi.encodeStep(x.baseAddress! + f * frameSize, codes: c.baseAddress! + f * n, state: state)
                latent += state.lastLatent(frames: 1)
            }
        }
    }
    return (latent, frameMajor, state)
}

/// Opens `path` with `open` (a weight-file reader), expecting a failure of `kind` whose message
/// starts with the path and mentions every string of `mentions`.
@discardableResult
func assertOpenFails(_ path: String, _ kind: WeightFileError.Kind, mentions: [String] = [], open: (String) throws -> Int,
                     file: StaticString = #filePath, line: UInt = #line) -> WeightFileError? {
    do {
        let tensors = try open(path)
        XCTFail("opened \(path) (\(tensors) tensors), expected a \(kind) error", file: file, line: line)
        return nil
    } catch let error as WeightFileError {
        XCTAssertTrue(error.kinds.contains(kind), "kinds \(error.kinds), expected \(kind): \(error)", file: file, line: line)
        XCTAssertEqual(error.path, path, file: file, line: line)
        let text = error.description
        XCTAssertTrue(text.hasPrefix(path), "message should start with the path: \(text)", file: file, line: line)
        for m in mentions {
            XCTAssertTrue(text.contains(m), "message should mention \"\(m)\": \(text)", file: file, line: line)
        }
        return error
    } catch {
        XCTFail("unexpected error type \(type(of: error)): \(error)", file: file, line: line)
        return nil
    }
}
