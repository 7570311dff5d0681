import Foundation

/// The Moshi LM's hyperparameters, in the vocabulary of Kyutai's `config.json` (the keys
/// `loaders._lm_kwargs` uses). The default is moshiko / moshika 7B (spec §3.1), which is also what
/// Kyutai assumes for a repository without `config.json`.
public struct LMConfig: Sendable, Equatable {
    public var dim = 4096
    /// Text vocabulary; `text_emb` has one more row (the initial token `textCard`).
    public var textCard = 32000
    /// Text head outputs (Kyutai's `text_card_out`, default `textCard`).
    public var textCardOut = 32000
    public var textPaddingId = 3
    public var textEndPaddingId = 0
    /// Audio streams fed to the temporal transformer (Moshi's then the user's).
    public var nQ = 16
    /// Audio codebooks the depformer generates (Moshi's stream).
    public var depQ = 8
    /// Audio vocabulary; embedding tables have `card + 1` rows (the initial token `card`).
    public var card = 2048
    public var numHeads = 32
    public var numLayers = 32
    public var hiddenScale = 4.125
    /// Attention window of the temporal transformer in steps (its KV ring's capacity).
    public var context = 3000
    public var maxPeriod: Float = 10000
    public var depformerDim = 1024
    public var depformerDimFeedforward = 4224
    public var depformerNumHeads = 16
    public var depformerNumLayers = 6
    /// One `depformer_in` linear per depth step (else one shared).
    public var depformerMultiLinear = true
    /// Per stream: text, Moshi's `depQ` codebooks, the user's `nQ − depQ`.
    public var delays = [0] + ([0] + [Int](repeating: 1, count: 7)) + ([0] + [Int](repeating: 1, count: 7))
    /// Softmax heads on the temporal output (STT's voice activity); loaded, not used by LMGen.
    public var extraHeadsNumHeads = 0
    public var extraHeadsDim = 6

    // Names of the other files in a model folder (config.json may override them).
    public var moshiName = "model.safetensors"
    public var mimiName = "tokenizer-e351c8d8-checkpoint125.safetensors"
    public var tokenizerName = "tokenizer_spm_32k_3.model"
    /// Sampling defaults a repository ships (`lm_gen_config`: temp, temp_text, top_k, top_k_text).
    public var lmGenConfig: [String: Double] = [:]
    /// config.json said `lora: true` (its weights may still be merged; the file decides).
    public var loraDeclared = false
    /// Keys of config.json this implementation does not interpret (reported, not fatal).
    public var ignoredKeys: [String] = []

    public init() {}

    /// moshiko / moshika 7B (2024-09).
    public static let moshi7B = LMConfig()

    /// The 7B as Kyutai's Rust server runs its candle files (`kyutai/moshiko-candle-q8`,
    /// `-candle-bf16`), which carry no config.json and are their own training run: the same
    /// architecture (`rust/moshi-core/src/lm.rs` `Config::v0_1_streaming(8)`), but an acoustic
    /// delay of 2 frames, not 1 (`lm_generate_multistream.rs` `Config::v0_1`, `acoustic_delay: 2`,
    /// which the backend uses since its configs name no `lm_config`).
    public static let moshi7BCandle: LMConfig = {
        var c = LMConfig()
        c.delays = [0] + ([0] + [Int](repeating: 2, count: 7)) + ([0] + [Int](repeating: 2, count: 7))
        return c
    }()

    // MARK: derived sizes

    /// Streams in the delay ring: text + all audio.
    public var numStreams: Int { 1 + nQ }
    /// User audio streams (the ones a caller supplies each step).
    public var userStreams: Int { nQ - depQ }
    public var maxDelay: Int { delays.max() ?? 0 }
    public var textInitialToken: Int { textCard }
    public var audioInitialToken: Int { card }
    public var headDim: Int { dim / numHeads }
    /// Gated FFN hidden size of the temporal transformer (Kyutai's rule on `hidden_scale · dim`).
    public var hidden: Int { TransformerConfig.gatedHidden(dim: dim, dimFeedforward: Int(hiddenScale * Double(dim))) }
    public var depformerHidden: Int {
        TransformerConfig.gatedHidden(dim: depformerDim, dimFeedforward: depformerDimFeedforward)
    }

    public var temporalTransformer: TransformerConfig {
        TransformerConfig(dim: dim, numHeads: numHeads, numLayers: numLayers, feedForward: .siluGated(hidden: hidden),
                          norm: .rmsNorm(eps: 1e-8), layerScale: false, context: context, ropeMaxPeriod: maxPeriod)
    }

