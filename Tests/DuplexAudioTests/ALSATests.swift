import DuplexAudio
import Foundation
import XCTest

/// ALSA code paths for real, without a sound card: the `file` plugin over the `null` plugin
/// (capture reads a raw file, playback writes one).
final class ALSATests: XCTestCase {
    func testCaptureFromFileAndPlaybackToFileKeepCountAndOrder() throws {
        let input = temporaryFile("alsa-in.raw"), output = temporaryFile("alsa-out.raw")
        let frames = 24_000
        let samples = (0..<frames).map { Int16(truncatingIfNeeded: $0 &* 7) }
        try samples.withUnsafeBytes { Data($0) }.write(to: URL(fileURLWithPath: input))
        let config = alsaFileConfiguration(input: input, output: output)

        var captureRequest = ALSADevice.Request(name: "duplex_test_capture", direction: .capture)
        captureRequest.periodFrames = 480
        let capture = try ALSADevice(captureRequest, configuration: config)
        XCTAssertEqual(capture.sampleRate, 24_000)
        XCTAssertEqual(capture.channels, 1)
        var captured = [Int16](repeating: 0, count: frames)
        var got = 0
        while got < frames {
            let chunk = min(1920, frames - got)
            let result = try captured.withUnsafeMutableBufferPointer { try capture.read(into: $0.baseAddress! + got, frames: chunk) }
            guard case .frames(let n) = result, n > 0 else { break }
            got += n
        }
        XCTAssertEqual(got, frames)
        XCTAssertEqual(captured, samples, "capture must deliver the file's samples in order")

        do {
            let playback = try ALSADevice(ALSADevice.Request(name: "duplex_test_playback", direction: .playback), configuration: config)
            var written = 0
            while written < frames {
                let chunk = min(1000, frames - written)
                _ = try captured.withUnsafeBufferPointer { try playback.write($0.baseAddress! + written, frames: chunk) }
                written += chunk
            }
            playback.drain()
        }
        let played = try Data(contentsOf: URL(fileURLWithPath: output))
        XCTAssertEqual(played.count, frames * 2, "samples in == samples out")
        let playedSamples = played.withUnsafeBytes { Array($0.bindMemory(to: Int16.self)) }
        XCTAssertEqual(playedSamples, samples)
    }

    func testMissingDeviceGivesAClearError() {
        XCTAssertThrowsError(try ALSADevice(ALSADevice.Request(name: "no_such_device_here", direction: .playback),
                                            configuration: "pcm.other { type null }")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("no_such_device_here"), text)
            XCTAssertTrue(text.contains("cannot open"), text)
        }
    }

    private func temporaryFile(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("duplex-audio-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(name).path
    }
}

/// ALSA configuration text for the tests: `duplex_test_capture` reads `input` through the `file`
/// plugin (its own output to `captureOutput`), `duplex_test_playback` writes to `output`.
func alsaFileConfiguration(input: String, output: String, captureOutput: String = "/dev/null") -> String {
    """
    pcm.duplex_test_capture {
        type file
        slave.pcm "duplex_test_null"
        file "\(captureOutput)"
        infile "\(input)"
        format "raw"
    }
    pcm.duplex_test_playback {
        type file
        slave.pcm "duplex_test_null"
        file "\(output)"
        format "raw"
    }
    pcm.duplex_test_null {
        type null
    }
    """
}
