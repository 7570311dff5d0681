import Dispatch
import DuplexEngine
import Foundation
import NIOConcurrencyHelpers

/// One conversation's model side, run on its own serial queue so the event loops never wait for
/// the model. The websocket is the conversation's source and sink: Ogg/Opus in → decoded PCM
/// pushed into the same `FramePipeline` every other use runs → each answered frame → Ogg/Opus out.
///
/// The connection hands in audio payloads (`enqueue`, any thread, cheap: a locked append) and gets
/// results through `sink`. Everything else lives in `state`, touched only on `queue`, which is
/// what makes this type safe to share (hence `@unchecked`).
final class SessionWorker: @unchecked Sendable {
    enum Output: Sendable {
        /// The processor exists; the handshake may go out.
        case ready
        /// One output frame: its Ogg pages (headers first, the first time) and its text, if any.
        case frame(audio: [UInt8], text: String?)
        /// The session cannot go on; send this as kind 5 and close with `code`.
        case fatal(message: String, code: UInt16)
    }

    struct Limits: Sendable {
        /// Pending input beyond this many frames is dropped, oldest first (the model fell behind).
        var maxBacklogFrames = 50
        /// Undecoded bytes the inbox holds before the connection is refused more (an input flood).
        var maxInboxBytes = 4 << 20
    }

    private struct Inbox {
        var payloads: [(bytes: [UInt8], arrival: UInt64)] = []
        var bytes = 0
        var scheduled = false
        var stopped = false
    }

    /// What the conversation is doing (queue-confined).
    private enum State {
        /// The session is being made (it may take a while); audio waits in the inbox.
        case starting
        case running(Running)
        /// A fatal output went out; further input is ignored.
        case failed
        /// The connection ended; everything is released.
        case stopped
    }

    /// A running conversation's queue-confined parts.
    private final class Running {
        let processor: any FrameProcessor
        let pipeline: FramePipeline
        let reader: OggOpusReader
        let writer: OggOpusWriter
        var output: [Float]
        var corruptSeen = 0
        var droppedSeen = 0

        init(processor: any FrameProcessor, maxBacklogFrames: Int, clock: any FrameClock, sampleRate: Int) throws {
            self.processor = processor
            var configuration = FrameLoop.unpacedConfiguration
            configuration.maxQueuedInputFrames = maxBacklogFrames
            configuration.ringFrames = maxBacklogFrames + 16
            pipeline = FramePipeline(processor: processor, clock: clock, configuration: configuration)
            reader = try OggOpusReader(sampleRate: sampleRate)
            writer = try OggOpusWriter(sampleRate: sampleRate)
            output = [Float](repeating: 0, count: processor.frameSize)
        }
    }

    private let queue: DispatchQueue
    private let model: ChatModel
    private let metrics: ServerMetrics
    private let limits: Limits
    private let clock: any FrameClock
    private let sink: @Sendable (Output) -> Void
    private let inbox = NIOLockedValueBox(Inbox())
    private var state = State.starting

    init(label: String, model: ChatModel, metrics: ServerMetrics, limits: Limits, clock: any FrameClock = MonotonicClock(),
         sink: @escaping @Sendable (Output) -> Void) {
        queue = DispatchQueue(label: label, qos: .userInteractive)
        self.model = model
        self.metrics = metrics
        self.limits = limits
        self.clock = clock
        self.sink = sink
    }

    /// Creates the processor (on the worker queue: it may take a while) and reports `.ready`.
    func start(parameters: SessionParameters) {
        queue.async { [self] in
            guard case .starting = state else { return }
            do {
                let p = try model.makeSession(parameters)
                guard p.frameSize == model.frameSize else {
                    throw OggOpusError("the session processes \(p.frameSize)-sample frames, the server expects \(model.frameSize)")
                }
                state = .running(try Running(processor: p, maxBacklogFrames: limits.maxBacklogFrames, clock: clock, sampleRate: model.sampleRate))
                sink(.ready)
            } catch {
                state = .failed
                metrics.reject(.modelError)
                sink(.fatal(message: "cannot start a conversation: \(error)", code: 1011))
            }
            // Audio that arrived before the processor existed waits in the inbox.
            scheduleDrain()
        }
    }

