import Foundation

// A loudspeaker, a room and a microphone in software, so an echo canceller can be tested
// against a known echo path (its delay, reverberation, level, clock drift and sudden changes)
// without a sound card, and scored against the echo's exact ground truth.

/// What the simulated room does to the played signal on its way to the microphone.
public struct RoomParameters: Sendable, Equatable {
    /// The bulk echo delay changes by `milliseconds` at `atSeconds` (someone moves the laptop):
    /// the echo-path-change test. Positive = a longer delay afterwards.
    public struct DelayJump: Sendable, Equatable {
        public var atSeconds: Double
        public var milliseconds: Double
        public init(atSeconds: Double, milliseconds: Double) {
            self.atSeconds = atSeconds
            self.milliseconds = milliseconds
        }
    }

    /// Bulk loudspeaker → microphone delay (output buffering plus flight time), 0…500 ms.
    public var delayMilliseconds: Double = 60
    /// Reverberation time: the echo tail's energy falls 60 dB in this time, 0.05…2 s.
    public var rt60Seconds: Double = 0.4
    /// The echo's energy relative to what was played (the impulse response has this total energy).
    public var echoGainDecibels: Double = -6
    /// RMS of the microphone's white Gaussian noise floor in dBFS (relative to a full scale of 1,
    /// so a full-scale square wave is 0 dBFS); nil = a noiseless microphone.
    public var noiseDecibels: Double? = -60
    /// The echo's lag grows by this many samples per million samples (clock drift between
    /// loudspeaker and microphone), ±1000. The sign is defined by its effect on the lag, which is
    /// what a canceller sees: positive = the echo arrives later and later.
    public var driftPPM: Double = 0
    public var delayJump: DelayJump? = nil
    /// Seeds the impulse response and the noise: the same parameters always give the same room.
    public var seed: UInt64 = 1

    public init(delayMilliseconds: Double = 60, rt60Seconds: Double = 0.4, echoGainDecibels: Double = -6,
                noiseDecibels: Double? = -60, driftPPM: Double = 0, delayJump: DelayJump? = nil, seed: UInt64 = 1) {
        self.delayMilliseconds = delayMilliseconds
        self.rt60Seconds = rt60Seconds
        self.echoGainDecibels = echoGainDecibels
        self.noiseDecibels = noiseDecibels
        self.driftPPM = driftPPM
        self.delayJump = delayJump
        self.seed = seed
    }

    static let delayRange = 0.0...500.0
    static let rt60Range = 0.05...2.0
    static let echoRange = -100.0...20.0
    static let noiseRange = -150.0...0.0
    static let driftRange = -1000.0...1000.0
    static let jumpTimeRange = 0.0...86_400.0

    /// Every field inside its documented range; the first one that is not, as the error a spec
    /// with that value would give.
    public func validate() throws {
        func check(_ key: String, _ value: Double, _ range: ClosedRange<Double>, _ unit: String) throws {
            guard range.contains(value) else {
                throw RoomSpecError(key: key, value: RoomSpecFormat.number(value) + unit,
                                    allowed: "\(RoomSpecFormat.number(range.lowerBound))…\(RoomSpecFormat.number(range.upperBound)) \(unit)")
            }
        }
        try check("delay", delayMilliseconds, Self.delayRange, "ms")
        try check("rt60", rt60Seconds, Self.rt60Range, "s")
        try check("echo", echoGainDecibels, Self.echoRange, "dB")
        if let noise = noiseDecibels { try check("noise", noise, Self.noiseRange, "dB") }
        try check("drift", driftPPM, Self.driftRange, "ppm")
        if let jump = delayJump {
            try check("jump", jump.atSeconds, Self.jumpTimeRange, "s")
            let after = delayMilliseconds + jump.milliseconds
            guard Self.delayRange.contains(after) else {
                throw RoomSpecError(key: "jump", value: RoomSpecFormat.number(jump.milliseconds) + "ms",
                                    allowed: "a change that keeps the delay within 0…500 ms (it is \(RoomSpecFormat.number(delayMilliseconds)) ms)")
            }
        }
    }
}

