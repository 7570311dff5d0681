import DuplexAudio
import XCTest
@testable import DuplexEngine

private let ms: UInt64 = 1_000_000

/// The virtual microphone, loudspeaker and room keep time as sound cards do, in virtual time: the
/// delays they report are what the echo canceller's clock alignment dates the samples by, so a
/// late thread must show up in them, never as a shifted or missing reference.
final class VirtualDeviceTimingTests: XCTestCase {
    /// Writes one 5 ms period whose samples are their own index in the played stream.
    private func writePeriod(_ sink: FrameSink, from first: inout Int) throws {
        let samples = (0..<120).map { Float(first + $0) }
        XCTAssertTrue(try sink.write(samples, count: samples.count))
        first += samples.count
    }

    private func far(_ reference: EchoReference, at time: UInt64, count: Int = 120) -> [Float] {
        var far = [Float](repeating: -1, count: count)
        far.withUnsafeMutableBufferPointer { reference.far(into: $0.baseAddress!, count: count, capturedAt: time) }
        return far
    }

    func testTheSpeakerHoldsTwoPeriodsReportsThemAndRestartsAfterAnUnderrun() throws {
        let clock = VirtualClock()
        let speaker = VirtualSpeaker(clock: clock)
        let reference = EchoReference(alignment: .clock)
        let tap = EchoReferenceSink(speaker, references: [reference], clock: clock)
        let t0 = clock.now()
        var next = 0
        try writePeriod(tap, from: &next)
        XCTAssertEqual(clock.now(), t0, "an empty buffer takes a period at once")
        XCTAssertEqual(speaker.outputDelay, 5 * ms)
        try writePeriod(tap, from: &next)
        XCTAssertEqual(clock.now(), t0)
        XCTAssertEqual(speaker.outputDelay, 10 * ms)
        try writePeriod(tap, from: &next)
        XCTAssertEqual(clock.now(), t0 + 5 * ms, "a full buffer makes the writer wait for a period to play")
        XCTAssertEqual(speaker.outputDelay, 10 * ms)
        // Sample n plays at t0 + n / 24 kHz: what was captured 2 ms in is samples 48…167, every
        // one of them handed over before it played.
        XCTAssertEqual(far(reference, at: t0 + 2 * ms), (48..<168).map(Float.init))

        // The writer comes 40 ms late: the buffer ran dry at t0 + 15 ms, and the next period
        // plays from when it is written, not 30 ms in the past.
        clock.advance(40 * ms)
        let restart = clock.now()
        let afterUnderrun = EchoReference(alignment: .clock)
        tap.add(afterUnderrun)
        try writePeriod(tap, from: &next)
        XCTAssertEqual(clock.now(), restart, "an empty buffer after an underrun does not wait")
        XCTAssertEqual(speaker.outputDelay, 5 * ms)
        // That reference's stream starts at sample 360: what plays 1 ms after the restart is 384.
        XCTAssertEqual(far(afterUnderrun, at: restart + 1 * ms, count: 96), (384..<480).map(Float.init))
    }

    /// The playback loop's order: wait for room, fill with the newest answer, write. The period
    /// filled then plays after the one still queued, 5 ms later, not 10.
    func testWaitingForRoomBeforeFillingSavesAPeriod() throws {
        let clock = VirtualClock()
        let speaker = VirtualSpeaker(clock: clock)
        let tap = EchoReferenceSink(speaker, references: [], clock: clock)
        var next = 0
        let t0 = clock.now()
        try writePeriod(tap, from: &next)
        try writePeriod(tap, from: &next)
        tap.waitUntilWritable(120)
        XCTAssertEqual(clock.now(), t0 + 5 * ms)
        XCTAssertEqual(speaker.outputDelay, 5 * ms, "filled now, it plays after the one period still queued")
        try writePeriod(tap, from: &next)
        XCTAssertEqual(clock.now(), t0 + 5 * ms, "the write no longer waits")
        XCTAssertEqual(speaker.outputDelay, 10 * ms)
    }

    func testAPacedMicrophoneReportsHowLateItWasRead() throws {
        let clock = VirtualClock()
        let microphone = SignalSource([0.25], loop: true, realtime: true, clock: clock)
        var buffer = [Float](repeating: 0, count: 120)
        let t0 = clock.now()
        XCTAssertTrue(try microphone.read(into: &buffer, count: 120))
        XCTAssertEqual(clock.now(), t0 + 5 * ms, "a period is handed over once it has been captured")
        XCTAssertEqual(microphone.captureDelay, 0)
        clock.advance(3 * ms)
        XCTAssertEqual(microphone.captureDelay, 3 * ms, "the reader's lateness is how long the samples waited")
        XCTAssertTrue(try microphone.read(into: &buffer, count: 120))
        XCTAssertEqual(clock.now(), t0 + 10 * ms)
        XCTAssertEqual(microphone.captureDelay, 0)
        // Read 7 ms after the next period ended: it is handed over at once, dated 7 ms ago.
        clock.advance(12 * ms)
        XCTAssertTrue(try microphone.read(into: &buffer, count: 120))
        XCTAssertEqual(clock.now(), t0 + 22 * ms)
        XCTAssertEqual(microphone.captureDelay, 7 * ms)
        XCTAssertEqual(SignalSource([0.25]).captureDelay, 0, "read flat out, a recording has no capture time")
    }

    func testTheRoomDatesItsMicrophoneAsItReadIt() throws {
        let clock = VirtualClock()
        let reference = EchoReference(alignment: .clock)
        let room = RoomSource(near: SignalSource([0], loop: true, realtime: true, clock: clock),
                              room: SimulatedRoom(try RoomParameters(spec: "delay=40ms,rt60=300ms,echo=-3dB,noise=-60dB")),
                              reference: reference, clock: clock)
        var buffer = [Float](repeating: 0, count: 120)
        XCTAssertTrue(try room.read(into: &buffer, count: 120))
        XCTAssertEqual(room.captureDelay, 0)
        // The room's own work (or a preempted thread) between its read and the canceller's: the
        // samples are that much older when the canceller dates them.
        clock.advance(2 * ms)
        XCTAssertEqual(room.captureDelay, 2 * ms)

        let deaf = RoomSource(near: DelayLosingSource([0.1], reportsUntil: 0), room: SimulatedRoom(try RoomParameters(spec: "delay=40ms")),
                              reference: EchoReference(alignment: .clock), clock: clock)
        XCTAssertNil(deaf.captureDelay, "a microphone that reports no delay is not given one by the room")
        guard case .failure = EchoCancellation.make(source: deaf, sink: CollectingSink(), options: CaptureProcessingOptions(echoCanceller: .webrtc),
                                                    alignment: .clock) else { return XCTFail("clock alignment was set up without a capture delay") }
    }
}
