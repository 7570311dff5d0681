import DuplexAudio
import Foundation
import Synchronization

/// The echo canceller between a source and a sink (design.md §1: it sits between the capture
/// source and the pipeline, its reference taken from the playback sink): `EchoReferenceSink`
/// passes what is played to the sink and into the references; `EchoCancellingSource` reads the
/// microphone and cleans it on the reading thread before the pipeline sees it. Either side stays
/// on its own thread; they share only lock-free rings.
public final class EchoCancellation {
    public let options: CaptureProcessingOptions
    public let source: EchoCancellingSource
    public let sink: EchoReferenceSink
    public var status: CaptureProcessingStatus { source.processor.status }

    /// Wraps `source` and `sink`, or says why it cannot: a missing library, a rate the backend
    /// refuses, devices that report no delay. The caller then runs without, after the warning.
    /// A sink that is already an `EchoReferenceSink` (a simulated room's) gets the canceller's
    /// reference added instead of a second tap.
    public static func make(source: FrameSource, sink: FrameSink, options: CaptureProcessingOptions,
                            alignment: EchoReference.Alignment, clock: any FrameClock = MonotonicClock()) -> Result<EchoCancellation, CaptureProcessingError> {
        if options.isIdentity { return .failure(CaptureProcessingError("no processing asked for (--aec off without --ns, --agc or --high-pass)")) }
        if alignment == .clock {
            if source.captureDelay == nil { return .failure(CaptureProcessingError("the capture device reports no delay, so what it hears cannot be lined up with what was played")) }
            if sink.reportedOutputDelay == nil { return .failure(CaptureProcessingError("the playback device reports no delay, so what was played cannot be lined up with what is heard")) }
        }
        let processor: CaptureProcessor
        do { processor = try CaptureProcessor(options: options) } catch let error as CaptureProcessingError {
            return .failure(error)
        } catch {
            return .failure(CaptureProcessingError("\(error)"))
        }
        let reference = EchoReference(alignment: alignment)
        let tap: EchoReferenceSink
        if let existing = sink as? EchoReferenceSink {
            existing.add(reference)
            tap = existing
        } else {
            tap = EchoReferenceSink(sink, references: [reference], clock: clock)
        }
        let cancelling = EchoCancellingSource(source, processor: processor, reference: reference, clock: clock)
        return .success(EchoCancellation(options: options, source: cancelling, sink: tap))
    }

    private init(options: CaptureProcessingOptions, source: EchoCancellingSource, sink: EchoReferenceSink) {
        self.options = options
        self.source = source
        self.sink = sink
    }

    /// A status-line piece: "aec webrtc: echo 64 ms, ERLE 31 dB".
    public var statusText: String {
        if let reason = source.fallbackReason { return "aec off (\(reason))" }
        let s = status
        var text = options.echoCanceller == .off ? "capture \(options.summary)" : "aec \(options.echoCanceller.rawValue)"
        if options.echoCanceller != .off {
            text += s.echoDelayMilliseconds >= 0 ? ": echo \(s.echoDelayMilliseconds) ms" : ": echo –"
            text += s.erleDecibels.isFinite ? String(format: ", ERLE %.0f dB", s.erleDecibels) : ", ERLE –"
        }
        return text
    }

    /// A summary sentence with the figures of the whole run.
    public var summaryText: String {
        if let reason = source.fallbackReason { return "Echo cancellation stopped: \(reason)." }
        let s = status
        var text = "Capture processing \(options.summary)"
        if options.echoCanceller != .off {
            text += s.echoDelayMilliseconds >= 0 ? ", echo delay \(s.echoDelayMilliseconds) ms" : ", echo delay not found"
            if s.settledErleDecibels.isFinite {
                text += String(format: ", ERLE %.1f dB after the first 2 s of far-end speech (%.1f dB over the last second)", s.settledErleDecibels, s.erleDecibels)
            } else {
                text += s.erleDecibels.isFinite ? String(format: ", ERLE %.1f dB over the last second the far end played", s.erleDecibels) : ", no ERLE yet (the far end hardly played)"
            }
            if s.libraryErleDecibels.isFinite { text += String(format: " (WebRTC's own estimate %.1f dB)", s.libraryErleDecibels) }
            text += ", \(source.processor.echoDelayChanges) echo path change(s), \(source.reference.realignments) realignment(s)"
        }
        if s.chunks > 0 {
            text += String(format: ", %.2f ms per 80 ms frame", Double(s.processingNanoseconds) / Double(s.chunks) * 8 / 1e6)
        }
        if s.nonFiniteSamples > 0 { text += ", \(s.nonFiniteSamples) non-finite sample(s) silenced" }
        return text + "."
    }
}

