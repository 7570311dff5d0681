import DuplexEngine
import Foundation
import Synchronization
import XCTest

/// A stand-in model that spends a known time per frame and stamps every stage, so the harness's
/// compute figures have a true value to be checked against.
final class TimedEcho: FrameProcessor {
    let frameSize = 1920
    let work: UInt64
    private let echo = EchoProcessor()
    var failAtFrame: Int?
    private(set) var frames = 0
    private(set) var failure: Error?
    struct Poisoned: Error {}

    init(workMicroseconds: UInt64) { work = workMicroseconds }

    func process(_ input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, stamps: inout FrameTimestamps,
                 clock: any FrameClock) -> Int32? {
        frames += 1
        if frames == failAtFrame { failure = Poisoned() }
        let start = clock.now()
        while clock.now() - start < work * 1000 {}
        stamps.encoded = clock.now()
        stamps.temporalDone = stamps.encoded
        stamps.lmDone = stamps.encoded
        let token = echo.process(input, output: output, stamps: &stamps, clock: clock)
        stamps.decoded = clock.now()
        return token
    }
}

/// A source that fails after some periods (a microphone unplugged mid-conversation).
final class DyingSource: FrameSource {
    struct Unplugged: Error, CustomStringConvertible { var description: String { "the capture device went away" } }
    var remaining: Int
    init(periods: Int) { remaining = periods }
    var pacing: SourcePacing { .asFastAsRead }
    func read(into buffer: UnsafeMutablePointer<Float>, count: Int) throws -> Bool {
        remaining -= 1
        if remaining < 0 { throw Unplugged() }
        buffer.update(repeating: 0.25, count: count)
        return true
    }
}

/// A sink that fails after some writes (a playback device that died).
final class DyingSink: FrameSink {
    struct Gone: Error {}
    var remaining: Int
    init(writes: Int) { remaining = writes }
    var isPaced: Bool { false }
    func write(_ samples: UnsafePointer<Float>, count: Int) throws -> Bool {
        remaining -= 1
        if remaining < 0 { throw Gone() }
        return true
    }
}

final class LiveLoopTests: XCTestCase {
    func testAFiniteSourceEndsTheLoopWithEveryFrameAnsweredInOrder() throws {
        let signal = (0..<(1920 * 10)).map { Float($0) / 19200 }
        let sink = CollectingSink()
        let loop = LiveLoop(processor: EchoProcessor(), source: SignalSource(signal), sink: sink)
        let end = try loop.run()
        XCTAssertEqual(end, .endOfInput)
        XCTAssertEqual(loop.pipeline.counters.framesProcessed, 10)
        XCTAssertEqual(sink.samples.count, 1920 * 10, "every frame answered, none dropped")
        XCTAssertEqual(Array(sink.samples[0..<1920]), [Float](repeating: 0, count: 1920))
        XCTAssertEqual(Array(sink.samples[1920...]), Array(signal[0..<(1920 * 9)]), "the echo, delayed by one frame, in order")
    }

    func testADyingSourceStopsTheLoopWithItsError() {
        let loop = LiveLoop(processor: EchoProcessor(), source: DyingSource(periods: 200), sink: NullSink())
        XCTAssertThrowsError(try loop.run()) { error in
            XCTAssertTrue(error is DyingSource.Unplugged, "the device's own error, not silence: \(error)")
        }
    }

    func testADyingSinkStopsTheLoopWithItsError() {
        let loop = LiveLoop(processor: EchoProcessor(), source: SignalSource([0.1], loop: true), sink: DyingSink(writes: 5))
        XCTAssertThrowsError(try loop.run()) { XCTAssertTrue($0 is DyingSink.Gone, "\($0)") }
    }

    func testAModelFailureStopsTheLoop() {
        let model = TimedEcho(workMicroseconds: 0)
        model.failAtFrame = 7
        let loop = LiveLoop(processor: model, source: SignalSource([0.1], loop: true), sink: NullSink())
        XCTAssertThrowsError(try loop.run()) { error in
            guard let stopped = error as? ModelStopped else { return XCTFail("\(error)") }
            XCTAssertTrue(stopped.underlying is TimedEcho.Poisoned)
        }
        XCTAssertLessThan(model.frames, 40, "the model thread stops at the failure, it does not run on")
    }

    func testRecordingKeepsWhatWasHeardAndPlayed() throws {
        var options = LiveLoop.Options()
        options.recordSeconds = 2
        let signal = [Float](repeating: 0.5, count: 1920 * 4)
        let loop = LiveLoop(processor: EchoProcessor(), source: SignalSource(signal), sink: NullSink(), options: options)
        XCTAssertEqual(try loop.run(), .endOfInput)
        let recorder = try XCTUnwrap(loop.recorder)
        recorder.drain()
        XCTAssertEqual(recorder.userSamples, signal)
        XCTAssertEqual(recorder.systemSamples.count, signal.count)
        XCTAssertEqual(Array(recorder.systemSamples[1920...]), Array(signal[0..<(1920 * 3)]))
    }

    func testStoppingReturnsPromptlyWhileTheSourceWaitsForInput() throws {
        // talk --pipe with a silent stdin, then Ctrl-C: the capture thread must not hang in read.
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        let loop = LiveLoop(processor: EchoProcessor(), source: PCMStreamSource(fd: fds[0], realtime: true), sink: VirtualSpeaker())
        let clock = MonotonicClock()
        let start = clock.now()
        XCTAssertEqual(try loop.run(shouldStop: { clock.now() - start > 100_000_000 }), .stopped)
        XCTAssertLessThan(Double(clock.now() - start) / 1e9, 1.0, "stopped within a second")
    }

