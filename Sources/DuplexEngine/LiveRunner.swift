import DuplexAudio
import Foundation
import Synchronization

/// The latency benchmarking harness: plays a signal into the pipeline as a live microphone would
/// (or flat out), plays the answers out in real time on a virtual or real device, and reports
/// every term of the mic-to-speaker latency, the real-time factor, deadline misses, allocations
/// and memory. Capture, model and playback run on their own threads, as in `talk`.
public final class LiveRunner: @unchecked Sendable {
    public struct Options: Sendable {
        public var frames = 250
        /// Frames not counted (warm-up: caches, first allocations, page faults).
        public var warmupFrames = 10
        /// Pace input like a live microphone (true) or push frames as fast as the model takes them.
        public var realtime = true
        /// Period of the virtual devices (5 ms): an answer may have to be ready up to one period
        /// before it sounds, so the period is part of the latency.
        public var periodFrames = 120
        public init() {}
    }

    /// Something that moves audio on a real device for `--alsa`: reads a period of input,
    /// writes a period of output, and reports how much output the device still holds.
    public protocol Device: AnyObject, Sendable {
        func capture(into buffer: UnsafeMutablePointer<Float>, frames: Int) throws -> Bool
        func play(_ buffer: UnsafePointer<Float>, frames: Int) throws
        var outputDelay: UInt64 { get }
    }

    public struct Report: Sendable {
        public var frames = 0
        public var latency = Percentiles()
        public var stages: [(name: String, values: Percentiles)] = []
        /// Per-frame totals in order (for plots).
        public var totals: [Double] = []
        public var realTimeFactor = 0.0
        public var deadlineMisses = 0
        public var allocationsPerFrame = 0.0
        public var peakRSSBytes = 0
        public var counters = FramePipeline.Counters()
        public var wallSeconds = 0.0
    }

    private let processor: FrameProcessor
    private let options: Options
    private let clock = MonotonicClock()
    private let signal: [Float]
    private let allocationCount: () -> UInt64

    /// `signal` is the microphone at 24 kHz; it is looped when shorter than the run.
    public init(processor: FrameProcessor, signal: [Float], options: Options, allocationCount: @escaping () -> UInt64 = { 0 }) {
        self.processor = processor
        self.signal = signal.isEmpty ? [Float](repeating: 0, count: 1920) : signal
        self.options = options
        self.allocationCount = allocationCount
    }