/// The microphone, cleaned: reads the wrapped source, fetches what played meanwhile from the
/// reference, runs the canceller. On the capture thread, allocation-free.
public final class EchoCancellingSource: FrameSource {
    public let inner: FrameSource
    public let processor: CaptureProcessor
    public let reference: EchoReference
    private let clock: any FrameClock
    private var far: [Float]
    private let stoppedReason = Mutex<String?>(nil)
    private let stopped = Atomic<Bool>(false)
    /// Per-frame processing cost, for `bench` (ns per 1920 samples), written here, read after.
    public let frameCosts = SPSCRing<UInt64>(minimumCapacity: 1 << 14, zero: 0)
    private var frameFill = 0
    private var frameNanoseconds: UInt64 = 0

    init(_ inner: FrameSource, processor: CaptureProcessor, reference: EchoReference, clock: any FrameClock) {
        self.inner = inner
        self.processor = processor
        self.reference = reference
        self.clock = clock
        far = [Float](repeating: 0, count: 16384)
    }

    public var pacing: SourcePacing { inner.pacing }
    public func cancel() { inner.cancel() }
    public var captureDelay: UInt64? { inner.captureDelay }

    /// Set when the processing stopped mid-run (the device stopped reporting its delay): the
    /// microphone then passes through untouched.
    public var fallbackReason: String? { stopped.load(ordering: .acquiring) ? stoppedReason.withLock { $0 } : nil }

    public func read(into buffer: UnsafeMutablePointer<Float>, count: Int) throws -> Bool {
        var offset = 0
        while offset < count {
            let n = min(count - offset, far.count)
            guard try inner.read(into: buffer + offset, count: n) else { return false }
            clean(buffer + offset, count: n)
            offset += n
        }
        return true
    }

    private func clean(_ samples: UnsafeMutablePointer<Float>, count: Int) {
        if stopped.load(ordering: .relaxed) { return }
        let started = clock.now()
        var firstCaptured = started
        if reference.alignment == .clock {
            guard let delay = inner.captureDelay else {
                // Once, off the per-frame path: the lock is taken a single time.
                stoppedReason.withLock { $0 = "the capture device stopped reporting its delay" }
                stopped.store(true, ordering: .releasing)
                return
            }
            let span = delay + UInt64(count) * 1_000_000_000 / 24_000
            firstCaptured = started - min(started, span)
        }
        far.withUnsafeMutableBufferPointer { f in
            reference.far(into: f.baseAddress!, count: count, capturedAt: firstCaptured)
            processor.process(near: samples, far: f.baseAddress!, count: count, into: samples)
        }
        frameNanoseconds += clock.now() - started
        frameFill += count
        while frameFill >= 1920 {
            frameFill -= 1920
            var cost = frameNanoseconds
            withUnsafePointer(to: &cost) { _ = frameCosts.write($0, count: 1) }
            frameNanoseconds = 0
        }
    }

    /// Every frame's processing cost so far (ns), oldest first (after the loop stopped).
    public func drainFrameCosts() -> [UInt64] {
        var costs: [UInt64] = []
        var cost: UInt64 = 0
        while frameCosts.availableToRead > 0 {
            withUnsafeMutablePointer(to: &cost) { _ = frameCosts.read(into: $0, count: 1) }
            costs.append(cost)
        }
        return costs
    }
}

/// The loudspeaker, tapped: writes to the wrapped sink, then hands what it took to every
/// reference (the canceller's, a simulated room's) with when its first sample plays.
public final class EchoReferenceSink: FrameSink {
    public let inner: FrameSink
    private var references: [EchoReference]
    private let clock: any FrameClock

    public init(_ inner: FrameSink, references: [EchoReference], clock: any FrameClock = MonotonicClock()) {
        self.inner = inner
        self.references = references
        self.clock = clock
    }

    /// Another reader of what was played (a simulated room). Before the loop starts.
    public func add(_ reference: EchoReference) { references.append(reference) }

    public var isPaced: Bool { inner.isPaced }
    public func waitUntilWritable(_ count: Int) { inner.waitUntilWritable(count) }
    public var outputDelay: UInt64 { inner.outputDelay }
    public var reportedOutputDelay: UInt64? { inner.reportedOutputDelay }

    public func write(_ samples: UnsafePointer<Float>, count: Int) throws -> Bool {
        guard try inner.write(samples, count: count) else { return false }
        // After the write the device holds these samples too: the first of them plays after
        // everything queued before it.
        let now = clock.now()
        let queued = inner.reportedOutputDelay ?? 0
        let own = UInt64(count) * 1_000_000_000 / 24_000
        let playsAt = now + (queued > own ? queued - own : 0)
        for reference in references { reference.played(samples, count: count, startsPlayingAt: playsAt) }
        return true
    }
}
