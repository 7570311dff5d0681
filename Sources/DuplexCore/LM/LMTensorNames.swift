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
    /// Hibiki's LUT conditioner (kept f32 by Kyutai's loader): `embed` [n_bins + 1, lut dim],
    /// `output_proj` [dim, lut dim], `learnt_padding` [1, 1, dim] (used only for a missing value).
    public static func conditioner(_ name: String) -> (embed: String, outputProj: String, learntPadding: String) {
        let p = "condition_provider.conditioners.\(name)."
        return (p + "embed.weight", p + "output_proj.weight", p + "learnt_padding")
    }

    /// Every tensor of an LM checkpoint for `config`, in load order.
    public static func table(_ c: LMConfig) -> TensorTable {
        var s = [TensorSpec(textEmb, [c.textCard + 1, c.dim], .embedding, role: "text token embedding (row \(c.textCard) = initial token)")]
        for i in 0..<c.nQ {
            let who = i < c.generatedStreams ? "Moshi's audio codebook \(i)" : "user audio codebook \(i - c.generatedStreams)"
            s.append(TensorSpec(emb(i), [c.card + 1, c.dim], .embedding, role: "\(who) embedding (row \(c.card) = initial token)"))
        }
        s += transformer.specs(c.temporalTransformer, role: "temporal")
        s += outNorm.specs(.rmsNorm(eps: 1e-8), dim: c.dim, role: "temporal output norm")
        s.append(TensorSpec(textLinear, [c.textCardOut, c.dim], .matrix, role: "text head (logits)"))
        if c.depQ > 0 { s += depformerSpecs(c) }
        for i in 0..<c.extraHeadsNumHeads {
            s.append(TensorSpec(extraHeads(i), [c.extraHeadsDim, c.dim], .matrix, role: "extra head \(i) (semantic voice activity)"))
        }
        if let lut = c.conditioning {
            let n = conditioner(lut.name)
            s.append(TensorSpec(n.embed, [lut.bins + 1, lut.dim], .embedding, role: "\(lut.name) conditioner table (row \(lut.bins) = padding)"))
            s.append(TensorSpec(n.outputProj, [c.dim, lut.dim], .matrix, role: "\(lut.name) conditioner projection"))
            s.append(TensorSpec(n.learntPadding, [1, 1, c.dim], .bias, role: "\(lut.name) conditioner padding (unused: the value is always given)"))
        }
        return TensorTable(model: "Moshi LM", specs: s)
    }

    private static func depformerSpecs(_ c: LMConfig) -> [TensorSpec] {
        let dd = c.depformerDim
        var s: [TensorSpec] = []
        for k in 0..<(c.depformerMultiLinear ? c.depformerWeightSets : 1) {
            let which = !c.depformerMultiLinear ? "every depth step"
                : c.depformerWeightsSchedule == nil ? "depth step \(k)" : "weight set \(k) (the schedule's depth steps)"
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
        return s
    }

    // MARK: other layouts of the same tensors

    /// Which layout a file's tensor names are in: candle's (`depformer.0.linear_in.weight`),
    /// MLX's (`depformer.slices.0.linear_in.…`), PyTorch's module form
    /// (`self_attn.in_projs.0.weight`), else Kyutai's released (legacy) names.
    public static func layout(ofNames names: some Sequence<String>, config c: LMConfig) -> TensorLayout {
        var moduleForm = false
        for n in names {
            if n.hasPrefix("depformer.slices.") || n.hasPrefix("audio_embs.") { return mlxLayout(c) }
            if n.hasPrefix("depformer.0.") { return candleLayout(c) }
            if n.contains(".self_attn.in_projs.") || n.contains(".self_attn.out_projs.") { moduleForm = true }
        }
        return moduleForm ? moduleFormLayout(c) : .kyutai
    }

    /// What `LMModel.state_dict()` saves in moshi 0.2.13 (moshi-finetune outputs, anything saved
    /// since 2025): the attention projections under their module names, one per weight set —
    /// `self_attn.in_projs.{s}.weight` [3·dim, dim] and `out_projs.{s}.weight` [dim, dim], s < 1
    /// for the temporal transformer and < dep_q for the depformer — which Kyutai's load hook
    /// also accepts; every other name is the released files' own.
    public static func moduleFormLayout(_ c: LMConfig) -> TensorLayout {
        TensorLayout(name: "PyTorch module-form") { spec in
            let n = spec.name
            let sets = n.hasPrefix("depformer.") ? c.depQ : 1
            for (legacy, module) in [("self_attn.in_proj_weight", "self_attn.in_projs."), ("self_attn.out_proj.weight", "self_attn.out_projs.")]
            where n.hasSuffix(legacy) {
                let prefix = String(n.dropLast(legacy.count)) + module
                return .stacked((0..<sets).map { prefix + "\($0).weight" })
            }
            return .one(n)
        }
    }

    /// Kyutai's Rust/candle files (`kyutai/moshiko-candle-q8` `model.q8.gguf`, `-candle-bf16`,
    /// written by Kyutai's `scripts/import_rust.py`): PyTorch's temporal names, the depformer
    /// pre-split per depth step under `depformer.{k}.` — its input projection, head and
    /// embedding renamed, each layer's stacked projections stored per step, and the shared norms
    /// copied into every step.
    public static func candleLayout(_ c: LMConfig) -> TensorLayout {
        TensorLayout(name: "candle") { spec in perStepSource(spec.name, steps: c.depQ) { "depformer.\($0)." } }
    }

    /// Kyutai's MLX files (`kyutai/moshiko-mlx-q4` / `-q8`, written by moshi_mlx): the same split
    /// under `depformer.slices.{k}.`, MLX's module names (`audio_embs.{i}`, `self_attn.in_proj`,
    /// norms' `weight` instead of `alpha`); quantized layers keep `weight` (U32 codes), `scales`
    /// and `biases` beside each other (gathered by the store into one quantized tensor).
    public static func mlxLayout(_ c: LMConfig) -> TensorLayout {
        TensorLayout(name: "MLX") { spec in
            let source = perStepSource(spec.name, steps: c.depQ) { "depformer.slices.\($0)." }
            func mlxName(_ n: String) -> String {
                var n = n
                if n.hasSuffix(".in_proj_weight") { n = String(n.dropLast("_weight".count)) + ".weight" }
                if n.hasSuffix(".alpha") { n = String(n.dropLast("alpha".count)) + "weight" }
                if n.hasPrefix("emb.") { n = "audio_embs." + n.dropFirst("emb.".count) }
                return n
            }
            switch source {
            case .one(let n): return .one(mlxName(n))
            case .stacked(let ns): return .stacked(ns.map(mlxName))
            case .shared(let ns): return .shared(ns.map(mlxName))
            }
        }
    }

    /// The candle/MLX source of a Kyutai name, with `slice(k)` the prefix of depth step k.
    private static func perStepSource(_ name: String, steps: Int, slice: (Int) -> String) -> TensorLayout.Source {
        let parts = name.split(separator: ".").map(String.init)
        func int(_ i: Int) -> Int? { i < parts.count ? Int(parts[i]) : nil }
        // depformer_in.{k}.weight, linears.{k}.weight, depformer_emb.{k}.weight, depformer_text_emb.weight
        if parts.first == "depformer_in", let k = int(1) { return .one(slice(k) + "linear_in.weight") }
        if parts.first == "linears", let k = int(1) { return .one(slice(k) + "linear_out.weight") }
        if parts.first == "depformer_text_emb" { return .one(slice(0) + "emb.weight") }
        if parts.first == "depformer_emb", let k = int(1) { return .one(slice(k + 1) + "emb.weight") }
        // depformer.layers.{l}.…
        guard parts.count > 3, parts[0] == "depformer", parts[1] == "layers", let l = int(2) else { return .one(name) }
        let rest = parts[3...]
        func layer(_ k: Int) -> String { slice(k) + "transformer.layers.\(l)." }
        if rest.first == "gating", let k = Int(parts[4]) {
            return .one(layer(k) + "gating." + parts[5...].joined(separator: "."))
        }
        let leaf = rest.joined(separator: ".")
        if rest.first == "self_attn" { return .stacked((0..<steps).map { layer($0) + leaf }) }
        return .shared((0..<steps).map { layer($0) + leaf })
    }
}
