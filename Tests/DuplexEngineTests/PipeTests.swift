import DuplexAudio
import DuplexEngine
import Foundation
import XCTest

/// A stand-in model: answers each frame with the previous one (a one-frame delay) and emits a
/// text token every fourth frame. Deterministic, so pipe behaviour can be checked sample by sample.
final class EchoProcessor: FrameProcessor {
    let frameSize = 1920
    private var previous = [Float](repeating: 0, count: 1920)
    private(set) var frames = 0

    func process(_ input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, stamps: inout FrameTimestamps,
                 clock: any FrameClock) -> Int32? {
        output.update(from: previous, count: frameSize)
        previous.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: input, count: frameSize) }
        frames += 1
        return frames % 4 == 0 ? Int32(frames) : nil
    }
}

/// What a pipe run reports (the summary `duplex pipe` derives its warnings from).
struct PipeRun {
    var inputSamples = 0
    var outputSamples = 0
    var frames = 0
    var trailingBytes = 0
    var outputClosed = false
}

/// `duplex pipe` as the CLI assembles it: a PCM stream source and sink around the inline loop.
func runPipeLoop(processor: FrameProcessor, input: Int32, output: Int32, format: SampleFormat = .s16le, rate: Int = 24_000,
                 onText: (Int32, Double) -> Void = { _, _ in }) throws -> PipeRun {
    let length = PCMStreamLength()
    let source = PCMStreamSource(fd: input, format: format, rate: rate, length: length)
    let sink = PCMStreamSink(fd: output, format: format, rate: rate, length: length)
    let summary = try FrameLoop.runInline(processor: processor, source: source, sink: sink) { pipeline in
        pipeline.drainText { onText($0.token, Double($0.frame) * 0.08) }
    }
    return PipeRun(inputSamples: length.inputSamples, outputSamples: sink.outputSamples, frames: summary.frames,
                   trailingBytes: source.trailingBytes, outputClosed: sink.readerGone)
}

/// Runs `duplex pipe`'s loop over `bytes` through real file descriptors (a pipe in, a pipe out).
func pipeThrough(_ bytes: [UInt8], processor: FrameProcessor, format: SampleFormat = .s16le, rate: Int = 24_000,
                 closeOutputAfter: Int? = nil) throws -> (output: [UInt8], summary: PipeRun, text: [(Int32, Double)]) {
    var inFDs: [Int32] = [0, 0], outFDs: [Int32] = [0, 0]
    XCTAssertEqual(pipe(&inFDs), 0)
    XCTAssertEqual(pipe(&outFDs), 0)
    signal(SIGPIPE, SIG_IGN)
    let writeEnd = inFDs[1]
    let writer = Thread {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(writeEnd, $0.baseAddress! + offset, min(4096, bytes.count - offset)) }
            if n <= 0 { break }
            offset += n
        }
        close(writeEnd)
    }
    writer.start()
    let collected = OutputCollector(fd: outFDs[0], stopAfter: closeOutputAfter)
    collected.start()
    var text: [(Int32, Double)] = []
    let summary = try runPipeLoop(processor: processor, input: inFDs[0], output: outFDs[1], format: format, rate: rate) { text.append(($0, $1)) }
    close(outFDs[1])
    close(inFDs[0])
    return (collected.wait(), summary, text)
}

final class PipeTests: XCTestCase {
    struct Options {
        var format: SampleFormat = .s16le
        var rate = 24_000
    }

    private func runPipe(_ bytes: [UInt8], options: Options, closeOutputAfter: Int? = nil)
        throws -> (output: [UInt8], summary: PipeRun, text: [(Int32, Double)]) {
        try pipeThrough(bytes, processor: EchoProcessor(), format: options.format, rate: options.rate, closeOutputAfter: closeOutputAfter)
    }

    private func s16(_ samples: [Int16]) -> [UInt8] { samples.withUnsafeBytes { Array($0) } }
    private func int16s(_ bytes: [UInt8]) -> [Int16] { bytes.withUnsafeBytes { Array($0.bindMemory(to: Int16.self)) } }

