import Foundation
import XCTest

/// `duplex room` and `duplex aec` end to end: a simulated room made from the speech fixtures,
/// cleaned by each canceller and scored by the figures the command prints, and every kind of
/// bad input a user can give.
final class EchoCommandTests: XCTestCase {
    private let fixtures = packageRoot.appendingPathComponent("Tests/Fixtures/aec")
    private var farFixture: String { fixtures.appendingPathComponent("far.wav").path }
    private var nearFixture: String { fixtures.appendingPathComponent("near.wav").path }
    /// The room of the capture-processing tests: 60 ms away, a furnished room's reverberation,
    /// loud echo.
    private let roomSpec = "delay=60ms,rt60=400ms,echo=-3dB"

    private func scratch(_ name: String) throws -> String {
        let dir = try cliScratch().appendingPathComponent("echo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(name).path
    }

    /// The number on the stdout line starting with `label` (e.g. "ERLE after 2 s: 40.6 dB").
    private func figure(_ label: String, in output: String, file: StaticString = #filePath, line: UInt = #line) throws -> Double {
        let text = try XCTUnwrap(output.split(separator: "\n").first { $0.hasPrefix(label) }, "no line \"\(label)\" in:\n\(output)",
                                 file: file, line: line)
        let rest = text.dropFirst(label.count).drop { !($0.isNumber || $0 == "-") }
        let number = rest.prefix { $0.isNumber || $0 == "." || $0 == "-" }
        return try XCTUnwrap(Double(number), "no number in \"\(text)\"", file: file, line: line)
    }

    /// `duplex room` with the far fixture alone (nobody talks): the microphone hears only echo
    /// and noise, so ERLE measures the cancellation.
    private func makeRoom(far: String? = nil) throws -> (mic: String, echo: String) {
        let mic = try scratch("mic.wav"), echo = try scratch("echo.wav")
        let run = try runDuplex(["room", "--far", far ?? farFixture, "--room", roomSpec, "--out", mic, "--echo-out", echo])
        XCTAssertEqual(run.status, 0, run.stderr)
        return (mic, echo)
    }

    // MARK: the gates

    func testEachCancellerReachesItsGateInTheSimulatedRoom() throws {
        let (mic, echo) = try makeRoom()
        let micAudio = try TestWAV.read(mic)
        XCTAssertEqual(micAudio.sampleRate, 24_000)
        XCTAssertEqual(micAudio.channels, 1)
        for (canceller, gate) in [("webrtc", 25.0), ("speex", 15.0)] {
            let clean = try scratch("clean-\(canceller).wav"), json = try scratch("report-\(canceller).json")
            // webrtc is the default: no --aec for it.
            let arguments = ["aec", "--far", farFixture, "--mic", mic, "--out", clean, "--echo", echo, "--json", json]
                + (canceller == "webrtc" ? [] : ["--aec", canceller])
            let run = try runDuplex(arguments)
            XCTAssertEqual(run.status, 0, run.stderr)
            print("duplex aec --aec \(canceller):\n\(run.stdout)")
            let erle = try figure("ERLE after 2 s:", in: run.stdout)
            XCTAssertGreaterThanOrEqual(erle, gate, canceller)
            XCTAssertEqual(try figure("echo delay:", in: run.stdout), 60, accuracy: 1, canceller)
            XCTAssertGreaterThanOrEqual(try figure("echo-only ERLE after 2 s:", in: run.stdout), gate, canceller)
            XCTAssertTrue(run.stdout.contains("processing: \(canceller) aec"), run.stdout)
            XCTAssertNotNil(run.stdout.range(of: "ms per 80 ms frame"), run.stdout)

            let output = try TestWAV.read(clean)
            XCTAssertEqual(output.sampleRate, 24_000, canceller)
            XCTAssertEqual(output.channels, 1, canceller)
            XCTAssertEqual(output.samples.count, micAudio.samples.count, "\(canceller): CLEAN is as long as MIC")
            XCTAssertTrue(output.samples.allSatisfy { $0.isFinite && abs($0) <= 1 }, canceller)

            // The JSON holds the printed figure (the text rounds to 0.1 dB) and nothing non-finite.
            let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
            XCTAssertEqual(try XCTUnwrap(report["erle_after_2s_db"] as? Double), erle, accuracy: 0.05, canceller)
            XCTAssertEqual(try XCTUnwrap(report["echo_delay_ms"] as? Double), 60, accuracy: 1, canceller)
            XCTAssertEqual(report["echo_canceller"] as? String, canceller)
            XCTAssertEqual((report["erle_curve_db"] as? [Double])?.count, micAudio.samples.count / 24_000, canceller)
        }
    }

    /// A person talks too: the room writes their level, the mic is still as long as FAR, and aec
    /// keeps their voice (overall ERLE far below the echo-only one).
    func testDoubleTalkKeepsTheNearVoice() throws {
        let mic = try scratch("mic.wav"), echo = try scratch("echo.wav"), clean = try scratch("clean.wav")
        let room = try runDuplex(["room", "--far", farFixture, "--near", nearFixture, "--room", roomSpec, "--out", mic, "--echo-out", echo])
        XCTAssertEqual(room.status, 0, room.stderr)
        XCTAssertTrue(room.stderr.contains("room: delay=60ms,rt60=0.4s,echo=-3dB"), room.stderr)
        XCTAssertNotNil(room.stderr.range(of: #"levels \(dBFS RMS\): far -[0-9.]+, echo -[0-9.]+, near -[0-9.]+, mic -[0-9.]+"#,
                                           options: .regularExpression), room.stderr)
        let far = try TestWAV.read(farFixture)
        XCTAssertEqual(Double(try TestWAV.read(mic).samples.count), Double(far.samples.count) * 24_000 / 22_050, accuracy: 1)
        let run = try runDuplex(["aec", "--far", farFixture, "--mic", mic, "--out", clean, "--echo", echo])
        XCTAssertEqual(run.status, 0, run.stderr)
        print("duplex aec, double talk:\n\(run.stdout)")
        let overall = try figure("ERLE after 2 s:", in: run.stdout), echoOnly = try figure("echo-only ERLE after 2 s:", in: run.stdout)
        XCTAssertGreaterThanOrEqual(echoOnly, 25, "where only the echo is there it is cancelled")
        XCTAssertLessThan(overall, echoOnly - 10, "the near voice passes")
    }

    func testStereoRecordingGivesTheSameFiguresAsTwoFiles() throws {
        // FAR at 24 kHz already, so that both the files and the stereo recording hold the very
        // same samples (any resampling would happen in the test, not in duplex).
        let farFile = try scratch("far24.wav")
        let fixture = try TestWAV.read(farFixture)
        try TestWAV(sampleRate: 24_000, channels: 1, samples: TestWAV.linearResample(fixture.samples, from: fixture.sampleRate, to: 24_000))
            .write(to: farFile)
        let (mic, _) = try makeRoom(far: farFile)
        let far = try TestWAV.read(farFile), micAudio = try TestWAV.read(mic)
        XCTAssertEqual(far.samples.count, micAudio.samples.count)
        var interleaved = [Float](repeating: 0, count: 2 * far.samples.count)
        for i in far.samples.indices {
            interleaved[2 * i] = micAudio.samples[i]
            interleaved[2 * i + 1] = far.samples[i]
        }
        let stereo = try scratch("talk-recording.wav")
        try TestWAV(sampleRate: 24_000, channels: 2, samples: interleaved).write(to: stereo)

        let cleanFiles = try scratch("clean-files.wav"), cleanStereo = try scratch("clean-stereo.wav")
        let files = try runDuplex(["aec", "--far", farFile, "--mic", mic, "--out", cleanFiles])
        let recording = try runDuplex(["aec", "--recording", stereo, "--out", cleanStereo])
        XCTAssertEqual(files.status, 0, files.stderr)
        XCTAssertEqual(recording.status, 0, recording.stderr)
        // Everything but the measured processing cost is a function of the samples.
        func figures(_ output: String) -> [Substring] { output.split(separator: "\n").filter { !$0.hasPrefix("processing cost") } }
        XCTAssertEqual(figures(files.stdout), figures(recording.stdout))
        XCTAssertGreaterThanOrEqual(try figure("ERLE after 2 s:", in: recording.stdout), 25)
        XCTAssertEqual(try TestWAV.read(cleanFiles).samples, try TestWAV.read(cleanStereo).samples)
    }

    // MARK: bad input

    /// Exits non-zero with a message containing every one of `expected`, and neither crashes nor
    /// writes CLEAN.
    private func assertFails(_ arguments: [String], status expectedStatus: Int32? = nil, mentions expected: [String],
                             environment: [String: String] = [:], file: StaticString = #filePath, line: UInt = #line) throws {
        let clean = try scratch("clean.wav")
        let run = try runDuplex(arguments + ["--out", clean], environment: environment, file: file, line: line)
        XCTAssertNotEqual(run.status, 0, "duplex \(arguments) succeeded: \(run.stdout)", file: file, line: line)
        if let expectedStatus { XCTAssertEqual(run.status, expectedStatus, run.stderr, file: file, line: line) }
        for text in expected {
            XCTAssertTrue(run.stderr.contains(text), "duplex \(arguments): \"\(text)\" missing from: \(run.stderr)", file: file, line: line)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: clean), "a failed run wrote \(clean)", file: file, line: line)
    }