/// A spec key or value that cannot be used, with what would be accepted instead.
public struct RoomSpecError: Error, CustomStringConvertible, Sendable {
    public let key: String
    public let value: String
    public let allowed: String
    public var description: String { "room spec: \(key)=\(value) is not valid; allowed: \(allowed)" }
}

extension RoomParameters {
    /// Parses `delay=80ms,rt60=400ms,echo=-10dB,noise=-55dB,drift=5ppm,jump=6s:40ms,seed=3`. Keys
    /// may come in any order and each at most once; missing keys keep their defaults, and
    /// `default` or an empty string is the default room. Units may be left out (a bare number is
    /// in the field's own unit: ms for delay and the jump's size, s for rt60 and the jump's time);
    /// a unit that is present must fit the key. `noise=off` and `jump=off` turn those off.
    public init(spec: String) throws {
        self.init()
        let trimmed = spec.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty || trimmed == "default" { return }
        var seen = Set<String>()
        for item in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = pair[0].trimmingCharacters(in: .whitespaces).lowercased()
            guard pair.count == 2 else {
                throw RoomSpecError(key: key, value: "(none)", allowed: "key=value, e.g. delay=80ms")
            }
            let value = pair[1].trimmingCharacters(in: .whitespaces)
            guard RoomSpecFormat.keys.contains(key) else {
                throw RoomSpecError(key: key, value: value, allowed: "the keys " + RoomSpecFormat.keys.joined(separator: ", "))
            }
            guard seen.insert(key).inserted else {
                throw RoomSpecError(key: key, value: value, allowed: "each key once")
            }
            switch key {
            case "delay": delayMilliseconds = try RoomSpecFormat.time(key, value, bareUnitSeconds: false, Self.delayRange, "ms")
            case "rt60": rt60Seconds = try RoomSpecFormat.time(key, value, bareUnitSeconds: true, Self.rt60Range, "s")
            case "echo": echoGainDecibels = try RoomSpecFormat.quantity(key, value, unit: "db", Self.echoRange, "dB")
            case "noise":
                noiseDecibels = RoomSpecFormat.isOff(value) ? nil : try RoomSpecFormat.quantity(key, value, unit: "db", Self.noiseRange, "dB or off")
            case "drift": driftPPM = try RoomSpecFormat.quantity(key, value, unit: "ppm", Self.driftRange, "ppm")
            case "jump":
                if RoomSpecFormat.isOff(value) { delayJump = nil; break }
                let parts = value.split(separator: ":", omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw RoomSpecError(key: key, value: value, allowed: "<time>:<delay change>, e.g. jump=6s:40ms, or off")
                }
                let at = try RoomSpecFormat.time(key, String(parts[0]), bareUnitSeconds: true, Self.jumpTimeRange, "s (when)")
                let change = try RoomSpecFormat.time(key, String(parts[1]), bareUnitSeconds: false, -500.0...500.0, "ms (change)")
                delayJump = DelayJump(atSeconds: at, milliseconds: change)
            default:  // "seed"
                guard let s = UInt64(value) else {
                    throw RoomSpecError(key: key, value: value, allowed: "an integer 0…\(UInt64.max)")
                }
                seed = s
            }
        }
        // Ranges that depend on two keys (a jump must keep the delay in range).
        try validate()
    }

    /// A spec that parses back to exactly these parameters (numbers in each field's own unit,
    /// printed with Swift's shortest round-tripping representation).
    public var spec: String {
        let n = RoomSpecFormat.number
        var items = ["delay=\(n(delayMilliseconds))ms", "rt60=\(n(rt60Seconds))s", "echo=\(n(echoGainDecibels))dB",
                     "noise=" + (noiseDecibels.map { "\(n($0))dB" } ?? "off"), "drift=\(n(driftPPM))ppm"]
        if let jump = delayJump { items.append("jump=\(n(jump.atSeconds))s:\(n(jump.milliseconds))ms") }
        items.append("seed=\(seed)")
        return items.joined(separator: ",")
    }
}

