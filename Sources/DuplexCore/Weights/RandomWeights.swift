/// Made-up weights with the spread of trained ones, chosen by what a tensor's checkpoint name says
/// it is, so an untrained model of any architecture runs with sane activations:
/// norm scales and layer scales ≈ 1, biases ≈ 0, codebook usage 1, embeddings N(0, 1), and every
/// other matrix or conv kernel with variance 1/fan-in. Each tensor is seeded from the store's seed
/// and its own name, so it does not depend on the order a model asks in. Values are uniform with
/// the target variance (cheap: a 7B model is 7.7 billion of them).
struct RandomWeights {
    let seed: UInt64
    let matrixType: DType

    enum Kind: Equatable { case ones(spread: Float), zeros(spread: Float), constant(Float), scaled(Float) }

    /// The spread of a table entry, by its kind (the same as `kind(of:shape:)` gives for its name).
    static func kind(of spec: TensorSpec) -> Kind {
        switch spec.kind {
        case .codebookUsage, .buffer: return .constant(1)
        case .codebookSum, .embedding: return .scaled(1)
        case .norm, .layerScale: return .ones(spread: 0.05)
        case .bias: return .zeros(spread: 0.02)
        case .matrix, .conv, .convTranspose: return .scaled(1 / Float(max(1, spec.shape.dropFirst().reduce(1, *))).squareRoot())
        }
    }

    /// The spread a tensor's name suggests (stores without a table).
    static func kind(of name: String, shape: [Int]) -> Kind {
        let leaf = name.split(separator: ".").last.map(String.init) ?? name
        if leaf == "cluster_usage" || leaf == "_initialized" { return .constant(1) }
        if leaf == "embedding_sum" { return .scaled(1) }
        if leaf == "alpha" || leaf == "scale" || (name.contains("norm") && leaf == "weight") { return .ones(spread: 0.05) }
        if leaf == "bias" { return .zeros(spread: 0.02) }
        if name.contains("emb") && shape.count == 2 { return .scaled(1) }
        let fanIn = max(1, shape.dropFirst().reduce(1, *))
        return .scaled(1 / Float(fanIn).squareRoot())
    }

    private func generator(for name: String) -> SplitMix64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a of the name, mixed with the seed
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return SplitMix64(seed: hash ^ seed)
    }

    /// Fills `count` values, calling `store` for each.
    private func fill(_ name: String, kind: Kind, count: Int, _ store: (Int, Float) -> Void) {
        var g = generator(for: name)
        let root3: Float = 1.7320508
        switch kind {
        case .constant(let v): for i in 0..<count { store(i, v) }
        case .ones(let spread): for i in 0..<count { store(i, 1 + spread * root3 * (2 * g.nextFloat() - 1)) }
        case .zeros(let spread): for i in 0..<count { store(i, spread * root3 * (2 * g.nextFloat() - 1)) }
        case .scaled(let std): for i in 0..<count { store(i, std * root3 * (2 * g.nextFloat() - 1)) }
        }
    }

    func tensor(_ name: String, shape: [Int], kind: Kind) -> Tensor {
        let count = shape.reduce(1, *)
        var data = [Float](repeating: 0, count: count)
        data.withUnsafeMutableBufferPointer { d in fill(name, kind: kind, count: count) { d[$0] = $1 } }
        return Tensor(shape: shape, data: data)
    }

    func matrix(_ name: String, shape: [Int], kind: Kind) -> WeightMatrix {
        let rows = shape.first ?? 0
        let cols = shape.dropFirst().reduce(1, *)
        if matrixType == .bf16 {
            let box = BF16Box(count: rows * cols)
            let p = box.pointer
            fill(name, kind: kind, count: rows * cols) { p[$0] = HalfPrecision.floatToBF16($1) }
            return WeightMatrix(rows: rows, cols: cols, storage: .bf16(UnsafePointer(p)), owner: box)
        }
        return WeightMatrix(tensor(name, shape: shape, kind: kind).reshaped([rows, cols]))
    }
}
