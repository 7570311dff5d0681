import DuplexAudio
import Foundation

/// A simulated room in front of the microphone (`bench --room`, `pipe --room`): what the tapped
/// loudspeaker (`EchoReferenceSink`) played comes back delayed, reverberated, attenuated and with
/// noise, mixed into the near-end talker read from `inner`. The echo canceller then faces what it
/// would face in `talk` on loudspeakers, with no sound card. On the reading thread, allocation-free.
public final class RoomSource: FrameSource {
    public let room: SimulatedRoom
    public let reference: EchoReference
    private let inner: FrameSource
    private let clock: any FrameClock
    private var near: [Float]
    private var far: [Float]
    private var innerReadAt: UInt64 = 0
    private var innerDelay: UInt64?

    /// `reference` must be one the sink feeds (`EchoReferenceSink(..., references:)` or `add`).
    public init(near inner: FrameSource, room: SimulatedRoom, reference: EchoReference, clock: any FrameClock = MonotonicClock()) {
        self.inner = inner
        self.room = room
        self.reference = reference
        self.clock = clock
        near = [Float](repeating: 0, count: 4096)
        far = near
    }

    public var pacing: SourcePacing { inner.pacing }
    public func cancel() { inner.cancel() }
    /// The microphone's delay at its last read plus the time the room has taken since: the
    /// canceller reads it after the room, and must date the samples as the room did.
    public var captureDelay: UInt64? {
        if innerReadAt == 0 { return inner.captureDelay }
        guard let innerDelay else { return nil }
        let now = clock.now()
        return innerDelay + (now > innerReadAt ? now - innerReadAt : 0)
    }

    public func read(into buffer: UnsafeMutablePointer<Float>, count: Int) throws -> Bool {
        var offset = 0
        while offset < count {
            let n = min(count - offset, near.count)
            let more = try near.withUnsafeMutableBufferPointer { try inner.read(into: $0.baseAddress!, count: n) }
            guard more else { return false }
            let now = clock.now()
            innerReadAt = now
            innerDelay = inner.captureDelay
            let span = (innerDelay ?? 0) + UInt64(n) * 1_000_000_000 / 24_000
            far.withUnsafeMutableBufferPointer { f in
                reference.far(into: f.baseAddress!, count: n, capturedAt: now - min(now, span))
                near.withUnsafeBufferPointer { s in
                    room.process(far: f.baseAddress!, near: s.baseAddress!, count: n, microphone: buffer + offset)
                }
            }
            offset += n
        }
        return true
    }
}
