import Foundation

/// A streaming rational-ratio resampler: polyphase windowed sinc (Kaiser window), for devices that
/// only run at 44.1/48 kHz and for files and pipes at other rates. Stateful like every streaming
/// block: feeding a signal in pieces of any size gives exactly the samples one call over the whole
/// signal gives. Allocates only at construction.
public final class Resampler: @unchecked Sendable {
    public let inputRate: Int
    public let outputRate: Int
    /// Reduced ratio: `up` output phases per `down` input samples.
    public let up: Int
    public let down: Int
    /// Filter taps per phase (input samples each output sample reads).
    public let taps: Int
    /// Input samples the filter looks ahead: output for time t is produced once input up to
    /// t + lookahead has arrived. Output stays time-aligned with the input (no leading delay).
    public let lookahead: Int
    private let bank: [Float]        // [up, taps], phase-major
    private var history: [Float]     // last `taps` input samples, oldest first, then new input
    private var historyCount: Int    // valid samples in history
    /// Position of the next output sample, in units of 1/up input samples, relative to history[0].
    private var position: Int

    /// `zeroCrossings` per side sets quality (16 is transparent for speech; 8 is cheaper).
    public init(from inputRate: Int, to outputRate: Int, zeroCrossings: Int = 16, kaiserBeta: Double = 8.6) {
        precondition(inputRate > 0 && outputRate > 0)
        self.inputRate = inputRate
        self.outputRate = outputRate
        let g = Self.gcd(inputRate, outputRate)
        up = outputRate / g
        down = inputRate / g
        // Cut off below the lower Nyquist, with a little room for the transition band.
        let cutoff = 0.95 * min(1, Double(outputRate) / Double(inputRate))
        let halfLength = Int((Double(zeroCrossings) / cutoff).rounded(.up))
        taps = 2 * halfLength
        var bank = [Float](repeating: 0, count: up * taps)
        let i0Beta = Self.besselI0(kaiserBeta)
        for phase in 0..<up {
            // Output sample at input time (base + phase/up): tap k reads input sample base − halfLength + 1 + k.
            let frac = Double(phase) / Double(up)
            var sum = 0.0
            for k in 0..<taps {
                let t = Double(k - halfLength + 1) - frac
                let x = t * cutoff
                let sinc = x == 0 ? 1 : sin(Double.pi * x) / (Double.pi * x)
                let r = t / Double(halfLength)
                let window = abs(r) >= 1 ? 0 : Self.besselI0(kaiserBeta * (1 - r * r).squareRoot()) / i0Beta
                let h = cutoff * sinc * window
                bank[phase * taps + k] = Float(h)
                sum += h
            }
            // Unity gain at DC for every phase.
            for k in 0..<taps { bank[phase * taps + k] /= Float(sum) }
        }
        self.bank = bank
        history = [Float](repeating: 0, count: taps + 8192)
        // Output 0 is at input time 0; its taps reach halfLength − 1 samples into the past, which
        // start as silence, and halfLength samples ahead.
        historyCount = halfLength - 1
        position = 0
        lookahead = halfLength
    }

    /// Upper bound of output samples `count` input samples can produce.
    public func maxOutput(forInput count: Int) -> Int {
        (count + 1) * up / down + 2
    }

    /// Resamples `count` input samples; writes at most `capacity` outputs and returns how many.
    /// `capacity` must be at least `maxOutput(forInput: count)`.
    public func process(_ input: UnsafePointer<Float>, count: Int, into output: UnsafeMutablePointer<Float>, capacity: Int) -> Int {
        var produced = 0
        var consumed = 0
        while consumed < count {
            // Append as much input as the history buffer holds.
            let room = history.count - historyCount
            let n = min(room, count - consumed)
            history.withUnsafeMutableBufferPointer { h in
                (h.baseAddress! + historyCount).update(from: input + consumed, count: n)
            }
            historyCount += n
            consumed += n
            produced += drain(into: output + produced, capacity: capacity - produced)
        }
        return produced
    }

    /// Emits every output whose taps are all available.
    private func drain(into output: UnsafeMutablePointer<Float>, capacity: Int) -> Int {
        var produced = 0
        history.withUnsafeMutableBufferPointer { h in
            bank.withUnsafeBufferPointer { b in
                while produced < capacity {
                    let base = position / up          // index in history of the tap-0 sample
                    let phase = position % up
                    guard base + taps <= historyCount else { break }
                    let x = h.baseAddress! + base
                    let f = b.baseAddress! + phase * taps
                    var acc: Float = 0
                    for k in 0..<taps { acc += f[k] * x[k] }
                    output[produced] = acc
                    produced += 1
                    position += down
                }
                // Drop history no output will read again.
                let keep = position / up
                if keep > 0 {
                    let remaining = historyCount - keep
                    if remaining > 0 { memmove(h.baseAddress!, h.baseAddress! + keep, remaining * MemoryLayout<Float>.stride) }
                    historyCount = max(0, remaining)
                    position -= keep * up
                }
            }
        }
        return produced
    }

    /// Feeds silence to push out the filter's tail (for the end of a file or stream).
    public func flush(into output: UnsafeMutablePointer<Float>, capacity: Int) -> Int {
        let zeros = [Float](repeating: 0, count: taps)
        return zeros.withUnsafeBufferPointer { process($0.baseAddress!, count: taps, into: output, capacity: capacity) }
    }

    /// Whole-signal convenience: output sample n is at time n / outputRate; length = round(count · out / in).
    public static func resample(_ signal: [Float], from inputRate: Int, to outputRate: Int) -> [Float] {
        if inputRate == outputRate { return signal }
        let r = Resampler(from: inputRate, to: outputRate)
        let expected = Int((Double(signal.count) * Double(outputRate) / Double(inputRate)).rounded())
        var out = [Float](repeating: 0, count: r.maxOutput(forInput: signal.count + 2 * r.taps))
        var n = out.withUnsafeMutableBufferPointer { o in
            signal.withUnsafeBufferPointer { r.process($0.baseAddress!, count: $0.count, into: o.baseAddress!, capacity: o.count) }
        }
        while n < expected {
            let m = out.withUnsafeMutableBufferPointer { r.flush(into: $0.baseAddress! + n, capacity: $0.count - n) }
            if m == 0 { break }
            n += m
        }
        return Array(out[0..<min(n, expected)])
    }

    private static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }

    private static func besselI0(_ x: Double) -> Double {
        var sum = 1.0, term = 1.0
        let q = x * x / 4
        for k in 1..<50 {
            term *= q / Double(k * k)
            sum += term
            if term < 1e-12 * sum { break }
        }
        return sum
    }
}
