import DuplexCore
import Foundation
import XCTest

/// Strict loading: every missing, extra, misshaped or wrongly typed tensor is reported in one
/// error from `finish()`, each by name; matrices are used as stored.
final class WeightStoreTests: XCTestCase {
    private let a = Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6])
    private let b = Tensor(shape: [4, 3], data: (0..<12).map { Float($0) * 0.5 - 2 })

    private func checkpoint(_ name: String = #function, _ extra: (inout SafetensorsWriter) -> Void = { _ in }) throws -> String {
        var w = SafetensorsWriter()
        w.add("layer.a.weight", a)
        w.add("layer.b.weight", b, as: .bf16)
        w.add("layer.codes", int64: [1, 2, 3], shape: [3])
        w.add("layer.bias", Tensor(shape: [5], data: [1, 2, 3, 4, 5]))
        w.add("layer.half", b, as: .f16)
        extra(&w)
        let path = temporaryPath("\(name.filter { $0.isLetter }).safetensors")
        try w.write(to: path)
        return path
    }

    private func finishError(_ store: WeightStore, allowUnused: @escaping (String) -> Bool = { _ in false },
                             file: StaticString = #filePath, line: UInt = #line) -> SafetensorsError? {
        do {
            try store.finish(allowUnused: allowUnused)
            XCTFail("finish() accepted the checkpoint", file: file, line: line)
            return nil
        } catch let error as SafetensorsError {
            return error
        } catch {
            XCTFail("unexpected \(error)", file: file, line: line)
            return nil
        }
    }

    func testEveryProblemIsNamedInOneError() throws {
        let store = try WeightStore(path: try checkpoint { $0.add("stray.weight", Tensor(shape: [1], data: [0])) })
        XCTAssertEqual(store.tensor("layer.a.weight", shape: [2, 3]), a)
        XCTAssertEqual(store.tensor("layer.bias", shape: [6]), Tensor(zeros: [6]), "a misshaped tensor comes back as zeros")
        XCTAssertEqual(store.tensor("layer.codes", shape: [3]), Tensor(zeros: [3]), "an int tensor asked as float comes back as zeros")
        XCTAssertEqual(store.tensor("layer.missing", shape: [2]), Tensor(zeros: [2]))
        _ = store.matrix("layer.b.weight", shape: [3, 4])
        // layer.half and stray.weight are never asked for.
        guard let error = finishError(store) else { return }
        XCTAssertEqual(error.problems.count, 6, "\(error)")
        let byKind = Dictionary(grouping: error.problems, by: \.kind).mapValues { $0.map(\.message) }
        XCTAssertEqual(byKind[.wrongShape]?.count, 2)
        XCTAssertEqual(byKind[.wrongDType], ["layer.codes is stored as I64, expected a float type (F32, F16, BF16 or F64)"])
        XCTAssertEqual(byKind[.missingTensor], ["missing tensor layer.missing (expected shape [2])"])
        XCTAssertEqual(byKind[.unexpectedTensor]?.count, 2)
        let text = error.description
        for name in ["layer.bias has shape [5], expected [6]", "layer.b.weight has shape [4, 3], expected [3, 4]",
                     "unexpected tensor layer.half [4, 3]", "unexpected tensor stray.weight [1]", "6 problems"] {
            XCTAssertTrue(text.contains(name), "missing \"\(name)\" in: \(text)")
        }
    }

    func testWrongShapeAndWrongTypeTogetherAreBothReported() throws {
        let store = try WeightStore(path: try checkpoint())
        _ = store.tensor("layer.codes", shape: [4])
        store.ignore("layer.a.weight"); store.ignore("layer.b.weight"); store.ignore("layer.bias"); store.ignore("layer.half")
        XCTAssertEqual(finishError(store)?.kinds, [.wrongShape, .wrongDType])
    }

    func testAllowUnusedIgnoreAndOptionalTensors() throws {
        let path = try checkpoint { $0.add("buffers._initialized", Tensor(shape: [], data: [1])) }
        let store = try WeightStore(path: path)
        XCTAssertEqual(store.names.count, 6)
        XCTAssertTrue(store.contains("layer.half"))
        XCTAssertEqual(store.shape(of: "layer.b.weight"), [4, 3])
        XCTAssertNil(store.shape(of: "nope"))
        _ = store.tensor("layer.a.weight", shape: [2, 3])
        _ = store.matrix("layer.b.weight", shape: [4, 3])
        _ = store.tensor("layer.bias", shape: [5])
        XCTAssertNil(store.optionalTensor("layer.absent_g", shape: [1]), "absent optional tensors are no problem")
        XCTAssertNotNil(store.optionalTensor("layer.half", shape: [4, 3]))
        store.ignore("layer.codes")
        store.ignore("never.there")
        XCTAssertEqual(finishError(store)?.problems.map(\.message), ["unexpected tensor buffers._initialized [] (not part of this model)"])
        XCTAssertNoThrow(try store.finish(allowUnused: { $0.hasSuffix("._initialized") }))

        let strict = try WeightStore(path: path)
        _ = strict.optionalTensor("layer.bias", shape: [4])
        XCTAssertTrue(finishError(strict, allowUnused: { $0 != "layer.bias" })?.problems.map(\.kind) == [.wrongShape],
                      "an optional tensor that is present must still have the right shape")
    }

    /// bf16 stays bf16 and f32 is used in place (both point into the memory map); f16 is widened.
    func testMatricesAreUsedAsStored() throws {
        let path = try checkpoint()
        let file = try SafetensorsFile(path: path)
        let store = try WeightStore(files: [file])
        let mapped = { (name: String) in UnsafeRawPointer(file.bytes(file[name]!).baseAddress!) }

        let f32 = store.matrix("layer.a.weight", shape: [2, 3])
        guard case .f32(let pf) = f32.storage else { return XCTFail("f32 matrix storage is \(f32.storage)") }
        XCTAssertEqual(UnsafeRawPointer(pf), mapped("layer.a.weight"), "f32 should be used in place")
        XCTAssertEqual(f32.toTensor(), a)

        let bf16 = store.matrix("layer.b.weight", shape: [4, 3])
        guard case .bf16(let pb) = bf16.storage else { return XCTFail("bf16 matrix storage is \(bf16.storage)") }
        XCTAssertEqual(UnsafeRawPointer(pb), mapped("layer.b.weight"), "bf16 should stay in the map")
        XCTAssertEqual(bf16.formatName, "BF16")
        XCTAssertEqual(bf16.byteCount, 24)
        XCTAssertEqual(bf16.toTensor(), b, "these values are exact in bf16")

        // fp16 stays at 2 bytes in the map too (a 7B in f16 would be 30 GB widened).
        let f16 = store.matrix("layer.half", shape: [4, 3])
        guard case .f16(let ph) = f16.storage else { return XCTFail("f16 should stay in the map, is \(f16.storage)") }
        XCTAssertEqual(UnsafeRawPointer(ph), mapped("layer.half"), "f16 should stay in the map")
        XCTAssertEqual(f16.toTensor(), b)

        // Shapes are viewed as rows × (product of the rest): a [5] vector is a 5×1 matrix.
        let conv = store.matrix("layer.bias", shape: [5])
        XCTAssertEqual(conv.rows, 5)
        XCTAssertEqual(conv.cols, 1)
        _ = store.tensor("layer.codes", shape: [1])
        XCTAssertEqual(finishError(store)?.kinds, [.wrongShape, .wrongDType])
    }

    func testRowViewsShareStorage() throws {
        let store = try WeightStore(path: try checkpoint())
        for m in [store.matrix("layer.a.weight", shape: [2, 3]), store.matrix("layer.b.weight", shape: [4, 3])] {
            let full = m.toTensor()
            for range in [0..<1, 1..<m.rows, 0..<m.rows, 1..<1] {
                let view = m.rows(range)
                XCTAssertEqual(view.rows, range.count)
                XCTAssertEqual(view.cols, m.cols)
                XCTAssertEqual(view.toTensor(), full.slice(first: range))
                var row = [Float](repeating: 0, count: m.cols)
                for r in 0..<range.count {
                    view.copyRow(r, into: &row)
                    XCTAssertEqual(row, full.slice(first: (range.lowerBound + r)..<(range.lowerBound + r + 1)).data)
                }
            }
        }
    }

    func testDuplicateNamesAcrossFilesAreRejected() throws {
        let one = try checkpoint("one")
        var w = SafetensorsWriter()
        w.add("layer.bias", Tensor(shape: [1], data: [0]))
        w.add("other", Tensor(shape: [1], data: [0]))
        let two = temporaryPath("two.safetensors")
        try w.write(to: two)
        XCTAssertThrowsError(try WeightStore(files: [SafetensorsFile(path: one), SafetensorsFile(path: two)])) { error in
            guard let e = error as? SafetensorsError else { return XCTFail("\(error)") }
            XCTAssertEqual(e.kinds, [.duplicateTensor])
            XCTAssertTrue(e.description.contains("layer.bias is in both \(one) and \(two)"), e.description)
        }
        // Disjoint files load together and are checked together.
        var w3 = SafetensorsWriter()
        w3.add("other", Tensor(shape: [1], data: [0]))
        let three = temporaryPath("three.safetensors")
        try w3.write(to: three)
        let store = try WeightStore(files: [SafetensorsFile(path: one), SafetensorsFile(path: three)])
        XCTAssertEqual(store.names.count, 6)
        _ = store.tensor("other", shape: [1])
        XCTAssertEqual(finishError(store)?.problems.count, 5, "the five tensors of the first file are unused")
    }

    func testOwnedMatrixOutlivesItsTensor() {
        var m: WeightMatrix?
        do {
            let t = Tensor(shape: [3, 2], data: [1, 2, 3, 4, 5, 6])
            m = WeightMatrix(t)
        }
        var y = [Float](repeating: 0, count: 3)
        m?.apply([1, -1], into: &y)
        XCTAssertEqual(y, [-1, -1, -1])
    }
}
