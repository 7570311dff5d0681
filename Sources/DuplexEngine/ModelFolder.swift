import DuplexCore
import Foundation

/// A model problem a user can act on: which folder or file, what is wrong.
public struct ModelError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A model folder laid out like Kyutai's Hugging Face repos (`kyutai/moshiko-pytorch-bf16`,
/// `kyutai/moshika-pytorch-bf16`):
///
///     model.safetensors                              the LM (bf16)
///     tokenizer-e351c8d8-checkpoint125.safetensors   Mimi, the audio codec
///     tokenizer_spm_32k_3.model                      SentencePiece text tokenizer
///     config.json                                    optional; absent = moshiko 7B
///
/// config.json may rename the files (`moshi_name`, `mimi_name`, `tokenizer_name`), as Kyutai's
/// later repos do. A `duplex` object in config.json may declare the weights random
/// (`"random_weights_seed": N`): the embedded default model ships its shape, and whichever of its
/// weight files it has (a codec trained before its LM: `mimi_name` present is read, strictly at
/// the declared `duplex.mimi` shape; what is absent is made up from the seed).
/// Files are checked when a command needs them, each error naming the file.
public struct ModelFolder: Sendable {
    public let path: String
    public let config: LMConfig
    public let hasConfigJSON: Bool
    /// Set when the folder's weights are made up from this seed rather than read.
    public let randomWeightsSeed: UInt64?
    /// The codec's shape for a random-weights folder (`duplex.mimi` in config.json overrides the
    /// released Mimi's sizes: filters, dimension, transformer layers/heads/feed-forward, codebook
    /// dimension).
    public let randomMimiConfig: MimiConfig
    /// Notes for the user (e.g. config keys duplex does not use).
    public let notes: [String]

