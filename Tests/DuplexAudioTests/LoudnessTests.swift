import DuplexAudio
import Foundation
import XCTest

/// BS.1770 loudness and −24 LUFS normalisation against pyloudnorm 0.1.1 (what PersonaPlex runs
/// on its voice prompts), on the seeded signals of tools/reference/fixtures_loudness.py.
final class LoudnessTests: XCTestCase {
    /// Loudness agrees with pyloudnorm to 1e-6 LU (measured: under 1e-13 against its float64 path,
    /// under 4e-7 against the float32 path PersonaPlex runs, which rounds the filtered signal to
    /// float32 and sums its squares in float32).
    static let loudnessToleranceLU = 1e-6
    /// Normalised samples agree to 1e-5 relative (both sides round gain · x to float32 once;
    /// measured: identical).
    static let sampleRelativeTolerance = 1e-5

    func testIntegratedLoudnessMatchesPyloudnorm() throws {
        let fixture = try LoudnessFixture.load()
        var maxDiff = 0.0, maxDiffFloat32Path = 0.0
        for (name, rate) in fixture.sampleRates {
            let input = try fixture.floats("\(name).input")
            let channels = input.shape.count == 1
                ? [input.values]
                : (0..<input.shape[0]).map { Array(input.values[($0 * input.shape[1])..<(($0 + 1) * input.shape[1])]) }
            let measured = Loudness.integrated(channels: channels, sampleRate: rate)
            let expected = try fixture.doubles("\(name).loudness")[0]
            let expectedFloat32Path = try fixture.doubles("\(name).loudness_float32_path")[0]
            XCTAssertEqual(measured, expected, accuracy: Self.loudnessToleranceLU, "\(name) (\(rate) Hz, \(channels.count) ch)")
            XCTAssertEqual(measured, expectedFloat32Path, accuracy: Self.loudnessToleranceLU, "\(name), pyloudnorm on float32")
            maxDiff = max(maxDiff, abs(measured - expected))
            maxDiffFloat32Path = max(maxDiffFloat32Path, abs(measured - expectedFloat32Path))
            if channels.count == 1 {
                XCTAssertEqual(Loudness.integrated(channels[0], sampleRate: rate), measured, "\(name): mono form")
            }
        }
        print("loudness vs pyloudnorm: max |Δ| \(maxDiff) LU (float64 path), \(maxDiffFloat32Path) LU (float32 path), "
              + "\(fixture.sampleRates.count) signals")
    }

    func testNormalizedMatchesPyloudnorm() throws {
        let fixture = try LoudnessFixture.load()
        XCTAssertEqual(fixture.targetLUFS, -24)
        var maxRelative = 0.0, cases = 0
        for (name, rate) in fixture.sampleRates {
            let input = try fixture.floats("\(name).input")
            guard input.shape.count == 1 else { continue }
            let expected = try fixture.floats("\(name).normalized").values
            let output = try Loudness.normalized(input.values, sampleRate: rate, targetLUFS: fixture.targetLUFS)
            XCTAssertEqual(output.count, expected.count, name)
            var worst: (index: Int, relative: Double)?
            for (i, (y, r)) in zip(output, expected).enumerated() {
                XCTAssertFalse(y.isNaN, "\(name)[\(i)] is NaN")
                let relative = r == 0 ? Double(abs(y)) : Double(abs(y - r)) / Double(abs(r))
                if relative > (worst?.relative ?? -1) { worst = (i, relative) }
            }
            if let worst {
                XCTAssertLessThanOrEqual(worst.relative, Self.sampleRelativeTolerance,
                                         "\(name)[\(worst.index)]: \(output[worst.index]) vs pyloudnorm's \(expected[worst.index])")
                maxRelative = max(maxRelative, worst.relative)
            }
            // And the result measures at the target.
            XCTAssertEqual(Loudness.integrated(output, sampleRate: rate), fixture.targetLUFS, accuracy: 1e-5, name)
            cases += 1
        }
        XCTAssertGreaterThanOrEqual(cases, 8)
        print("normalised vs pyloudnorm: max relative |Δ| \(maxRelative) over \(cases) signals")
    }

    func testSilenceIsAnError() {
        let rate = 24_000
        for (what, signal) in [("digital silence", [Float](repeating: 0, count: rate)),
                               ("-90 dBFS hiss", Self.noise(count: rate, rms: 3e-5))] {
            XCTAssertEqual(Loudness.integrated(signal, sampleRate: rate), -.infinity, what)
            XCTAssertThrowsError(try Loudness.normalized(signal, sampleRate: rate, targetLUFS: -24), what) {
                XCTAssertEqual(($0 as? LoudnessError)?.kind, .silent, "\(what): \($0)")
            }
        }
    }

    /// pyloudnorm refuses fewer samples than one 400 ms block; exactly one block is measured.
    func testShorterThanOneBlockIsAnError() throws {
        for rate in [16_000, 24_000, 44_100, 48_000] {
            let block = Int((0.4 * Double(rate)).rounded(.up))
            let short = Self.noise(count: block - 1, rms: 0.1)
            XCTAssertEqual(Loudness.integrated(short, sampleRate: rate), -.infinity, "\(rate) Hz")
            XCTAssertThrowsError(try Loudness.normalized(short, sampleRate: rate, targetLUFS: -24), "\(rate) Hz") {
                XCTAssertEqual(($0 as? LoudnessError)?.kind, .tooShort, "\(rate) Hz: \($0)")
            }
            let output = try Loudness.normalized(Self.noise(count: block, rms: 0.1), sampleRate: rate, targetLUFS: -24)
            XCTAssertEqual(Loudness.integrated(output, sampleRate: rate), -24, accuracy: 1e-5, "\(rate) Hz")
        }
        XCTAssertThrowsError(try Loudness.normalized([], sampleRate: 24_000, targetLUFS: -24)) {
            XCTAssertEqual(($0 as? LoudnessError)?.kind, .tooShort, "\($0)")
        }
    }

