import Foundation

/// Decoding Kyutai's `config.json` (the format of the later HF repos: LMModel keyword arguments
/// plus the file names and `lm_gen_config` that `CheckpointInfo.from_hf_repo` pops off first).
extension LMConfig {
    /// Keys that only name files or configure other components; accepted and kept where useful.
    private static let repoKeys: Set<String> = [
        "moshi_name", "mimi_name", "tokenizer_name", "mimi_config_name", "lora_name", "model_type",
        "lm_gen_config", "tts_config", "stt_config", "model_id",
    ]

    /// Keys whose value is irrelevant here, or fixed by the architecture and checked below.
    private static let architectureKeys: Set<String> = [
        "dim", "text_card", "text_card_out", "existing_text_padding_id", "existing_text_end_padding_id", "n_q", "dep_q",
        "card", "num_heads", "num_layers", "hidden_scale", "causal", "layer_scale", "context", "max_period", "gating",
        "norm", "positional_embedding", "depformer_dim", "depformer_dim_feedforward", "depformer_num_heads",
        "depformer_num_layers", "depformer_layer_scale", "depformer_multi_linear", "depformer_context",
        "depformer_max_period", "depformer_gating", "depformer_pos_emb", "depformer_weights_per_step", "delays",
        "depformer_norm", "depformer_weights_per_step_schedule", "depformer_low_rank_embeddings", "kv_repeat",
        "bias_proj", "bias_ff", "bias_attn", "norm_emb", "demux_second_text_stream", "extra_heads_num_heads",
        "extra_heads_dim", "cross_attention", "conditioners", "fuser", "lora", "lora_rank", "lora_scaling",
        "quantize", "dim_feedforward", "same_initial", "depformer_causal", "gradient_checkpointing",
    ]

    /// Decodes `config.json` bytes. Keys it does not set keep the 7B values (Kyutai's repos spell
    /// out every size key, so this only matters for hand-written files). Throws `LMConfigError`
    /// naming the key that is wrong or asks for a feature this engine does not implement.
    public init(kyutaiConfigJSON data: Data, source: String = "config.json") throws {
        self.init()
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw LMConfigError(key: "(file)", message: "not valid JSON: \(error.localizedDescription)", source: source)
        }
        guard let json = object as? [String: Any] else {
            throw LMConfigError(key: "(file)", message: "expected a JSON object at the top level", source: source)
        }
        var reader = Reader(json: json, source: source)
        dim = try reader.int("dim") ?? dim
        textCard = try reader.int("text_card") ?? textCard
        textCardOut = try reader.int("text_card_out") ?? textCard
        textPaddingId = try reader.int("existing_text_padding_id") ?? textPaddingId
        textEndPaddingId = try reader.int("existing_text_end_padding_id") ?? textEndPaddingId
        nQ = try reader.int("n_q") ?? nQ
        depQ = try reader.int("dep_q") ?? depQ
        card = try reader.int("card") ?? card
        numHeads = try reader.int("num_heads") ?? numHeads
        numLayers = try reader.int("num_layers") ?? numLayers
        hiddenScale = try reader.double("hidden_scale") ?? hiddenScale
        context = try reader.int("context") ?? context
        maxPeriod = Float(try reader.double("max_period") ?? Double(maxPeriod))
        depformerDim = try reader.int("depformer_dim") ?? depformerDim
        depformerDimFeedforward = try reader.int("depformer_dim_feedforward") ?? Int(hiddenScale * Double(depformerDim))
        depformerNumHeads = try reader.int("depformer_num_heads") ?? depformerNumHeads
        depformerNumLayers = try reader.int("depformer_num_layers") ?? depformerNumLayers
        depformerMultiLinear = try reader.bool("depformer_multi_linear") ?? depformerMultiLinear
        delays = try reader.intArray("delays") ?? delays
        extraHeadsNumHeads = try reader.int("extra_heads_num_heads") ?? extraHeadsNumHeads
        extraHeadsDim = try reader.int("extra_heads_dim") ?? extraHeadsDim
        moshiName = try reader.string("moshi_name") ?? moshiName
        mimiName = try reader.string("mimi_name") ?? mimiName
        tokenizerName = try reader.string("tokenizer_name") ?? tokenizerName
        if let gen = json["lm_gen_config"] {
            guard let gen = gen as? [String: Any] else {
                throw LMConfigError(key: "lm_gen_config", message: "expected an object", source: source)
            }
            for (k, v) in gen {
                if let n = v as? NSNumber, !isJSONBool(n) { lmGenConfig[k] = n.doubleValue }
            }
        }

