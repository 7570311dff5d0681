import DuplexAudio
import Foundation
import Synchronization

/// Runs a source, the pipeline and a sink. Two ways, one pipeline:
/// - `runInline`: one thread reads a frame, answers it and writes the answer (pipe, generate,
///   capacity estimates): nothing is ever dropped, the same input gives the same bytes;
/// - `LiveLoop`: capture, model and playback on their own threads (talk, bench, talk --connect).
/// A websocket session drives the same pipeline push-style from its queue (`DuplexServer`).
public enum FrameLoop {
    /// The pipeline configuration for a loop where nothing waits on a clock: every frame is
    /// answered and handed on, none dropped or trimmed.
    public static var unpacedConfiguration: FramePipeline.Configuration {
        var c = FramePipeline.Configuration()
        c.maxQueuedOutputFrames = Int.max
        c.maxQueuedInputFrames = Int.max
        c.maxOutputWait = UInt64.max / 2
        c.targetOutputWait = UInt64.max / 2
        return c
    }

    public struct InlineSummary: Sendable, Equatable {
        public var frames = 0
        /// The sink took no more: its reader went away, or it had all it wanted (a PCM stream as
        /// long as its input). The sink itself says which.
        public var sinkFinished = false
    }

    /// Reads the source frame by frame to its end, answering each frame as soon as it is read.
    /// `onFrame` runs after each frame with the pipeline (drain its text there). Stops at the
    /// first failure of the source, the model or the sink, with that error.
    public static func runInline(processor: FrameProcessor, source: FrameSource, sink: FrameSink,
                                 clock: any FrameClock = MonotonicClock(),
                                 onFrame: (FramePipeline) -> Void = { _ in }) throws -> InlineSummary {
        let pipeline = FramePipeline(processor: processor, clock: clock, configuration: unpacedConfiguration)
        let n = processor.frameSize
        var input = [Float](repeating: 0, count: n)
        var output = input
        var summary = InlineSummary()
        let live = source.pacing == .live
        while try input.withUnsafeMutableBufferPointer({ try source.read(into: $0.baseAddress!, count: n) }) {
            input.withUnsafeBufferPointer { pipeline.capture($0.baseAddress!, count: n, at: clock.now(), live: live) }
            pipeline.step()
            if let failure = processor.failure { throw ModelStopped(underlying: failure) }
            output.withUnsafeMutableBufferPointer { pipeline.playback(into: $0.baseAddress!, count: n, at: clock.now()) }
            summary.frames += 1
            onFrame(pipeline)
            guard try output.withUnsafeBufferPointer({ try sink.write($0.baseAddress!, count: n) }) else {
                summary.sinkFinished = true
                break
            }
        }
        return summary
    }
}

/// The model stopped a conversation (NaN logits from poisoned weights, …).
public struct ModelStopped: Error, CustomStringConvertible {
    public let underlying: Error
    public var description: String { "the model stopped: \(underlying)" }
}

/// The first failure of any thread of a loop, published once: later ones are dropped, readers on
/// any thread see either nothing or the complete error.
public final class FirstFailure: @unchecked Sendable {
    private let claimed = Atomic<Bool>(false)
    private let published = Atomic<Bool>(false)
    private var stored: Error?

    public init() {}

    /// Records `error` unless another failure came first. Returns whether this one was kept.
    @discardableResult
    public func publish(_ error: Error) -> Bool {
        guard claimed.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        stored = error
        published.store(true, ordering: .releasing)
        return true
    }

    public var error: Error? { published.load(ordering: .acquiring) ? stored : nil }
}

/// A peak level (0…1) written by an audio thread and read by the UI, as the bits of a Float.
public final class LevelMeter: Sendable {
    private let bits = Atomic<UInt32>(0)
    public init() {}
    public var level: Float { Float(bitPattern: bits.load(ordering: .relaxed)) }
    func record(_ samples: UnsafePointer<Float>, count: Int) {
        var peak: Float = 0
        for i in 0..<count { peak = max(peak, abs(samples[i])) }
        bits.store(peak.bitPattern, ordering: .relaxed)
    }
}

