import DuplexCore
import Foundation
import XCTest

/// fp16 checkpoints stay at 2 bytes a weight (as bf16 ones do) instead of being widened to f32:
/// the matrix points into the map, and its products equal f32 products of the same values.
final class F16StorageTests: XCTestCase {
    func testF16MatrixStaysInTheMapAndMultipliesExactly() throws {
        var g = SplitMix64(seed: 9)
        for (rows, cols) in [(1, 7), (5, 16), (33, 100), (300, 1024)] {
            let values = (0..<(rows * cols)).map { _ in Float(Float16(g.nextFloat() - 0.5)) }
            var w = SafetensorsWriter()
            w.add("m.weight", Tensor(shape: [rows, cols], data: values), as: .f16)
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("f16-\(getpid())-\(rows).safetensors").path
            defer { try? FileManager.default.removeItem(atPath: path) }
            try w.write(to: path)
            let store = try WeightStore(path: path)
            let m = store.matrix("m.weight", shape: [rows, cols])
            try store.finish()
            XCTAssertEqual(m.formatName, "F16")
            XCTAssertEqual(m.byteCount, rows * cols * 2)
            guard case .f16 = m.storage else { return XCTFail("widened: \(m.storage)") }
            let x = (0..<cols).map { _ in g.nextFloat() - 0.5 }
            var y = [Float](repeating: 0, count: rows), expected = y
            x.withUnsafeBufferPointer { xb in y.withUnsafeMutableBufferPointer { m.apply(xb.baseAddress!, into: $0.baseAddress!) } }
            let reference = WeightMatrix(Tensor(shape: [rows, cols], data: values))
            x.withUnsafeBufferPointer { xb in expected.withUnsafeMutableBufferPointer { reference.apply(xb.baseAddress!, into: $0.baseAddress!) } }
            assertClose(y, expected, relL2: 1e-6, "f16 \(rows)×\(cols)")
            XCTAssertEqual(m.toTensor().data, values, "rows widen exactly")
            XCTAssertEqual(m.rows(1..<rows).toTensor().data, Array(values[cols...]), "a row view")
        }
    }

    /// The tiny LM stored in fp16 (its bf16 values, exact in f16 but for a few tiny ones) follows
    /// the bf16 file: text logits within 1e-3 relative L2 at every call.
    func testF16LMFollowsTheBF16One() throws {
        let reference = try LMReferenceTests.loadLMFixture()
        let source = try loadFixture("lm_tiny_module_form")
        var w = SafetensorsWriter()
        for (n, e) in source.entries { w.add(n, try source.floatTensor(e), as: .f16) }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lm-f16-\(getpid()).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try w.write(to: path)
        let model = try LMModel.load(path: path, config: reference.config)
        XCTAssertEqual(Set(model.matrixFormats.keys), ["F16"])
        let c = reference.config
        let gen = LMGen(model: model, sampling: .greedy), refGen = LMGen(model: reference.model, sampling: .greedy)
        var s = gen.makeState(kvCache: .f32), r = refGen.makeState(kvCache: .f32)
        for codes in reference.user {
            _ = try refGen.step(userCodes: codes, state: &r)
            _ = try gen.step(userCodes: codes, state: &s)
            assertClose(s.model.textLogits, r.model.textLogits, relL2: 1e-3, "f16 vs bf16 text logits")
            if s.model.textLogits.count != c.textCardOut { break }
        }
    }
}