/// The spec grammar's pieces, kept apart so `init(spec:)` reads as the list of keys it is.
enum RoomSpecFormat {
    static let keys = ["delay", "rt60", "echo", "noise", "drift", "jump", "seed"]

    static func isOff(_ value: String) -> Bool { ["off", "none"].contains(value.lowercased()) }

    /// Whole numbers without ".0", everything else as Swift prints a Double (which parses back exactly).
    static func number(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    /// Splits "80ms" into (80, "ms"): the unit is the trailing run of letters, so exponents such as
    /// "1e-05ms" stay with the number.
    static func split(_ value: String) -> (number: Double?, unit: String) {
        let letters = value.reversed().prefix { $0.isLetter }
        let unit = String(letters.reversed())
        let number = Double(value.dropLast(unit.count).trimmingCharacters(in: .whitespaces))
        return (number.flatMap { $0.isFinite ? $0 : nil }, unit.lowercased())
    }

    static func quantity(_ key: String, _ value: String, unit: String, _ range: ClosedRange<Double>, _ allowedUnit: String) throws -> Double {
        let (number, given) = split(value)
        guard let v = number, given.isEmpty || given == unit, range.contains(v) else {
            throw RoomSpecError(key: key, value: value, allowed: "\(Self.number(range.lowerBound))…\(Self.number(range.upperBound)) \(allowedUnit)")
        }
        return v
    }

    /// A time in ms or s, returned in the field's unit (s when `bareUnitSeconds`, else ms).
    static func time(_ key: String, _ value: String, bareUnitSeconds: Bool, _ range: ClosedRange<Double>, _ allowedUnit: String) throws -> Double {
        let (number, given) = split(value)
        var v = number
        switch (given, bareUnitSeconds) {
        case ("", _): break
        case ("s", true), ("ms", false): break
        case ("ms", true): v = v.map { $0 / 1000 }
        case ("s", false): v = v.map { $0 * 1000 }
        default: v = nil
        }
        guard let t = v, range.contains(t) else {
            throw RoomSpecError(key: key, value: value,
                                allowed: "\(Self.number(range.lowerBound))…\(Self.number(range.upperBound)) \(allowedUnit) (units ms or s)")
        }
        return t
    }
}

/// A synthetic room impulse response: what a clap at the loudspeaker sounds like at the microphone.
public enum RoomImpulseResponse {
    /// Reflections start this long after the direct sound (the nearest wall or desk).
    static let reflectionGapSeconds = 0.003
    /// The tail stops at −60 dB or at 1 s, whichever comes first: 24 000 taps at 24 kHz is the
    /// longest echo tail a real-time canceller is asked to model and costs about 25 ms of one core
    /// per second of audio in `SimulatedRoom.process`. Rooms with RT60 above 1 s are cut short
    /// (at −60/RT60 dB, −30 dB for 2 s), which flattens the end of their decay.
    public static let maximumSeconds = 1.0

