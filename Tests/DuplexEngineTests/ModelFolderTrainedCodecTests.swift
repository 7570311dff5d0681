import DuplexCore
import DuplexEngine
import Foundation
import XCTest

/// The default model's folder declares random weights but may already hold its trained codec
/// (the codec is trained before the LM): the file named by `mimi_name` is read when present,
/// at the shape config.json declares, and the seed makes up only what is absent.
final class ModelFolderTrainedCodecTests: XCTestCase {
    /// A tiny codec shape (as the CLI tests use): quick to make, load and run.
    private static let shape: [String: Int] = ["filters": 8, "dimension": 64, "transformer_layers": 1, "transformer_heads": 2,
                                               "transformer_feedforward": 128, "codebook_dimension": 32]

    private func folder(_ name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mftc-\(getpid())-\(name)")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // The shipped default config, with the tiny codec shape and the codec's file renamed.
        let shipped = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("models/default/config.json")
        var config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: shipped)) as? [String: Any])
        var duplex = try XCTUnwrap(config["duplex"] as? [String: Any])
        duplex["mimi"] = Self.shape
        config["duplex"] = duplex
        config["mimi_name"] = "mimi.safetensors"
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        return dir
    }

    /// A Kyutai-named codec file of `config` with deterministic weights (8 codebooks in all, as
    /// `tools/train/export_codec.py` writes them), its shape recorded in the metadata or not.
    private func writeCodec(_ config: MimiConfig, to url: URL, recordShape: Bool = true) throws {
        var w = SafetensorsWriter()
        if recordShape {
            w.metadata["config"] = """
            {"seanet": {"dimension": \(config.dimension), "n_filters": \(config.filters)},
             "transformer": {"d_model": \(config.dimension), "num_heads": \(config.transformerHeads), "num_layers": \(config.transformerLayers),
                             "dim_feedforward": \(config.transformerFeedforward)},
             "quantizer": {"dimension": \(config.codebookDimension), "n_q": \(config.totalCodebooks), "bins": \(config.bins)}}
            """
        }
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        for spec in MimiTensorNames.table(config).specs where spec.required {
            let values: [Float] = (0..<spec.elementCount).map { _ in
                seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let u = Float(seed >> 40) / Float(1 << 24)
                switch spec.kind {
                case .codebookUsage: return 1 + u
                case .norm: return 1
                default: return (u - 0.5) * 0.2
                }
            }
            w.add(spec.name, Tensor(shape: spec.shape, data: values))
        }
        try w.write(to: url.path)
    }

    private func tinyConfig(filters: Int = 8) -> MimiConfig {
        var c = MimiConfig.released()
        c.filters = filters; c.dimension = 64; c.transformerLayers = 1; c.transformerHeads = 2
        c.transformerFeedforward = 128; c.codebookDimension = 32; c.totalCodebooks = 8; c.numCodebooks = 8
        return c
    }

    private func speech() -> [Float] { (0..<(1920 * 6)).map { i in 0.3 * sin(Float(i) * 0.02 + 0.00001 * Float(i * i)) } }

    func testWithoutTheFileTheCodecIsMadeUpFromTheSeed() throws {
        let dir = try folder("random")
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = try ModelFolder(dir.path)
        XCTAssertFalse(f.mimiFromFile)
        XCTAssertEqual(f.weightsDescription, "random weights, untrained")
        let a = try f.loadMimi().encode(speech()), b = try ModelFolder(dir.path).loadMimi().encode(speech())
        XCTAssertEqual(a, b, "the same seed makes the same codec")
        XCTAssertEqual(a.codebooks, 8)
    }

    func testTheTrainedCodecIsReadWhenTheFolderHasIt() throws {
        let dir = try folder("trained")
        defer { try? FileManager.default.removeItem(at: dir) }
        let random = try ModelFolder(dir.path).loadMimi().encode(speech())
        let file = dir.appendingPathComponent("mimi.safetensors")
        try writeCodec(tinyConfig(), to: file)
        let f = try ModelFolder(dir.path)
        XCTAssertTrue(f.mimiFromFile)
        XCTAssertEqual(f.weightsDescription, "codec from mimi.safetensors, LM random weights, untrained")
        XCTAssertEqual(f.randomWeightsSeed, 20_261_129, "the LM stays random until it is trained")
        let mimi = try f.loadMimi()
        XCTAssertEqual(mimi.config.totalCodebooks, 8, "the file's recorded shape: 8 codebooks in all")
        let fromFolder = mimi.encode(speech())
        let direct = try Mimi.load(path: file.path, codebooks: 8).encode(speech())
        XCTAssertEqual(fromFolder, direct, "the folder runs the file exactly as `--mimi FILE` does")
        XCTAssertNotEqual(fromFolder, random, "the file's weights, not the seed's")
    }

    func testAFileWithoutARecordedShapeIsReadAtTheDeclaredOne() throws {
        let dir = try folder("unrecorded")
        defer { try? FileManager.default.removeItem(at: dir) }
        var declared = tinyConfig()
        declared.totalCodebooks = 32  // the declared shape keeps the released codebook count
        try writeCodec(declared, to: dir.appendingPathComponent("mimi.safetensors"), recordShape: false)
        let mimi = try ModelFolder(dir.path).loadMimi()
        XCTAssertEqual(mimi.config.filters, 8)
        XCTAssertEqual(mimi.encode(speech()).codebooks, 8)
    }

    func testACodecOfAnotherShapeIsRefusedByName() throws {
        let dir = try folder("misshaped")
        defer { try? FileManager.default.removeItem(at: dir) }
        try writeCodec(tinyConfig(filters: 16), to: dir.appendingPathComponent("mimi.safetensors"))
        XCTAssertThrowsError(try ModelFolder(dir.path).loadMimi()) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("mimi.safetensors") && text.contains("duplex.mimi") && text.contains("filters 16 (declared 8)"), text)
        }
    }

    func testACorruptCodecFileIsAnErrorNotTheSeed() throws {
        let dir = try folder("corrupt")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("not a safetensors file".utf8).write(to: dir.appendingPathComponent("mimi.safetensors"))
        XCTAssertThrowsError(try ModelFolder(dir.path).loadMimi()) { error in
            XCTAssertTrue("\(error)".contains("mimi.safetensors"), "\(error)")
        }
    }
}