    func testBadAECInputIsAClearError() throws {
        let (mic, _) = try makeRoom()
        let missing = try scratch("no-such-recording.wav")
        try assertFails(["aec", "--far", farFixture, "--mic", missing], status: 1, mentions: [missing])
        try assertFails(["aec", "--far", missing, "--mic", mic], status: 1, mentions: [missing])
        let text = try scratch("notes.txt")
        try "not audio".write(toFile: text, atomically: true, encoding: .utf8)
        try assertFails(["aec", "--far", farFixture, "--mic", text], status: 1, mentions: [text, "not a WAV file"])
        try assertFails(["aec", "--far", farFixture, "--mic", mic, "--aec", "bogus"], mentions: ["--aec bogus", "webrtc, speex or off"])
        try assertFails(["aec", "--far", farFixture, "--mic", mic, "--aec", "off"], mentions: ["nothing to do"])
        try assertFails(["aec", "--far", farFixture, "--mic", mic, "--aec-filter-ms", "100"], mentions: ["--aec-filter-ms", "--aec speex"])
        try assertFails(["aec", "--far", farFixture, "--mic", mic, "--high-pass", "on", "--aec", "speex"], mentions: ["--high-pass", "WebRTC"])
        try assertFails(["aec", "--mic", mic], mentions: ["--far", "--recording"])
        try assertFails(["aec", "--recording", mic, "--far", farFixture], mentions: ["--recording", "leave out --far"])
        try assertFails(["aec", "--recording", mic], status: 1, mentions: [mic, "stereo"])
    }

