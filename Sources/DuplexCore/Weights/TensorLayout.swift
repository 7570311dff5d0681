/// How a file names and splits a model's tensors, against the names of Kyutai's PyTorch
/// checkpoints (the names of the tensor tables). Kyutai's own layout is the identity; candle's
/// GGUF and MLX's safetensors rename tensors, store the depformer's per-step projections apart
/// and repeat its shared norms once per step (`LMTensorNames.candleLayout`, `.mlxLayout`).
public struct TensorLayout: Sendable {
    public enum Source: Sendable, Equatable {
        /// The same tensor under this name.
        case one(String)
        /// Blocks of rows stored apart, stacked in this order.
        case stacked([String])
        /// Copies of one tensor (they must be equal); the first is read.
        case shared([String])
    }

    /// "Kyutai", "candle", "MLX": for messages.
    public let name: String
    public let isIdentity: Bool
    private let map: @Sendable (TensorSpec) -> Source

    public init(name: String, source: @escaping @Sendable (TensorSpec) -> Source) {
        self.name = name
        isIdentity = false
        map = source
    }

    private init() {
        name = "Kyutai"
        isIdentity = true
        map = { .one($0.name) }
    }

    public static let kyutai = TensorLayout()

    /// The file tensor(s) that make up `spec`.
    public func source(_ spec: TensorSpec) -> Source { map(spec) }
}

/// Which format each matrix and embedding gets when duplex quantizes a model (`--quantize`,
/// `duplex quantize`): one format for every matrix, or a mix that keeps the parts most
/// sensitive to rounding at more bits (the K-quant "M" mixes of llama.cpp, restated for Moshi).
public struct QuantizeRecipe: Sendable, CustomStringConvertible {
    public let name: String
    private let choose: @Sendable (TensorSpec, TensorTable) -> QuantType?

    public init(name: String, choose: @escaping @Sendable (TensorSpec, TensorTable) -> QuantType?) {
        self.name = name
        self.choose = choose
    }

    /// The format for `spec` (nil: keep it as stored — norms, biases, codebooks, or widths the
    /// format cannot hold).
    public func type(for spec: TensorSpec, table: TensorTable) -> QuantType? {
        guard spec.kind == .matrix || spec.kind == .embedding, spec.shape.count == 2 else { return nil }
        guard let t = choose(spec, table) else { return nil }
        if t.accepts(cols: spec.shape[1]) { return t }
        // A width the block does not divide (small test models): the 32-value 8-bit format, else as stored.
        return QuantType.q8_0.accepts(cols: spec.shape[1]) ? .q8_0 : nil
    }

    public var description: String { name }

    /// Every matrix and embedding in one format.
    public static func uniform(_ t: QuantType) -> QuantizeRecipe {
        QuantizeRecipe(name: t.description) { _, _ in t }
    }
}