    /// Hands over one kind-1 payload. Returns false when the inbox is over its bound (the caller
    /// closes the connection); never blocks.
    func enqueue(_ bytes: [UInt8]) -> Bool {
        let arrival = clock.now()
        let (accepted, schedule) = inbox.withLockedValue { box -> (Bool, Bool) in
            if box.stopped { return (true, false) }
            if box.bytes + bytes.count > limits.maxInboxBytes { return (false, false) }
            box.payloads.append((bytes, arrival))
            box.bytes += bytes.count
            if box.scheduled { return (true, false) }
            box.scheduled = true
            return (true, true)
        }
        if schedule { queue.async { [self] in drain() } }
        return accepted
    }

    /// Ends the session: pending input is discarded and the processor released on its own queue.
    func stop() {
        inbox.withLockedValue { $0.stopped = true; $0.payloads = []; $0.bytes = 0 }
        queue.async { [self] in state = .stopped }
    }

    // MARK: queue-confined

    private func scheduleDrain() {
        let schedule = inbox.withLockedValue { box -> Bool in
            if box.scheduled || box.stopped || box.payloads.isEmpty { return false }
            box.scheduled = true
            return true
        }
        if schedule { drain() }
    }

    /// Decodes what arrived and answers one frame at a time, taking new input between frames so
    /// the backlog bound sees the newest audio.
    private func drain() {
        while true {
            let batch = inbox.withLockedValue { box -> [(bytes: [UInt8], arrival: UInt64)]? in
                let waiting: Int
                if case .running(let r) = state { waiting = r.pipeline.queuedInputFrames } else { waiting = 0 }
                if box.stopped { box.scheduled = false; return nil }
                guard case .running = state else {
                    // Starting: keep the input for later; failed or stopped: nothing will read it.
                    box.scheduled = false
                    return nil
                }
                let taken = box.payloads
                box.payloads = []
                box.bytes = 0
                if taken.isEmpty && waiting == 0 { box.scheduled = false; return nil }
                return taken
            }
            guard let batch, case .running(let running) = state else { return }
            for (bytes, arrival) in batch {
                guard decode(bytes, arrival: arrival, into: running) else { return }
            }
            running.pipeline.trimInput()
            let dropped = running.pipeline.counters.droppedInputFrames
            if dropped > running.droppedSeen {
                metrics.droppedInputFrames.wrappingIncrement(by: dropped - running.droppedSeen, ordering: .relaxed)
                running.droppedSeen = dropped
            }
            answerOneFrame(running)
        }
    }

    /// Decodes one payload into the pipeline; false when the stream is bad (the session failed).
    private func decode(_ bytes: [UInt8], arrival: UInt64, into running: Running) -> Bool {
        do {
            let pcm = try running.reader.append(bytes)
            if running.reader.corruptPackets > running.corruptSeen {
                metrics.corruptAudioPackets.wrappingIncrement(by: running.reader.corruptPackets - running.corruptSeen, ordering: .relaxed)
                running.corruptSeen = running.reader.corruptPackets
            }
            if !pcm.isEmpty {
                pcm.withUnsafeBufferPointer { running.pipeline.capture($0.baseAddress!, count: $0.count, at: arrival, live: false) }
            }
            return true
        } catch {
            state = .failed
            metrics.close(.badAudio)
            sink(.fatal(message: "bad audio from the client: \(error). Send Ogg pages of Opus packets, 24 kHz mono.", code: 1007))
            return false
        }
    }

    private func answerOneFrame(_ running: Running) {
        let pipeline = running.pipeline
        guard pipeline.step() else { return }
        if let failure = running.processor.failure {
            state = .failed
            metrics.close(.modelFailed)
            sink(.fatal(message: "the model stopped: \(failure)", code: 1011))
            return
        }
        var text: String?
        pipeline.drainText { event in
            if let piece = model.tokenText(event.token) { text = (text ?? "") + piece }
        }
        let n = running.output.count
        running.output.withUnsafeMutableBufferPointer { pipeline.playback(into: $0.baseAddress!, count: n, at: clock.now()) }
        let audio = running.output.withUnsafeBufferPointer { running.writer.append($0) }
        let sent = clock.now()
        pipeline.drainFinished { stamps in
            var s = stamps
            s.outputStart = sent
            metrics.recordFrame(s, processed: s.decoded)
        }
        sink(.frame(audio: audio, text: text))
    }
}