    /// Runs `options.frames` frames (after warm-up), or until `shouldStop` says so. `onTick` runs
    /// on the calling thread about every 10 ms (status lines, text, meters): the audio and model
    /// threads never wait for it.
    public func run(device: Device? = nil, shouldStop: () -> Bool = { false },
                    onTick: (FramePipeline, ArraySlice<FrameTimestamps>) -> Void = { _, _ in }) throws -> Report {
        var configuration = FramePipeline.Configuration()
        let periodTime = UInt64(options.periodFrames) * 1_000_000_000 / 24_000
        configuration.maxOutputWait = periodTime + 20_000_000
        configuration.targetOutputWait = periodTime + 4_000_000
        if !options.realtime && device == nil {
            // Flat out there is no speaker clock to keep up with: nothing is late, nothing is dropped.
            configuration.maxQueuedOutputFrames = Int.max
            configuration.maxQueuedInputFrames = Int.max
            configuration.maxOutputWait = UInt64.max / 2
            configuration.targetOutputWait = UInt64.max / 2
        }
        let pipeline = FramePipeline(processor: processor, clock: clock, configuration: configuration)
        let total = options.frames == Int.max ? Int.max / 2 : options.frames + options.warmupFrames
        let frameSize = processor.frameSize
        let period = options.periodFrames
        let periodNanoseconds = UInt64(period) * 1_000_000_000 / 24_000
        let stop = StopFlag()
        let wake = DispatchSemaphore(value: 0)
        let failure = FailureBox()
        let signal = self.signal
        let realtime = options.realtime
        let clock = self.clock
        let start = clock.now() + 20_000_000

        // Microphone: one period at a time, at wall-clock pace (or as fast as the ring takes it).
        let captureThread = Thread {
            var buffer = [Float](repeating: 0, count: period)
            var position = 0
            var delivered = 0
            var next = start
            while !stop.isSet && delivered / frameSize < total {
                if let device {
                    do { guard try buffer.withUnsafeMutableBufferPointer({ try device.capture(into: $0.baseAddress!, frames: period) }) else { break } } catch {
                        failure.set(error); break
                    }
                } else {
                    for i in 0..<period { buffer[i] = signal[(position + i) % signal.count] }
                    if realtime { sleepUntil(next + periodNanoseconds) } else {
                        while pipeline.queuedInputFrames > 2 && !stop.isSet { usleep(200) }
                    }
                }
                next += periodNanoseconds
                position += period
                buffer.withUnsafeBufferPointer { pipeline.capture($0.baseAddress!, count: period, at: clock.now(), live: realtime || device != nil) }
                delivered += period
                wake.signal()
            }
        }
        // Model: one frame whenever one is waiting.
        let modelThread = Thread {
            while !stop.isSet {
                if !pipeline.step() { _ = wake.wait(timeout: .now() + .milliseconds(5)) }
            }
        }
        // Speaker: one period at a time, at wall-clock pace (flat out: a whole frame as soon as it is ready).
        let playbackPeriod = (realtime || device != nil) ? period : frameSize
        let playbackThread = Thread {
            var buffer = [Float](repeating: 0, count: playbackPeriod)
            var next = start
            while !stop.isSet {
                if device == nil {
                    if realtime {
                        // A virtual speaker that fell far behind (the machine was starved) skips
                        // ahead, as a real device's xrun would, instead of replaying the backlog.
                        let now = clock.now()
                        if now > next + 4 * periodNanoseconds { next = now }
                        sleepUntil(next)
                    } else {
                        while pipeline.queuedOutputFrames == 0 && !stop.isSet { usleep(200) }
                    }
                }
                next += periodNanoseconds
                let delay = device?.outputDelay ?? 0
                buffer.withUnsafeMutableBufferPointer { pipeline.playback(into: $0.baseAddress!, count: playbackPeriod, at: clock.now(), deviceDelay: delay) }
                if let device {
                    do { try buffer.withUnsafeBufferPointer { try device.play($0.baseAddress!, frames: playbackPeriod) } } catch { failure.set(error); break }
                }
            }
        }
        for t in [captureThread, modelThread, playbackThread] { t.stackSize = 1 << 20 }
        captureThread.qualityOfService = .userInteractive
        playbackThread.qualityOfService = .userInteractive

        var finished: [FrameTimestamps] = []
        finished.reserveCapacity(min(total, 1 << 16) + 8)
        var allocationsAtWarm: UInt64 = 0
        captureThread.start()
        modelThread.start()
        playbackThread.start()
        let began = Date()
        let deadline = Date().addingTimeInterval(min(1e9, Double(total) * 0.08 * (realtime ? 1.5 : 50) + 30))
        while finished.count < total && Date() < deadline && failure.error == nil && !shouldStop() {
            usleep(10_000)
            let before = finished.count
            pipeline.drainFinished { stamps in
                finished.append(stamps)
                if finished.count == options.warmupFrames { allocationsAtWarm = allocationCount() }
            }
            onTick(pipeline, finished[max(0, before - 1)...])
        }
        let allocationsAtEnd = allocationCount()
        let framesCounted = max(1, finished.count - options.warmupFrames)
        stop.set()
        wake.signal()
        while captureThread.isExecuting || modelThread.isExecuting || playbackThread.isExecuting { usleep(1000) }
        if let error = failure.error { throw error }

        var report = Report()
        report.wallSeconds = Date().timeIntervalSince(began)
        report.counters = pipeline.counters
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
        report.allocationsPerFrame = Double(allocationsAtEnd &- allocationsAtWarm) / Double(framesCounted)
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

private func sleepUntil(_ t: UInt64) {
    var ts = timespec(tv_sec: Int(t / 1_000_000_000), tv_nsec: Int(t % 1_000_000_000))
    while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil) == EINTR {}
}

/// Tells the audio threads to finish; a relaxed atomic, so checking it per period costs nothing.
private final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}

private final class FailureBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Error?
    var error: Error? { lock.withLock { stored } }
    func set(_ e: Error) { lock.withLock { if stored == nil { stored = e } } }
}