    /// Inputs pyloudnorm would turn into NaN or ±∞ samples are errors, never NaN output.
    func testNonFiniteInputsAreErrors() {
        var withNaN = Self.noise(count: 24_000, rms: 0.1)
        withNaN[5_000] = .nan
        var withInfinity = Self.noise(count: 24_000, rms: 0.1)
        withInfinity[7] = -.infinity
        for (what, signal, target) in [("a NaN sample", withNaN, -24.0), ("an infinite sample", withInfinity, -24),
                                       ("a NaN target", Self.noise(count: 24_000, rms: 0.1), .nan),
                                       ("a gain past Float's range", Self.noise(count: 24_000, rms: 0.1), 1_000)] {
            XCTAssertThrowsError(try Loudness.normalized(signal, sampleRate: 24_000, targetLUFS: target), what) {
                XCTAssertEqual(($0 as? LoudnessError)?.kind, .notFinite, "\(what): \($0)")
            }
        }
    }

    /// Seeded Gaussian-ish noise (sum of uniforms) at a given RMS.
    static func noise(count: Int, rms: Double) -> [Float] {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func uniform() -> Double {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Double(state >> 11) / Double(1 << 53) - 0.5
        }
        // Four uniforms on [−½, ½) have variance 4/12 = 1/3.
        return (0..<count).map { _ in Float(rms * (uniform() + uniform() + uniform() + uniform()) * 3.0.squareRoot()) }
    }
}

/// The loudness fixture: safetensors written by make_fixtures.py into DuplexCoreTests' fixtures.
/// DuplexAudioTests does not depend on DuplexCore (whose SafetensorsFile reads them), so this
/// reads the file from the source tree relative to #filePath and parses the format itself: an
/// 8-byte little-endian header length, a JSON header, then the raw little-endian tensors.
struct LoudnessFixture {
    struct Floats { let shape: [Int]; let values: [Float] }

    let sampleRates: [(String, Int)]
    let targetLUFS: Double
    private let tensors: [String: (dtype: String, shape: [Int], bytes: Data)]

    static let formatVersion = "1"
    static let regenerate = "run \"$(tools/reference/setup_venv.sh)\" tools/reference/make_fixtures.py loudness"

    static func load(filePath: String = #filePath) throws -> LoudnessFixture {
        let url = URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("DuplexCoreTests/Fixtures/loudness.safetensors")
        guard let data = try? Data(contentsOf: url) else { throw Failure("\(url.path) is missing: \(regenerate)") }
        guard data.count >= 8 else { throw Failure("\(url.path) is truncated") }
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        guard 8 + headerLength <= data.count,
              let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + headerLength))) as? [String: Any],
              let metadata = header["__metadata__"] as? [String: String]
        else { throw Failure("\(url.path): no safetensors header") }
        guard metadata["format_version"] == formatVersion else {
            throw Failure("\(url.path) has format_version \(metadata["format_version"] ?? "none"), expected \(formatVersion): \(regenerate)")
        }
        guard let ratesJSON = metadata["sample_rates"]?.data(using: .utf8),
              let rates = try JSONSerialization.jsonObject(with: ratesJSON) as? [String: Int],
              let target = metadata["target_lufs"].flatMap(Double.init)
        else { throw Failure("\(url.path): metadata lacks sample_rates or target_lufs") }

        let body = 8 + headerLength
        var tensors: [String: (dtype: String, shape: [Int], bytes: Data)] = [:]
        for (name, entry) in header where name != "__metadata__" {
            guard let entry = entry as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2,
                  body + offsets[1] <= data.count
            else { throw Failure("\(url.path): bad entry for \(name)") }
            tensors[name] = (dtype, shape, data.subdata(in: (body + offsets[0])..<(body + offsets[1])))
        }
        return LoudnessFixture(sampleRates: rates.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
                               targetLUFS: target, tensors: tensors)
    }

    func floats(_ name: String) throws -> Floats {
        let t = try tensor(name, dtype: "F32", width: 4)
        let values = (0..<(t.bytes.count / 4)).map { i in
            Float(bitPattern: t.bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self) }.littleEndian)
        }
        return Floats(shape: t.shape, values: values)
    }

    func doubles(_ name: String) throws -> [Double] {
        let t = try tensor(name, dtype: "F64", width: 8)
        return (0..<(t.bytes.count / 8)).map { i in
            Double(bitPattern: t.bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self) }.littleEndian)
        }
    }

    private func tensor(_ name: String, dtype: String, width: Int) throws -> (dtype: String, shape: [Int], bytes: Data) {
        guard let t = tensors[name] else { throw Failure("loudness fixture has no tensor \(name): \(Self.regenerate)") }
        guard t.dtype == dtype, t.bytes.count == t.shape.reduce(1, *) * width else {
            throw Failure("loudness fixture: \(name) is \(t.dtype) \(t.shape) in \(t.bytes.count) bytes, expected \(dtype)")
        }
        return t
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}
