import DuplexCore
import Foundation
import XCTest

/// A checkpoint saved with `LMModel.state_dict()` (module-form attention names, as moshi-finetune
/// writes them) loads by those names and is the legacy-named model: the same frames as Kyutai's
/// run recorded in the lm_tiny fixture, over 5× the context (fixtures: tools/reference/
/// fixtures_lm.py and fixtures_lm_module_form.py).
final class ModuleFormTests: XCTestCase {
    func testStateDictNamesLoadAndMatchKyutai() throws {
        let reference = try LMReferenceTests.loadLMFixture()
        let file = try loadFixture("lm_tiny_module_form")
        XCTAssertTrue(file.entries.keys.contains("depformer.layers.0.self_attn.in_projs.3.weight"), "the fixture keeps state_dict()'s names")
        let store = try WeightStore(files: [file])
        let model = LMModel(store: store, config: reference.config)
        try store.finish()
        XCTAssertEqual(store.layout.name, "PyTorch module-form")
        let gen = LMGen(model: model, sampling: .greedy)
        var state = gen.makeState(kvCache: .f32)
        var mismatches = 0
        for (t, codes) in reference.user.enumerated() {
            let out = try gen.step(userCodes: codes, state: &state)
            let c = reference.config
            assertClose(state.model.textLogits, Array(reference.textLogits.data[(t * c.textCard)..<((t + 1) * c.textCard)]),
                        relL2: 1e-4, "text logits, call \(t)")
            if t > 0 && out != reference.returned[t - 1] { mismatches += 1 }
        }
        XCTAssertEqual(mismatches, 0, "module-form frames differ from Kyutai's")
    }

    func testAMissingStepIsNamedByItsModuleName() throws {
        let source = try loadFixture("lm_tiny_module_form")
        var w = SafetensorsWriter()
        for (n, e) in source.entries where n != "depformer.layers.1.self_attn.out_projs.5.weight" {
            w.add(n, raw: Data(source.bytes(e)), dtype: e.dtype, shape: e.shape)
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("module-form-\(getpid()).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try w.write(to: path)
        let config = try LMReferenceTests.loadLMFixture().config
        XCTAssertThrowsError(try LMModel.load(path: path, config: config)) { error in
            XCTAssertTrue("\(error)".contains("missing tensor depformer.layers.1.self_attn.out_projs.5.weight"), "\(error)")
        }
    }
}
