import DuplexCore
import Foundation
import XCTest

/// Kyutai's quantized LM layouts, as the real tools write them (fixture:
/// tools/reference/fixtures_quant_lm.py): a candle GGUF (Q8_0, depformer split per step, shared
/// norms copied per step, written by the `gguf` package) and MLX q4 (group 32) and q8 (group 64,
/// 32 where a row is no multiple of 64) from moshi_mlx's `nn.quantize`.
///
/// Each file is loaded by its own names. Widened to f32 (`dequantizeAll`), duplex computes the
/// reference's model exactly: Kyutai's PyTorch LMGen on the file's dequantized weights, greedy
/// past the context — every frame identical, text logits within 1e-4. With the integer kernels
/// (activations quantized to 8 bits per 32 values, as ggml does), teacher-forced against the
/// widened model: relative logit error ≤ 3 % and top-1 agreement ≥ 90 % on every head.
final class QuantizedLayoutTests: XCTestCase {
    struct Records {
        let config: LMConfig
        let user: [[Int32]]
        let file: SafetensorsFile
        func returned(_ key: String) throws -> [[Int32]] {
            let (shape, values) = try file.intTensor("\(key).returned")
            return (0..<shape[0]).map { t in (0..<shape[1]).map { Int32(values[t * shape[1] + $0]) } }
        }
    }

    static func records() throws -> Records {
        let file = try loadFixture("lm_quant_records")
        let config = try LMConfig(kyutaiConfigJSON: Data(file.metadata["config"]!.utf8))
        let (shape, values) = try file.intTensor("user_codes")
        let calls = shape[1]
        let user = (0..<calls).map { t in (0..<shape[0]).map { Int32(values[$0 * calls + t]) } }
        return Records(config: config, user: user, file: file)
    }

    static func load(_ fixture: String, config: LMConfig, dequantize: Bool) throws -> LMModel {
        let store = try WeightStore(path: try requireFixture(fixture, generator: "quant_lm"))
        store.dequantizeAll = dequantize
        let model = LMModel(store: store, config: config)
        try store.finish()
        return model
    }

    private func check(_ fixture: String, key: String, layout: String, formats: Set<String>) throws {
        let r = try Self.records()
        let c = r.config
        let store = try WeightStore(path: try requireFixture(fixture, generator: "quant_lm"))
        let quantized = LMModel(store: store, config: c)
        try store.finish()
        XCTAssertEqual(store.layout.name, layout)
        XCTAssertEqual(Set(quantized.matrixFormats.keys), formats, "every matrix is used as the file stores it")

        // Widened: Kyutai's reference on the same values, frame for frame.
        let widened = try Self.load(fixture, config: c, dequantize: true)
        let gen = LMGen(model: widened, sampling: .greedy)
        var state = gen.makeState(kvCache: .f32)   // Kyutai's CPU reference keeps f32
        let expected = try r.returned(key)
        let logits = try r.file.floatTensor("\(key).text_logits")
        var mismatches = 0
        for (t, codes) in r.user.enumerated() {
            let out = try gen.step(userCodes: codes, state: &state)
            assertClose(state.model.textLogits, Array(logits.data[(t * c.textCard)..<((t + 1) * c.textCard)]), relL2: 1e-4,
                        "\(fixture) widened: text logits, call \(t)")
            if t > 0 && out != expected[t - 1] { mismatches += 1 }
        }
        XCTAssertGreaterThan(r.user.count, 2 * c.context, "the fixture must run past the context")
        XCTAssertEqual(mismatches, 0, "\(fixture) widened: frames differ from Kyutai's")

        // Integer kernels, teacher-forced against the widened model.
        let heads = try QuantizationQuality.teacherForced(reference: widened, candidate: quantized,
                                                          userCodes: r.user.flatMap { $0 }, steps: r.user.count)
        for h in heads {
            XCTAssertLessThanOrEqual(h.relativeError, 0.03, "\(fixture) \(h.name): relative logit error")
            XCTAssertGreaterThanOrEqual(h.top1Agreement, 0.9, "\(fixture) \(h.name): top-1 agreement")
        }
    }

    func testCandleQ8GGUF() throws {
        try check("lm_quant_candle_q8.gguf", key: "gguf_q8", layout: "candle", formats: ["Q8_0"])
    }

    func testMLXQ4() throws {
        try check("lm_quant_mlx_q4.safetensors", key: "mlx_q4", layout: "MLX", formats: ["MLX-Q4 g32"])
    }

    func testMLXQ8() throws {
        try check("lm_quant_mlx_q8.safetensors", key: "mlx_q8", layout: "MLX", formats: ["MLX-Q8 g64", "MLX-Q8 g32"])
    }

    /// A depformer norm copy that differs from step 0's is refused (duplex shares one, as Kyutai's model does).
    func testCandleNormCopiesMustAgree() throws {
        // Covered with a hand-made GGUF once the writer exists (GGUFWriter): see testDifferentNormCopyIsRefused.
        let r = try Self.records()
        let path = try requireFixture("lm_quant_candle_q8.gguf", generator: "quant_lm")
        let source = try GGUFFile(path: path)
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("norm-copies-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let victim = "depformer.2.transformer.layers.0.norm1.alpha"
        let tensors = source.names.map { GGUFWriter.Tensor(name: $0, type: source.entries[$0]!.type, shape: source.entries[$0]!.shape) }
        try GGUFWriter.write(path: tmp, tensors: tensors) { i, sink in
            let e = source.entries[source.names[i]]!
            var bytes = [UInt8](source.bytes(e))
            if e.name == victim { bytes[0] ^= 0x40 }
            try bytes.withUnsafeBytes { try sink($0) }
        }
        let store = try WeightStore(path: tmp)
        _ = LMModel(store: store, config: r.config)
        XCTAssertThrowsError(try store.finish()) { error in
            XCTAssertTrue("\(error)".contains(victim), "\(error)")
        }
    }
}