        // Architecture switches this engine implements in one position only.
        try reader.expect("causal", equals: true, why: "only causal models stream")
        try reader.expectNull("layer_scale", why: "Moshi's temporal transformer has no layer scale")
        try reader.expectNull("depformer_layer_scale", why: "the depformer has no layer scale")
        try reader.expect("gating", oneOf: ["silu"], why: "SiLU gating is implemented")
        try reader.expect("depformer_gating", oneOf: ["silu"], why: "SiLU gating is implemented")
        try reader.expect("norm", oneOf: ["rms_norm_f32", "rms_norm"], why: "RMSNorm is implemented")
        try reader.expect("positional_embedding", oneOf: ["rope"], why: "RoPE is implemented")
        try reader.expect("depformer_pos_emb", oneOf: ["none"], why: "the depformer has no positional embedding")
        try reader.expect("depformer_weights_per_step", equals: true,
                          why: "the depformer needs per-step weights (Kyutai cannot stream it otherwise either)")
        depformerWeightsSchedule = try reader.intArray("depformer_weights_per_step_schedule")
        try reader.expectNull("depformer_low_rank_embeddings", why: "low-rank depformer embeddings are not implemented")
        try reader.expectNull("depformer_norm", why: "depformer output norms are not implemented")
        try reader.expect("kv_repeat", equals: 1, why: "grouped-query attention is not implemented")
        try reader.expect("bias_proj", equals: false, why: "output-projection biases are not implemented")
        try reader.expect("norm_emb", equals: false, why: "embedding norms are not implemented")
        try reader.expect("demux_second_text_stream", equals: false, why: "a second text stream is not implemented")
        try reader.expect("cross_attention", equals: false, why: "cross-attention is not implemented")
        // moshi-finetune writes `lora: true` even beside merged weights: whether LoRA tensors are
        // really there is judged from the file at load (`LMModel.refuseForeignFormats`).
        loraDeclared = try reader.bool("lora") ?? false
        if let name = try reader.string("lora_name"), !name.isEmpty {
            throw LMConfigError(key: "lora_name", message: "names LoRA weights to apply on top (\(name)); applying adapters at load is "
                + "not implemented: merge them into the model first (moshi's replace_lora_with_linear)", source: source)
        }
        try reader.expect("quantize", equals: false, why: "bitsandbytes int8 checkpoints are not supported")
        if let type = try reader.string("model_type") {
            guard let parsed = LMKind(rawValue: type) else {
                let known = LMKind.allCases.map { "\"" + $0.rawValue + "\"" }.joined(separator: ", ")
                throw LMConfigError(key: "model_type", message: "\"\(type)\" is not supported (\(known)): TTS's cross-attention "
                    + "and script state machine are another product", source: source)
            }
            kind = parsed
        }
        if let stt = json["stt_config"], !(stt is NSNull) {
            guard let stt = stt as? [String: Any] else {
                throw LMConfigError(key: "stt_config", message: "expected an object", source: source)
            }
            let sttReader = Reader(json: stt, source: source + " stt_config")
            sttAudioDelaySeconds = try sttReader.double("audio_delay_seconds") ?? 0
            sttSilencePrefixSeconds = try sttReader.double("audio_silence_prefix_seconds") ?? 0
            guard sttAudioDelaySeconds >= 0, sttSilencePrefixSeconds >= 0, sttAudioDelaySeconds < 60, sttSilencePrefixSeconds < 60 else {
                throw LMConfigError(key: "stt_config", message: "audio_delay_seconds and audio_silence_prefix_seconds must be in 0…60 s",
                                    source: source)
            }
        }
        conditioning = try Self.conditioning(json, source: source)
        ignoredKeys = json.keys.filter { !Self.repoKeys.contains($0) && !Self.architectureKeys.contains($0) }.sorted()
        do { try validate() } catch var error as LMConfigError {
            error.source = source
            throw error
        }
    }

    /// The one conditioning this engine implements: a single LUT conditioner summed into the input
    /// (Hibiki's `description`). Cross-attention, tensor conditioners, prepending: refused by key.
    private static func conditioning(_ json: [String: Any], source: String) throws -> LUTConditioning? {
        func fail(_ key: String, _ message: String) -> LMConfigError { LMConfigError(key: key, message: message, source: source) }
        let conditioners = json["conditioners"] as? [String: Any] ?? [:]
        if let raw = json["conditioners"], !(raw is NSNull), !(raw is [String: Any]) { throw fail("conditioners", "expected an object") }
        let fuser = json["fuser"] as? [String: Any] ?? [:]
        if let raw = json["fuser"], !(raw is NSNull), !(raw is [String: Any]) { throw fail("fuser", "expected an object") }
        if conditioners.isEmpty {
            if fuser.values.contains(where: { ($0 as? [Any])?.isEmpty == false }) {
                throw fail("fuser", "fuses conditions but config.json declares no conditioners")
            }
            return nil
        }
        for method in ["cross", "prepend"] {
            if let names = fuser[method] as? [Any], !names.isEmpty {
                throw fail("fuser", "\(method): \(names) is not supported: only conditions summed into the input (fuser.sum, Hibiki's) are; "
                    + "cross-attention conditioning is TTS's")
            }
        }
        guard conditioners.count == 1, let (name, rawSpec) = conditioners.first else {
            throw fail("conditioners", "\(conditioners.keys.sorted()): only one LUT conditioner (Hibiki's description) is supported")
        }
        guard let sum = fuser["sum"] as? [String], sum == [name] else {
            throw fail("fuser", "sum must be [\"\(name)\"] (the conditioner is summed into the input), got \(fuser["sum"] ?? "nothing")")
        }
        guard let spec = rawSpec as? [String: Any], let type = spec["type"] as? String else {
            throw fail("conditioners", "\(name): expected {\"type\": …, …}")
        }
        guard type == "lut", let lut = spec["lut"] as? [String: Any] else {
            throw fail("conditioners", "\(name): type \"\(type)\" is not supported (only \"lut\", Hibiki's)")
        }
        let reader = Reader(json: lut, source: source + " conditioners.\(name).lut")
        guard let bins = try reader.int("n_bins"), let dim = try reader.int("dim") else {
            throw fail("conditioners", "\(name).lut needs n_bins and dim")
        }
        if let tokenizer = try reader.string("tokenizer"), tokenizer != "noop" {
            throw fail("conditioners", "\(name).lut.tokenizer \"\(tokenizer)\" is not supported (only \"noop\")")
        }
        // Without possible_values a value's row is its hash (Kyutai's NoopTokenizer): configs/moshi_dev_2b.json.
        let values: [String]
        if let raw = lut["possible_values"], !(raw is NSNull) {
            guard let listed = raw as? [String], !listed.isEmpty else {
                throw fail("conditioners", "\(name).lut.possible_values: expected a non-empty list of strings")
            }
            values = listed
        } else {
            values = []
        }
        let c = LUTConditioning(name: name, bins: bins, dim: dim, values: values)
        for v in [c.conditioned, c.unconditioned] where !values.isEmpty && !values.contains(v) {
            throw fail("conditioners", "\(name).lut.possible_values lacks \"\(v)\", which Kyutai's inference conditions on")
        }
        return c
    }

    /// Reads `path` (a config.json file).
    public init(kyutaiConfigPath path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LMConfigError(key: "(file)", message: "cannot read", source: path)
        }
        try self.init(kyutaiConfigJSON: data, source: path)
    }
}

