import DuplexAudio
import Foundation

/// The latency benchmarking harness over a live loop: the loop runs the conversation exactly as
/// `talk` does (capture, model and playback threads); the harness owns what a measurement adds —
/// warm-up, the allocation window, the report with every term of the mic-to-speaker latency, the
/// real-time factor, deadline misses and memory.
public final class BenchHarness {
    public struct Options: Sendable {
        public var frames = 250
        /// Frames not counted (warm-up: caches, first allocations, page faults).
        public var warmupFrames = 10
        /// The loop as `talk` runs it (real-time priority for the audio threads where allowed).
        public var loop = LiveLoop.Options()
        public init() {}
    }

    public struct Report: Sendable {
        public var frames = 0
        public var latency = Percentiles()
        public var stages: [(name: String, values: Percentiles)] = []
        /// Per-frame totals in order (for plots).
        public var totals: [Double] = []
        public var realTimeFactor = 0.0
        public var deadlineMisses = 0
        /// Heap allocations per measured frame; nil when nothing counted them (a harness without
        /// an allocation counter must not claim zero).
        public var allocationsPerFrame: Double?
        public var peakRSSBytes = 0
        public var counters = FramePipeline.Counters()
        public var wallSeconds = 0.0
        /// LM steps already in the context when the measured frames began.
        public var contextFrames = 0
        /// What an LM step reads, when the processor is a local session (nil otherwise).
        public var lmStep: LMStepBytes?
        /// The capture processing (echo cancellation …) when it ran: its own stage, on the
        /// capture thread.
        public var capture: CaptureStage?
    }

    /// What the capture processing cost and achieved in a run.
    public struct CaptureStage: Sendable {
        public var summary: String
        /// Processing time per 80 ms frame (ms), every frame of the run.
        public var cost = Percentiles()
        public var erleDecibels: Double?
        public var settledErleDecibels: Double?
        public var libraryErleDecibels: Double?
        public var echoDelayMilliseconds: Int?
        /// The simulated room, when one was between the speaker and the microphone.
        public var room: String?

        public init(_ processing: EchoCancellation, room: String?) {
            summary = processing.options.summary
            for ns in processing.source.drainFrameCosts() { cost.record(Double(ns) / 1e6) }
            let s = processing.status
            func finite(_ x: Float) -> Double? { x.isFinite ? Double(x) : nil }
            erleDecibels = finite(s.erleDecibels)
            settledErleDecibels = finite(s.settledErleDecibels)
            libraryErleDecibels = finite(s.libraryErleDecibels)
            echoDelayMilliseconds = s.echoDelayMilliseconds >= 0 ? s.echoDelayMilliseconds : nil
            self.room = room
        }
    }

    /// Bytes one LM step streams: its weights, and its KV rings' visible entries, which grow
    /// with the conversation until the ring is full (so: before the run and after it).
    public struct LMStepBytes: Sendable {
        public var kvCache: String
        public var weightBytes: Int
        public var kvBytesAtStart: Int
        public var kvBytesAtEnd: Int
        public init(kvCache: String, weightBytes: Int, kvBytesAtStart: Int, kvBytesAtEnd: Int) {
            self.kvCache = kvCache
            self.weightBytes = weightBytes
            self.kvBytesAtStart = kvBytesAtStart
            self.kvBytesAtEnd = kvBytesAtEnd
        }
    }

    private let processor: FrameProcessor
    private let source: FrameSource
    private let sink: FrameSink
    private let options: Options
    private let allocationCount: (@Sendable () -> UInt64)?

    /// `allocationCount` reads a process-wide malloc counter; without one the report says "not counted".
    public init(processor: FrameProcessor, source: FrameSource, sink: FrameSink, options: Options,
                allocationCount: (@Sendable () -> UInt64)? = nil) {
        self.processor = processor
        self.source = source
        self.sink = sink
        self.options = options
        self.allocationCount = allocationCount
    }

    public func run(contextFrames: Int = 0) throws -> Report {
        let loop = LiveLoop(processor: processor, source: source, sink: sink, options: options.loop)
        let total = options.frames + options.warmupFrames
        var finished: [FrameTimestamps] = []
        finished.reserveCapacity(total + 8)
        // The allocation window runs from the moment the model answered the last warm-up frame
        // (read on the model thread, between two frames) to the end, and is divided by the frames
        // the model answered in it: flat out, the model runs ahead of playback.
        if let allocationCount, options.warmupFrames > 0 { loop.snapshot(afterFrame: options.warmupFrames, of: allocationCount) }
        let clock = MonotonicClock()
        let began = clock.now()
        let realtime = source.pacing == .live || sink.isPaced
        let deadline = began + UInt64((Double(total) * 0.08 * (realtime ? 1.5 : 50) + 30) * 1e9)
        let allocationsAtStart = options.warmupFrames == 0 ? allocationCount?() : nil
        _ = try loop.run(shouldStop: { finished.count >= total || clock.now() > deadline }) { stamps in
            for s in stamps where finished.count < total { finished.append(s) }
        }
        let allocationsAtEnd = allocationCount?()

        var report = Report()
        report.contextFrames = contextFrames
        report.wallSeconds = Double(clock.now() - began) / 1e9
        report.counters = loop.pipeline.counters
        var stages = ["queueing", "encode", "temporal", "depformer", "decode", "output", "device"].map { ($0, Percentiles()) }
        var compute = 0.0
        let measured = Array(finished.dropFirst(options.warmupFrames))
        for (f, r) in zip(measured, measured.dropFirst()) {
            let b = LatencyBreakdown(frame: f, response: r)
            report.latency.record(b.total)
            report.totals.append(b.total)
            for (i, v) in [b.queueing, b.encode, b.temporal, b.depformer, b.decode, b.output, b.deviceBuffer].enumerated() { stages[i].1.record(v) }
            let work = b.encode + b.temporal + b.depformer + b.decode
            compute += work
            if work > 80 { report.deadlineMisses += 1 }
        }
        report.stages = stages.map { (name: $0.0, values: $0.1) }
        report.frames = report.latency.count
        report.realTimeFactor = report.frames > 0 ? compute / (Double(report.frames) * 80) : 0
        let windowFrames = loop.pipeline.framesAnswered - options.warmupFrames
        if let start = allocationsAtStart ?? loop.snapshot, let end = allocationsAtEnd, windowFrames > 0 {
            report.allocationsPerFrame = Double(end &- start) / Double(windowFrames)
        }
        report.peakRSSBytes = peakRSS()
        return report
    }
}

/// Resident-set high-water mark of this process.
public func peakRSS() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Int(usage.ru_maxrss) * 1024
}
