import Foundation

/// Sample-rate conversion by windowed-sinc interpolation (Blackman window), for audio files at
/// other rates than the codec's 24 kHz. Offline and whole-buffer; quality over speed, but with
/// the filter tabulated per phase when the rate ratio is a small fraction (44.1 → 24 kHz is
/// 160/294), so a minute of audio takes well under a second.
public enum Resampler {
    /// Zero crossings of the sinc on each side (at the lower of the two rates).
    public static let halfWidth = 24

    public static func resample(_ x: [Float], from inRate: Int, to outRate: Int) -> [Float] {
        precondition(inRate > 0 && outRate > 0, "sample rates must be positive")
        if inRate == outRate || x.isEmpty { return x }
        let g = gcd(inRate, outRate)
        let (up, down) = (outRate / g, inRate / g)   // output j sits at input position j·down/up
        let outCount = Int((Int64(x.count) * Int64(up) + Int64(down) - 1) / Int64(down))
        // Cutoff at the lower Nyquist, slightly inside it so the transition band stays clear of aliasing.
        let cutoff = 0.97 * min(1.0, Double(outRate) / Double(inRate))
        let taps = Int((Double(halfWidth) / cutoff).rounded(.up))
        let width = 2 * taps

        func kernel(_ d: Double) -> Double {
            // d: distance in input samples; zero outside ±taps.
            if abs(d) >= Double(taps) { return 0 }
            let s = d == 0 ? 1.0 : sin(Double.pi * cutoff * d) / (Double.pi * cutoff * d)
            let w = 0.42 + 0.5 * cos(Double.pi * d / Double(taps)) + 0.08 * cos(2 * Double.pi * d / Double(taps))
            return cutoff * s * w
        }

        // One filter per output phase (j mod up), each `width` taps from input index floor(pos) − taps + 1.
        let tabulate = up <= 4096
        var table = [Float]()
        if tabulate {
            table = [Float](repeating: 0, count: up * width)
            for p in 0..<up {
                let frac = Double(p) / Double(up)
                for i in 0..<width { table[p * width + i] = Float(kernel(frac + Double(taps - 1 - i))) }
            }
        }
        var y = [Float](repeating: 0, count: outCount)
        x.withUnsafeBufferPointer { xs in
            for j in 0..<outCount {
                let num = Int64(j) * Int64(down)
                let base = Int(num / Int64(up))
                let first = base - taps + 1
                var sum: Double = 0
                if tabulate {
                    let phase = Int(num % Int64(up))
                    for i in 0..<width {
                        let k = first + i
                        if k >= 0 && k < xs.count { sum += Double(xs[k]) * Double(table[phase * width + i]) }
                    }
                } else {
                    let pos = Double(num) / Double(up)
                    for i in 0..<width {
                        let k = first + i
                        if k >= 0 && k < xs.count { sum += Double(xs[k]) * kernel(pos - Double(k)) }
                    }
                }
                y[j] = Float(sum)
            }
        }
        return y
    }

    private static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
}
