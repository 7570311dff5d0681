import ArgumentParser
import DuplexCore
import Foundation

/// A model folder laid out like Kyutai's Hugging Face repos (`kyutai/moshiko-pytorch-bf16`,
/// `kyutai/moshika-pytorch-bf16`):
///
///     model.safetensors                              the LM (bf16)
///     tokenizer-e351c8d8-checkpoint125.safetensors   Mimi, the audio codec
///     tokenizer_spm_32k_3.model                      SentencePiece text tokenizer
///     config.json                                    optional; absent = moshiko 7B
///
/// config.json may rename the files (`moshi_name`, `mimi_name`, `tokenizer_name`), as Kyutai's
/// later repos do. Files are checked when a command needs them, each error naming the file.
struct ModelFolder {
    let path: String
    let config: LMConfig
    let hasConfigJSON: Bool

    init(_ path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CLIError("model folder \(path) does not exist")
        }
        guard isDirectory.boolValue else {
            throw CLIError("--model \(path) is a file; give the folder holding it (Kyutai's layout: "
                                  + "model.safetensors, tokenizer-e351c8d8-checkpoint125.safetensors, tokenizer_spm_32k_3.model, "
                                  + "optional config.json)")
        }
        self.path = path
        let configPath = (path as NSString).appendingPathComponent("config.json")
        if FileManager.default.fileExists(atPath: configPath) {
            config = try LMConfig(kyutaiConfigPath: configPath)
            hasConfigJSON = true
            if !config.ignoredKeys.isEmpty {
                warn("note: \(configPath): keys not used by duplex: \(config.ignoredKeys.joined(separator: ", "))")
            }
        } else {
            config = .moshi7B
            hasConfigJSON = false
        }
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Path of a file the command needs, or an error saying which one is missing and what it is.
    func require(_ name: String, _ role: String) throws -> String {
        let full = file(name)
        guard FileManager.default.fileExists(atPath: full) else {
            let present = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
            throw CLIError("model folder \(path) has no \(name) (\(role)). It holds: "
                                  + (present.isEmpty ? "nothing" : present.joined(separator: ", "))
                                  + ". Expected Kyutai's layout (e.g. kyutai/moshiko-pytorch-bf16).")
        }
        return full
    }

    var lmPath: String { get throws { try require(config.moshiName, "the LM weights") } }
    var mimiPath: String { get throws { try require(config.mimiName, "the Mimi codec weights") } }
    var tokenizerPath: String { get throws { try require(config.tokenizerName, "the SentencePiece text tokenizer") } }

    /// Loads the LM strictly, with a progress note for the big ones.
    func loadLM() throws -> LMModel {
        let path = try lmPath
        if !hasConfigJSON { warn("no config.json in \(self.path): assuming moshiko/moshika 7B") }
        do {
            return try LMModel.load(path: path, config: config)
        } catch let error as SafetensorsError {
            throw CLIError("\(error)")
        }
    }
}

/// A runtime problem worth one clear line (no usage text, unlike ValidationError).
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Sampling options shared by every command that runs the LM (`generate`, `talk`, `pipe`, `serve`).
/// Unset options take the repository's `lm_gen_config` if its config.json has one, else LMGen's
/// defaults (text 0.7 / top-25, audio 0.8 / top-250).
struct SamplingOptions: ParsableArguments {
    @Option(help: "Audio temperature (0 = greedy; default 0.8).")
    var temperature: Float?

    @Option(name: .customLong("top-k"), help: "Audio top-k (default 250; 0 = no cut).")
    var topK: Int?

    @Option(help: "Text temperature (0 = greedy; default 0.7).")
    var textTemperature: Float?

    @Option(help: "Text top-k (default 25; 0 = no cut).")
    var textTopK: Int?

    @Option(help: "Seed of the sampling random stream (a run replays exactly).")
    var seed: UInt64 = 42_424_242

    func validate() throws {
        for (name, t) in [("--temperature", temperature), ("--text-temperature", textTemperature)] {
            if let t, !(t >= 0 && t.isFinite) { throw ValidationError("\(name) must be ≥ 0, got \(t)") }
        }
        for (name, k) in [("--top-k", topK), ("--text-top-k", textTopK)] {
            if let k, k < 0 { throw ValidationError("\(name) must be ≥ 0, got \(k)") }
        }
    }

    func parameters(for config: LMConfig) -> SamplingParameters {
        var p = SamplingParameters()
        let repo = config.lmGenConfig
        p.audioTemperature = temperature ?? repo["temp"].map(Float.init) ?? p.audioTemperature
        p.audioTopK = topK ?? repo["top_k"].map { Int($0) } ?? p.audioTopK
        p.textTemperature = textTemperature ?? repo["temp_text"].map(Float.init) ?? p.textTemperature
        p.textTopK = textTopK ?? repo["top_k_text"].map { Int($0) } ?? p.textTopK
        p.seed = seed
        return p
    }
}
