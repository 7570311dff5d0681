import Foundation

/// The Moshi LM's hyperparameters, in the vocabulary of Kyutai's `config.json` (the keys
/// `loaders._lm_kwargs` uses). The default is moshiko / moshika 7B (spec §3.1), which is also what
/// Kyutai assumes for a repository without `config.json`.
public struct LMConfig: Sendable, Equatable {
    /// Which member of the family the checkpoint is (config.json `model_type`): it decides how
    /// the streams are driven, not the tensors' shapes.
    public var kind = LMKind.moshi
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
    /// `depformer_weights_per_step_schedule` (Hibiki 2B): depth step k uses weight set
    /// schedule[k] of the depformer's layers and `depformer_in`; nil = a set per step.
    public var depformerWeightsSchedule: [Int]?
    /// Depformer weight sets stored (`depformer_in` projections, per-layer sets).
    public var depformerWeightSets: Int { depformerWeightsSchedule.map { ($0.max() ?? 0) + 1 } ?? depQ }
    /// The weight set depth step k uses.
    public func depformerWeightSet(step k: Int) -> Int { depformerWeightsSchedule?[k] ?? k }
    /// Per stream: text, Moshi's `depQ` codebooks, the user's `nQ − depQ`.
    public var delays = [0] + ([0] + [Int](repeating: 1, count: 7)) + ([0] + [Int](repeating: 1, count: 7))
    /// Softmax heads on the temporal output (STT's semantic voice activity), computed each step.
    public var extraHeadsNumHeads = 0
    public var extraHeadsDim = 6

    // Names of the other files in a model folder (config.json may override them).
    public var moshiName = "model.safetensors"
    public var mimiName = "tokenizer-e351c8d8-checkpoint125.safetensors"
    public var tokenizerName = "tokenizer_spm_32k_3.model"
    /// Sampling defaults a repository ships (`lm_gen_config`: temp, temp_text, top_k, top_k_text).
    public var lmGenConfig: [String: Double] = [:]
    /// STT (`stt_config`): seconds of silence fed before the audio, and how far the text lags the
    /// audio (that much silence, plus one second, is fed after it so the last words come out).
    public var sttSilencePrefixSeconds = 0.0
    public var sttAudioDelaySeconds = 0.0
    /// Hibiki's constant conditioning (`conditioners` with a `fuser.sum` LUT); nil for the others.
    public var conditioning: LUTConditioning?
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

    /// NVIDIA's PersonaPlex 7B (`nvidia/personaplex-7b-v1`), which NVIDIA's loader builds without
    /// reading any config.json: moshiko's architecture with 16 depformer steps (the last 8 predict
    /// the user's codebooks, which the real input overwrites).
    public static let personaplex7B: LMConfig = {
        var c = LMConfig()
        c.kind = .personaplex
        c.depQ = 16
        return c
    }()

    // MARK: derived sizes

