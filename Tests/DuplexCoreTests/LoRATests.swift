import DuplexCore
import Foundation
import XCTest

/// `lora` in config.json is judged by the file: merged weights load (moshi-finetune says
/// `lora: true` beside them), unmerged adapter tensors and separate adapter files are refused
/// with the reason.
final class LoRATests: XCTestCase {
    func testLoRAFlagWithMergedWeightsLoads() throws {
        let reference = try LMReferenceTests.loadLMFixture()
        var json = try JSONSerialization.jsonObject(with: Data(reference.file.metadata["config"]!.utf8)) as! [String: Any]
        json["lora"] = true
        json["lora_rank"] = 16
        let config = try LMConfig(kyutaiConfigJSON: JSONSerialization.data(withJSONObject: json))
        XCTAssertTrue(config.loraDeclared)
        let file = try loadFixture("lm_tiny_module_form")
        let store = try WeightStore(files: [file])
        _ = LMModel(store: store, config: config)
        XCTAssertNoThrow(try store.finish())
    }

    func testSeparateAdapterFileIsRefused() {
        XCTAssertThrowsError(try LMConfig(kyutaiConfigJSON: Data(#"{"lora": true, "lora_name": "lora.safetensors"}"#.utf8))) { error in
            XCTAssertTrue("\(error)".contains("lora_name") && "\(error)".contains("merge"), "\(error)")
        }
    }

    func testUnmergedAdapterTensorsAreRefused() throws {
        let source = try loadFixture("lm_tiny_module_form")
        var w = SafetensorsWriter()
        for (n, e) in source.entries { w.add(n, raw: Data(source.bytes(e)), dtype: e.dtype, shape: e.shape) }
        w.add("transformer.layers.0.gating.linear_in.lora_A.weight", Tensor(zeros: [4, 64]), as: .bf16)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lora-\(getpid()).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try w.write(to: path)
        let config = try LMReferenceTests.loadLMFixture().config
        XCTAssertThrowsError(try LMModel.load(path: path, config: config)) { error in
            XCTAssertTrue("\(error)".contains("unmerged LoRA") && "\(error)".contains("lora_A"), "\(error)")
        }
    }
}
