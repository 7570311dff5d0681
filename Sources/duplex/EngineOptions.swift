import ArgumentParser
import DuplexCore
import DuplexEngine
import Foundation

/// `--model` for every command that runs the whole engine; defaults to the embedded model.
struct ModelOption: ParsableArguments {
    @Option(help: "Model folder: Kyutai's layout (model.safetensors, tokenizer-e351c8d8-checkpoint125.safetensors, tokenizer_spm_32k_3.model, optional config.json), or the embedded default.")
    var model: String?

    @Option(help: ArgumentHelp("Quantize the LM's matrices as it loads (when the folder stores them as floats): "
        + QuantizeRecipe.lmRecipes.map(\.name).joined(separator: ", ") + ". See `duplex quantize` to keep the result.",
        valueName: "format"))
    var quantize: String?

    init() {}
    init(model: String, quantize: String? = nil) {
        self.model = model
        self.quantize = quantize
    }

    /// The `--quantize` recipe, or nil; an unknown name is an error listing the known ones.
    var recipe: QuantizeRecipe? {
        get throws {
            guard let quantize else { return nil }
            guard let r = QuantizeRecipe.lm(named: quantize) else {
                throw ValidationError("--quantize \(quantize): not a format duplex makes; use one of "
                    + QuantizeRecipe.lmRecipes.map(\.name).joined(separator: ", "))
            }
            return r
        }
    }

    /// The folder to load: the one given, else the embedded default.
    var path: String { model ?? Self.defaultModelPath }
    /// Whether --model (or --quantize) was given (commands that run no local model refuse them).
    var given: Bool { model != nil || quantize != nil }

    /// models/default next to the source tree the binary was built from, else beside the binary.
    static var defaultModelPath: String {
        let candidates = [
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../models/default").standardized.path,
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("../../models/default").standardized.path,
            "models/default",
        ]
        return candidates.first { FileManager.default.fileExists(atPath: $0 + "/config.json") } ?? "models/default"
    }

    /// The model folder, its sessions run as `runtime` says.
    /// `folder`: already opened (its notes already shown); `tokenizer`: required, not optional;
    /// `sampling`: options checked against the model before the (long) load.
    func load(_ runtime: LMRuntimeOptions, folder opened: ModelFolder? = nil, tokenizer: Bool = false,
              sampling: SamplingOptions? = nil, persona: PersonaOptions? = nil) throws -> EngineModel {
        let start = Date()
        let folder = try opened ?? ModelFolder(path)
        if opened == nil { for note in folder.notes { warn("note: \(note)") } }
        try sampling?.check(folder.config)
        try persona?.check(folder.config)
        let recipe = try self.recipe
        let bar = ProgressBar("quantizing the LM to \(recipe?.name ?? "")")
        let engine = try EngineModel.load(folder: folder, tokenizer: tokenizer || persona?.textPrompt != nil, kvCache: runtime.resolvedKVCache, quantize: recipe,
                                          progress: recipe == nil ? nil : { bar.update($0, of: $1) })
        bar.finish()
        let kind = folder.weightsDescription
        let formats = engine.lm.matrixFormats.sorted { $0.value > $1.value }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        warn(String(format: "loaded %@ (%@; LM matrices %@) in %.1f s", folder.path, kind, formats, Date().timeIntervalSince(start)))
        return engine
    }
}
