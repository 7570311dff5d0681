import Foundation

/// Rotary position embedding, interleaved layout (pair i = (x[2i], x[2i+1])), as Kyutai's
/// `apply_rope`: frequency_i = exp(−2i·ln(max_period)/D), angle = position · frequency,
/// computed in Float32. Positions are absolute and keep growing past the attention context.
public struct RoPE: Sendable {
    public let headDim: Int
    public let maxPeriod: Float
    private let frequencies: [Float]   // [headDim/2]

    public init(headDim: Int, maxPeriod: Float) {
        precondition(headDim % 2 == 0, "RoPE needs an even head dimension")
        self.headDim = headDim
        self.maxPeriod = maxPeriod
        let scale = -logf(maxPeriod) * 2 / Float(headDim)
        frequencies = (0..<(headDim / 2)).map { expf(Float($0) * scale) }
    }

    /// Rotates `heads` consecutive head vectors of one time step at `position`, in place.
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        let t = Float(position)
        frequencies.withUnsafeBufferPointer { freq in
            for i in 0..<(headDim / 2) {
                let angle = freq[i] * t
                let c = cosf(angle), s = sinf(angle)
                for h in 0..<heads {
                    let p = x + h * headDim + 2 * i
                    let a = p[0], b = p[1]
                    p[0] = a * c - b * s
                    p[1] = a * s + b * c
                }
            }
        }
    }
}
