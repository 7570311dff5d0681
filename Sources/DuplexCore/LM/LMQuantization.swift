/// The formats `--quantize` and `duplex quantize --to` offer for a Moshi LM.
extension QuantizeRecipe {
    /// Names accepted, with what each means.
    public static let lmRecipes: [(name: String, about: String)] = [
        ("q8", "Q8_0 everywhere (8.5 bits per weight): the quality reference of the quantized paths"),
        ("q4", "duplex's 4-bit choice: q4_k_m (see the README's quality table)"),
        ("q4_k_m", "Q4_K for the temporal transformer, Q6_K for its FFN-out in the layers llama.cpp's mix favours, "
            + "the text head and the depformer, Q8_0 for the embeddings"),
        ("q8_0", "Q8_0 everywhere"), ("q6_k", "Q6_K everywhere"), ("q4_k", "Q4_K everywhere"),
        ("iq4_nl", "IQ4_NL everywhere"), ("q4_0", "Q4_0 everywhere"),
    ]

    /// The recipe `name` stands for, or nil.
    public static func lm(named name: String) -> QuantizeRecipe? {
        switch name.lowercased() {
        case "q8", "q8_0": .uniform(.q8_0)
        case "q6_k": .uniform(.q6_K)
        case "q4_k": .uniform(.q4_K)
        case "q4_0": .uniform(.q4_0)
        case "iq4_nl": .uniform(.iq4_nl)
        case "q4", "q4_k_m": .moshiQ4KM
        default: nil
        }
    }

    /// A K-quant mix for Moshi in the manner of llama.cpp's Q4_K_M: most of the bytes streamed
    /// per step (the temporal transformer's projections) at Q4_K; at Q6_K the tensors whose
    /// rounding reaches the logits most directly (the text head, the depformer, which turns one
    /// hidden state into eight codebooks, and the FFN-out of the first and last eighth of the layers
    /// and every third between); embeddings (read one row per token, so costing memory, not
    /// bandwidth) at Q8_0.
    public static let moshiQ4KM = QuantizeRecipe(name: "q4_k_m") { spec, table in
        if spec.kind == .embedding { return .q8_0 }
        let n = spec.name
        if n == LMTensorNames.textLinear || n.hasPrefix("depformer") || n.hasPrefix("linears.") { return .q6_K }
        if n.hasPrefix("transformer.layers."), n.hasSuffix("gating.linear_out.weight") {
            let layers = table.specs.filter { $0.name.hasPrefix("transformer.layers.") && $0.name.hasSuffix("gating.linear_out.weight") }.count
            let l = Int(n.split(separator: ".")[2]) ?? 0
            if moreBits(layer: l, of: layers) { return .q6_K }
        }
        return .q4_K
    }

    /// llama.cpp's `use_more_bits` rule: the first and last eighth of the layers, and every third between.
    static func moreBits(layer l: Int, of n: Int) -> Bool {
        l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2
    }
}