    func testSampleCountIsConservedAndOutputIsTheDelayedInput() throws {
        let count = 1920 * 5 + 777
        let input = (0..<count).map { Int16(truncatingIfNeeded: ($0 * 13) % 20000 - 10000) }
        let (out, summary, text) = try runPipe(s16(input), options: .init())
        let samples = int16s(out)
        XCTAssertEqual(samples.count, count, "exactly as many samples out as in")
        XCTAssertEqual(summary.inputSamples, count)
        XCTAssertEqual(summary.trailingBytes, 0)
        XCTAssertEqual(Array(samples[0..<1920]), [Int16](repeating: 0, count: 1920), "the engine's latency is leading silence")
        XCTAssertEqual(Array(samples[1920...]), Array(input[0..<(count - 1920)]), "then the input, delayed by one frame, bit for bit")
        XCTAssertEqual(text.map(\.0), [4], "text tokens with their frame")
        XCTAssertEqual(text.first?.1 ?? -1, 3 * 0.08, accuracy: 1e-9)
    }

    func testFloatFormatRoundTripsExactly() throws {
        let input: [Float] = (0..<(1920 * 3)).map { sinf(Float($0) * 0.01) * 0.9 }
        var options = Options()
        options.format = .f32le
        let (out, _, _) = try runPipe(input.withUnsafeBytes { Array($0) }, options: options)
        let samples = out.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(samples.count, input.count)
        XCTAssertEqual(Array(samples[1920...]), Array(input[0..<(input.count - 1920)]))
    }

    func testOtherRatesAreResampledBothWaysKeepingTheCount() throws {
        var options = Options()
        options.rate = 48_000
        let count = 48_000  // one second
        let input = (0..<count).map { Int16(8000 * sin(2 * Double.pi * 300 * Double($0) / 48_000)) }
        let (out, summary, _) = try runPipe(s16(input), options: options)
        let samples = int16s(out)
        XCTAssertEqual(samples.count, count)
        XCTAssertEqual(summary.frames, 13, "1 s at 24 kHz is 12.5 frames, plus the flush")
        // The echo is the input delayed by one frame (80 ms = 3840 samples at 48 kHz), through two resamplers.
        var maxError = 0
        for i in 6000..<(count - 2000) { maxError = max(maxError, abs(Int(samples[i]) - Int(input[i - 3840]))) }
        XCTAssertLessThan(maxError, 80, "a 300 Hz tone survives 48k → 24k → 48k (max error \(maxError) of 8000)")
    }

    func testOddTrailingBytesAreReportedNotFatal() throws {
        let (out, summary, _) = try runPipe([UInt8](repeating: 1, count: 1920 * 2 + 1), options: .init())
        XCTAssertEqual(summary.trailingBytes, 1)
        XCTAssertEqual(out.count, 1920 * 2)
    }

    func testAClosedOutputEndsQuietly() throws {
        let input = [Int16](repeating: 100, count: 1920 * 50)
        let (_, summary, _) = try runPipe(s16(input), options: .init(), closeOutputAfter: 1920 * 2)
        XCTAssertTrue(summary.outputClosed)
        XCTAssertLessThan(summary.outputSamples, input.count)
    }
}

/// Reads a file descriptor on its own thread (so the pipe never fills up), optionally closing it
/// after some bytes to play a reader that goes away.
final class OutputCollector: @unchecked Sendable {
    private let fd: Int32
    private let stopAfter: Int?
    private var bytes: [UInt8] = []
    private let done = DispatchSemaphore(value: 0)

    init(fd: Int32, stopAfter: Int?) {
        self.fd = fd
        self.stopAfter = stopAfter
    }

    func start() {
        Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if n <= 0 { break }
                bytes += buffer[0..<n]
                if let stopAfter, bytes.count >= stopAfter { break }
            }
            close(fd)
            done.signal()
        }.start()
    }

    func wait() -> [UInt8] {
        done.wait()
        return bytes
    }
}
