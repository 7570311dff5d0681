import ArgumentParser
import DuplexCore
import DuplexEngine
import Foundation

/// `--model` for every command that runs the whole engine; defaults to the embedded model.
struct ModelOption: ParsableArguments {
    @Option(help: "Model folder: Kyutai's layout (model.safetensors, tokenizer-e351c8d8-checkpoint125.safetensors, tokenizer_spm_32k_3.model, optional config.json), or the embedded default.")
    var model: String?

    init() {}
    init(model: String) { self.model = model }

    /// The folder to load: the one given, else the embedded default.
    var path: String { model ?? Self.defaultModelPath }
    /// Whether --model was given (commands that run no local model refuse it).
    var given: Bool { model != nil }

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
    func load(_ runtime: LMRuntimeOptions) throws -> EngineModel {
        let start = Date()
        let folder = try ModelFolder(path)
        for note in folder.notes { warn("note: \(note)") }
        let engine = try EngineModel.load(folder: folder, kvCache: runtime.resolvedKVCache)
        let kind = folder.randomWeightsSeed != nil ? "random weights, untrained" : "weights from files"
        warn(String(format: "loaded %@ (%@) in %.1f s", folder.path, kind, Date().timeIntervalSince(start)))
        return engine
    }
}
