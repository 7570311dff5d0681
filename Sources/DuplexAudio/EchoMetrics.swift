import Foundation

/// Scores for an echo canceller, computed offline from whole signals (24 kHz unless a
/// `sampleRate` says otherwise). Sums run in Double; results are never NaN: an undefined ratio
/// (a silent signal) takes the documented value instead.
public enum EchoMetrics {
    /// Ratios in dB are clamped to ±this: a silent output would otherwise be +∞ dB, which no
    /// average or threshold can use, and 100 dB is far beyond anything Float audio can resolve.
    public static let decibelCap = 100.0

    /// Echo return loss enhancement in dB, 10·log10(Σ mic² / Σ out²) over `range`: how much
    /// quieter the canceller's output is than its microphone input. 0 when the microphone is
    /// silent there (nothing to cancel), `decibelCap` when only the output is.
    public static func erle(microphone: [Float], output: [Float], range: Range<Int>) -> Double {
        energyRatioDecibels(microphone, output, range)
    }

    /// ERLE of each whole, non-overlapping `window` (a trailing partial window is dropped), over
    /// the length both signals have.
    public static func erleCurve(microphone: [Float], output: [Float], window: Int) -> [Double] {
        precondition(window > 0)
        let windows = min(microphone.count, output.count) / window
        return (0..<windows).map { erle(microphone: microphone, output: output, range: ($0 * window)..<(($0 + 1) * window)) }
    }

    /// Which windows (the same ones `erleCurve` makes) have an RMS of at least `thresholdDecibels`
    /// dBFS: pass the far-end or echo signal so that windows where nobody plays anything do not
    /// count against a canceller, which has nothing to cancel there.
    public static func activeWindows(signal: [Float], window: Int, thresholdDecibels: Double) -> [Bool] {
        precondition(window > 0)
        let threshold = pow(10, thresholdDecibels / 10) * Double(window)  // energy over a window
        return (0..<(signal.count / window)).map { energy(signal, ($0 * window)..<(($0 + 1) * window)) >= threshold }
    }

    /// The start (seconds) of the first active window after which every active window of `curve`
    /// is ≥ `threshold`; nil if the last active window is below it (never converged) or no window
    /// is active. `active` (one per window, missing = all active) excludes far-end silence.
    public static func convergenceTime(curve: [Double], window: Int, sampleRate: Int = 24_000,
                                       threshold: Double, active: [Bool]? = nil) -> Double? {
        firstStayingAbove(curve, threshold, active, from: 0).map { Double($0 * window) / Double(sampleRate) }
    }

    /// Seconds from `event` until the curve is back ≥ `threshold` and stays there: the convergence
    /// time of the windows from the one containing the event on, minus the event's time (0 if
    /// the curve never dropped). nil if it never recovers.
    public static func recoveryTime(curve: [Double], window: Int, sampleRate: Int = 24_000, after event: Double,
                                    threshold: Double, active: [Bool]? = nil) -> Double? {
        precondition(window > 0 && event >= 0)
        let first = Int(event * Double(sampleRate)) / window
        guard let index = firstStayingAbove(curve, threshold, active, from: first) else { return nil }
        return max(0, Double(index * window) / Double(sampleRate) - event)
    }

    /// Segmental SNR in dB: per `frame`, 10·log10(Σ ref² / Σ (ref − processed)²) clamped to
    /// [−10, 35] (the classic bounds: a frame cannot be better than transparent or worse than
    /// lost), averaged over the frames where the reference is active (RMS > −50 dBFS). 0 if no
    /// frame in `range` is active (no speech to judge).
    public static func segmentalSNR(reference: [Float], processed: [Float], frame: Int = 480, range: Range<Int>) -> Double {
        precondition(frame > 0)
        let range = clamped(range, min(reference.count, processed.count))
        let activeEnergy = pow(10, -50.0 / 10) * Double(frame)
        var sum = 0.0, frames = 0
        var start = range.lowerBound
        while start + frame <= range.upperBound {
            var signal = 0.0, error = 0.0
            for i in start..<(start + frame) {
                let r = Double(reference[i]), d = r - Double(processed[i])
                signal += r * r
                error += d * d
            }
            if signal > activeEnergy {
                let snr = error > 0 ? 10 * log10(signal / error) : 35
                sum += min(35, max(-10, snr))
                frames += 1
            }
            start += frame
        }
        return frames > 0 ? sum / Double(frames) : 0
    }