/// Typed access to a config object, each failure naming the key and what was found.
private struct Reader {
    let json: [String: Any]
    let source: String

    private func error(_ key: String, _ message: String) -> LMConfigError {
        LMConfigError(key: key, message: message, source: source)
    }

    private func isBool(_ value: Any) -> Bool {
        guard let n = value as? NSNumber else { return false }
        return isJSONBool(n)
    }

    func int(_ key: String) throws -> Int? {
        guard let value = json[key], !(value is NSNull) else { return nil }
        guard let n = value as? NSNumber, !isBool(n), n.doubleValue == n.doubleValue.rounded() else {
            throw error(key, "expected an integer, got \(value)")
        }
        return n.intValue
    }

    func double(_ key: String) throws -> Double? {
        guard let value = json[key], !(value is NSNull) else { return nil }
        guard let n = value as? NSNumber, !isBool(n) else { throw error(key, "expected a number, got \(value)") }
        return n.doubleValue
    }

    func bool(_ key: String) throws -> Bool? {
        guard let value = json[key], !(value is NSNull) else { return nil }
        guard isBool(value), let b = value as? Bool else { throw error(key, "expected true or false, got \(value)") }
        return b
    }

    func string(_ key: String) throws -> String? {
        guard let value = json[key], !(value is NSNull) else { return nil }
        guard let s = value as? String else { throw error(key, "expected a string, got \(value)") }
        return s
    }

