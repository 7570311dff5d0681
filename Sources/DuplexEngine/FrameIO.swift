import DuplexAudio
import Foundation

/// Where a conversation's audio comes from: a microphone, a paced virtual microphone, a file or a
/// file descriptor, a websocket's decoded Opus. Always 24 kHz mono float; a source converts
/// whatever it reads. Each source is used by one thread at a time.
public protocol FrameSource: AnyObject {
    /// How the source's timing relates to the wall clock (decides how frames are stamped and
    /// whether the loop may wait for the model).
    var pacing: SourcePacing { get }
    /// Fills `buffer` with exactly `count` samples and returns true, or returns false at the end
    /// of the stream (a finite source that is done; what it delivered before still counts).
    /// Throws when the source failed (a device that went away): the loop stops with that error.
    func read(into buffer: UnsafeMutablePointer<Float>, count: Int) throws -> Bool
    /// Makes a blocked `read` return soon (the loop is stopping); called from another thread.
    /// Sources whose reads never block for long need nothing.
    func cancel()
    /// How long ago the last sample handed out by `read` was captured (audio still held by the
    /// device and the source), as the device reports it; nil when it cannot tell. Read on the
    /// reading thread right after `read`: the echo canceller's alignment.
    var captureDelay: UInt64? { get }
}

extension FrameSource {
    public func cancel() {}
    public var captureDelay: UInt64? { 0 }
}

public enum SourcePacing: Sendable, Equatable {
    /// Blocks until the audio exists (a sound card, a paced virtual microphone): frames are stamped
    /// as a microphone's, and a model that falls behind loses the oldest frames.
    case live
    /// Delivers as fast as it is read (files, pipes read flat out): frames are stamped when they
    /// arrive, and the loop waits for the model rather than dropping anything.
    case asFastAsRead
}

/// Where the answers go: a loudspeaker, a virtual speaker, a file descriptor, a websocket.
public protocol FrameSink: AnyObject {
    /// True when `write` blocks at the device's pace (a sound card, a paced virtual speaker): the
    /// playback side then plays silence when the model is late. False: the sink takes frames as
    /// they are answered, none is ever late.
    var isPaced: Bool { get }
    /// Takes `count` samples (24 kHz mono). Throws when the sink failed; the loop stops with that
    /// error. Returns false when the reader went away (a closed pipe): the loop ends quietly.
    func write(_ samples: UnsafePointer<Float>, count: Int) throws -> Bool
    /// A paced sink: returns once a write of `count` samples would not block (a period's room in
    /// the device buffer), so the playback side fills it with the newest answer there is instead
    /// of filling first and waiting a period with it. Sinks that never block need nothing.
    func waitUntilWritable(_ count: Int)
    /// How long what the sink already holds will take to play (a device buffer), in nanoseconds.
    var outputDelay: UInt64 { get }
    /// `outputDelay`, or nil when the device cannot tell (the echo canceller then cannot line
    /// up what was played with what was heard).
    var reportedOutputDelay: UInt64? { get }
}

extension FrameSink {
    public func waitUntilWritable(_ count: Int) {}
    public var outputDelay: UInt64 { 0 }
    public var reportedOutputDelay: UInt64? { outputDelay }
}

// MARK: - in-memory and virtual sources and sinks

/// A recording as a source: played once (the last frame completed with silence, then end of
/// stream) or looped, as fast as read or paced like a live microphone.
public final class SignalSource: FrameSource {
    private let signal: [Float]
    private let loop: Bool
    private let clock: any FrameClock
    private let realtime: Bool
    private var position = 0
    private var pacer = Pacer(.microphone)

    public init(_ signal: [Float], loop: Bool = false, realtime: Bool = false, clock: any FrameClock = MonotonicClock()) {
        self.signal = signal.isEmpty && loop ? [0] : signal
        self.loop = loop
        self.realtime = realtime
        self.clock = clock
    }

    public var pacing: SourcePacing { realtime ? .live : .asFastAsRead }
    /// Paced: how late the reading thread took the period its microphone finished capturing
    /// (a real device's buffer holds what arrived meanwhile); 0 when read flat out.
    public var captureDelay: UInt64? { realtime ? pacer.lateness(clock: clock) : 0 }

