import DuplexCore
import DuplexEngine
import Foundation
import XCTest

/// Which LM file and config a folder without config.json stands for: Kyutai's candle repos
/// (a GGUF without duplex's config key) run as Kyutai's Rust server runs them, with an acoustic
/// delay of 2; a GGUF written by `duplex quantize` knows its own config.
final class ModelFolderQuantizedTests: XCTestCase {
    private func folder(_ name: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("mfq-\(getpid())-\(name)").path
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func testCandleGGUFWithoutConfigRunsWithAcousticDelayTwo() throws {
        let dir = try folder("candle")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Candle writes no metadata; one tensor is enough for the folder to pick its config.
        try GGUFWriter.write(path: dir + "/model.q8.gguf", version: 2, tensors: [.init(name: "out_norm.alpha", type: .f32, shape: [1, 1, 32])]) { _, sink in
            try Data(count: 128).withUnsafeBytes { try sink($0) }
        }
        let f = try ModelFolder(dir)
        XCTAssertEqual(try f.lmPath, dir + "/model.q8.gguf")
        XCTAssertEqual(f.config.delays, [0] + ([0] + Array(repeating: 2, count: 7)) + ([0] + Array(repeating: 2, count: 7)))
        XCTAssertEqual(f.config.dim, 4096)
        XCTAssertTrue(f.notes.joined().contains("acoustic delay 2"), "\(f.notes)")
    }

    func testGGUFWrittenByDuplexKnowsItsConfig() throws {
        let dir = try folder("duplex")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = LMConfig()
        c.dim = 64; c.numHeads = 2; c.numLayers = 1; c.hiddenScale = 3; c.context = 8; c.textCard = 40; c.textCardOut = 40; c.card = 32
        c.depformerDim = 32; c.depformerNumHeads = 2; c.depformerNumLayers = 1; c.depformerDimFeedforward = 96
        _ = try LMGGUFExport.write(store: WeightStore(randomSeed: 3), config: c, recipe: .uniform(.q8_0), to: dir + "/model.gguf")
        let f = try ModelFolder(dir)
        XCTAssertEqual(f.config, c)
        let lm = try f.loadLM()
        XCTAssertEqual(lm.matrixFormats.keys.sorted(), ["Q8_0"])
        XCTAssertThrowsError(try f.loadLM(quantize: .uniform(.q4_0)), "a quantized file is not quantized twice")
    }

    func testPyTorchFolderIsPreferredAndNamed() throws {
        let dir = try folder("both")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["model.safetensors", "model.q8.gguf"] { XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/" + name, contents: Data())) }
        XCTAssertEqual(try ModelFolder(dir).lmPath, dir + "/model.safetensors")
    }
}

extension ModelFolderQuantizedTests {
    /// Kyutai's later configs name files on the Hub; a downloaded repo holds them by file name.
    func testHubNamesResolveToFilesInTheFolder() throws {
        XCTAssertEqual(ModelFolder.localName("hf://kyutai/stt-1b-en_fr/mimi-pytorch-e351c8d8@125.safetensors"),
                       "mimi-pytorch-e351c8d8@125.safetensors")
        XCTAssertEqual(ModelFolder.localName("hf://kyutai/repo/sub/dir/file.model"), "sub/dir/file.model")
        XCTAssertEqual(ModelFolder.localName("model.safetensors"), "model.safetensors")
        let dir = try folder("hub")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data(#"{"mimi_name": "hf://kyutai/moshiko-pytorch-bf16/codec.safetensors", "tokenizer_name": "hf://kyutai/x/tok.model"}"#.utf8)
            .write(to: URL(fileURLWithPath: dir + "/config.json"))
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/codec.safetensors", contents: Data()))
        let f = try ModelFolder(dir)
        XCTAssertEqual(try f.mimiPath, dir + "/codec.safetensors")
        XCTAssertThrowsError(try f.tokenizerPath) { error in
            XCTAssertTrue("\(error)".contains("tok.model") && "\(error)".contains("hf://kyutai/x/tok.model"), "\(error)")
        }
    }
}
