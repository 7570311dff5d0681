/// A per-channel normalisation with its checkpoint weights.
public struct Norm: Sendable {
    public enum Kind: Sendable, Equatable {
        /// `nn.LayerNorm` with weight and bias (`<prefix>.weight`, `<prefix>.bias`).
        case layerNorm(eps: Float)
        /// Kyutai's `rms_norm_f32` with `<prefix>.alpha` stored [1, 1, dim].
        case rmsNorm(eps: Float)
    }

    public let kind: Kind
    public let dim: Int
    let weight: [Float]
    let bias: [Float]

    public init(store: WeightStore, prefix: String, kind: Kind, dim: Int) {
        self.init(store: store, names: NormTensorNames(prefix), kind: kind, dim: dim)
    }

    public init(store: WeightStore, names: NormTensorNames, kind: Kind, dim: Int) {
        self.kind = kind
        self.dim = dim
        switch kind {
        case .layerNorm:
            weight = store.tensor(names.weight, shape: [dim]).data
            bias = store.tensor(names.bias, shape: [dim]).data
        case .rmsNorm:
            weight = store.tensor(names.alpha, shape: [1, 1, dim]).data
            bias = []
        }
    }

    /// Normalises `steps` rows of x into y.
    public func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, steps: Int = 1) {
        weight.withUnsafeBufferPointer { w in
            switch kind {
            case .layerNorm(let eps):
                bias.withUnsafeBufferPointer { b in
                    for t in 0..<steps {
                        Norms.layerNorm(x + t * dim, weight: w.baseAddress!, bias: b.baseAddress!, eps: eps,
                                        output: y + t * dim, count: dim)
                    }
                }
            case .rmsNorm(let eps):
                for t in 0..<steps {
                    Norms.rmsNorm(x + t * dim, alpha: w.baseAddress!, eps: eps, output: y + t * dim, count: dim)
                }
            }
        }
    }
}
