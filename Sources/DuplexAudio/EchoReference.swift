import Foundation
import Synchronization

/// What the loudspeaker played, handed from the playback thread to the capture thread and found
/// again, sample for sample, for what the microphone captured at the same instant: the echo
/// canceller's reference. The playback thread only appends (with when its first sample reaches
/// the speaker); the capture thread asks for the stretch that was playing while each captured
/// stretch was recorded. Lock-free, allocation-free after `init`.
///
/// Two ways to line the streams up:
/// - `.clock`: sound cards. Each write is stamped with the time its first sample plays (now plus
///   the device's reported delay), each read with the time its first sample was captured (now
///   less the capture delay). The offset between the two sample counts is smoothed over about a
///   second and moved only when it is off by more than a millisecond, so scheduling jitter never
///   reaches the canceller as an unstable echo path, while clock drift between the devices is
///   followed.
/// - `.streamPosition`: pipes and files, where sample n of the input and of the output share a
///   timeline: the far sample for microphone sample n is output sample n − latency.
public final class EchoReference: @unchecked Sendable {
    public enum Alignment: Sendable, Equatable {
        case clock
        case streamPosition(latencyFrames: Int)
    }

    public let sampleRate: Int
    public let alignment: Alignment
    private struct Stamp: BitwiseCopyable {
        var firstIndex: Int
        var time: UInt64
    }
    private let incoming: SPSCRing<Float>
    private let stamps: SPSCRing<Stamp>
    // Playback thread.
    private var playedCount = 0
    // Capture thread.
    private let history: UnsafeMutablePointer<Float>
    private let historyMask: Int
    private var historyEnd = 0
    private var latest: Stamp?
    private var capturedCount = 0
    private var smoothedOffset = 0.0
    private var offset: Int?
    private var alignedCalls = 0
    private let realignmentCount = Atomic<Int>(0)
    private let lostCount = Atomic<Int>(0)

    /// Moves of the clock alignment after the first (device clocks drifting apart, or a stall).
    public var realignments: Int { realignmentCount.load(ordering: .relaxed) }
    /// Far samples that fell out of the history before the capture side asked for them (the
    /// capture thread stalled for over a second): they count as silence.
    public var lostSamples: Int { lostCount.load(ordering: .relaxed) }

    public init(alignment: Alignment, sampleRate: Int = 24_000, historySeconds: Double = 2) {
        self.alignment = alignment
        self.sampleRate = sampleRate
        var size = 1
        while size < Int(historySeconds * Double(sampleRate)) { size <<= 1 }
        history = .allocate(capacity: size)
        history.initialize(repeating: 0, count: size)
        historyMask = size - 1
        incoming = SPSCRing(minimumCapacity: size, zero: 0)
        stamps = SPSCRing(minimumCapacity: 4096, zero: Stamp(firstIndex: 0, time: 0))
    }

    deinit { history.deallocate() }

    // MARK: playback thread

    /// `count` samples were handed to the speaker; the first plays at `time` (monotonic ns;
    /// ignored with `.streamPosition`). What does not fit (the capture side stalled) is dropped.
    public func played(_ samples: UnsafePointer<Float>, count: Int, startsPlayingAt time: UInt64) {
        var stamp = Stamp(firstIndex: playedCount, time: time)
        if alignment == .clock { withUnsafePointer(to: &stamp) { _ = stamps.write($0, count: 1) } }
        let written = incoming.write(samples, count: count)
        if written < count { lostCount.add(count - written, ordering: .relaxed) }
        playedCount += written
    }

    // MARK: capture thread

    /// Fills `far` with what played while the `count` microphone samples starting at `time`
    /// (monotonic ns, the first sample's capture; ignored with `.streamPosition`) were captured.
    /// Before anything played, or for what was never handed over, silence.
    public func far(into far: UnsafeMutablePointer<Float>, count: Int, capturedAt time: UInt64) {
        drain()
        let start: Int?
        switch alignment {
        case .streamPosition(let latency):
            start = capturedCount - latency
        case .clock:
            if let latest {
                let elapsed = Double(Int64(bitPattern: time &- latest.time)) * Double(sampleRate) / 1e9
                let raw = Double(latest.firstIndex) + elapsed - Double(capturedCount)
                alignedCalls += 1
                if let current = offset {
                    // A running mean for the first second (the first stamps are as jittery as
                    // any), then an average over about a second.
                    smoothedOffset += max(0.02, 1 / Double(alignedCalls)) * (raw - smoothedOffset)
                    if alignedCalls <= 100 {
                        offset = Int(smoothedOffset.rounded())
                    } else if abs(smoothedOffset - Double(current)) > Double(sampleRate) / 1000 {
                        // A millisecond: small enough for either canceller to follow at once.
                        offset = Int(smoothedOffset.rounded())
                        realignmentCount.add(1, ordering: .relaxed)
                    }
                } else {
                    smoothedOffset = raw
                    offset = Int(raw.rounded())
                }
            }
            start = offset.map { capturedCount + $0 }
        }
        capturedCount += count
        guard let start else { far.update(repeating: 0, count: count); return }
        let oldest = historyEnd - (historyMask + 1)
        for i in 0..<count {
            let index = start + i
            far[i] = index >= max(0, oldest) && index < historyEnd ? history[index & historyMask] : 0
        }
    }

    private func drain() {
        var stamp = Stamp(firstIndex: 0, time: 0)
        while stamps.availableToRead > 0 {
            withUnsafeMutablePointer(to: &stamp) { _ = stamps.read(into: $0, count: 1) }
            latest = stamp
        }
        while true {
            let available = incoming.availableToRead
            if available == 0 { break }
            let start = historyEnd & historyMask
            let n = min(available, historyMask + 1 - start)
            incoming.read(into: history + start, count: n)
            historyEnd += n
        }
    }
}
