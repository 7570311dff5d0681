import ArgumentParser
import CALSA
import CBLAS
import COgg
import COpus
import CQuant
import DuplexCore
import Foundation

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a checkpoint or model folder (or, without --model, this build and machine).")

    @Option(name: .shortAndLong, help: "A .safetensors file or a model folder.")
    var model: String?

    @Flag(help: "Read every value: report NaN/Inf and the value range (slow on large files).")
    var scan = false

    @Flag(help: "List every tensor against the model's tensor table: name, shape, dtype, role.")
    var tensors = false

    @Flag(help: "Do not hash weight files to recognise which release they are (a first hash reads the whole file; it is cached as FILE.sha256).")
    var noHash = false

    func run() throws {
        guard let model else {
            printSystem()
            return
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: model, isDirectory: &isDirectory) else {
            throw CLIError("\(model): no such file or folder")
        }
        if isDirectory.boolValue {
            try describeFolder(model)
        } else {
            let config = (model as NSString).deletingLastPathComponent.appending("/config.json")
            try describeFile(model, lmConfig: FileManager.default.fileExists(atPath: config) ? lmConfig(config) : nil)
        }
    }

    /// The file against its model's tensor table: which entries it lacks or has extra (and with
    /// `--tensors`, every tensor with its role).
    private func describeTable(_ file: SafetensorsFile, kind: CheckpointKind, lmConfig: (LMConfig, String)?) {
        guard let check = TableCheck.check(file, kind: kind, lmConfig: lmConfig) else { return }
        let c = check.comparison
        let verdict = c.isExact ? "the file holds exactly these"
            : "\(c.missing.count) missing, \(c.unexpected.count) extra, \(c.misshaped.count) misshaped, \(c.wrongType.count) wrongly typed"
        print("  table:       \(check.table.model) for \(check.configSource): \(check.table.specs.count) entries; \(verdict)")
        if !c.weightNorm.isEmpty { print("               \(c.weightNorm.count) conv kernels stored as weight-norm pairs (folded at load)") }
        for line in check.reportLines(limit: tensors ? nil : 10) { print("    " + line) }
        guard tensors else { return }
        let rows = check.listing(file)
        let nameWidth = rows.map(\.name.count).max() ?? 0
        let shapeWidth = rows.map(\.shape.count).max() ?? 0
        for r in rows {
            print("    \(r.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0))  "
                + "\(r.shape.padding(toLength: shapeWidth, withPad: " ", startingAt: 0))  "
                + "\(r.dtype.padding(toLength: 4, withPad: " ", startingAt: 0))  \(r.role)")
        }
    }

    /// A GGUF, or a safetensors file in candle's or MLX's layout: read the way the loader reads
    /// it (layout, stored formats), checked against the LM table by loading it.
    private func describeQuantizedLM(_ path: String, lmConfig: (LMConfig, String)?) throws {
        print("\(path)")
        var config = lmConfig?.0 ?? .moshi7B
        var source = lmConfig?.1 ?? "moshiko 7B (no config.json)"
        if path.hasSuffix(".gguf") {
            let gguf = try GGUFFile(path: path)
            print("  format:      GGUF v\(gguf.version), alignment \(gguf.alignment), \(gguf.names.count) tensors, "
                  + "\(gguf.metadataKeys.count) metadata keys" + (gguf.architecture.map { ", architecture \($0)" } ?? ""))
            var types: [String: (count: Int, bytes: Int)] = [:]
            for e in gguf.entries.values { types[e.type.name, default: (0, 0)].count += 1; types[e.type.name]!.bytes += e.range.count }
            for (t, v) in types.sorted(by: { $0.value.bytes > $1.value.bytes }) {
                print("    \(t.padding(toLength: 6, withPad: " ", startingAt: 0)) \(v.count) tensors, \(Format.bytes(v.bytes))")
            }
            if lmConfig == nil {
                if case .string(let json)? = gguf.metadata[LMConfig.ggufConfigKey] {
                    config = try LMConfig(kyutaiJSON: json, source: path)
                    source = "the config recorded in the file (\(LMConfig.ggufConfigKey))"
                } else {
                    config = .moshi7BCandle
                    source = "moshiko 7B as Kyutai's Rust server runs candle files (acoustic delay 2)"
                }
            }
        }
        let store: WeightStore
        do { store = try WeightStore(path: path) } catch let e as SafetensorsError { throw CLIError("\(e)") }
        let layout = LMTensorNames.layout(ofNames: store.names, config: config)
        let problems = store.problems(against: LMTensorNames.table(config), layout: layout)
        print("  layout:      \(layout.name) (read under Kyutai's names through duplex's \(layout.name) table)")
        let formats = store.storedTypes.sorted { $0.value > $1.value }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        print("  stored as:   \(formats)")
        if problems.isEmpty {
            print("  table:       Moshi LM for \(source): every entry present, nothing extra")
            if scan {
                let bar = ProgressBar("scanning")
                let result = store.scanValues { bar.update($0 * 4, of: $1 * 4) }
                bar.finish()
                try report(result, note: " (dequantized as the model reads them)")
            }
        } else {
            print("  table:       Moshi LM for \(source): \(problems.count) problems")
            for p in problems.prefix(tensors ? Int.max : 10) { print("    \(p.message)") }
            throw CLIError("\(path) does not load as this LM")
        }
    }

    private func printSystem() {
        print("duplex — build and machine")
        print("  cores:            \(ProcessInfo.processInfo.activeProcessorCount)")
        print("  quantized kernels: \(String(cString: cq_kernel_isa()))")
        print("  OpenBLAS:         \(String(cString: openblas_get_config()))")
        print("  ALSA library:     \(String(cString: snd_asoundlib_version()))")
        print("  Opus library:     \(String(cString: opus_get_version_string()))")
        var stream = ogg_stream_state()
        let oggOK = ogg_stream_init(&stream, 42) == 0
        if oggOK { ogg_stream_clear(&stream) }
        print("  Ogg library:      \(oggOK ? "linked" : "failed to initialise")")
    }

    /// Describes every weight file of the folder, going on past a bad one so a user sees all
    /// of them; fails at the end if any could not be read.
    private func describeFolder(_ path: String) throws {
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
        } catch {
            throw CLIError("\(path): cannot list the folder (\(error.localizedDescription))")
        }
        print("model folder \(path)")
        var failures = 0
        let configPath = (path as NSString).appendingPathComponent("config.json")
        var folderConfig: (LMConfig, String)?
        if files.contains("config.json") {
            guard let data = FileManager.default.contents(atPath: configPath),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw CLIError("\(configPath): not a readable JSON object")
            }
            print("  config.json: \(object.count) keys")
            for key in ["model_type", "dim", "num_layers", "num_heads", "n_q", "dep_q", "card", "text_card", "context",
                        "depformer_dim", "depformer_num_layers", "mimi_name", "moshi_name", "tokenizer_name"] {
                if let v = object[key] { print("    \(key): \(v)") }
            }
            folderConfig = lmConfig(configPath)
        } else {
            print("  config.json: absent (Kyutai's legacy repos have none: the moshiko 7B config is assumed)")
        }
        let weights = files.filter { $0.hasSuffix(".safetensors") || $0.hasSuffix(".sft") || $0.hasSuffix(".sfts") || $0.hasSuffix(".gguf") }
        if weights.isEmpty { print("  no weight files") }
        for w in weights {
            do {
                try describeFile((path as NSString).appendingPathComponent(w), lmConfig: folderConfig)
            } catch let error as SafetensorsError {
                warn("error: \(error)")
                failures += 1
            } catch let error as CLIError {
                warn("error: \(error)")
                failures += 1
            }
        }
        for t in files where t.hasSuffix(".model") {
            print("  tokenizer: \(t)")
            identify((path as NSString).appendingPathComponent(t))
        }
        if failures > 0 {
            throw CLIError("\(failures) of \(weights.count) weight files in \(path) could not be read")
        }
    }

    /// The LM config a config.json describes, or nil (said on stdout) if duplex cannot use it.
    private func lmConfig(_ path: String) -> (LMConfig, String)? {
        do {
            return (try LMConfig(kyutaiConfigPath: path), path)
        } catch {
            print("  config.json cannot describe an LM here (\(error)); LM files are checked against moshiko 7B")
            return nil
        }
    }

    /// Which release the file is, by its SHA-256 (hashed once, then cached beside it).
    private func identify(_ path: String) {
        guard !noHash else { return }
        let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
        let bar = ProgressBar("hashing \((path as NSString).lastPathComponent) once to recognise it (cached as .sha256)", delay: 0)
        guard let (hex, cached) = try? FileHash.sha256(file: path, progress: { bar.update($0, of: $1) }) else {
            bar.finish()
            print("  identity:    could not hash the file")
            return
        }
        bar.finish()
        let how = cached ? "cached" : "hashed now"
        if let known = KnownFile.identify(sha256: hex, size: size) {
            print("  identity:    \(known.what) — \(known.repo) (sha256 \(hex.prefix(16))…, \(how))")
        } else {
            print("  identity:    not a release duplex knows (sha256 \(hex.prefix(16))…, \(how))")
        }
    }

    /// A value scan's lines; poisoned values fail with exit status 3.
    private func report(_ result: ValueScan, note: String = "") throws {
        print("  values:      \(result.values)\(note), range [\(result.minimum), \(result.maximum)]")
        if result.nanCount + result.infCount > 0 {
            print("  POISONED:    \(result.nanCount) NaN, \(result.infCount) Inf in \(result.badTensors.prefix(10).joined(separator: ", "))")
            throw ExitCode(3)
        }
        print("  NaN/Inf:     none")
    }

    /// A weight file described, then (if it reads) recognised by its hash.
    private func describeFile(_ path: String, lmConfig: (LMConfig, String)?) throws {
        try describeContents(path, lmConfig: lmConfig)
        identify(path)
    }

    private func describeContents(_ path: String, lmConfig: (LMConfig, String)?) throws {
        if path.hasSuffix(".gguf") { return try describeQuantizedLM(path, lmConfig: lmConfig) }
        let file = try SafetensorsFile(path: path)
        if file.entries.keys.contains(where: { $0.hasPrefix("depformer.slices.") || $0.hasPrefix("depformer.0.") }) {
            return try describeQuantizedLM(path, lmConfig: lmConfig)
        }
        let summary = CheckpointSummary(file: file)
        print("\(path)")
        print("  kind:        \(summary.kind.rawValue)")
        if let foreign = summary.foreign { print("  layout:      \(foreign.description)") }
        print("  tensors:     \(summary.tensorCount)")
        print("  parameters:  \(Format.count(summary.parameterCount)) (\(summary.parameterCount))")
        for (dtype, n) in summary.parametersByDType.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            print("    \(dtype.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0)) \(Format.count(n)) (\(n))")
        }
        print("  bytes:       \(Format.bytes(summary.bytes)) (\(summary.bytes))")
        for (k, v) in summary.metadata.sorted(by: { $0.key < $1.key }) { print("  meta \(k): \(v)") }
        describeTable(file, kind: summary.kind, lmConfig: lmConfig)
        if scan {
            let bar = ProgressBar("scanning")
            let result = ValueScan.scan(file) { bar.update($0, of: $1) }
            bar.finish()
            try report(result)
        }
    }
}
