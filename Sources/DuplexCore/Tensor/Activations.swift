import Foundation

/// Elementwise functions, in place over a buffer, each exactly as Kyutai's reference defines it.
public enum Activations {
    /// GELU, exact erf form (PyTorch's default `F.gelu`, what Mimi's transformers use).
    public static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let v = x[i]
            x[i] = 0.5 * v * (1 + erff(v * 0.70710678118654752))
        }
    }

    /// SiLU(x) = x · σ(x).
    public static func silu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let v = x[i]
            x[i] = v / (1 + expf(-v))
        }
    }

    /// ELU with alpha (SEANet uses 1.0): x for x > 0, alpha·(eˣ − 1) otherwise.
    public static func elu(_ x: UnsafeMutablePointer<Float>, count: Int, alpha: Float = 1) {
        for i in 0..<count {
            let v = x[i]
            if v <= 0 { x[i] = alpha * expm1f(v) }
        }
    }

    /// ELU (alpha 1) of `count` values from `x` into `y` (which may be `x`), sixteen lanes at a
    /// time: SEANet applies it to about a million values per frame, where the scalar `expm1f`
    /// of `elu` would cost milliseconds. Agrees with `elu` to about one ulp (polynomial expm1
    /// after a Cody–Waite reduction, written as 2ⁿ·expm1(r) + (2ⁿ − 1) so small inputs keep
    /// their relative accuracy).
    public static func eluVectorized(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 16 <= count {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            let e = expm1NonPositive(v)
            UnsafeMutableRawPointer(y + i).storeBytes(of: v.replacing(with: e, where: v .<= 0), as: SIMD16<Float>.self)
            i += 16
        }
        while i < count {
            let v = x[i]
            y[i] = v > 0 ? v : expm1f(v)
            i += 1
        }
    }

    /// expm1 for lanes ≤ 0 (lanes above 0 give garbage the caller discards; below −87 → −1).
    @inline(__always)
    static func expm1NonPositive(_ v: SIMD16<Float>) -> SIMD16<Float> {
        let x = v.replacing(with: -87, where: v .< -87).replacing(with: 0, where: v .> 0)
        // Round x/ln2 to the nearest integer n with the 1.5·2²³ trick (no float→int conversion).
        let magic = SIMD16<Float>(repeating: 12_582_912)
        let shifted = x * 1.442_695_04 + magic
        let n = shifted - magic
        let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4
        let ni = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
        let scale = unsafeBitCast((ni &+ 127) &<< 23, to: SIMD16<Float>.self)
        var p = SIMD16<Float>(repeating: 1.0 / 5040)
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r * r + r
        return scale * p + (scale - 1)
    }

    /// Numerically stable softmax over `count` values, in place. The sum is kept in Double: over
    /// a 32k vocabulary a Float running sum drifts by ~1e-5 relative, more than the ops tolerance.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        guard count > 0 else { return }
        var maxValue = -Float.infinity
        for i in 0..<count { maxValue = max(maxValue, x[i]) }
        var sum: Double = 0
        for i in 0..<count {
            let e = expf(x[i] - maxValue)
            x[i] = e
            sum += Double(e)
        }
        let inv = Float(1 / sum)
        for i in 0..<count { x[i] *= inv }
    }
}

/// Normalisations over the last axis of one row.
public enum Norms {
    /// RMSNorm as Kyutai's `rms_norm_f32`: y = x · alpha / sqrt(mean(x²) + eps).
    public static func rmsNorm(_ x: UnsafePointer<Float>, alpha: UnsafePointer<Float>, eps: Float,
                               output y: UnsafeMutablePointer<Float>, count: Int) {
        var sumSquares: Float = 0
        for i in 0..<count { sumSquares += x[i] * x[i] }
        let scale = 1 / (sumSquares / Float(count) + eps).squareRoot()
        for i in 0..<count { y[i] = x[i] * scale * alpha[i] }
    }

    /// LayerNorm with affine weight and bias (PyTorch `nn.LayerNorm`, biased variance). Mean and
    /// deviations are taken in Double: with a mean far from zero relative to the spread, a Float
    /// mean alone is off by half an ulp of the mean, which the normalisation magnifies by 1/σ.
    public static func layerNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                 eps: Float, output y: UnsafeMutablePointer<Float>, count: Int) {
        var mean: Double = 0
        for i in 0..<count { mean += Double(x[i]) }
        mean /= Double(count)
        var variance: Double = 0
        for i in 0..<count { let d = Double(x[i]) - mean; variance += d * d }
        variance /= Double(count)
        let scale = 1 / (variance + Double(eps)).squareRoot()
        for i in 0..<count { y[i] = Float((Double(x[i]) - mean) * scale) * weight[i] + bias[i] }
    }
}

// MARK: naive references (Double precision; the truth the fast versions are tested against)

extension Activations {
    public static func geluNaive(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let v = Double(x[i])
            x[i] = Float(0.5 * v * (1 + erf(v / 2.0.squareRoot())))
        }
    }

    public static func siluNaive(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let v = Double(x[i])
            x[i] = Float(v / (1 + exp(-v)))
        }
    }

    public static func eluNaive(_ x: UnsafeMutablePointer<Float>, count: Int, alpha: Float = 1) {
        for i in 0..<count {
            let v = Double(x[i])
            x[i] = Float(v > 0 ? v : Double(alpha) * expm1(v))
        }
    }

    /// exp(x − max) / Σ exp(x − max); the shift only keeps Double's exp in range.
    public static func softmaxNaive(_ x: UnsafeMutablePointer<Float>, count: Int) {
        guard count > 0 else { return }
        var maxValue = -Double.infinity
        for i in 0..<count { maxValue = Swift.max(maxValue, Double(x[i])) }
        var sum = 0.0
        for i in 0..<count { sum += exp(Double(x[i]) - maxValue) }
        for i in 0..<count { x[i] = Float(exp(Double(x[i]) - maxValue) / sum) }
    }
}

extension Norms {
    public static func rmsNormNaive(_ x: UnsafePointer<Float>, alpha: UnsafePointer<Float>, eps: Float,
                                    output y: UnsafeMutablePointer<Float>, count: Int) {
        var sumSquares = 0.0
        for i in 0..<count { sumSquares += Double(x[i]) * Double(x[i]) }
        let scale = 1 / (sumSquares / Double(count) + Double(eps)).squareRoot()
        for i in 0..<count { y[i] = Float(Double(x[i]) * scale * Double(alpha[i])) }
    }

    public static func layerNormNaive(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                      eps: Float, output y: UnsafeMutablePointer<Float>, count: Int) {
        var mean = 0.0
        for i in 0..<count { mean += Double(x[i]) }
        mean /= Double(count)
        var variance = 0.0
        for i in 0..<count { let d = Double(x[i]) - mean; variance += d * d }
        variance /= Double(count)
        let scale = 1 / (variance + Double(eps)).squareRoot()
        for i in 0..<count { y[i] = Float((Double(x[i]) - mean) * scale * Double(weight[i]) + Double(bias[i])) }
    }
}