    /// The direct path at index 0, silence for 3 ms, then Gaussian noise whose energy decays 60 dB
    /// in `rt60Seconds` (counted from the direct sound). The direct sound and the tail carry equal
    /// energy (a 0 dB direct-to-reverberant ratio, a speaker and microphone a laptop apart in a
    /// furnished room), so the bulk delay is the clear peak of a cross-correlation while the tail
    /// is long and strong enough to test a canceller's filter length. Unit total energy.
    public static func make(rt60Seconds: Double, sampleRate: Int, seed: UInt64) -> [Float] {
        precondition(rt60Seconds > 0 && sampleRate > 0, "rt60 and sample rate must be positive")
        let rate = Double(sampleRate)
        let length = max(2, Int((min(rt60Seconds, maximumSeconds) * rate).rounded(.up)))
        let gap = min(length - 1, max(1, Int((reflectionGapSeconds * rate).rounded())))
        // Amplitude falls 10^(-3 t / rt60): energy 10^(-6 t / rt60), i.e. 60 dB per rt60.
        let decayPerSample = 3 * log(10.0) / (rt60Seconds * rate)
        var random = SplitMix64Gaussian(seed: seed)
        var tail = [Double](repeating: 0, count: length)
        var tailEnergy = 0.0
        for n in gap..<length {
            let v = random.next() * exp(-decayPerSample * Double(n))
            tail[n] = v
            tailEnergy += v * v
        }
        let tailScale = tailEnergy > 0 ? (1 / tailEnergy).squareRoot() : 0  // tail energy = direct energy = 1
        var response = [Float](repeating: 0, count: length)
        let norm = (1 / (1 + tailScale * tailScale * tailEnergy)).squareRoot()
        response[0] = Float(norm)
        for n in gap..<length { response[n] = Float(tail[n] * tailScale * norm) }
        // Float rounding leaves the energy off by ~1e-7; rescale in Double so it is 1 to ~1e-7 exactly.
        let energy = response.reduce(0.0) { $0 + Double($1) * Double($1) }
        let fix = Float((1 / energy).squareRoot())
        return response.map { $0 * fix }
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014) for uniform bits, Box–Muller for normal deviates: tiny,
/// fast, and the same on every platform, which Swift's SystemRandomNumberGenerator is not.
struct SplitMix64Gaussian {
    private var state: UInt64
    private var spare: Double?

    init(seed: UInt64) { state = seed }

    mutating func nextBits() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A standard normal deviate.
    mutating func next() -> Double {
        if let s = spare { spare = nil; return s }
        // u1 in (0, 1] so log never sees 0.
        let u1 = (Double(nextBits() >> 11) + 1) * 0x1p-53
        let u2 = Double(nextBits() >> 11) * 0x1p-53
        let radius = (-2 * log(u1)).squareRoot()
        spare = radius * sin(2 * Double.pi * u2)
        return radius * cos(2 * Double.pi * u2)
    }
}

/// Streams the far-end (loudspeaker) signal through the room and mixes it with the near-end
/// talker and the microphone's noise. One thread uses it; `process` allocates nothing.
///
/// The echo at microphone sample t is Σ_k h[k]·s[t−k], where s is the loudspeaker signal seen
/// from the microphone's clock: far read at the fractional position t − D(t), with D(t) the bulk
/// delay plus drift plus any jump. Fractional positions use a 4-point cubic (Catmull–Rom)
/// interpolator: its loss at the worst (half-sample) phase is 0.2 dB at 4 kHz and 3 dB at 8 kHz,
/// which in speech is just part of the room's colouring that a canceller must model anyway, and it
/// costs 4 taps next to the thousands of the room's response; a windowed sinc would be flatter but
/// would add 16–32 taps and a look-ahead delay. Catmull–Rom is C1-continuous, so a delay drifting
/// through phases causes no clicks, and at a whole-sample delay it returns the sample exactly.
public final class SimulatedRoom {
    public let parameters: RoomParameters
    public let sampleRate: Int
    /// The room's response at unit energy (index 0 = direct path); the echo is this times `echoGain`,
    /// after the bulk delay.
    public let impulseResponse: [Float]
    /// Linear echo gain, 10^(echoGainDecibels / 20).
    public let echoGain: Float

    /// The longest lag the far history holds: drift that would go past it stays there.
    public let maximumDelaySamples: Int

    private let taps: Int                                  // impulseResponse.count rounded up to 16
    private let reversedResponse: UnsafeMutablePointer<Float>  // [taps], gain applied, newest tap last
    private let speakerHistory: UnsafeMutablePointer<Float>    // [2·taps]: each sample written twice
    private var speakerWrite = 0                           // slot of the next speaker sample, 0..<taps
    private var silentRun = Int.max / 2                    // consecutive exactly-zero speaker samples
    private let farHistory: UnsafeMutablePointer<Float>    // ring of the last farMask+1 far samples
    private let farMask: Int
    private var time = 0                                   // microphone samples processed so far