    public func read(into buffer: UnsafeMutablePointer<Float>, count: Int) throws -> Bool {
        if !loop && position >= signal.count { return false }
        for i in 0..<count {
            buffer[i] = loop ? signal[(position + i) % signal.count] : (position + i < signal.count ? signal[position + i] : 0)
        }
        position += count
        if realtime { pacer.pace(count, clock: clock) }
        return true
    }
}

/// Collects every sample written (generate, tests, the in-process server checks).
public final class CollectingSink: FrameSink {
    public private(set) var samples: [Float] = []
    public init(reservingCapacity: Int = 0) { samples.reserveCapacity(reservingCapacity) }
    public var isPaced: Bool { false }
    public func write(_ samples: UnsafePointer<Float>, count: Int) throws -> Bool {
        self.samples.append(contentsOf: UnsafeBufferPointer(start: samples, count: count))
        return true
    }
}

/// A loudspeaker without a sound card, buffered like one: it holds `bufferPeriods` writes' worth
/// (ALSA's minimum of two periods) and plays them in wall-clock time, so a write returns once
/// there is room and what it took plays after what is queued. A writer late by more than the
/// buffer finds it empty (an underrun): playback restarts from that write, as a device recovering
/// from an xrun would, instead of replaying the backlog. Its reported delay is what is queued, so
/// the echo canceller's reference holds every sample before it plays and the latency figures
/// count the buffer. `waitUntilWritable` then `write` is the playback loop's order: a period is
/// filled when there is room for it, and plays one period later.
public final class VirtualSpeaker: FrameSink {
    private let clock: any FrameClock
    public let bufferPeriods: Int
    /// When everything written so far will have played (monotonic ns); 0 before the first write.
    private var playedOutAt: UInt64 = 0

    public init(bufferPeriods: Int = 2, clock: any FrameClock = MonotonicClock()) {
        precondition(bufferPeriods >= 1)
        self.bufferPeriods = bufferPeriods
        self.clock = clock
    }

    public var isPaced: Bool { true }

    public func waitUntilWritable(_ count: Int) {
        let duration = UInt64(count) * 1_000_000_000 / 24_000
        let capacity = UInt64(bufferPeriods) * duration
        let now = clock.now()
        if playedOutAt < now { playedOutAt = now }
        if playedOutAt + duration > now + capacity { clock.sleep(until: playedOutAt + duration - capacity) }
    }

    public func write(_ samples: UnsafePointer<Float>, count: Int) throws -> Bool {
        waitUntilWritable(count)
        playedOutAt += UInt64(count) * 1_000_000_000 / 24_000
        return true
    }

    public var outputDelay: UInt64 {
        let now = clock.now()
        return playedOutAt > now ? playedOutAt - now : 0
    }
}

/// Discards everything, as fast as it comes (capacity measurements).
public final class NullSink: FrameSink {
    public init() {}
    public var isPaced: Bool { false }
    public func write(_ samples: UnsafePointer<Float>, count: Int) throws -> Bool { true }
}

/// Keeps audio at 24 kHz of wall-clock time, a period at a time. A microphone hands a period over
/// once it has been captured (at its end); a speaker takes one at the start of its slot, and if the
/// machine starved it far behind it skips ahead, as a real device's xrun would, instead of
/// replaying the backlog.
struct Pacer {
    enum Role { case microphone, speaker }
    let role: Role
    private var next: UInt64 = 0
    init(_ role: Role) { self.role = role }

    mutating func pace(_ samples: Int, clock: any FrameClock) {
        let period = UInt64(samples) * 1_000_000_000 / 24_000
        let now = clock.now()
        switch role {
        case .microphone:
            if next == 0 { next = now }
            next += period
            clock.sleep(until: next)
        case .speaker:
            if next == 0 || now > next + 4 * period { next = now }
            clock.sleep(until: next)
            next += period
        }
    }

    /// A microphone's: how long ago the period last handed over finished capturing.
    func lateness(clock: any FrameClock) -> UInt64 {
        let now = clock.now()
        return role == .microphone && next > 0 && now > next ? now - next : 0
    }
}