    /// Streams in the delay ring: text + all audio.
    public var numStreams: Int { 1 + nQ }
    /// Audio codebooks the engine generates each frame (Moshi's voice): dep_q, except PersonaPlex,
    /// whose depformer also predicts the user's half, which is never used.
    public var generatedStreams: Int { kind == .personaplex ? nQ / 2 : depQ }
    /// User audio streams (the ones a caller supplies each step).
    public var userStreams: Int { nQ - generatedStreams }
    /// A model that only listens (STT): text out, no voice.
    public var speaks: Bool { generatedStreams > 0 }
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
                          norm: .rmsNorm(eps: 1e-8), layerScale: false, context: attentionWindow, ropeMaxPeriod: maxPeriod)
    }

    /// Steps the temporal attention sees. NVIDIA's PersonaPlex code (a Sept 2024 fork of moshi)
    /// sees one fewer than `context` once its KV ring is full: its `RingKVCache.complete` gives the
    /// oldest slot of a full ring the position `end_offset` (`delta <= 0`), which the causal mask
    /// then hides. duplex runs PersonaPlex with that window, so it answers as NVIDIA's code does.
    public var attentionWindow: Int { kind == .personaplex ? context - 1 : context }

    /// No positional embedding, no context (the ring holds the `depQ` depth steps of one frame),
    /// one weight set per depth step.
    public var depformerTransformer: TransformerConfig {
        var c = TransformerConfig(dim: depformerDim, numHeads: depformerNumHeads, numLayers: depformerNumLayers,
                                  feedForward: .siluGated(hidden: depformerHidden), norm: .rmsNorm(eps: 1e-8),
                                  layerScale: false, context: nil, ropeMaxPeriod: nil, weightsPerStep: depQ)
        c.weightSchedule = depformerWeightsSchedule
        return c
    }

    /// Parameters (weights) of the model this config describes.
    public var parameterCount: Int {
        let temporalLayer = 4 * dim * dim + 2 * hidden * dim + dim * hidden + 2 * dim
        let depLayer = depformerWeightSets * (4 * depformerDim * depformerDim + 3 * depformerHidden * depformerDim) + 2 * depformerDim
        let conditioner = conditioning.map { ($0.bins + 1) * $0.dim + dim * $0.dim + dim } ?? 0
        let depformer = depQ == 0 ? 0 :
            (depformerMultiLinear ? depformerWeightSets : 1) * depformerDim * dim + (textCard + 1) * depformerDim
            + (depQ - 1) * (card + 1) * depformerDim + depformerNumLayers * depLayer + depQ * card * depformerDim
        return (textCard + 1) * dim + nQ * (card + 1) * dim + numLayers * temporalLayer + dim + textCardOut * dim
            + depformer + extraHeadsNumHeads * extraHeadsDim * dim + conditioner
    }

    /// Weight values one step reads: every matrix except the embedding tables (one row each).
    public var weightsStreamedPerStep: Int {
        let temporal = numLayers * (4 * dim * dim + 3 * hidden * dim) + textCardOut * dim
        let steps = generatedStreams
        let depformer = steps * (depformerDim * dim + card * depformerDim)
            + steps * depformerNumLayers * (4 * depformerDim * depformerDim + 3 * depformerHidden * depformerDim)
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
        guard depQ >= 0 && depQ <= nQ else {
            throw fail("dep_q", "\(depQ) not supported (0 ≤ dep_q ≤ n_q = \(nQ))")
        }
        switch kind {
        case .stt:
            guard depQ == 0 else { throw fail("dep_q", "\(depQ): a speech-to-text model (model_type \"stt\") has no depformer (dep_q 0)") }
        case .personaplex:
            guard depQ == nQ, nQ % 2 == 0 else {
                throw fail("dep_q", "\(depQ) with n_q \(nQ): PersonaPlex's depformer predicts every stream (dep_q = n_q, even)")
            }
        case .moshi, .hibiki:
            guard depQ >= 1 else {
                throw fail("dep_q", "0: a model without a depformer only transcribes; say model_type \"stt\" (Kyutai STT)")
            }
            guard depQ < nQ else {
                // PersonaPlex's layout: its 16 depformer steps generate the user's codebooks too;
                // run as Moshi it would hear nothing.
                throw fail("dep_q", "\(depQ) = n_q: every stream is generated (PersonaPlex's layout), so no user audio would reach "
                    + "the model; refused rather than run with zero user streams (for PersonaPlex say model_type \"personaplex\")")
            }
        }
        if kind == .hibiki, conditioning == nil {
            throw fail("conditioners", "missing: Hibiki is conditioned on a `description` LUT (conditioners + fuser.sum)")
        }
        if let conditioning {
            guard conditioning.bins >= conditioning.values.count, conditioning.dim > 0, conditioning.bins > 0 else {
                throw fail("conditioners", "\(conditioning.name): n_bins \(conditioning.bins) must hold its \(conditioning.values.count) values")
            }
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
        if let schedule = depformerWeightsSchedule {
            guard schedule.count == depQ else {
                throw fail("depformer_weights_per_step_schedule", "has \(schedule.count) entries, expected dep_q = \(depQ)")
            }
            if let bad = schedule.first(where: { $0 < 0 || $0 >= depQ }) {
                throw fail("depformer_weights_per_step_schedule", "weight set \(bad) is outside 0..<dep_q")
            }
            let sets = Set(schedule)
            guard sets == Set(0..<sets.count) else {
                throw fail("depformer_weights_per_step_schedule", "\(schedule) leaves weight sets unused (expected every set 0…\(sets.count - 1))")
            }
        }
        guard (0..<textCard).contains(textPaddingId) else {
            throw fail("existing_text_padding_id", "\(textPaddingId) is not a text token (0..<\(textCard))")
        }
    }
}

/// The members of the Kyutai family the engine drives (config.json `model_type`).
public enum LMKind: String, Sendable, Equatable, CaseIterable {
    /// Full-duplex conversation (moshiko, moshika, fine-tunes).
    case moshi
    /// Kyutai STT: the temporal transformer and a text head only (dep_q 0), all codebooks the user's.
    case stt
    /// Kyutai's live speech translation: Moshi's streams plus a constant LUT conditioning.
    case hibiki
    /// NVIDIA's persona Moshi: a voice and a role prompt replayed before the conversation.
    case personaplex
}

/// A lookup-table conditioner summed into every step's input (Kyutai's `LUTConditioner` under
/// `fuser.sum`): `output_proj(embed[index of value])`, one `dim` vector per possible value.
public struct LUTConditioning: Sendable, Equatable {
    /// The condition's name (`description` for Hibiki): its tensors live under
    /// `condition_provider.conditioners.{name}.`.
    public var name: String
    public var bins: Int
    public var dim: Int
    /// The LUT's `possible_values` (row i = value i); empty when the config lists none, and then
    /// a value's row is Kyutai's hash trick, sha256(value) mod n_bins (`NoopTokenizer`).
    public var values: [String]
    /// The value a generation is conditioned on, and the one classifier-free guidance pushes away
    /// from (Kyutai's run_inference: "very_good" and "very_bad").
    public var conditioned = "very_good"
    public var unconditioned = "very_bad"

    public init(name: String, bins: Int, dim: Int, values: [String]) {
        self.name = name
        self.bins = bins
        self.dim = dim
        self.values = values
    }

    /// The values a generation can be conditioned on: the listed ones, else the two Kyutai's
    /// inference uses.
    public var usableValues: [String] { values.isEmpty ? [conditioned, unconditioned] : values }

    /// The embedding row of `value` (nil when a listed LUT does not list it).
    public func row(of value: String) -> Int? {
        if !values.isEmpty { return values.firstIndex(of: value) }
        // Python's int(hexdigest, 16) % n_bins, one hex digit at a time.
        var remainder = 0
        for digit in FileHash.sha256(of: Array(value.utf8)) { remainder = (remainder * 16 + (digit.hexDigitValue ?? 0)) % bins }
        return remainder
    }
}

/// A config.json value this implementation cannot use, naming the key.
public struct LMConfigError: Error, CustomStringConvertible, Sendable {
    public let key: String
    public let message: String
    public var source = "config.json"
    public var description: String { "\(source): \(key): \(message)" }
}