    private let baseDelaySamples: Double
    private let driftPerSample: Double
    private let jumpAtSample: Int
    private let jumpSamples: Double
    private let noiseAmplitude: Double
    private var noise: SplitMix64Gaussian

    public init(_ parameters: RoomParameters, sampleRate: Int = 24_000) {
        precondition(sampleRate > 0, "sample rate must be positive")
        do { try parameters.validate() } catch { preconditionFailure("SimulatedRoom: \(error)") }
        self.parameters = parameters
        self.sampleRate = sampleRate
        let rate = Double(sampleRate)
        impulseResponse = RoomImpulseResponse.make(rt60Seconds: parameters.rt60Seconds, sampleRate: sampleRate, seed: parameters.seed)
        echoGain = Float(pow(10, parameters.echoGainDecibels / 20))

        taps = (impulseResponse.count + 15) / 16 * 16
        reversedResponse = .allocate(capacity: taps)
        reversedResponse.initialize(repeating: 0, count: taps)
        for (k, v) in impulseResponse.enumerated() { reversedResponse[taps - 1 - k] = v * echoGain }
        speakerHistory = .allocate(capacity: 2 * taps)
        speakerHistory.initialize(repeating: 0, count: 2 * taps)

        // 1 s beyond the longest configured delay, so drift has room before it saturates; the
        // ring is a power of two so indexing is a mask.
        maximumDelaySamples = Int((RoomParameters.delayRange.upperBound / 1000 + 1) * rate)
        var ring = 1
        while ring < maximumDelaySamples + 8 { ring <<= 1 }
        farMask = ring - 1
        farHistory = .allocate(capacity: ring)
        farHistory.initialize(repeating: 0, count: ring)

        baseDelaySamples = parameters.delayMilliseconds / 1000 * rate
        driftPerSample = parameters.driftPPM * 1e-6
        if let jump = parameters.delayJump {
            jumpAtSample = Int((jump.atSeconds * rate).rounded())
            jumpSamples = jump.milliseconds / 1000 * rate
        } else {
            jumpAtSample = Int.max
            jumpSamples = 0
        }
        noiseAmplitude = parameters.noiseDecibels.map { pow(10, $0 / 20) } ?? 0
        // A different stream from the impulse response's, so changing the noise level does not
        // change the room and vice versa.
        noise = SplitMix64Gaussian(seed: parameters.seed ^ 0x6E6F_6973_655F_6D69)
    }

    deinit {
        reversedResponse.deallocate()
        speakerHistory.deallocate()
        farHistory.deallocate()
    }

    /// `far`: what the loudspeaker played during these `count` samples; `near`: the near-end
    /// talker's clean speech at the microphone (nil = silence). Writes what the microphone hears
    /// (near + echo + noise) and, if asked, the echo alone (ground truth for ERLE). Any call size
    /// gives the same samples: everything is a function of the sample's index, not of the call.
    public func process(far: UnsafePointer<Float>, near: UnsafePointer<Float>?, count: Int,
                        microphone: UnsafeMutablePointer<Float>, echo: UnsafeMutablePointer<Float>? = nil) {
        precondition(count >= 0)
        let maxDelay = Double(maximumDelaySamples)
        for i in 0..<count {
            farHistory[time & farMask] = far[i]

            // The loudspeaker sample that reaches the microphone now, before the room's response.
            var delay = baseDelaySamples + driftPerSample * Double(time) + (time >= jumpAtSample ? jumpSamples : 0)
            delay = min(max(delay, 0), maxDelay)
            // Catmull–Rom reads two samples past its position: below 2 samples of delay those are
            // not played yet, so such a delay is rounded down to whole samples (exact, no look-ahead).
            if delay < 2 { delay.round(.down) }
            let position = Double(time) - delay
            let whole = position.rounded(.down)
            let f = Float(position - whole)
            let n = Int(whole)
            let xm1 = farHistory[(n - 1) & farMask], x0 = farHistory[n & farMask]
            let x1 = farHistory[(n + 1) & farMask], x2 = farHistory[(n + 2) & farMask]
            let speaker: Float
            if f == 0 {
                // Also keeps the not-yet-played neighbours of a whole-sample delay out of the sum.
                speaker = x0
            } else {
                let f2 = f * f, f3 = f2 * f
                speaker = 0.5 * ((-f3 + 2 * f2 - f) * xm1 + (3 * f3 - 5 * f2 + 2) * x0
                                 + (-3 * f3 + 4 * f2 + f) * x1 + (f3 - f2) * x2)
            }
            // Before the first far sample the ring's "past" is zeros (time < delay reads zeros too).

            speakerHistory[speakerWrite] = speaker
            speakerHistory[speakerWrite + taps] = speaker
            speakerWrite = speakerWrite + 1 == taps ? 0 : speakerWrite + 1
            silentRun = speaker == 0 ? silentRun + 1 : 0

            // While the whole window is silent (the far end is not talking, half of any dialogue)
            // the echo is exactly zero: skip the convolution.
            let echoSample = silentRun >= taps ? 0 : convolveWindow(speakerHistory + speakerWrite)

            var mic = echoSample
            if let near { mic += near[i] }
            if noiseAmplitude > 0 { mic += Float(noise.next() * noiseAmplitude) }
            microphone[i] = mic
            echo?[i] = echoSample
            time += 1
        }
    }