    func intArray(_ key: String) throws -> [Int]? {
        guard let value = json[key], !(value is NSNull) else { return nil }
        guard let array = value as? [Any] else { throw error(key, "expected a list of integers, got \(value)") }
        return try array.map { item in
            guard let n = item as? NSNumber, !isBool(n), n.doubleValue == n.doubleValue.rounded() else {
                throw error(key, "expected a list of integers, found \(item)")
            }
            return n.intValue
        }
    }

    mutating func expect(_ key: String, equals expected: Bool, why: String) throws {
        guard let found = try bool(key) else { return }
        if found != expected { throw error(key, "\(found) is not supported: \(why)") }
    }

    func expect(_ key: String, equals expected: Int, why: String) throws {
        guard let found = try int(key) else { return }
        if found != expected { throw error(key, "\(found) is not supported: \(why)") }
    }

    func expect(_ key: String, oneOf allowed: [String], why: String) throws {
        guard let found = try string(key) else { return }
        if !allowed.contains(found) {
            throw error(key, "\"\(found)\" is not supported (\(allowed.map { "\"\($0)\"" }.joined(separator: ", "))): \(why)")
        }
    }

    func expectNull(_ key: String, why: String, allowEmpty: Bool = false) throws {
        guard let value = json[key], !(value is NSNull) else { return }
        if allowEmpty, let d = value as? [String: Any], d.isEmpty { return }
        if allowEmpty, let a = value as? [Any], a.isEmpty { return }
        throw error(key, "\(value) is not supported: \(why)")
    }
}

/// JSONSerialization hands back true/false as NSNumber too (and `is Bool` holds for 0 and 1);
/// only the boxed type tells them apart, on Linux and Darwin alike.
private func isJSONBool(_ n: NSNumber) -> Bool {
    String(describing: type(of: n)).contains("Boolean")
}

extension LMConfig {
    /// The GGUF metadata key under which `duplex quantize` records the config (Kyutai's
    /// config.json keys as JSON), so a folder holding only that file knows its model. candle reads
    /// no metadata, so the key costs it nothing.
    public static let ggufConfigKey = "duplex.lm_config"

    /// This config as Kyutai's config.json keys (the ones `init(kyutaiConfigJSON:)` reads).
    public var kyutaiConfigJSON: String {
        var object: [String: Any] = [
            "dim": dim, "text_card": textCard, "text_card_out": textCardOut, "existing_text_padding_id": textPaddingId,
            "existing_text_end_padding_id": textEndPaddingId, "n_q": nQ, "dep_q": depQ, "card": card, "num_heads": numHeads,
            "num_layers": numLayers, "hidden_scale": hiddenScale, "context": context, "max_period": Double(maxPeriod),
            "depformer_dim": depformerDim, "depformer_dim_feedforward": depformerDimFeedforward,
            "depformer_num_heads": depformerNumHeads, "depformer_num_layers": depformerNumLayers,
            "depformer_multi_linear": depformerMultiLinear, "delays": delays,
            "depformer_weights_per_step_schedule": depformerWeightsSchedule.map { $0 as Any } ?? NSNull(),
            "extra_heads_num_heads": extraHeadsNumHeads, "extra_heads_dim": extraHeadsDim, "model_type": kind.rawValue,
        ]
        if kind == .stt {
            object["stt_config"] = ["audio_delay_seconds": sttAudioDelaySeconds, "audio_silence_prefix_seconds": sttSilencePrefixSeconds]
        }
        if let c = conditioning {
            var lut: [String: Any] = ["n_bins": c.bins, "dim": c.dim, "tokenizer": "noop"]
            if !c.values.isEmpty { lut["possible_values"] = c.values }
            object["conditioners"] = [c.name: ["type": "lut", "lut": lut]]
            object["fuser"] = ["sum": [c.name]]
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    public init(kyutaiJSON json: String, source: String) throws {
        try self.init(kyutaiConfigJSON: Data(json.utf8), source: source)
    }
}