/// What a live loop heard and played, for `--record`: the audio threads write into rings and
/// never wait; the UI thread drains them (when it falls behind, samples are dropped).
public final class ConversationRecorder: @unchecked Sendable {
    private let user: SPSCRing<Float>
    private let system: SPSCRing<Float>
    public private(set) var userSamples: [Float] = []
    public private(set) var systemSamples: [Float] = []
    private var chunk = [Float](repeating: 0, count: 4096)

    public init(seconds: Int = 10) {
        user = SPSCRing(minimumCapacity: seconds * 24_000, zero: 0)
        system = SPSCRing(minimumCapacity: seconds * 24_000, zero: 0)
    }

    func heard(_ samples: UnsafePointer<Float>, count: Int) { _ = user.write(samples, count: count) }
    func played(_ samples: UnsafePointer<Float>, count: Int) { _ = system.write(samples, count: count) }

    /// Moves what was recorded so far into `userSamples`/`systemSamples` (one thread only).
    public func drain() {
        for (ring, isUser) in [(user, true), (system, false)] {
            while true {
                let n = chunk.withUnsafeMutableBufferPointer { ring.read(into: $0.baseAddress!, count: $0.count) }
                if n == 0 { break }
                if isUser { userSamples.append(contentsOf: chunk[0..<n]) } else { systemSamples.append(contentsOf: chunk[0..<n]) }
            }
        }
    }

    /// The conversation as stereo 24 kHz WAV: user (microphone) left, system (speaker) right.
    public func write(to path: String) throws -> Double {
        drain()
        let n = max(userSamples.count, systemSamples.count)
        var interleaved = [Float](repeating: 0, count: 2 * n)
        for i in 0..<userSamples.count { interleaved[2 * i] = userSamples[i] }
        for i in 0..<systemSamples.count { interleaved[2 * i + 1] = systemSamples[i] }
        try WAV(sampleRate: 24_000, channels: 2, samples: interleaved).write(to: path)
        return Double(n) / 24_000
    }
}

/// Capture, model and playback on their own threads around one pipeline (design.md §3.6): the
/// audio threads never wait for the model, the model never waits on a device. The loop owns the
/// threads, stopping, the end of the input and failure: the first failure of any thread (a
/// device that died, the model's NaN, a sink that broke) stops every thread and is thrown by
/// `run`. Measurements (warm-up, allocation windows, reports) belong to `BenchHarness`.
public final class LiveLoop: @unchecked Sendable {
    public struct Options: Sendable {
        /// Samples per read from the source and per write to the sink (5 ms: a period is part of
        /// the output wait, so virtual devices keep it short). Sound cards use their own period.
        public var periodFrames = 120
        /// Ask for SCHED_FIFO on the capture and playback threads.
        public var realtimePriority = true
        /// Keep what was heard and played (`recorder`), this many seconds of slack for the UI.
        public var recordSeconds: Int?
        /// Input frames that may wait for the model before the oldest are skipped (nil: the
        /// pipeline's default, a conversation's few). A transcription lags rather than lose words.
        public var maxQueuedInputFrames: Int?
        public init() {}
    }

    /// How the run ended (a failure is thrown instead).
    public enum End: Sendable, Equatable {
        /// `shouldStop` said so (Ctrl-C, a time limit, a harness with enough frames).
        case stopped
        /// The source ended and every answer was handed to the sink.
        case endOfInput
        /// The sink's reader went away.
        case outputClosed
    }