    public init(_ path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelError("model folder \(path) does not exist")
        }
        guard isDirectory.boolValue else {
            throw ModelError("--model \(path) is a file; give the folder holding it (Kyutai's layout: "
                             + "model.safetensors, tokenizer-e351c8d8-checkpoint125.safetensors, tokenizer_spm_32k_3.model, "
                             + "optional config.json)")
        }
        self.path = path
        let configPath = (path as NSString).appendingPathComponent("config.json")
        var notes: [String] = []
        var seed: UInt64?
        var mimi = MimiConfig.released()
        if FileManager.default.fileExists(atPath: configPath) {
            var config = try LMConfig(kyutaiConfigPath: configPath)
            if let data = FileManager.default.contents(atPath: configPath),
               let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
               let duplex = object["duplex"] as? [String: Any] {
                if let s = duplex["random_weights_seed"] as? Int, s >= 0 { seed = UInt64(s) }
                if let shape = duplex["mimi"] as? [String: Any] {
                    func size(_ key: String) throws -> Int? {
                        guard let v = shape[key] else { return nil }
                        guard let n = v as? Int, n > 0 else { throw ModelError("\(configPath): duplex.mimi.\(key) must be a positive integer") }
                        return n
                    }
                    for (key, field) in Self.declaredMimiSizes {
                        mimi[keyPath: field] = try size(key) ?? mimi[keyPath: field]
                    }
                }
                config.ignoredKeys.removeAll { $0 == "duplex" }
            }
            self.config = config
            hasConfigJSON = true
            if config.loraDeclared {
                notes.append("\(configPath) says lora: true; the LM is loaded as merged weights (a file that still holds LoRA tensors is refused)")
            }
            if !config.ignoredKeys.isEmpty {
                notes.append("\(configPath): keys not used by duplex: \(config.ignoredKeys.joined(separator: ", "))")
            }
        } else {
            hasConfigJSON = false
            let lmFile = Self.lmFileNames.first { FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent($0)) }
            let gguf = lmFile.flatMap { $0.hasSuffix(".gguf") ? try? GGUFFile(path: (path as NSString).appendingPathComponent($0)) : nil }
            if let gguf, case .string(let json)? = gguf.metadata[LMConfig.ggufConfigKey] {
                // A file duplex wrote (`duplex quantize`) records the config it was made with.
                config = try LMConfig(kyutaiJSON: json, source: "\(gguf.path) (\(LMConfig.ggufConfigKey))")
                notes.append("no config.json in \(path): using the config recorded in \(lmFile!)")
            } else if gguf != nil {
                config = .moshi7BCandle
                notes.append("no config.json in \(path): \(lmFile!) is a candle GGUF, run as Kyutai's Rust server runs it "
                             + "(moshiko/moshika 7B, acoustic delay 2)")
            } else if let lmFile, lmFile.hasSuffix(".safetensors"),
                      let header = try? SafetensorsFile(path: (path as NSString).appendingPathComponent(lmFile)),
                      header.entries["linears.15.weight"] != nil, header.entries["linears.16.weight"] == nil {
                // NVIDIA's loader reads no config.json either: 16 depformer steps is PersonaPlex.
                config = .personaplex7B
                notes.append("no config.json in \(path): \(lmFile) has 16 depformer steps, run as NVIDIA's PersonaPlex 7B "
                             + "(8 user streams; give --voice-prompt and --text-prompt for its persona)")
            } else {
                config = .moshi7B
                notes.append("no config.json in \(path): assuming moshiko/moshika 7B" + (lmFile.map { " (LM file \($0))" } ?? ""))
            }
        }
        randomWeightsSeed = seed
        mimi.numCodebooks = max(config.generatedStreams, config.userStreams)
        randomMimiConfig = mimi
        self.notes = notes
    }

    public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(Self.localName(name)) }

    /// A config's file name as it lies in the folder: Kyutai's configs may name files on the Hub
    /// (`hf://owner/repo/file`, as the STT and later repos do), which a downloaded repo holds as
    /// `file`; a name without the scheme is used as it is.
    public static func localName(_ name: String) -> String {
        guard name.hasPrefix("hf://") else { return name }
        let parts = name.dropFirst("hf://".count).split(separator: "/", omittingEmptySubsequences: false)
        return parts.count > 2 ? parts.dropFirst(2).joined(separator: "/") : String(parts.last ?? "")
    }

    /// Path of a file the model needs, or an error saying which one is missing and what it is.
    public func require(_ name: String, _ role: String) throws -> String {
        let full = file(name)
        guard FileManager.default.fileExists(atPath: full) else {
            let present = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
            let hub = name.hasPrefix("hf://") ? " (config.json names \(name); download that repo and put \(Self.localName(name)) here)" : ""
            throw ModelError("model folder \(path) has no \(Self.localName(name)) (\(role))\(hub). It holds: "
                             + (present.isEmpty ? "nothing" : present.joined(separator: ", "))
                             + ". Expected Kyutai's layout (e.g. kyutai/moshiko-pytorch-bf16).")
        }
        return full
    }

    /// The LM file names of Kyutai's repos, in the order duplex looks for them when config.json
    /// names none: PyTorch bf16 (`-pytorch-bf16`), candle q8 GGUF (`-candle-q8`), MLX q4 and q8
    /// (`-mlx-q4`, `-mlx-q8`), and GGUF files duplex writes (`duplex quantize`).
    public static let lmFileNames = ["model.safetensors", "model.q8.gguf", "model.q4.safetensors", "model.q8.safetensors", "model.gguf"]

    public var lmPath: String {
        get throws {
            if hasConfigJSON || FileManager.default.fileExists(atPath: file(config.moshiName)) {
                return try require(config.moshiName, "the LM weights")
            }
            let present = Self.lmFileNames.filter { FileManager.default.fileExists(atPath: file($0)) }
            guard let first = present.first else { return try require(config.moshiName, "the LM weights") }
            return file(first)
        }
    }
    public var mimiPath: String { get throws { try require(config.mimiName, "the Mimi codec weights") } }
    public var tokenizerPath: String { get throws { try require(config.tokenizerName, "the SentencePiece text tokenizer") } }

    /// The LM, strictly by Kyutai's names (or made up, for a random-weights folder); with
    /// `quantize`, matrices stored as floats are quantized as they load.
    public func loadLM(quantize: QuantizeRecipe? = nil, progress: ((Int, Int) -> Void)? = nil) throws -> LMModel {
        if let randomWeightsSeed {
            // Real widths in bf16, as `bench --random-weights` makes them and checkpoints store
            // them: a few 4096-wide layers in f32 would already take gigabytes.
            let store = WeightStore(randomSeed: randomWeightsSeed, matrixType: config.dim >= 2048 ? .bf16 : .f32)
            store.quantizeRecipe = quantize
            store.onQuantizeProgress = progress
            let model = LMModel(store: store, config: config)
            try store.finish()
            return model
        }
        let path = try lmPath
        do {
            return try LMModel.load(path: path, config: config, quantize: quantize, progress: progress)
        } catch let error as SafetensorsError {
            throw ModelError("\(error)")
        }
    }

    /// The codec sizes config.json's `duplex.mimi` may declare, by key.
    static var declaredMimiSizes: [(key: String, field: WritableKeyPath<MimiConfig, Int>)] {
        [("filters", \.filters), ("dimension", \.dimension), ("transformer_layers", \.transformerLayers),
         ("transformer_heads", \.transformerHeads), ("transformer_feedforward", \.transformerFeedforward),
         ("codebook_dimension", \.codebookDimension)]
    }

    /// Whether the codec is read from a file (always, unless the folder declares random weights
    /// and has no file named by `mimi_name`).
    public var mimiFromFile: Bool {
        randomWeightsSeed == nil || FileManager.default.fileExists(atPath: file(config.mimiName))
    }

    /// What `loaded …` says of the weights: from files, made up, or a trained codec with a
    /// made-up LM.
    public var weightsDescription: String {
        guard randomWeightsSeed != nil else { return "weights from files" }
        return mimiFromFile ? "codec from \(Self.localName(config.mimiName)), LM random weights, untrained" : "random weights, untrained"
    }

    /// The Mimi codec with as many codebooks as the LM models per stream.
    public func loadMimi() throws -> Mimi {
        let codebooks = max(config.generatedStreams, config.userStreams)
        if let randomWeightsSeed, !mimiFromFile {
            return try Mimi(store: WeightStore(randomSeed: randomWeightsSeed &+ 1), config: randomMimiConfig)
        }
        let path = try mimiPath
        let mimi: Mimi
        do {
            if randomWeightsSeed != nil, try SafetensorsFile(path: path).metadata["config"] == nil {
                // No recorded shape: the declared one, all of whose codebooks the file must hold.
                mimi = try Mimi.load(path: path, codebooks: codebooks, config: randomMimiConfig)
            } else {
                mimi = try Mimi.load(path: path, codebooks: codebooks)
            }
        } catch let error as SafetensorsError {
            throw ModelError("\(error)")
        }
        if randomWeightsSeed != nil {
            // The folder declares its codec's shape (`duplex.mimi`): a file of another shape is
            // refused by name rather than run at it.
            let declared = randomMimiConfig, found = mimi.config
            let differences = Self.declaredMimiSizes.filter { declared[keyPath: $0.field] != found[keyPath: $0.field] }
                .map { "\($0.key) \(found[keyPath: $0.field]) (declared \(declared[keyPath: $0.field]))" }
            if !differences.isEmpty {
                throw ModelError("\(path) is a codec of another shape than config.json's duplex.mimi declares: "
                                 + differences.joined(separator: ", "))
            }
        }
        return mimi
    }

    public func loadTokenizer() throws -> SentencePieceTokenizer {
        let path = try tokenizerPath
        do {
            return try SentencePieceTokenizer(path: path)
        } catch {
            throw ModelError("\(error)")
        }
    }
}