    func testAMissingLibraryIsAnErrorNamingIt() throws {
        let (mic, _) = try makeRoom()
        let library = "/nonexistent/libx.so"
        try assertFails(["aec", "--far", farFixture, "--mic", mic], status: 1, mentions: [library, "libwebrtc-audio-processing1"],
                        environment: ["DUPLEX_WEBRTC_APM_LIBRARY": library])
        try assertFails(["aec", "--far", farFixture, "--mic", mic, "--aec", "speex"], status: 1, mentions: [library, "libspeexdsp1"],
                        environment: ["DUPLEX_SPEEXDSP_LIBRARY": library])
    }

    func testBadRoomInputIsAClearError() throws {
        let out = try scratch("mic.wav")
        let badKey = try runDuplex(["room", "--far", farFixture, "--room", "delay=60ms,loudness=3", "--out", out])
        XCTAssertEqual(badKey.status, 1, badKey.stderr)
        XCTAssertTrue(badKey.stderr.contains("loudness=3"), badKey.stderr)
        let badValue = try runDuplex(["room", "--far", farFixture, "--room", "delay=900ms", "--out", out])
        XCTAssertEqual(badValue.status, 1, badValue.stderr)
        XCTAssertTrue(badValue.stderr.contains("delay=900ms") && badValue.stderr.contains("500"), badValue.stderr)
        let noFar = try runDuplex(["room", "--out", out])
        XCTAssertNotEqual(noFar.status, 0)
        XCTAssertTrue(noFar.stderr.contains("--far"), noFar.stderr)
        let missing = try scratch("no-such-far.wav")
        let missingFar = try runDuplex(["room", "--far", missing, "--out", out])
        XCTAssertEqual(missingFar.status, 1, missingFar.stderr)
        XCTAssertTrue(missingFar.stderr.contains(missing), missingFar.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    /// An echo louder than full scale is clipped with a warning that counts the samples, never
    /// written out of range.
    func testRoomClipsWithAWarning() throws {
        let out = try scratch("mic.wav")
        let run = try runDuplex(["room", "--far", farFixture, "--room", "echo=20dB", "--out", out, "--float"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertNotNil(run.stderr.range(of: #"[0-9]+ samples \([0-9.]+ %\) beyond full scale, clipped"#, options: .regularExpression), run.stderr)
        let mic = try TestWAV.read(out)
        XCTAssertTrue(mic.samples.allSatisfy { $0.isFinite && abs($0) <= 1 })
        XCTAssertTrue(mic.samples.contains { abs($0) == 1 })
    }
}

/// The WAVs these tests read and write (16-bit PCM and 32-bit float), written out here because
/// the CLI tests link no audio library: they check the files as any other program would see them.
private struct TestWAV {
    var sampleRate: Int
    var channels: Int
    /// Interleaved.
    var samples: [Float]

    struct FormatError: Error, CustomStringConvertible { let description: String }

    static func read(_ path: String) throws -> TestWAV {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        func u16(_ o: Int) -> Int { Int(bytes[o]) | Int(bytes[o + 1]) << 8 }
        func u32(_ o: Int) -> Int { u16(o) | u16(o + 2) << 16 }
        guard bytes.count >= 12, String(decoding: bytes[0..<4], as: UTF8.self) == "RIFF",
              String(decoding: bytes[8..<12], as: UTF8.self) == "WAVE" else { throw FormatError(description: "\(path): not RIFF/WAVE") }
        var offset = 12
        var format: (tag: Int, channels: Int, rate: Int, bits: Int)?
        while offset + 8 <= bytes.count {
            let id = String(decoding: bytes[offset..<(offset + 4)], as: UTF8.self), size = u32(offset + 4), body = offset + 8
            if id == "fmt " {
                format = (u16(body), u16(body + 2), u32(body + 4), u16(body + 14))
            } else if id == "data", let format {
                let end = min(bytes.count, body + size)
                var samples: [Float] = []
                switch (format.tag, format.bits) {
                case (1, 16):
                    samples = stride(from: body, to: end - 1, by: 2).map { Float(Int16(bitPattern: UInt16(u16($0)))) / 32768 }
                case (3, 32):
                    samples = stride(from: body, to: end - 3, by: 4).map { Float(bitPattern: UInt32(u32($0))) }
                default:
                    throw FormatError(description: "\(path): format \(format.tag), \(format.bits) bits: the tests read 16-bit PCM and 32-bit float")
                }
                return TestWAV(sampleRate: format.rate, channels: format.channels, samples: samples)
            }
            offset = body + size + (size & 1)
        }
        throw FormatError(description: "\(path): no fmt/data chunk")
    }

    /// 16-bit PCM: what duplex reads back exactly (samples that are already 16-bit stay so).
    func write(to path: String) throws {
        var out = Data()
        func put32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { out.append(contentsOf: $0) } }
        func put16(_ v: Int) { withUnsafeBytes(of: UInt16(v).littleEndian) { out.append(contentsOf: $0) } }
        let dataBytes = samples.count * 2
        out.append(contentsOf: Array("RIFF".utf8)); put32(36 + dataBytes); out.append(contentsOf: Array("WAVE".utf8))
        out.append(contentsOf: Array("fmt ".utf8)); put32(16); put16(1); put16(channels); put32(sampleRate)
        put32(sampleRate * channels * 2); put16(channels * 2); put16(16)
        out.append(contentsOf: Array("data".utf8)); put32(dataBytes)
        for x in samples {
            let value = Int16(max(-32768, min(32767, (x * 32768).rounded())))
            withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
        }
        try out.write(to: URL(fileURLWithPath: path))
    }

    /// Linear interpolation: a crude resampler, enough to make a 24 kHz far end out of the fixture.
    static func linearResample(_ x: [Float], from inputRate: Int, to outputRate: Int) -> [Float] {
        let count = x.count * outputRate / inputRate
        return (0..<count).map { n in
            let position = Double(n) * Double(inputRate) / Double(outputRate)
            let i = Int(position), f = Float(position - Double(i))
            return i + 1 < x.count ? x[i] * (1 - f) + x[i + 1] * f : x[min(i, x.count - 1)]
        }
    }
}