    public let pipeline: FramePipeline
    public let options: Options
    public let inputLevel = LevelMeter()
    public let outputLevel = LevelMeter()
    public let recorder: ConversationRecorder?
    private let processor: FrameProcessor
    private let source: FrameSource
    private let sink: FrameSink
    private let clock: any FrameClock
    private let failure = FirstFailure()
    private let stopFlag = Atomic<Bool>(false)
    private let sourceEnded = Atomic<Bool>(false)
    private let modelDone = Atomic<Bool>(false)
    private let playbackDone = Atomic<Bool>(false)
    private let sinkClosed = Atomic<Bool>(false)
    private let priorityGranted = Atomic<Int>(0)
    private let priorityRefused = Atomic<Int>(0)
    private let priorityReason = Mutex<String?>(nil)
    private let wake = DispatchSemaphore(value: 0)
    /// A counter to read on the model thread right after a given frame (set before `run`).
    private var snapshotRequest: (frame: Int, read: @Sendable () -> UInt64)?
    private let snapshotTaken = Atomic<Bool>(false)
    private let snapshotBits = Atomic<UInt64>(0)

    public init(processor: FrameProcessor, source: FrameSource, sink: FrameSink, options: Options = Options(),
                clock: any FrameClock = MonotonicClock()) {
        self.processor = processor
        self.source = source
        self.sink = sink
        self.options = options
        self.clock = clock
        recorder = options.recordSeconds.map { ConversationRecorder(seconds: $0) }
        var configuration = FramePipeline.Configuration()
        if sink.isPaced || source.pacing == .live {
            let periodTime = UInt64(options.periodFrames) * 1_000_000_000 / 24_000
            configuration.maxOutputWait = periodTime + 20_000_000
            configuration.targetOutputWait = periodTime + 4_000_000
        }
        if !sink.isPaced && source.pacing != .live {
            configuration = FrameLoop.unpacedConfiguration
        }
        if let queued = options.maxQueuedInputFrames {
            configuration.maxQueuedInputFrames = queued
            configuration.ringFrames = max(configuration.ringFrames, queued + 8)
        }
        pipeline = FramePipeline(processor: processor, clock: clock, configuration: configuration)
    }

    /// Reads `counter` on the model thread right after frame `frame` (1-based) is answered, so a
    /// measurement window starts exactly between two frames, however far the model runs ahead
    /// of playback. Call before `run`; the value is `snapshot` afterwards (nil if never reached).
    public func snapshot(afterFrame frame: Int, of counter: @escaping @Sendable () -> UInt64) {
        snapshotRequest = (frame, counter)
    }

    public var snapshot: UInt64? { snapshotTaken.load(ordering: .acquiring) ? snapshotBits.load(ordering: .relaxed) : nil }

    /// Whether the audio threads got real-time priority: nil before they started, else a line for
    /// a summary ("real-time priority (SCHED_FIFO)" or why not).
    public var priorityNote: String? {
        if priorityRefused.load(ordering: .acquiring) > 0 {
            return "normal priority (real-time refused: \(priorityReason.withLock { $0 ?? "unknown" }))"
        }
        return priorityGranted.load(ordering: .acquiring) > 0 ? "real-time priority (SCHED_FIFO)" : nil
    }

    /// Runs until the input ends, `shouldStop` says so, or a thread fails (thrown). `onTick` runs
    /// on the calling thread about every 10 ms with the frames whose answer started playing since
    /// the last tick: status lines, text, meters. The audio and model threads never wait for it.
    public func run(shouldStop: () -> Bool = { false }, onTick: (ArraySlice<FrameTimestamps>) -> Void = { _ in }) throws -> End {
        // The group's leave/wait is what makes the threads' last writes (counters, the failure)
        // visible to this thread once they are done.
        let done = DispatchGroup()
        let bodies: [@Sendable () -> Void] = [{ [self] in captureLoop() }, { [self] in modelLoop() }, { [self] in playbackLoop() }]
        for body in bodies {
            done.enter()
            let thread = Thread { body(); done.leave() }
            thread.stackSize = 1 << 20
            thread.start()
        }
        var finished: [FrameTimestamps] = []
        finished.reserveCapacity(1 << 12)
        var end = End.stopped
        while true {
            usleep(10_000)
            finished.removeAll(keepingCapacity: true)
            pipeline.drainFinished { finished.append($0) }
            onTick(finished[...])
            recorder?.drain()
            if failure.error != nil { break }
            if sinkClosed.load(ordering: .acquiring) { end = .outputClosed; break }
            if playbackDone.load(ordering: .acquiring) { end = .endOfInput; break }
            if shouldStop() { break }
        }
        stopFlag.store(true, ordering: .releasing)
        source.cancel()
        wake.signal()
        done.wait()
        finished.removeAll(keepingCapacity: true)
        pipeline.drainFinished { finished.append($0) }
        if !finished.isEmpty { onTick(finished[...]) }
        recorder?.drain()
        if let error = failure.error { throw error }
        return end
    }

