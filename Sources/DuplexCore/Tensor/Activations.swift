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

    /// Numerically stable softmax over `count` values, in place.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        guard count > 0 else { return }
        var maxValue = -Float.infinity
        for i in 0..<count { maxValue = max(maxValue, x[i]) }
        var sum: Float = 0
        for i in 0..<count {
            let e = expf(x[i] - maxValue)
            x[i] = e
            sum += e
        }
        let inv = 1 / sum
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

    /// LayerNorm with affine weight and bias (PyTorch `nn.LayerNorm`, biased variance).
    public static func layerNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                 eps: Float, output y: UnsafeMutablePointer<Float>, count: Int) {
        var mean: Float = 0
        for i in 0..<count { mean += x[i] }
        mean /= Float(count)
        var variance: Float = 0
        for i in 0..<count { let d = x[i] - mean; variance += d * d }
        variance /= Float(count)
        let scale = 1 / (variance + eps).squareRoot()
        for i in 0..<count { y[i] = (x[i] - mean) * scale * weight[i] + bias[i] }
    }
}
