@testable import DuplexAudio
import Foundation
import XCTest

/// How ALSA devices end: a finite source runs out (end of stream), a device goes away or stops
/// working (an error naming the kind), and what alsa-lib says lands in duplex's error instead of
/// on stderr. All through the `file` and `null` plugins, no sound card needed.
final class ALSAFailureTests: XCTestCase {
    func testMissingDeviceErrorCarriesALSADetailAndALSAPrintsNothing() throws {
        let (error, stderrText) = try capturingStandardError { () -> AudioDeviceError? in
            do {
                _ = try ALSADevice(ALSADevice.Request(name: "no_such_device_here", direction: .capture),
                                   configuration: "pcm.other { type null }")
                return nil
            } catch let error as AudioDeviceError {
                return error
            }
        }
        let deviceError = try XCTUnwrap(error, "opening a missing PCM must fail")
        let text = "\(deviceError)"
        XCTAssertEqual(deviceError.kind, .cannotOpen)
        XCTAssertTrue(text.contains("audio device \"no_such_device_here\": cannot open for capture"), text)
        XCTAssertTrue(text.contains("(ALSA: Unknown PCM no_such_device_here)"), text)
        XCTAssertTrue(text.hasSuffix("— see `duplex devices`"), text)
        XCTAssertEqual(stderrText, "", "alsa-lib must not print on its own")
    }

    func testMissingCardKeepsTheCauseAndTheOutcome() throws {
        // A name whose definition refers to a card that is not there: alsa-lib's evaluator
        // reports the card, then unwinds through several functions, then the PCM.
        let config = """
        pcm.duplex_test_no_card {
            @args [ CARD ]
            @args.CARD { type string default "duplex_no_such_card" }
            type hw
            card $CARD
        }
        """
        let (error, stderrText) = try capturingStandardError { () -> AudioDeviceError? in
            do {
                _ = try ALSADevice(ALSADevice.Request(name: "duplex_test_no_card", direction: .playback), configuration: config)
                return nil
            } catch let error as AudioDeviceError {
                return error
            }
        }
        let deviceError = try XCTUnwrap(error)
        XCTAssertEqual(deviceError.kind, .cannotOpen)
        XCTAssertFalse(deviceError.alsaDetail.isEmpty, "\(deviceError)")
        XCTAssertLessThanOrEqual(deviceError.alsaDetail.count, 2, "\(deviceError)")
        XCTAssertTrue("\(deviceError)".contains("duplex_no_such_card"), "\(deviceError)")
        XCTAssertEqual(stderrText, "")
    }

    func testDeviceListPrintsNothing() throws {
        let (_, stderrText) = capturingStandardError { ALSADevice.list() }
        XCTAssertEqual(stderrText, "")
    }

    func testEndOfTheInputFileIsEndOfStream() throws {
        let frames = 5_000
        let samples = (0..<frames).map { Int16(truncatingIfNeeded: $0 &* 13 &+ 1) }
        let input = temporaryFile("eof-in.raw")
        try samples.withUnsafeBytes { Data($0) }.write(to: URL(fileURLWithPath: input))
        let capture = try ALSADevice(ALSADevice.Request(name: "duplex_test_capture", direction: .capture),
                                     configuration: fileConfiguration(input: input, output: "/dev/null"))
        XCTAssertEqual(capture.sourceFrames, frames)
        var captured = [Int16](repeating: 0, count: frames + 4_000)
        var got = 0
        var counts: [Int] = []
        while true {
            let result = try captured.withUnsafeMutableBufferPointer { try capture.read(into: $0.baseAddress! + got, frames: 1_920) }
            guard case .frames(let n) = result else { break }
            counts.append(n)
            got += n
        }
        XCTAssertEqual(counts, [1_920, 1_920, 1_160], "the last read is short, then the stream ends")
        XCTAssertEqual(Array(captured[0..<got]), samples)
        XCTAssertEqual(try captured.withUnsafeMutableBufferPointer { try capture.read(into: $0.baseAddress!, frames: 100) },
                       .endOfStream, "an ended stream stays ended")
        XCTAssertEqual(capture.xruns, 0)
    }

