import Foundation

/// Finds how long the loudspeaker's sound takes to come back in the microphone: the bulk delay
/// that device buffers, converters and the air add beyond what the devices report. Both
/// cancellers need it: WebRTC's filter covers a 128 ms window that must start just before the
/// echo (told 4 ms late it loses 10 dB of ERLE; its own delay-agnostic estimator is off by a few
/// ms and loses 20), and SpeexDSP's filter would otherwise have to span the delay as well as the
/// room, and converge that much slower.
///
/// Normalised cross-correlation of the two streams decimated to 2 kHz and differenced (speech's
/// low frequencies would otherwise smear the peak), over the last second, for every delay up to
/// `maxDelaySeconds`, a few times a second while the far end plays. A new delay is taken only
/// when two estimates in a row agree: a stable echo path is worth more than a reaction 250 ms
/// sooner. One thread; nothing allocates after `init`.
public struct EchoDelayEstimator {
    public let sampleRate: Int
    public let decimation: Int
    public let maxLag: Int
    private let window: Int
    private let hop: Int
    /// Decimated, differenced histories (linear, shifted down when full).
    private var far: [Float]
    private var near: [Float]
    private var filled = 0
    private var accumulatorFar: Float = 0
    private var accumulatorNear: Float = 0
    private var previousFar: Float = 0
    private var previousNear: Float = 0
    private var phase = 0
    private var sinceEstimate = 0
    private var candidate: Int?
    /// The accepted delay in samples at `sampleRate`, nil until one is confident.
    public private(set) var delayFrames: Int?
    /// The peak's normalised correlation at the last estimate (0…1).
    public private(set) var lastStrength: Float = 0
    /// Estimates that changed an accepted delay (echo path changes).
    public private(set) var changes = 0

    /// Correlation peaks below this are echoes too weak to trust (or none at all).
    public static let minimumStrength: Float = 0.25

    public init(sampleRate: Int = 24_000, maxDelaySeconds: Double = 0.5, windowSeconds: Double = 1.0, everySeconds: Double = 0.25) {
        self.sampleRate = sampleRate
        decimation = max(1, sampleRate / 2000)
        let rate = Double(sampleRate / decimation)
        maxLag = Int(maxDelaySeconds * rate)
        window = Int(windowSeconds * rate)
        hop = max(1, Int(everySeconds * rate))
        far = [Float](repeating: 0, count: maxLag + window + hop)
        near = [Float](repeating: 0, count: maxLag + window + hop)
        filled = maxLag
    }

    /// Feeds `count` samples of the far end and the microphone, time-aligned. Returns true when
    /// the accepted delay changed.
    public mutating func push(far farSamples: UnsafePointer<Float>, near nearSamples: UnsafePointer<Float>, count: Int) -> Bool {
        var changed = false
        for i in 0..<count {
            let f = farSamples[i], n = nearSamples[i]
            accumulatorFar += f.isFinite ? f : 0
            accumulatorNear += n.isFinite ? n : 0
            phase += 1
            guard phase == decimation else { continue }
            phase = 0
            let df = accumulatorFar - previousFar, dn = accumulatorNear - previousNear
            previousFar = accumulatorFar
            previousNear = accumulatorNear
            accumulatorFar = 0
            accumulatorNear = 0
            if filled == far.count {
                // Keep the most recent maxLag + window samples; shift down by a hop at once.
                far.withUnsafeMutableBufferPointer { b in _ = memmove(b.baseAddress!, b.baseAddress! + hop, (b.count - hop) * 4) }
                near.withUnsafeMutableBufferPointer { b in _ = memmove(b.baseAddress!, b.baseAddress! + hop, (b.count - hop) * 4) }
                filled -= hop
            }
            far[filled] = df
            near[filled] = dn
            filled += 1
            sinceEstimate += 1
            // Before the stream began is silence: the first estimate comes after half a window.
            if sinceEstimate >= hop && filled >= maxLag + window / 2 {
                sinceEstimate = 0
                if estimate() { changed = true }
            }
        }
        return changed
    }

    private mutating func estimate() -> Bool {
        let end = filled
        let span = min(window, filled - maxLag)
        let (lag, strength) = far.withUnsafeBufferPointer { f in
            near.withUnsafeBufferPointer { m in
                Self.bestLag(far: f.baseAddress!, near: m.baseAddress!, end: end, window: span, maxLag: maxLag)
            }
        }
        lastStrength = strength
        guard strength >= Self.minimumStrength else { candidate = nil; return false }
        defer { candidate = lag }
        guard let previous = candidate, abs(previous - lag) <= 2 else { return false }
        let frames = lag * decimation
        if let current = delayFrames, abs(current - frames) <= 2 * decimation { return false }
        if delayFrames != nil { changes += 1 }
        delayFrames = frames
        return true
    }

    /// The lag (decimated samples) with the largest normalised correlation between near[t] and
    /// far[t − lag] over the window ending at `end`.
    static func bestLag(far: UnsafePointer<Float>, near: UnsafePointer<Float>, end: Int, window: Int, maxLag: Int) -> (Int, Float) {
        let start = end - window
        var nearEnergy: Float = 0
        for t in start..<end { nearEnergy += near[t] * near[t] }
        guard nearEnergy > 1e-12 else { return (0, 0) }
        // Energy of the far window for lag 0, slid down one sample per lag.
        var farEnergy: Float = 0
        for t in start..<end { farEnergy += far[t] * far[t] }
        var best = 0
        var bestScore: Float = 0
        for lag in 0...maxLag {
            if lag > 0 {
                let outgoing = far[end - lag], incoming = far[start - lag]
                farEnergy += incoming * incoming - outgoing * outgoing
            }
            guard farEnergy > 1e-12 else { continue }
            let dot = Self.dot(near + start, far + start - lag, window)
            // Only positive correlation: a loudspeaker does not invert its signal.
            let score = dot / (nearEnergy * farEnergy).squareRoot()
            if score > bestScore { bestScore = score; best = lag }
        }
        return (best, bestScore)
    }

    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
        var i = 0
        while i + 16 <= n {
            s0 += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            s1 += UnsafeRawPointer(a + i + 8).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + i + 8).loadUnaligned(as: SIMD8<Float>.self)
            i += 16
        }
        var s = (s0 + s1).sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// Forgets everything (a new conversation, or devices restarted).
    public mutating func reset() {
        far.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        near.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        filled = maxLag
        phase = 0
        sinceEstimate = 0
        candidate = nil
        delayFrames = nil
        accumulatorFar = 0
        accumulatorNear = 0
        previousFar = 0
        previousNear = 0
    }
}