    /// Σ reversedResponse[j]·window[j] over `taps` samples, the window oldest first.
    @inline(__always)
    private func convolveWindow(_ window: UnsafeMutablePointer<Float>) -> Float {
        let response = UnsafeRawPointer(reversedResponse)
        let signal = UnsafeRawPointer(window)
        var a = SIMD16<Float>(), b = SIMD16<Float>()
        var offset = 0
        let bytes = taps * MemoryLayout<Float>.stride
        // Two accumulators hide the multiply-add latency; taps is a multiple of 16, so an odd
        // number of vectors leaves one for `a` alone.
        while offset + 128 <= bytes {
            a.addProduct(response.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self),
                         signal.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self))
            b.addProduct(response.loadUnaligned(fromByteOffset: offset + 64, as: SIMD16<Float>.self),
                         signal.loadUnaligned(fromByteOffset: offset + 64, as: SIMD16<Float>.self))
            offset += 128
        }
        if offset < bytes {
            a.addProduct(response.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self),
                         signal.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self))
        }
        return (a + b).sum()
    }

    /// Offline convenience: the whole far signal through a fresh room. `near` shorter than `far`
    /// is padded with silence (longer is cut); both results have `far.count` samples.
    public static func microphone(far: [Float], near: [Float]?, parameters: RoomParameters,
                                  sampleRate: Int = 24_000) -> (microphone: [Float], echo: [Float]) {
        let room = SimulatedRoom(parameters, sampleRate: sampleRate)
        var paddedNear: [Float]?
        if let near {
            paddedNear = Array(near.prefix(far.count)) + [Float](repeating: 0, count: max(0, far.count - near.count))
        }
        var microphone = [Float](repeating: 0, count: far.count)
        var echo = [Float](repeating: 0, count: far.count)
        guard !far.isEmpty else { return (microphone, echo) }
        far.withUnsafeBufferPointer { farBuffer in
            microphone.withUnsafeMutableBufferPointer { mic in
                echo.withUnsafeMutableBufferPointer { echoBuffer in
                    if let paddedNear {
                        paddedNear.withUnsafeBufferPointer { nearBuffer in
                            room.process(far: farBuffer.baseAddress!, near: nearBuffer.baseAddress!, count: far.count,
                                         microphone: mic.baseAddress!, echo: echoBuffer.baseAddress!)
                        }
                    } else {
                        room.process(far: farBuffer.baseAddress!, near: nil, count: far.count,
                                     microphone: mic.baseAddress!, echo: echoBuffer.baseAddress!)
                    }
                }
            }
        }
        return (microphone, echo)
    }
}