    /// No positional embedding, no context (the ring holds the `depQ` depth steps of one frame),
    /// one weight set per depth step.
    public var depformerTransformer: TransformerConfig {
        TransformerConfig(dim: depformerDim, numHeads: depformerNumHeads, numLayers: depformerNumLayers,
                          feedForward: .siluGated(hidden: depformerHidden), norm: .rmsNorm(eps: 1e-8),
                          layerScale: false, context: nil, ropeMaxPeriod: nil, weightsPerStep: depQ)
    }

    /// Parameters (weights) of the model this config describes.
    public var parameterCount: Int {
        let temporalLayer = 4 * dim * dim + 2 * hidden * dim + dim * hidden + 2 * dim
        let depLayer = depQ * (4 * depformerDim * depformerDim + 3 * depformerHidden * depformerDim) + 2 * depformerDim
        let depformer = depQ == 0 ? 0 :
            (depformerMultiLinear ? depQ : 1) * depformerDim * dim + (textCard + 1) * depformerDim
            + (depQ - 1) * (card + 1) * depformerDim + depformerNumLayers * depLayer + depQ * card * depformerDim
        return (textCard + 1) * dim + nQ * (card + 1) * dim + numLayers * temporalLayer + dim + textCardOut * dim
            + depformer + extraHeadsNumHeads * extraHeadsDim * dim
    }

    /// Weight values one step reads: every matrix except the embedding tables (one row each).
    public var weightsStreamedPerStep: Int {
        let temporal = numLayers * (4 * dim * dim + 3 * hidden * dim) + textCardOut * dim
        let depformer = depQ * (depformerDim * dim + card * depformerDim)
            + depQ * depformerNumLayers * (4 * depformerDim * depformerDim + 3 * depformerHidden * depformerDim)
        return temporal + depformer
    }

    // MARK: validation

    /// Checks the numbers hang together; throws naming the first key that does not.
    public func validate() throws {
        func fail(_ key: String, _ why: String) -> LMConfigError { LMConfigError(key: key, message: why) }
        for (key, value) in [("dim", dim), ("text_card", textCard), ("n_q", nQ), ("card", card), ("num_heads", numHeads),
                             ("num_layers", numLayers), ("context", context), ("text_card_out", textCardOut)] where value <= 0 {
            throw fail(key, "must be positive, got \(value)")
        }
        guard dim % numHeads == 0 else { throw fail("num_heads", "dim \(dim) is not divisible by \(numHeads) heads") }
        guard headDim % 2 == 0 else { throw fail("num_heads", "head dimension \(headDim) must be even for RoPE") }
        guard depQ >= 1 && depQ <= nQ else {
            throw fail("dep_q", "\(depQ) not supported: this engine needs a depformer (1 ≤ dep_q ≤ n_q = \(nQ))")
        }
        guard depQ < nQ else {
            // PersonaPlex's layout: its 16 depformer steps generate the user's codebooks too, and
            // its prompt phase is what drives them; run as Moshi it would hear nothing.
            throw fail("dep_q", "\(depQ) = n_q: every stream is generated (PersonaPlex's layout), so no user audio would reach "
                + "the model; duplex has no PersonaPlex mode yet and refuses rather than run it with zero user streams")
        }
        guard delays.count == 1 + nQ else {
            throw fail("delays", "has \(delays.count) entries, expected 1 + n_q = \(1 + nQ)")
        }
        if let bad = delays.first(where: { $0 < 0 }) { throw fail("delays", "negative delay \(bad)") }
        guard hiddenScale > 0 else { throw fail("hidden_scale", "must be positive, got \(hiddenScale)") }
        guard maxPeriod > 0 else { throw fail("max_period", "must be positive, got \(maxPeriod)") }
        guard depformerDim > 0, depformerNumHeads > 0, depformerDim % depformerNumHeads == 0 else {
            throw fail("depformer_num_heads", "depformer_dim \(depformerDim) is not divisible by \(depformerNumHeads) heads")
        }
        guard depformerNumLayers > 0 else { throw fail("depformer_num_layers", "must be positive") }
        guard depformerDimFeedforward > 0 else { throw fail("depformer_dim_feedforward", "must be positive") }
        guard (0..<textCard).contains(textPaddingId) else {
            throw fail("existing_text_padding_id", "\(textPaddingId) is not a text token (0..<\(textCard))")
        }
    }
}

/// A config.json value this implementation cannot use, naming the key.
public struct LMConfigError: Error, CustomStringConvertible, Sendable {
    public let key: String
    public let message: String
    public var source = "config.json"
    public var description: String { "\(source): \(key): \(message)" }
}
