import DuplexCore
import Foundation
import XCTest

/// Quantized files that are wrong in one way each: one clear error naming the file, the tensor
/// and the problem; never a crash, never a model that runs on garbage.
final class QuantizedBadInputTests: XCTestCase {
    private func temporary(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("qbad-\(getpid())-\(name)").path
    }

    /// The MLX q4 fixture rewritten with `edit` applied to its tensors (name → (dtype, shape, bytes)).
    private func editedMLX(_ name: String, _ edit: (inout [String: (DType, [Int], Data)]) -> Void) throws -> String {
        let source = try SafetensorsFile(path: try requireFixture("lm_quant_mlx_q4.safetensors", generator: "quant_lm"))
        var tensors: [String: (DType, [Int], Data)] = [:]
        for (n, e) in source.entries { tensors[n] = (e.dtype, e.shape, Data(source.bytes(e))) }
        edit(&tensors)
        var w = SafetensorsWriter()
        for n in tensors.keys.sorted() { w.add(n, raw: tensors[n]!.2, dtype: tensors[n]!.0, shape: tensors[n]!.1) }
        let path = temporary(name + ".safetensors")
        try w.write(to: path)
        return path
    }

    private func loadError(_ path: String) throws -> String {
        let config = try QuantizedLayoutTests.records().config
        do {
            _ = try LMModel.load(path: path, config: config)
            return ""
        } catch {
            return "\(error)"
        }
    }

    func testMLXScaleOfNaNIsNamed() throws {
        let path = try editedMLX("nan") { t in
            var (d, s, bytes) = t["text_linear.scales"]!
            bytes[2] = 0xC0; bytes[3] = 0x7F   // bf16 0x7FC0: NaN
            t["text_linear.scales"] = (d, s, bytes)
        }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let message = try loadError(path)
        XCTAssertTrue(message.contains("text_linear") && message.contains("NaN"), message)
    }

    func testMLXScalesThatDoNotFitTheCodesAreNamed() throws {
        let path = try editedMLX("groups") { t in
            let (d, s, bytes) = t["text_linear.biases"]!
            t["text_linear.biases"] = (d, [s[0], s[1] + 1], bytes + Data(count: 2 * s[0]))
        }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let message = try loadError(path)
        XCTAssertTrue(message.contains("text_linear") && message.contains("scales"), message)
    }

    func testMLXSixBitIsRefusedByName() throws {
        // 6-bit codes of a [40, 128] matrix: 24 words per row, 4 groups of 32.
        let path = try editedMLX("six") { t in
            let (d, s, _) = t["text_linear.weight"]!
            t["text_linear.weight"] = (d, [s[0], 24], Data(count: 4 * 24 * s[0]))
        }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let message = try loadError(path)
        XCTAssertTrue(message.contains("text_linear") && message.contains("6-bit"), message)
    }

    func testBitsandbytesInt8IsRefusedWithAHint() throws {
        let path = try editedMLX("bnb") { t in t["transformer.layers.0.self_attn.in_proj.weight_scb"] = (.f32, [384], Data(count: 4 * 384)) }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let message = try loadError(path)
        XCTAssertTrue(message.contains("bitsandbytes") && message.contains("candle-q8"), message)
    }

    /// The candle fixture rewritten with `edit` (tensor list and per-tensor bytes) and metadata.
    private func editedGGUF(_ name: String, metadata: [(String, GGUFValue)] = [],
                            _ edit: (inout [GGUFWriter.Tensor]) -> Void = { _ in }) throws -> String {
        let source = try GGUFFile(path: try requireFixture("lm_quant_candle_q8.gguf", generator: "quant_lm"))
        var tensors = source.names.map { GGUFWriter.Tensor(name: $0, type: source.entries[$0]!.type, shape: source.entries[$0]!.shape) }
        edit(&tensors)
        let path = temporary(name + ".gguf")
        try GGUFWriter.write(path: path, metadata: metadata, tensors: tensors) { i, sink in
            let t = tensors[i]
            if let e = source.entries[t.name], e.type == t.type, e.shape == t.shape {
                try sink(source.bytes(e))
            } else {
                try Data(count: t.type.byteCount(shape: t.shape)!).withUnsafeBytes { try sink($0) }
            }
        }
        return path
    }

