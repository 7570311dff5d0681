import DuplexAudio
import Foundation
import Synchronization

/// What turns one input frame into one output frame: the Session (Mimi + LM), or a stand-in in tests.
/// Called on the model thread only.
public protocol FrameProcessor: AnyObject {
    var frameSize: Int { get }
    /// Consumes `frameSize` input samples and writes exactly `frameSize` output samples (silence
    /// while the model has nothing to say yet). Stamps `encoded`/`temporalDone`/`lmDone`/`decoded`.
    /// Returns the text token the model emitted with this output, if any (for display).
    func process(_ input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                 stamps: inout FrameTimestamps, clock: any FrameClock) -> Int32?
    /// Set once the processor cannot go on (e.g. NaN logits from poisoned weights); it then
    /// answers silence, and whoever runs it reports this and stops.
    var failure: Error? { get }
    /// The last `process` call detected the end of the speaker's turn (Kyutai STT's semantic VAD).
    var endOfTurn: Bool { get }
}

extension FrameProcessor {
    public var failure: Error? { nil }
    public var endOfTurn: Bool { false }
}

/// Capture → model → playback, joined by lock-free SPSC rings (design.md §3.6). Every method is
/// non-blocking and belongs to one thread: `capture` to the capture thread, `step` to the model
/// thread, `playback` to the playback thread, `drainFinished` to whoever reports. Live modes run
/// each on its own thread; tests drive them in virtual time. Input frame o always produces output
/// frame o: the streams never drift apart, even across stalls.
public final class FramePipeline: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var frameSize = 1920
        public var sampleRate = 24_000
        /// Frames each ring can hold before the producer must drop.
        public var ringFrames = 64
        /// Output frames allowed to wait when playback starts a new one. In steady state exactly one
        /// is ready (the next input frame is still being captured), so more means the model fell
        /// behind: the oldest are dropped and latency returns to normal instead of staying inflated.
        public var maxQueuedOutputFrames = 1
        /// Longest a decoded frame may wait for playback before its stale beginning is skipped.
        /// Must exceed the playback period (a frame may always wait up to one period). After a stall
        /// playback restarts at an arbitrary phase; trimming once restores the normal latency.
        public var maxOutputWait: UInt64 = 30_000_000
        /// Answers that are ready earlier than needed only add latency: when every one of the last
        /// `phaseWindow` frames waited longer than this, the next frame's beginning is trimmed by the
        /// excess, once, so playback's phase settles just behind the model. It must exceed the
        /// playback period (a period is filled at its start, so a frame is needed up to one period
        /// before it sounds) plus a margin for compute jitter; the default suits 20 ms periods.
        public var targetOutputWait: UInt64 = 26_000_000
        public var phaseWindow = 16
        /// Input frames allowed to wait for the model. When it falls further behind (a stall, or a
        /// model slower than real time) the oldest are skipped, so the conversation stays live
        /// instead of drifting seconds behind the speaker.
        public var maxQueuedInputFrames = 4
        public init() {}
    }

    public struct Counters: Sendable, Equatable {
        /// Playback found no audio after output had started (the model was late).
        public var underruns = 0
        /// Capture found the ring full (the model fell too far behind); samples dropped.
        public var overruns = 0
        /// Input frames skipped because too many were waiting for the model.
        public var droppedInputFrames = 0
        /// Output frames dropped, and samples trimmed from late frames, to bring latency back after a stall.
        public var droppedOutputFrames = 0
        public var trimmedOutputSamples = 0
        public var framesProcessed = 0
        public var framesPlayed = 0
    }

    public let configuration: Configuration
    private let processor: FrameProcessor
    private let clock: any FrameClock
    private let captureRing: SPSCRing<Float>
    private let captureStamps: SPSCRing<FrameTimestamps>
    private let playbackRing: SPSCRing<Float>
    private let playbackStamps: SPSCRing<FrameTimestamps>
    private let textRing: SPSCRing<TextEvent>
    private let finishedRing: SPSCRing<FrameTimestamps>

    // Capture-thread state.
    private var captureFill = 0
    private var pendingStamps = FrameTimestamps()
    // Model-thread state.
    private var inputFrame: [Float]
    private var outputFrame: [Float]
    // Playback-thread state.
    private var playing = FrameTimestamps()
    private var playingRemaining = 0
    private var started = false
    private var recentMinimumWait = UInt64.max
    private var recentFrames = 0
    // Each thread counts into its own storage, so no two threads ever write the same memory;
    // `counters` adds them up (read it once the threads have stopped).
    private var captureCounts = Counters()
    private var modelCounts = Counters()
    private var playbackCounts = Counters()
    /// Frames the model has answered, readable from any thread while the others run.
    private let answered = Atomic<Int>(0)

    public var counters: Counters {
        var c = Counters()
        c.overruns = captureCounts.overruns
        c.droppedInputFrames = modelCounts.droppedInputFrames
        c.framesProcessed = modelCounts.framesProcessed
        c.droppedOutputFrames = modelCounts.droppedOutputFrames + playbackCounts.droppedOutputFrames
        c.underruns = playbackCounts.underruns
        c.trimmedOutputSamples = playbackCounts.trimmedOutputSamples
        c.framesPlayed = playbackCounts.framesPlayed
        return c
    }

    public struct TextEvent: Sendable, BitwiseCopyable {
        public var frame: Int
        /// The text token, or −1 for an event that carries only `endOfTurn`.
        public var token: Int32
        public var endOfTurn = false

        public init(frame: Int, token: Int32, endOfTurn: Bool = false) {
            self.frame = frame
            self.token = token
            self.endOfTurn = endOfTurn
        }
    }

    public init(processor: FrameProcessor, clock: any FrameClock = MonotonicClock(), configuration: Configuration = Configuration()) {
        var configuration = configuration
        configuration.frameSize = processor.frameSize
        self.processor = processor
        self.clock = clock
        self.configuration = configuration
        let samples = configuration.frameSize * configuration.ringFrames
        captureRing = SPSCRing(minimumCapacity: samples, zero: 0)
        captureStamps = SPSCRing(minimumCapacity: configuration.ringFrames, zero: FrameTimestamps())
        playbackRing = SPSCRing(minimumCapacity: samples, zero: 0)
        playbackStamps = SPSCRing(minimumCapacity: configuration.ringFrames, zero: FrameTimestamps())
        textRing = SPSCRing(minimumCapacity: 256, zero: TextEvent(frame: 0, token: 0))
        finishedRing = SPSCRing(minimumCapacity: 4 * configuration.ringFrames, zero: FrameTimestamps())
        inputFrame = [Float](repeating: 0, count: configuration.frameSize)
        outputFrame = inputFrame
    }

    private var frameNanoseconds: UInt64 {
        UInt64(configuration.frameSize) * 1_000_000_000 / UInt64(configuration.sampleRate)
    }

    // MARK: capture thread

    /// Hands over `count` captured samples whose last one was captured at `time`. With
    /// `live == false` (files, pipes read as fast as possible) a frame's start is the moment its
    /// first sample arrived rather than one frame duration before its end.
    public func capture(_ samples: UnsafePointer<Float>, count: Int, at time: UInt64, live: Bool = true) {
        let frame = configuration.frameSize
        var offset = 0
        while offset < count {
            if captureFill == 0 && !live { pendingStamps.inputStart = time }
            let n = min(count - offset, frame - captureFill)
            // A frame goes in whole or not at all, so the rings never lose frame alignment.
            if captureFill == 0 && (captureRing.availableToWrite < frame || captureStamps.availableToWrite < 1) {
                captureCounts.overruns += 1
                offset += n
                continue
            }
            captureRing.write(samples + offset, count: n)
            captureFill += n
            offset += n
            if captureFill == frame {
                if live {
                    // A microphone captured the samples after this frame's end later than its end.
                    let samplesAfter = UInt64(count - offset) * 1_000_000_000 / UInt64(configuration.sampleRate)
                    pendingStamps.inputEnd = time - min(time, samplesAfter)
                    pendingStamps.inputStart = pendingStamps.inputEnd - min(pendingStamps.inputEnd, frameNanoseconds)
                } else {
                    pendingStamps.inputEnd = time
                }
                withUnsafePointer(to: &pendingStamps) { _ = captureStamps.write($0, count: 1) }
                pendingStamps = FrameTimestamps()
                captureFill = 0
            }
        }
    }

    // MARK: model thread

    /// Processes one frame if one is waiting; returns false when there was none.
    @discardableResult
    public func step() -> Bool {
        guard captureStamps.availableToRead > 0 else { return false }
        trimInput()
        var stamps = FrameTimestamps()
        withUnsafeMutablePointer(to: &stamps) { _ = captureStamps.read(into: $0, count: 1) }
        stamps.dequeued = clock.now()
        inputFrame.withUnsafeMutableBufferPointer { input in
            _ = captureRing.read(into: input.baseAddress!, count: configuration.frameSize)
            outputFrame.withUnsafeMutableBufferPointer { output in
                let token = processor.process(input.baseAddress!, output: output.baseAddress!, stamps: &stamps, clock: clock)
                if token != nil || processor.endOfTurn {
                    var event = TextEvent(frame: modelCounts.framesProcessed, token: token ?? -1, endOfTurn: processor.endOfTurn)
                    withUnsafePointer(to: &event) { _ = textRing.write($0, count: 1) }
                }
                if playbackRing.availableToWrite >= configuration.frameSize && playbackStamps.availableToWrite >= 1 {
                    playbackRing.write(output.baseAddress!, count: configuration.frameSize)
                    withUnsafePointer(to: &stamps) { _ = playbackStamps.write($0, count: 1) }
                } else {
                    modelCounts.droppedOutputFrames += 1
                }
            }
        }
        modelCounts.framesProcessed += 1
        answered.add(1, ordering: .releasing)
        return true
    }

    /// Skips the oldest waiting input frames beyond `maxQueuedInputFrames` (model thread). `step`
    /// does it; a push-style driver that hands over many frames at once calls it after each batch.
    public func trimInput() {
        var stamps = FrameTimestamps()
        while captureStamps.availableToRead > configuration.maxQueuedInputFrames {
            withUnsafeMutablePointer(to: &stamps) { _ = captureStamps.read(into: $0, count: 1) }
            captureRing.skip(configuration.frameSize)
            modelCounts.droppedInputFrames += 1
        }
    }

    // MARK: playback thread

    /// A frame is partly played (playback thread).
    public var isPlayingFrame: Bool { playingRemaining > 0 }

    /// Fills `count` samples for the device at `time`; `deviceDelay` is how long the device will
    /// take to play what it already holds. Plays silence (and counts an underrun) when the model
    /// is late; drops whole old frames when too many are queued, so latency recovers.
    public func playback(into out: UnsafeMutablePointer<Float>, count: Int, at time: UInt64, deviceDelay: UInt64 = 0) {
        var filled = 0
        while filled < count {
            if playingRemaining == 0 {
                // Catch up: keep at most maxQueuedOutputFrames waiting.
                while playbackStamps.availableToRead > configuration.maxQueuedOutputFrames {
                    var stale = FrameTimestamps()
                    withUnsafeMutablePointer(to: &stale) { _ = playbackStamps.read(into: $0, count: 1) }
                    playbackRing.skip(configuration.frameSize)
                    playbackCounts.droppedOutputFrames += 1
                }
                guard playbackStamps.availableToRead > 0 else { break }
                withUnsafeMutablePointer(to: &playing) { _ = playbackStamps.read(into: $0, count: 1) }
                let offsetTime = UInt64(filled) * 1_000_000_000 / UInt64(configuration.sampleRate)
                playing.outputStart = time + offsetTime
                playing.deviceBuffer = deviceDelay
                playingRemaining = configuration.frameSize
                if playing.decoded > 0, playing.outputStart > playing.decoded + configuration.maxOutputWait {
                    let late = playing.outputStart - playing.decoded - configuration.maxOutputWait
                    let trim = min(configuration.frameSize - 1, Int(late * UInt64(configuration.sampleRate) / 1_000_000_000))
                    playbackRing.skip(trim)
                    playingRemaining -= trim
                    playbackCounts.trimmedOutputSamples += trim
                }
                if playing.decoded > 0, playing.outputStart >= playing.decoded {
                    recentMinimumWait = min(recentMinimumWait, playing.outputStart - playing.decoded)
                    recentFrames += 1
                    if recentFrames >= configuration.phaseWindow {
                        if recentMinimumWait > configuration.targetOutputWait {
                            let excess = recentMinimumWait - configuration.targetOutputWait
                            let trim = min(playingRemaining - 1, Int(excess * UInt64(configuration.sampleRate) / 1_000_000_000))
                            playbackRing.skip(trim)
                            playingRemaining -= trim
                            playbackCounts.trimmedOutputSamples += trim
                        }
                        recentMinimumWait = .max
                        recentFrames = 0
                    }
                }
                started = true
                playbackCounts.framesPlayed += 1
                withUnsafePointer(to: &playing) { _ = finishedRing.write($0, count: 1) }
            }
            let n = min(count - filled, playingRemaining)
            let got = playbackRing.read(into: out + filled, count: n)
            filled += got
            playingRemaining -= got
            if got < n { break }
        }
        if filled < count {
            (out + filled).update(repeating: 0, count: count - filled)
            if started { playbackCounts.underruns += 1 }
        }
    }

    // MARK: reporting thread

    /// Frames whose response started playing since the last call, in order.
    public func drainFinished(_ body: (FrameTimestamps) -> Void) {
        var stamps = FrameTimestamps()
        while finishedRing.availableToRead > 0 {
            withUnsafeMutablePointer(to: &stamps) { _ = finishedRing.read(into: $0, count: 1) }
            body(stamps)
        }
    }

    /// Text tokens emitted since the last call, with the frame that carried them.
    public func drainText(_ body: (TextEvent) -> Void) {
        var event = TextEvent(frame: 0, token: 0)
        while textRing.availableToRead > 0 {
            withUnsafeMutablePointer(to: &event) { _ = textRing.read(into: $0, count: 1) }
            body(event)
        }
    }

    /// Frames the model has answered so far. Safe from any thread.
    public var framesAnswered: Int { answered.load(ordering: .acquiring) }

    /// Frames waiting for the model (a lag indicator). Safe from any thread.
    public var queuedInputFrames: Int { captureStamps.availableToRead }

    /// Answered frames waiting for playback. Safe from any thread.
    public var queuedOutputFrames: Int { playbackStamps.availableToRead }
}
