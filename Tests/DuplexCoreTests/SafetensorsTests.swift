import DuplexCore
import Foundation
import XCTest

/// Corrupt and hostile weight files: each must fail with a `SafetensorsError` of the right kind
/// whose message names the tensor or the problem, never crash; plus writer round trips and a
/// file written by Python's `safetensors`.
final class SafetensorsTests: XCTestCase {
    // MARK: helpers

    private func write(_ bytes: [UInt8], _ name: String = #function) -> String {
        let path = temporaryPath("\(name.filter { $0.isLetter || $0.isNumber }).safetensors")
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)), path)
        return path
    }

    /// 8-byte length + `header` + `dataBytes` zero bytes.
    private func file(header: String, dataBytes: Int, lengthField: UInt64? = nil, _ name: String = #function) -> String {
        let h = Array(header.utf8)
        var bytes = withUnsafeBytes(of: (lengthField ?? UInt64(h.count)).littleEndian) { Array($0) }
        bytes += h + [UInt8](repeating: 0, count: dataBytes)
        return write(bytes, name)
    }

    private func tensor(_ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> String {
        "{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(begin),\(end)]}"
    }

    /// Opens `path`, expecting a failure of `kind` whose message mentions every string of `mentions`.
    @discardableResult
    private func assertFails(_ path: String, _ kind: SafetensorsError.Kind, mentions: [String] = [],
                             file: StaticString = #filePath, line: UInt = #line) -> SafetensorsError? {
        assertOpenFails(path, kind, mentions: mentions, open: { try SafetensorsFile(path: $0).entries.count }, file: file, line: line)
    }

    private func writerFile(_ name: String = #function) throws -> (path: String, bytes: Data) {
        var w = SafetensorsWriter(metadata: ["format_version": "1"])
        w.add("first", Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6]))
        w.add("second", Tensor(shape: [4], data: [7, 8, 9, 10]), as: .bf16)
        w.add("third", int64: [1, 2, 3], shape: [3])
        let path = temporaryPath("\(name.filter { $0.isLetter }).safetensors")
        try w.write(to: path)
        return (path, w.serialized())
    }

    // MARK: file-level problems

    func testEmptyFile() {
        assertFails(write([]), .empty, mentions: ["empty"])
    }

    func testFileShorterThanTheLengthField() {
        assertFails(write([1, 2, 3, 4, 5]), .truncated, mentions: ["5 bytes"])
    }

    func testHeaderLengthBeyondTheFile() {
        let path = file(header: "{}", dataBytes: 0, lengthField: 4000)
        assertFails(path, .headerLength, mentions: ["4000", "only 2"])
    }

    func testHeaderLengthOverTheLimit() {
        let path = file(header: "{}", dataBytes: 0, lengthField: UInt64.max)
        assertFails(path, .headerLength, mentions: ["\(UInt64.max)", "limit"])
    }

    func testHeaderNotUTF8() {
        var bytes = withUnsafeBytes(of: UInt64(4).littleEndian) { Array($0) }
        bytes += [0x7B, 0xFF, 0xFE, 0x7D]
        assertFails(write(bytes), .headerNotUTF8, mentions: ["UTF-8"])
    }

    func testHeaderNotJSON() {
        assertFails(file(header: "{\"a\": [1, 2", dataBytes: 0), .headerNotJSON, mentions: ["JSON"])
        assertFails(file(header: "[1, 2]", dataBytes: 0, "array"), .headerNotJSON, mentions: ["JSON"])
        assertFails(file(header: "", dataBytes: 0, "nothing"), .headerNotJSON)
    }

    func testDirectoryPath() {
        let dir = temporaryPath("a-directory.safetensors")
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        assertFails(dir, .io, mentions: ["directory"])
    }

    func testMissingPath() {
        assertFails(temporaryPath("does-not-exist.safetensors"), .io, mentions: ["No such file"])
    }

    // MARK: entry-level problems

    func testTruncatedDataIsOneProblemNamingTheFirstTensorCutShort() throws {
        let (_, bytes) = try writerFile()
        // Cut into the last tensor (i64, 24 bytes), then into the first (f32, 24 bytes).
        let last = write(Array(bytes.dropLast(5)), "cutLast")
        let error = assertFails(last, .truncated, mentions: ["third", "1 tensor cut short"])
        XCTAssertEqual(error?.problems.count, 1)
        let dataStart = bytes.count - 24 - 8 - 24
        let early = write(Array(bytes.prefix(dataStart + 10)), "cutEarly")
        let error2 = assertFails(early, .truncated, mentions: ["first [2, 3]", "3 tensors cut short", "holds only 10"])
        XCTAssertEqual(error2?.problems.count, 1)
    }

    func testOffsetsOutOfRange() {
        // One entry points far past the data while the others tile it: a corrupt entry, not truncation.
        let header = "{\"a\":\(tensor("F32", [2], 0, 8)),\"wild\":\(tensor("F32", [2], 1000, 1008))}"
        assertFails(file(header: header, dataBytes: 8), .offsetsOutOfRange, mentions: ["wild", "1008"])
        let backwards = "{\"back\":\(tensor("F32", [0], 8, 4))}"
        assertFails(file(header: backwards, dataBytes: 8, "backwards"), .offsetsOutOfRange, mentions: ["back", "backwards"])
    }

    func testOverlappingTensors() {
        let header = "{\"a\":\(tensor("F32", [4], 0, 16)),\"b\":\(tensor("F32", [2], 8, 16))}"
        assertFails(file(header: header, dataBytes: 16), .overlap, mentions: ["a [0, 16)", "b"])
    }

    func testUnknownDType() {
        let header = "{\"w\":\(tensor("F8_E9", [2], 0, 2))}"
        assertFails(file(header: header, dataBytes: 2), .unknownDType, mentions: ["w", "F8_E9", "BF16"])
    }

    func testShapeAndLengthMismatch() {
        let header = "{\"w\":\(tensor("BF16", [3, 5], 0, 32))}"
        assertFails(file(header: header, dataBytes: 32), .shapeMismatch, mentions: ["w", "[3, 5]", "30 bytes", "span 32"])
        let huge = "{\"big\":\(tensor("F32", [Int.max, 4], 0, 4))}"
        assertFails(file(header: huge, dataBytes: 4, "huge"), .shapeMismatch, mentions: ["big", "too many"])
    }

    func testNegativeAndFractionalShapes() {
        let negative = "{\"neg\":\(tensor("F32", [-1, 2], 0, 8))}"
        assertFails(file(header: negative, dataBytes: 8), .badEntry, mentions: ["neg", "negative"])
        let fractional = "{\"frac\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}"
        assertFails(file(header: fractional, dataBytes: 8, "frac"), .badEntry, mentions: ["frac", "shape [2.5] must hold integers"])
        let stringy = "{\"str\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}"
        assertFails(file(header: stringy, dataBytes: 8, "str"), .badEntry, mentions: ["str", "shape must be a list of integers"])
        let missing = "{\"nodtype\":{\"shape\":[2],\"data_offsets\":[0]}}"
        assertFails(file(header: missing, dataBytes: 8, "nodtype"), .badEntry, mentions: ["nodtype", "dtype is missing"])
        let single = "{\"single\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}"
        assertFails(file(header: single, dataBytes: 8, "single"), .badEntry, mentions: ["single", "not a pair"])
        let scalar = "{\"num\":5}"
        assertFails(file(header: scalar, dataBytes: 0, "num"), .badEntry, mentions: ["num", "not a JSON object"])
    }

    func testMetadataOfTheWrongType() {
        let numbers = "{\"__metadata__\":{\"version\":1},\"a\":\(tensor("F32", [1], 0, 4))}"
        assertFails(file(header: numbers, dataBytes: 4), .badEntry, mentions: ["__metadata__", "string values"])
        let text = "{\"__metadata__\":\"v1\"}"
        assertFails(file(header: text, dataBytes: 0, "text"), .badEntry, mentions: ["__metadata__"])
    }

    func testEveryProblemIsReportedAtOnce() {
        let header = """
            {"ok":\(tensor("F32", [2], 0, 8)),"dtype":\(tensor("Q4", [2], 8, 16)),\
            "shape":\(tensor("F32", [3], 8, 16)),"neg":\(tensor("F32", [-2], 8, 16)),\
            "overlap":\(tensor("F32", [2], 4, 12)),"__metadata__":{"a":[1]}}
            """
        guard let error = assertFails(file(header: header, dataBytes: 16), .unknownDType,
                                      mentions: ["5 problems", "dtype:", "shape:", "neg:", "overlap:", "__metadata__"]) else { return }
        XCTAssertEqual(error.kinds, [.unknownDType, .shapeMismatch, .badEntry, .overlap])
        XCTAssertEqual(error.problems.count, 5)
    }

    // MARK: what must be accepted

    func testEmptyHeaderAndZeroSizedTensorsAreValid() throws {
        let f = try SafetensorsFile(path: file(header: "{}", dataBytes: 0))
        XCTAssertTrue(f.entries.isEmpty)
        let zero = "{\"z\":\(tensor("F32", [0, 3], 0, 0)),\"a\":\(tensor("F32", [1], 0, 4)),\"__metadata__\":{}}"
        let g = try SafetensorsFile(path: file(header: zero, dataBytes: 4, "zero"))
        XCTAssertEqual(try g.floatTensor("z").shape, [0, 3])
        XCTAssertEqual(try g.floatTensor("a").data, [0])
    }

    func testReadingTheWrongKindOfTensorThrows() throws {
        let f = try SafetensorsFile(path: writerFile().path)
        XCTAssertThrowsError(try f.floatTensor("third")) { XCTAssertEqual(($0 as? SafetensorsError)?.kinds, [.wrongDType]) }
        XCTAssertThrowsError(try f.intTensor("first")) { XCTAssertEqual(($0 as? SafetensorsError)?.kinds, [.wrongDType]) }
        XCTAssertThrowsError(try f.floatTensor("nope")) { error in
            XCTAssertEqual((error as? SafetensorsError)?.kinds, [.missingTensor])
            XCTAssertTrue("\(error)".contains("nope"))
        }
    }

    // MARK: writer

    func testWriterRoundTripsEveryDTypeAndMetadata() throws {
        let values = randomArray(3 * 7, seed: 11, scale: 3) + [0, -0.0, 1e-3, 65504, -2.5e-5]
        let t = Tensor(shape: [values.count], data: values)
        let meta = ["format_version": "1", "quote\"and\\slash": "line\nbreak\ttab é 日本", "empty": ""]
        var w = SafetensorsWriter(metadata: meta)
        w.add("layers.0.f32", t)
        w.add("layers.0.f16", t, as: .f16)
        w.add("layers.0.bf16", t, as: .bf16)
        w.add("codes.i64", int64: [0, -1, Int64.max, Int64.min, 2047, 7], shape: [2, 3])
        w.add("codes.i32", int32: [Int32.min, -1, 0, Int32.max], shape: [4, 1])
        w.add("odd \"name\"", Tensor(shape: [1, 1, 1], data: [42]))
        w.add("raw.u8", raw: Data([1, 2, 255]), dtype: .u8, shape: [3])
        let path = temporaryPath("roundtrip.safetensors")
        try w.write(to: path)

        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerLength = bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual((8 + headerLength) % 8, 0, "data must start 8-byte aligned")

        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.metadata, meta)
        XCTAssertEqual(f.names, ["layers.0.f32", "layers.0.f16", "layers.0.bf16", "codes.i64", "codes.i32", "odd \"name\"", "raw.u8"])
        XCTAssertEqual(try f.floatTensor("layers.0.f32"), t)
        XCTAssertEqual(f["layers.0.f16"]?.dtype, .f16)
        XCTAssertEqual(f["layers.0.bf16"]?.dtype, .bf16)
        let f16 = try f.floatTensor("layers.0.f16").data, bf16 = try f.floatTensor("layers.0.bf16").data
        for (i, v) in values.enumerated() {
            // Round to nearest: within half a unit in the last place of each format.
            XCTAssertLessThanOrEqual(abs(f16[i] - v), max(abs(v) * 0x1p-11, 0x1p-25), "f16 [\(i)] \(v) → \(f16[i])")
            XCTAssertLessThanOrEqual(abs(bf16[i] - v), abs(v) * 0x1p-8, "bf16 [\(i)] \(v) → \(bf16[i])")
            XCTAssertEqual(f16[i].sign, v.sign)
        }
        let i64 = try f.intTensor("codes.i64")
        XCTAssertEqual(i64.shape, [2, 3])
        XCTAssertEqual(i64.values, [0, -1, Int64.max, Int64.min, 2047, 7])
        let i32 = try f.intTensor("codes.i32")
        XCTAssertEqual(i32.shape, [4, 1])
        XCTAssertEqual(i32.values, [Int64(Int32.min), -1, 0, Int64(Int32.max)])
        XCTAssertEqual(try f.floatTensor("odd \"name\"").data, [42])
        XCTAssertEqual(try f.intTensor("raw.u8").values, [1, 2, 255])
    }

    func testWriterWithoutMetadataOrTensors() throws {
        let path = temporaryPath("bare.safetensors")
        try SafetensorsWriter().write(to: path)
        let f = try SafetensorsFile(path: path)
        XCTAssertTrue(f.entries.isEmpty)
        XCTAssertTrue(f.metadata.isEmpty)
    }

    func testWriterReportsAnUnwritablePath() {
        XCTAssertThrowsError(try SafetensorsWriter().write(to: temporaryPath("no/such/dir/x.safetensors"))) { error in
            XCTAssertEqual((error as? SafetensorsError)?.kinds, [.io])
        }
    }

    // MARK: Python's safetensors

    /// tools/reference/fixtures_dtypes.py wrote this with `safetensors.torch.save_file`; the values
    /// below are the literals that script stores.
    func testReadsAFileWrittenByPythonSafetensors() throws {
        let f = try loadFixture("dtypes")
        XCTAssertEqual(f.metadata["note"], "safetensors-written é metadata")
        XCTAssertEqual(Set(f.entries.values.map(\.dtype)), Set(DType.allCases))
        XCTAssertEqual(try f.intTensor("i64_values").values, [0, 1, -1, 1 << 40, -(1 << 62), Int64.max])
        XCTAssertEqual(try f.intTensor("i32_values").shape, [2, 2])
        XCTAssertEqual(try f.intTensor("i32_values").values, [0, -7, Int64(Int32.max), Int64(Int32.min)])
        XCTAssertEqual(try f.intTensor("i16_values").values, [-32768, 32767, 5])
        XCTAssertEqual(try f.intTensor("i8_values").values, [-128, 127, 0])
        XCTAssertEqual(try f.intTensor("u8_values").values, [0, 255, 9])
        XCTAssertEqual(try f.intTensor("bool_values").values, [1, 0, 1])
        XCTAssertEqual(try f.intTensor("u32_values").values, [0, 4_294_967_295, 0x1234_5678])
        XCTAssertEqual(try f.intTensor("u16_values").values, [0, 65535, 7])
        XCTAssertEqual(try f.floatTensor("empty").shape, [0, 4])
        XCTAssertEqual(try f.floatTensor("scalar"), Tensor(shape: [], data: [2.5]))
        XCTAssertEqual(try f.floatTensor("f32_matrix").shape, [3, 5])
        let f64 = try f.floatTensor("f64_vector")
        XCTAssertEqual(f64.shape, [7])
        XCTAssertTrue(f64.data.allSatisfy { $0.isFinite && $0 != 0 })
        // The three views of the same values agree to within each format's rounding.
        let input = try f.floatTensor("convert_input").data
        let bf16 = try f.floatTensor("convert_bf16").data
        for (v, b) in zip(input, bf16) where v.isFinite && abs(v) < 0x1p127 {
            // Half a bf16 step: 2⁻⁸ relative, or 2⁻¹³⁴ among the subnormals.
            XCTAssertLessThanOrEqual(abs(b - v), max(abs(v) * 0x1p-8, 0x1p-134), "\(v) vs bf16 \(b)")
        }
    }
}
