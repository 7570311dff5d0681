import Foundation

/// Time in nanoseconds on one monotonic clock. Everything that stamps frames takes a clock so
/// tests can drive latency accounting with a fake one.
public protocol FrameClock: Sendable {
    func now() -> UInt64
    /// Returns once `now()` has reached `t` (the virtual devices' pacing); a simulated clock
    /// moves there, so paced devices can be tested in virtual time.
    func sleep(until t: UInt64)
}

public struct MonotonicClock: FrameClock {
    public init() {}
    public func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    public func sleep(until t: UInt64) {
        var ts = timespec(tv_sec: Int(t / 1_000_000_000), tv_nsec: Int(t % 1_000_000_000))
        while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil) == EINTR {}
    }
}

/// Per-frame timestamps (design.md §6). Zero means "not reached".
public struct FrameTimestamps: Sendable, Equatable, BitwiseCopyable {
    /// First and last input sample of the frame captured (mic), or read (pipe/file).
    public var inputStart: UInt64 = 0
    public var inputEnd: UInt64 = 0
    /// The model thread took the frame off the capture ring.
    public var dequeued: UInt64 = 0
    public var encoded: UInt64 = 0
    /// Temporal transformer done; depformer done (= LM step done).
    public var temporalDone: UInt64 = 0
    public var lmDone: UInt64 = 0
    public var decoded: UInt64 = 0
    /// First sample of the response to this frame handed to the device (or stdout, or the socket).
    public var outputStart: UInt64 = 0
    /// Frames of device buffer ahead of the response when it was handed over, as time.
    public var deviceBuffer: UInt64 = 0

    public init() {}
}

/// What one frame's mic-to-speaker latency is made of, in milliseconds.
public struct LatencyBreakdown: Sendable, Equatable {
    /// Collecting the frame (first to last sample): 80 ms on a live source.
    public var framing: Double
    /// Waiting for the model's acoustic delay (the response to frame o leaves with call o+1).
    public var acousticDelay: Double
    /// Frame ready → model picked it up (queueing behind earlier frames).
    public var queueing: Double
    public var encode: Double
    public var temporal: Double
    public var depformer: Double
    public var decode: Double
    /// Decoded → handed to the output (playback ring wait), plus what the device still holds.
    public var output: Double
    public var deviceBuffer: Double
    /// Response starts playing − first input sample captured.
    public var total: Double
}

extension LatencyBreakdown {
    /// Latency of input frame `frame` whose response is carried by the output of frame `response`
    /// (the next call, by Moshi's acoustic delay). Every term is a difference of timestamps, so
    /// the terms add up to the total exactly.
    public init(frame f: FrameTimestamps, response r: FrameTimestamps) {
        func ms(_ a: UInt64, _ b: UInt64) -> Double { a >= b ? Double(a - b) / 1e6 : -Double(b - a) / 1e6 }
        framing = ms(f.inputEnd, f.inputStart)
        acousticDelay = ms(r.inputEnd, f.inputEnd)
        queueing = ms(r.dequeued, r.inputEnd)
        encode = ms(r.encoded, r.dequeued)
        temporal = ms(r.temporalDone, r.encoded)
        depformer = ms(r.lmDone, r.temporalDone)
        decode = ms(r.decoded, r.lmDone)
        output = ms(r.outputStart, r.decoded)
        deviceBuffer = Double(r.deviceBuffer) / 1e6
        total = ms(r.outputStart, f.inputStart) + deviceBuffer
    }
}

/// Collects values and answers percentiles; preallocated, so recording a frame never allocates.
/// Beyond `capacity` values it keeps the most recent `capacity`.
public struct Percentiles: Sendable {
    private var values: [Double]
    private var next = 0
    public private(set) var count = 0
    public private(set) var maximum = -Double.infinity
    public private(set) var sum = 0.0

    public init(capacity: Int = 65_536) {
        values = [Double](repeating: 0, count: max(1, capacity))
    }

    public mutating func record(_ value: Double) {
        values[next] = value
        next = (next + 1) % values.count
        count += 1
        maximum = max(maximum, value)
        sum += value
    }

    public var mean: Double { count == 0 ? 0 : sum / Double(count) }

    /// Nearest-rank percentile (p in 0…100) over the kept values (this sorts a copy: call it for
    /// reports, not per frame).
    public func percentile(_ p: Double) -> Double {
        let n = min(count, values.count)
        guard n > 0 else { return 0 }
        let sorted = values[0..<n].sorted()
        let rank = Int((p / 100 * Double(n)).rounded(.up))
        return sorted[min(n - 1, max(0, rank - 1))]
    }
}
