import CQuant

/// A quantized weight format duplex computes with: ggml's block types (as GGUF files store them)
/// and MLX's affine quantization (as Kyutai's `-mlx-q4`/`-q8` safetensors store it). Each maps to
/// one kernel family of the `CQuant` target.
public enum QuantType: Hashable, Sendable, CustomStringConvertible {
    case q8_0, q4_0, iq4_nl, q4_K, q6_K
    /// MLX affine: `bits` 4 or 8, one bf16 scale and bias per `group` values of a row.
    case mlx(bits: Int, group: Int)

    /// The ggml types duplex writes and computes with, by the names ggml and `--quantize` use.
    public static let ggmlTypes: [QuantType] = [.q8_0, .q6_K, .q4_K, .iq4_nl, .q4_0]

    public var cType: cq_type {
        switch self {
        case .q8_0: CQ_Q8_0
        case .q4_0: CQ_Q4_0
        case .iq4_nl: CQ_IQ4_NL
        case .q4_K: CQ_Q4_K
        case .q6_K: CQ_Q6_K
        case .mlx(let bits, _): bits == 4 ? CQ_MLX_Q4 : CQ_MLX_Q8
        }
    }

    /// The GGUF type id (nil for MLX's affine formats, which GGUF has no type for).
    public var ggufTypeID: UInt32? {
        switch self {
        case .mlx: nil
        default: cType.rawValue
        }
    }

    public init?(ggufTypeID id: UInt32) {
        guard let t = Self.ggmlTypes.first(where: { $0.ggufTypeID == id }) else { return nil }
        self = t
    }

    /// Values per block (the group for MLX).
    public var blockValues: Int {
        if case .mlx(_, let group) = self { return group }
        return Int(cq_block_values(cType))
    }

    public var description: String {
        switch self {
        case .mlx(let bits, let group): "MLX-Q\(bits) g\(group)"
        default: String(cString: cq_type_name(cType))
        }
    }

    /// Whether a row of `cols` values can be stored in this format.
    public func accepts(cols: Int) -> Bool {
        cols > 0 && cols <= Int(Int32.max) && cq_valid_cols(cType, Int32(cols), Int32(blockValues)) != 0
    }
}
