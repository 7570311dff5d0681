import ArgumentParser
import DuplexCore
import DuplexEngine
import Foundation

/// `duplex quantize`: a Moshi LM written as a quantized GGUF in candle's layout (what
/// `kyutai/moshiko-candle-q8` holds), read by duplex and by Kyutai's Rust code.
struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a Moshi LM as a quantized GGUF (candle's layout: duplex and Kyutai's Rust code read it).",
        discussion: "Formats: " + QuantizeRecipe.lmRecipes.map { "\($0.name): \($0.about)" }.joined(separator: "; ") + ".")

    @Option(name: .customLong("to"), help: ArgumentHelp("Format: " + QuantizeRecipe.lmRecipes.map(\.name).joined(separator: ", ") + ".",
                                                        valueName: "format"))
    var format: String

    @Argument(help: "A model folder (Kyutai's layout) or an LM file (.safetensors or .gguf).")
    var input: String

    @Argument(help: "The GGUF to write (e.g. model.gguf in a copy of the model folder).")
    var output: String

    @Option(help: "config.json of the LM when INPUT is a bare file (default: the folder's, or moshiko 7B).")
    var config: String?

    @Flag(help: "Overwrite OUTPUT if it exists.")
    var force = false

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard QuantizeRecipe.lm(named: format) != nil else {
            throw ValidationError("--to \(format): not a format duplex makes; use one of " + QuantizeRecipe.lmRecipes.map(\.name).joined(separator: ", "))
        }
        guard output.hasSuffix(".gguf") else { throw ValidationError("\(output): the output is a GGUF file; name it *.gguf") }
        if !force && FileManager.default.fileExists(atPath: output) {
            throw ValidationError("\(output) exists; add --force to overwrite it")
        }
    }

    func run() throws {
        compute.apply()
        let recipe = QuantizeRecipe.lm(named: format)!
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: input, isDirectory: &isDirectory) else { throw ModelError("\(input) does not exist") }
        let path: String, lmConfig: LMConfig
        var randomSeed: UInt64?
        if isDirectory.boolValue {
            if config != nil { throw ValidationError("--config is for a bare LM file; the folder \(input) has its own config") }
            let folder = try ModelFolder(input)
            for note in folder.notes { warn("note: \(note)") }
            randomSeed = folder.randomWeightsSeed
            path = randomSeed == nil ? try folder.lmPath : ""
            lmConfig = folder.config
            if let seed = randomSeed {
                warn("note: \(input) has random weights (seed \(seed)): writing them made up, for measuring (benchmarks, load times)")
            }
        } else {
            path = input
            lmConfig = try config.map { try LMConfig(kyutaiConfigPath: $0) } ?? .moshi7B
        }
        let start = Date()
        let store: WeightStore
        if let randomSeed {
            store = WeightStore(randomSeed: randomSeed, matrixType: lmConfig.dim >= 2048 ? .bf16 : .f32)
        } else {
            do { store = try WeightStore(path: path) } catch let e as SafetensorsError { throw ModelError("\(e)") }
        }
        let bar = ProgressBar("writing \(output) (\(recipe.name))")
        let summary: LMGGUFExport.Summary
        do {
            summary = try LMGGUFExport.write(store: store, config: lmConfig, recipe: recipe, to: output) { bar.update($0 * 2, of: $1 * 2) }
        } catch let e as SafetensorsError {
            bar.finish()
            throw ModelError("\(e)")
        }
        bar.finish()
        let types = summary.types.sorted { $0.value > $1.value }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        warn(String(format: "wrote %@: %d tensors (%@), %.2f GB, in %.1f s", output, summary.tensors, types,
                    Double(summary.bytes) / 1e9, Date().timeIntervalSince(start)))
    }
}