    private var stopping: Bool { stopFlag.load(ordering: .relaxed) || failure.error != nil }

    private func promote() {
        guard options.realtimePriority else { return }
        switch RealtimePriority.promoteCurrentThread() {
        case .granted: priorityGranted.add(1, ordering: .releasing)
        case .refused(let reason):
            priorityReason.withLock { $0 = reason }
            priorityRefused.add(1, ordering: .releasing)
        }
    }

    // Microphone → pipeline, one period at a time.
    private func captureLoop() {
        promote()
        let period = options.periodFrames
        var buffer = [Float](repeating: 0, count: period)
        let live = source.pacing == .live
        buffer.withUnsafeMutableBufferPointer { b in
            let p = b.baseAddress!
            while !stopping {
                if !live {
                    // A file or pipe read flat out waits for the model instead of losing frames.
                    while pipeline.queuedInputFrames > 2 && !stopping { usleep(200) }
                }
                do {
                    guard try source.read(into: p, count: period) else { break }
                } catch {
                    failure.publish(error)
                    break
                }
                inputLevel.record(p, count: period)
                recorder?.heard(p, count: period)
                pipeline.capture(p, count: period, at: clock.now(), live: live)
                wake.signal()
            }
        }
        sourceEnded.store(true, ordering: .releasing)
        wake.signal()
    }

    // One frame whenever one is waiting.
    private func modelLoop() {
        while !stopping {
            if pipeline.step() {
                if let error = processor.failure { failure.publish(ModelStopped(underlying: error)); break }
                if let request = snapshotRequest, pipeline.framesAnswered == request.frame {
                    snapshotBits.store(request.read(), ordering: .relaxed)
                    snapshotTaken.store(true, ordering: .releasing)
                }
                continue
            }
            if sourceEnded.load(ordering: .acquiring) && pipeline.queuedInputFrames == 0 { break }
            _ = wake.wait(timeout: .now() + .milliseconds(5))
        }
        modelDone.store(true, ordering: .releasing)
    }

    // Pipeline → speaker: a period at a time at the device's pace, or a whole frame as soon as
    // one is answered when the sink takes them as they come.
    private func playbackLoop() {
        promote()
        let paced = sink.isPaced
        let count = paced ? options.periodFrames : pipeline.configuration.frameSize
        var buffer = [Float](repeating: 0, count: count)
        buffer.withUnsafeMutableBufferPointer { b in
            let p = b.baseAddress!
            while !stopping {
                let drained = modelDone.load(ordering: .acquiring) && pipeline.queuedOutputFrames == 0 && !pipeline.isPlayingFrame
                if drained { playbackDone.store(true, ordering: .releasing); break }
                if !paced && pipeline.queuedOutputFrames == 0 {
                    usleep(200)
                    continue
                }
                if paced { sink.waitUntilWritable(count) }
                pipeline.playback(into: p, count: count, at: clock.now(), deviceDelay: sink.outputDelay)
                recorder?.played(p, count: count)
                outputLevel.record(p, count: count)
                do {
                    guard try sink.write(p, count: count) else { sinkClosed.store(true, ordering: .releasing); break }
                } catch {
                    failure.publish(error)
                    break
                }
            }
        }
    }
}
