import Foundation

/// Where every Moshi LM tensor lives in Kyutai's checkpoint (`model.safetensors`): the one place
/// that maps the LM's blocks to names (the initialisers take their names from here) and builds
/// the tensor table the loader checks a file against (`table(_:)`).
public enum LMTensorNames {
    public static let textEmb = "text_emb.weight"
    /// Audio stream `s` (0 ..< nQ: Moshi's codebooks, then the user's).
    public static func emb(_ s: Int) -> String { "emb.\(s).weight" }
    public static let transformer = TransformerTensorNames("transformer.")
    public static let outNorm = NormTensorNames("out_norm")
    public static let textLinear = "text_linear.weight"
    public static func depformerIn(_ k: Int) -> String { "depformer_in.\(k).weight" }
    public static let depformerTextEmb = "depformer_text_emb.weight"
    /// The embedding depth step `k + 1` reads (audio codebook k's token).
    public static func depformerEmb(_ k: Int) -> String { "depformer_emb.\(k).weight" }
    public static let depformer = TransformerTensorNames("depformer.")
    /// Logits of depth step `k`.
    public static func linears(_ k: Int) -> String { "linears.\(k).weight" }
    public static func extraHeads(_ i: Int) -> String { "extra_heads.\(i).weight" }

    /// Every tensor of an LM checkpoint for `config`, in load order.
    public static func table(_ c: LMConfig) -> TensorTable {
        let dd = c.depformerDim
        var s = [TensorSpec(textEmb, [c.textCard + 1, c.dim], .embedding, role: "text token embedding (row \(c.textCard) = initial token)")]
        for i in 0..<c.nQ {
            let who = i < c.depQ ? "Moshi's audio codebook \(i)" : "user audio codebook \(i - c.depQ)"
            s.append(TensorSpec(emb(i), [c.card + 1, c.dim], .embedding, role: "\(who) embedding (row \(c.card) = initial token)"))
        }
        s += transformer.specs(c.temporalTransformer, role: "temporal")
        s += outNorm.specs(.rmsNorm(eps: 1e-8), dim: c.dim, role: "temporal output norm")
        s.append(TensorSpec(textLinear, [c.textCardOut, c.dim], .matrix, role: "text head (logits)"))
        for k in 0..<(c.depformerMultiLinear ? c.depQ : 1) {
            let which = c.depformerMultiLinear ? "depth step \(k)" : "every depth step"
            s.append(TensorSpec(depformerIn(k), [dd, c.dim], .matrix, role: "depformer input projection of \(which)"))
        }
        s.append(TensorSpec(depformerTextEmb, [c.textCard + 1, dd], .embedding, role: "depformer text token embedding (depth step 0)"))
        for k in 0..<max(0, c.depQ - 1) {
            s.append(TensorSpec(depformerEmb(k), [c.card + 1, dd], .embedding,
                                role: "depformer embedding of audio codebook \(k) (depth step \(k + 1))"))
        }
        s += depformer.specs(c.depformerTransformer, role: "depformer")
        for k in 0..<c.depQ {
            s.append(TensorSpec(linears(k), [c.card, dd], .matrix, role: "depformer head of audio codebook \(k) (logits)"))
        }
        for i in 0..<c.extraHeadsNumHeads {
            s.append(TensorSpec(extraHeads(i), [c.extraHeadsDim, c.dim], .matrix, role: "extra head \(i) (loaded, unused)"))
        }
        return TensorTable(model: "Moshi LM", specs: s)
    }
}
