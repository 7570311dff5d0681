import Dispatch
import DuplexEngine
import Foundation
import NIOConcurrencyHelpers

/// One conversation's model side, run on its own serial queue so the event loops never wait for
/// the model: Ogg/Opus in → 1920-sample frames → the processor → Ogg/Opus out.
///
/// The connection hands in audio payloads (`enqueue`, any thread, cheap: a locked append) and gets
/// results through `sink`. Everything else — the processor, the codecs, the PCM backlog — is
/// touched only on `queue`, which is what makes this type safe to share (hence `@unchecked`).
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

    private let queue: DispatchQueue
    private let model: ChatModel
    private let metrics: ServerMetrics
    private let limits: Limits
    private let clock: any FrameClock
    private let sink: @Sendable (Output) -> Void
    private let inbox = NIOLockedValueBox(Inbox())

    // Queue-confined state.
    private var processor: (any FrameProcessor)?
    private var reader: OggOpusReader?
    private var writer: OggOpusWriter?
    private var pending: [Float] = []
    private var pendingStart = 0
    /// Arrival time of the message that completed each whole frame in `pending`.
    private var frameArrivals: [UInt64] = []
    private var inputFrame: [Float] = []
    private var outputFrame: [Float] = []
    private var corruptSeen = 0
    private var failed = false

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
            do {
                let p = try model.makeSession(parameters)
                guard p.frameSize == model.frameSize else {
                    throw OggOpusError("the session processes \(p.frameSize)-sample frames, the server expects \(model.frameSize)")
                }
                processor = p
                reader = try OggOpusReader(sampleRate: model.sampleRate)
                writer = try OggOpusWriter(sampleRate: model.sampleRate)
                inputFrame = [Float](repeating: 0, count: model.frameSize)
                outputFrame = inputFrame
                pending.reserveCapacity(model.frameSize * (limits.maxBacklogFrames + 4))
                sink(.ready)
            } catch {
                failed = true
                metrics.reject(.modelError)
                sink(.fatal(message: "cannot start a conversation: \(error)", code: 1011))
            }
        }
        // Audio may arrive before the processor exists; it waits in the inbox (drain runs after start).
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
        queue.async { [self] in
            processor = nil
            reader = nil
            writer = nil
            pending = []
            frameArrivals = []
        }
    }

    // MARK: queue-confined

    private var pendingFrames: Int { frameArrivals.count }

    private func drain() {
        while true {
            let batch = inbox.withLockedValue { box -> [(bytes: [UInt8], arrival: UInt64)]? in
                if box.stopped { box.scheduled = false; return nil }
                let taken = box.payloads
                box.payloads = []
                box.bytes = 0
                if taken.isEmpty && (pendingFrames == 0 || processor == nil || failed) {
                    box.scheduled = false
                    return nil
                }
                return taken
            }
            guard let batch else { return }
            guard !failed, processor != nil else { continue }
            for (bytes, arrival) in batch where !failed { decode(bytes, arrival: arrival) }
            trimBacklog()
            if pendingFrames > 0 && !failed { processOneFrame() }
        }
    }

    private func decode(_ bytes: [UInt8], arrival: UInt64) {
        guard let reader else { return }
        do {
            let pcm = try reader.append(bytes)
            if reader.corruptPackets > corruptSeen {
                metrics.corruptAudioPackets.wrappingIncrement(by: reader.corruptPackets - corruptSeen, ordering: .relaxed)
                corruptSeen = reader.corruptPackets
            }
            guard !pcm.isEmpty else { return }
            let before = (pending.count - pendingStart) / model.frameSize
            pending.append(contentsOf: pcm)
            let after = (pending.count - pendingStart) / model.frameSize
            for _ in before..<after { frameArrivals.append(arrival) }
        } catch {
            failed = true
            metrics.close(.badAudio)
            sink(.fatal(message: "bad audio from the client: \(error). Send Ogg pages of Opus packets, 24 kHz mono.", code: 1007))
        }
    }

    private func trimBacklog() {
        let excess = pendingFrames - limits.maxBacklogFrames
        guard excess > 0 else { return }
        pendingStart += excess * model.frameSize
        frameArrivals.removeFirst(excess)
        metrics.droppedInputFrames.wrappingIncrement(by: excess, ordering: .relaxed)
    }

    private func processOneFrame() {
        guard let processor, let writer else { return }
        let n = model.frameSize
        var stamps = FrameTimestamps()
        stamps.inputEnd = frameArrivals.removeFirst()
        stamps.dequeued = clock.now()
        pending.withUnsafeBufferPointer { src in
            inputFrame.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: src.baseAddress! + pendingStart, count: n) }
        }
        pendingStart += n
        if pendingStart >= 16 * n {  // compact now and then, not per frame
            pending.removeFirst(pendingStart)
            pendingStart = 0
        }
        let token = inputFrame.withUnsafeBufferPointer { input in
            outputFrame.withUnsafeMutableBufferPointer { output in
                processor.process(input.baseAddress!, output: output.baseAddress!, stamps: &stamps, clock: clock)
            }
        }
        let processed = clock.now()
        if let failure = processor.failure {
            failed = true
            metrics.close(.modelFailed)
            sink(.fatal(message: "the model stopped: \(failure)", code: 1011))
            return
        }
        let audio = outputFrame.withUnsafeBufferPointer { writer.append($0) }
        let text = token.flatMap(model.tokenText)
        stamps.outputStart = clock.now()
        metrics.recordFrame(stamps, processed: processed)
        sink(.frame(audio: audio, text: text))
    }
}