    func testGGUFOfAnotherArchitectureIsRefused() throws {
        let path = try editedGGUF("llama", metadata: [("general.architecture", .string("llama"))])
        defer { try? FileManager.default.removeItem(atPath: path) }
        let message = try loadError(path)
        XCTAssertTrue(message.contains("llama") && message.contains("not a Moshi LM"), message)
    }

    func testUnimplementedGGMLTypeIsNamed() throws {
        let path = try editedGGUF("q5k") { t in
            let i = t.firstIndex { $0.name == "text_linear.weight" }!
            t[i] = GGUFWriter.Tensor(name: t[i].name, type: .q5_1, shape: t[i].shape)
        }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let message = try loadError(path)
        XCTAssertTrue(message.contains("text_linear.weight") && message.contains("Q5_1") && message.contains("does not implement"), message)
    }

    func testMissingDepformerPartIsNamedByItsCandleName() throws {
        let path = try editedGGUF("missing") { t in t.removeAll { $0.name == "depformer.2.transformer.layers.0.self_attn.out_proj.weight" } }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let message = try loadError(path)
        XCTAssertTrue(message.contains("missing tensor depformer.2.transformer.layers.0.self_attn.out_proj.weight"), message)
        XCTAssertTrue(message.contains("candle"), message)
    }

    func testQuantizedNormIsAWrongType() throws {
        let path = try editedGGUF("qnorm") { t in
            let i = t.firstIndex { $0.name == "out_norm.alpha" }!
            t[i] = GGUFWriter.Tensor(name: "out_norm.alpha", type: .q8_0, shape: [1, 4, 32])
        }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let message = try loadError(path)
        XCTAssertTrue(message.contains("out_norm.alpha"), message)
    }
}

extension QuantizedBadInputTests {
    func testQuantizingAQuantizedFileIsRefused() throws {
        let config = try QuantizedLayoutTests.records().config
        let path = try requireFixture("lm_quant_mlx_q4.safetensors", generator: "quant_lm")
        XCTAssertThrowsError(try LMModel.load(path: path, config: config, quantize: .uniform(.q8_0))) { error in
            XCTAssertTrue("\(error)".contains("already quantized") && "\(error)".contains("MLX"), "\(error)")
        }
    }
}

extension QuantizedBadInputTests {
    /// A Q8_0 block scale of NaN inside a GGUF: the load does not read every block (the file is
    /// mapped and used as stored), so `info --scan` finds it by name and a step that reaches it
    /// stops with the non-finite-logits error rather than answering.
    func testNaNBlockScaleIsFoundByTheScanAndStopsTheModel() throws {
        let source = try GGUFFile(path: try requireFixture("lm_quant_candle_q8.gguf", generator: "quant_lm"))
        let victim = "text_linear.weight"
        let path = temporary("nanblock.gguf")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let tensors = source.names.map { GGUFWriter.Tensor(name: $0, type: source.entries[$0]!.type, shape: source.entries[$0]!.shape) }
        try GGUFWriter.write(path: path, tensors: tensors) { i, sink in
            let e = source.entries[source.names[i]]!
            var bytes = [UInt8](source.bytes(e))
            if e.name == victim { bytes[0] = 0x00; bytes[1] = 0x7E }   // f16 NaN as the first block's d
            try bytes.withUnsafeBytes { try sink($0) }
        }
        let store = try WeightStore(path: path)
        let config = try QuantizedLayoutTests.records().config
        let model = LMModel(store: store, config: config)
        try store.finish()
        let scan = store.scanValues()
        XCTAssertEqual(scan.nanCount, 32, "one block of 32 values")
        XCTAssertEqual(scan.badTensors, [victim])
        let gen = LMGen(model: model, sampling: .greedy)
        var state = gen.makeState()
        XCTAssertThrowsError(try gen.step(userCodes: [Int32](repeating: 1, count: config.userStreams), state: &state)) { error in
            XCTAssertTrue("\(error)".contains("NaN"), "\(error)")
        }
    }
}