    func testFirstFailureIsPublishedOnce() {
        let failure = FirstFailure()
        XCTAssertNil(failure.error)
        XCTAssertTrue(failure.publish(DyingSink.Gone()))
        XCTAssertFalse(failure.publish(DyingSource.Unplugged()), "a later failure does not replace the first")
        XCTAssertTrue(failure.error is DyingSink.Gone)
    }
}

/// The harness on real threads with stand-ins: frames flow and the figures match what the
/// stand-in is known to cost.
final class BenchHarnessTests: XCTestCase {
    func testFlatOutRunMeasuresTheKnownComputeCost() throws {
        var options = BenchHarness.Options()
        options.frames = 40
        options.warmupFrames = 2
        let model = TimedEcho(workMicroseconds: 4000)   // 4 ms of 80: a real-time factor of 0.05
        let report = try BenchHarness(processor: model, source: SignalSource([0.2], loop: true), sink: NullSink(), options: options).run()
        XCTAssertEqual(report.frames, 39, "every measured frame pairs with the next one's response")
        XCTAssertEqual(report.counters.overruns, 0)
        XCTAssertEqual(report.counters.droppedInputFrames, 0)
        XCTAssertGreaterThanOrEqual(report.realTimeFactor, 0.05, "the stand-in spends 4 ms per 80 ms frame")
        XCTAssertLessThan(report.realTimeFactor, 0.5)
        XCTAssertEqual(report.stages.first { $0.name == "encode" }?.values.percentile(50) ?? 0, 4, accuracy: 3)
        XCTAssertEqual(report.deadlineMisses, 0)
        XCTAssertNil(report.allocationsPerFrame, "no counter: not counted, never a made-up zero")
    }

    func testAllocationWindowCountsPerAnsweredFrame() throws {
        // A stand-in "allocation" per frame (the model counts its calls), flat out, where the model
        // runs far ahead of playback: the window starts between two frames on the model thread,
        // so the report says exactly 1 per frame.
        var options = BenchHarness.Options()
        options.frames = 40
        options.warmupFrames = 4
        let model = CountingEcho()
        let report = try BenchHarness(processor: model, source: SignalSource([0.2], loop: true), sink: NullSink(),
                                      options: options, allocationCount: { model.calls }).run()
        let perFrame = try XCTUnwrap(report.allocationsPerFrame)
        XCTAssertEqual(perFrame, 1.0, accuracy: 1e-12)
    }

    func testPacedRunShowsTheFramingAndAcousticDelay() throws {
        var options = BenchHarness.Options()
        options.frames = 20
        options.warmupFrames = 3
        let report = try BenchHarness(processor: TimedEcho(workMicroseconds: 1000), source: SignalSource([0.1], loop: true, realtime: true),
                                      sink: VirtualSpeaker(), options: options).run()
        XCTAssertEqual(report.frames, 19)
        // Floor: 80 ms framing + 80 ms acoustic delay; the stand-in computes 1 ms, the virtual
        // speaker adds up to one 5 ms period, and a loaded CI machine some scheduling slack.
        let p50 = report.latency.percentile(50)
        XCTAssertGreaterThanOrEqual(p50, 160)
        XCTAssertLessThan(p50, 160 + 20 + 30)
        XCTAssertEqual(report.stages.first { $0.name == "encode" }?.values.count, 19)
    }
}

/// The echo, counting its calls where other threads can read them (a stand-in for a malloc
/// counter whose true value is known: one per frame).
final class CountingEcho: FrameProcessor, @unchecked Sendable {
    let frameSize = 1920
    private let echo = EchoProcessor()
    private let count = Atomic<UInt64>(0)
    var calls: UInt64 { count.load(ordering: .relaxed) }
    func process(_ input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, stamps: inout FrameTimestamps,
                 clock: any FrameClock) -> Int32? {
        count.add(1, ordering: .relaxed)
        return echo.process(input, output: output, stamps: &stamps, clock: clock)
    }
}

final class BenchReportTests: XCTestCase {
    func testJSONCarriesTheAgreedKeysAndParses() throws {
        var options = BenchHarness.Options()
        options.frames = 12
        options.warmupFrames = 1
        let report = try BenchHarness(processor: TimedEcho(workMicroseconds: 100), source: SignalSource([0.1], loop: true), sink: NullSink(),
                                      options: options).run()
        let text = report.json(extra: ["model": "/tmp/a \"quoted\" \\ path"])
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        let json = try XCTUnwrap(object)
        for key in ["latency_ms", "stages_ms", "real_time_factor", "deadline_misses", "allocations_per_frame", "peak_rss_bytes", "frames", "context_frames"] {
            XCTAssertNotNil(json[key], key)
        }
        XCTAssertTrue(json["allocations_per_frame"] is NSNull, "not counted is null, not 0")
        XCTAssertEqual(json["model"] as? String, "/tmp/a \"quoted\" \\ path", "a path with a quote survives")
        let latency = try XCTUnwrap(json["latency_ms"] as? [String: Any])
        for key in ["p50", "p95", "p99", "max"] { XCTAssertNotNil(latency[key] as? Double, key) }
        let stages = try XCTUnwrap(json["stages_ms"] as? [String: [String: Any]])
        XCTAssertNotNil(stages["encode"]?["p95"] as? Double)
        XCTAssertEqual(json["frames"] as? Int, report.frames)

        let svg = report.svg(title: "test <run>")
        XCTAssertTrue(svg.hasPrefix("<svg"))
        XCTAssertTrue(svg.contains("test &lt;run&gt;"))
        XCTAssertTrue(svg.contains("<polyline"))
        XCTAssertTrue(report.table(title: "t").contains("mic→speaker"))
        XCTAssertTrue(report.table(title: "t").contains("not counted"))
    }
}