    /// Normalised cross-correlation Σ ref[n]·processed[n + lag] / √(Σ ref² · Σ processed²) over
    /// n in `range`, at the lag in −maxLag…maxLag that maximises it (positive lag = `processed`
    /// is late; samples outside `processed` count as zero; ties go to the smaller |lag|).
    /// Coefficient 0 when either side is silent.
    public static func correlation(reference: [Float], processed: [Float], range: Range<Int>, maxLag: Int) -> (coefficient: Double, lag: Int) {
        precondition(maxLag >= 0)
        let range = clamped(range, reference.count)
        let referenceEnergy = energy(reference, range)
        var best = (coefficient: -Double.infinity, lag: 0)
        reference.withUnsafeBufferPointer { r in
            processed.withUnsafeBufferPointer { p in
                for lag in -maxLag...maxLag {
                    // Only indices inside `processed` contribute.
                    let lower = max(range.lowerBound, -lag), upper = min(range.upperBound, p.count - lag)
                    var dot = 0.0, shiftedEnergy = 0.0
                    if lower < upper {
                        for n in lower..<upper {
                            let q = Double(p[n + lag])
                            dot += Double(r[n]) * q
                            shiftedEnergy += q * q
                        }
                    }
                    let denominator = (referenceEnergy * shiftedEnergy).squareRoot()
                    let c = denominator > 0 ? dot / denominator : 0
                    if c > best.coefficient || (c == best.coefficient && abs(lag) < abs(best.lag)) { best = (c, lag) }
                }
            }
        }
        return best
    }

    /// How much quieter `processed` is than `reference` over `range`, in dB (positive =
    /// attenuated): 10·log10(Σ ref² / Σ processed²), 0 if both are silent, ±`decibelCap` if one is.
    public static func levelDifference(reference: [Float], processed: [Float], range: Range<Int>) -> Double {
        let a = energy(reference, range), b = energy(processed, range)
        if a == 0 && b == 0 { return 0 }
        return ratioDecibels(a, b)
    }

    // MARK: - Helpers

    private static func clamped(_ range: Range<Int>, _ count: Int) -> Range<Int> {
        let lower = min(max(range.lowerBound, 0), count)
        return lower..<max(lower, min(range.upperBound, count))
    }

    private static func energy(_ x: [Float], _ range: Range<Int>) -> Double {
        let range = clamped(range, x.count)
        return x.withUnsafeBufferPointer { p in
            var sum = 0.0
            for i in range { let v = Double(p[i]); sum += v * v }
            return sum
        }
    }

    private static func ratioDecibels(_ numerator: Double, _ denominator: Double) -> Double {
        if denominator == 0 { return numerator > 0 ? decibelCap : 0 }
        if numerator == 0 { return -decibelCap }
        return min(decibelCap, max(-decibelCap, 10 * log10(numerator / denominator)))
    }

    private static func energyRatioDecibels(_ a: [Float], _ b: [Float], _ range: Range<Int>) -> Double {
        let numerator = energy(a, range)
        return numerator == 0 ? 0 : ratioDecibels(numerator, energy(b, range))
    }

    /// Index of the first active window from `from` on after which no active window is below
    /// `threshold`; nil if none such exists.
    private static func firstStayingAbove(_ curve: [Double], _ threshold: Double, _ active: [Bool]?, from: Int) -> Int? {
        precondition(active == nil || active!.count >= curve.count, "one active flag per window")
        func counts(_ i: Int) -> Bool { active?[i] ?? true }
        var candidate: Int?
        var i = curve.count - 1
        while i >= from {
            if counts(i) {
                // NaN counts as below the threshold: a broken window must not pass.
                if curve[i] >= threshold { candidate = i } else { break }
            }
            i -= 1
        }
        return candidate
    }
}