    func testAFailingPluginIsAFailedDeviceNotSilence() throws {
        // The file plugin writes what it captures to `file`; /dev/full refuses, so alsa-lib
        // answers -EIO, which used to be taken for the end of the stream.
        let input = temporaryFile("full-in.raw")
        try Data(count: 96_000).write(to: URL(fileURLWithPath: input))
        let config = fileConfiguration(input: input, output: "/dev/full")
        let (outcome, stderrText) = try capturingStandardError { () -> AudioDeviceError? in
            let capture = try ALSADevice(ALSADevice.Request(name: "duplex_test_capture", direction: .capture), configuration: config)
            var buffer = [Int16](repeating: 0, count: 1_920)
            for _ in 0..<20 {
                do {
                    let result = try buffer.withUnsafeMutableBufferPointer { try capture.read(into: $0.baseAddress!, frames: 480) }
                    if result == .endOfStream { return nil }
                } catch let error as AudioDeviceError {
                    return error
                }
            }
            return nil
        }
        let error = try XCTUnwrap(outcome, "a capture whose plugin fails must throw, not end or go silent")
        XCTAssertEqual(error.kind, .failed)
        XCTAssertTrue("\(error)".contains("capture stopped: Input/output error"), "\(error)")
        XCTAssertTrue(error.alsaDetail.contains { $0.contains("write failed") && $0.contains("No space left on device") }, "\(error)")
        XCTAssertEqual(stderrText, "")

        let playback = try ALSADevice(ALSADevice.Request(name: "duplex_test_playback", direction: .playback), configuration: config)
        let silence = [Int16](repeating: 0, count: 480)
        XCTAssertThrowsError(try {
            for _ in 0..<20 { _ = try silence.withUnsafeBufferPointer { try playback.write($0.baseAddress!, frames: 480) } }
        }()) { error in
            XCTAssertEqual((error as? AudioDeviceError)?.kind, .failed, "\(error)")
            XCTAssertTrue("\(error)".contains("playback stopped"), "\(error)")
        }
    }

    func testADeviceThatWentAwayIsDisconnected() throws {
        let input = temporaryFile("gone-in.raw")
        try Data(count: 48_000).write(to: URL(fileURLWithPath: input))
        let config = fileConfiguration(input: input, output: "/dev/null")
        var buffer = [Int16](repeating: 0, count: 480)

        let capture = try ALSADevice(ALSADevice.Request(name: "duplex_test_capture", direction: .capture), configuration: config)
        XCTAssertEqual(try buffer.withUnsafeMutableBufferPointer { try capture.read(into: $0.baseAddress!, frames: 480) }, .frames(480))
        capture.breakStreamForTesting()
        XCTAssertThrowsError(try buffer.withUnsafeMutableBufferPointer { try capture.read(into: $0.baseAddress!, frames: 480) }) { error in
            XCTAssertEqual((error as? AudioDeviceError)?.kind, .disconnected, "\(error)")
            XCTAssertTrue("\(error)".contains("audio device \"duplex_test_capture\": the capture device went away (unplugged?)"), "\(error)")
        }

        let playback = try ALSADevice(ALSADevice.Request(name: "duplex_test_playback", direction: .playback), configuration: config)
        XCTAssertEqual(try buffer.withUnsafeBufferPointer { try playback.write($0.baseAddress!, frames: 480) }, .frames(480))
        playback.breakStreamForTesting()
        XCTAssertThrowsError(try buffer.withUnsafeBufferPointer { try playback.write($0.baseAddress!, frames: 480) }) { error in
            XCTAssertEqual((error as? AudioDeviceError)?.kind, .disconnected, "\(error)")
            XCTAssertTrue("\(error)".contains("the playback device went away"), "\(error)")
        }
    }

    func testXrunsReadFromAnotherThreadWhileTheDeviceRuns() throws {
        let input = temporaryFile("xrun-in.raw")
        try Data(count: 48_000).write(to: URL(fileURLWithPath: input))
        let capture = try ALSADevice(ALSADevice.Request(name: "duplex_test_capture", direction: .capture),
                                     configuration: fileConfiguration(input: input, output: "/dev/null"))
        let reader = Thread { for _ in 0..<10_000 { _ = capture.xruns } }
        reader.start()
        var buffer = [Int16](repeating: 0, count: 480)
        while case .frames = try buffer.withUnsafeMutableBufferPointer({ try capture.read(into: $0.baseAddress!, frames: 480) }) {}
        while reader.isExecuting { usleep(1_000) }
        XCTAssertEqual(capture.xruns, 0)
    }

    // MARK: helpers

    /// Both PCMs' output (the capture's too) goes to `output`.
    private func fileConfiguration(input: String, output: String) -> String {
        alsaFileConfiguration(input: input, output: output, captureOutput: output)
    }

    /// Runs `body` with file descriptor 2 pointed at a file; returns what was written there.
    private func capturingStandardError<T>(_ body: () throws -> T) rethrows -> (T, String) {
        let path = temporaryFile("stderr-\(UUID().uuidString).txt")
        fflush(nil)
        let saved = dup(2)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        dup2(fd, 2)
        close(fd)
        defer {
            fflush(nil)
            dup2(saved, 2)
            close(saved)
        }
        let result = try body()
        fflush(nil)
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? "<unreadable>"
        return (result, text)
    }

    private func temporaryFile(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("duplex-audio-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(name).path
    }
}
