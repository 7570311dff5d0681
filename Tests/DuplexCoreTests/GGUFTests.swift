import DuplexCore
import Foundation
import XCTest

/// A GGUF file assembled field by field: valid as built, so each test bends exactly one field.
/// Two tensors: `a.weight` F32 shape [2, 4] (32 bytes at 0) and `b.weight` Q8_0 shape [2, 32]
/// (68 bytes at 32), one metadata key (`general.architecture`).
struct RawGGUF {
    struct Info {
        var name: [UInt8]
        /// File order: innermost first.
        var dims: [UInt64]
        var type: UInt32
        var offset: UInt64
        var nameLength: UInt64?
        var rank: UInt32?
    }

    var magic = Array("GGUF".utf8)
    var version: UInt32 = 3
    var tensorCount: UInt64?
    var entryCount: UInt64?
    var entries: [[UInt8]] = [RawGGUF.entry("general.architecture", type: 8, RawGGUF.string("moshi-test"))]
    var tensors = [
        Info(name: Array("a.weight".utf8), dims: [4, 2], type: 0, offset: 0),
        Info(name: Array("b.weight".utf8), dims: [32, 2], type: 8, offset: 32),
    ]
    var alignment = 32
    /// Bytes of data after the aligned header; nil: what the tensors need, each padded.
    var dataBytes: Int?

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func string(_ s: String) -> [UInt8] { le(UInt64(s.utf8.count)) + Array(s.utf8) }
    static func entry(_ key: String, type: UInt32, _ payload: [UInt8]) -> [UInt8] { string(key) + le(type) + payload }

    /// The header up to the end of the tensor infos (no padding).
    var header: [UInt8] {
        var b = magic + Self.le(version) + Self.le(tensorCount ?? UInt64(tensors.count)) + Self.le(entryCount ?? UInt64(entries.count))
        for e in entries { b += e }
        for t in tensors {
            b += Self.le(t.nameLength ?? UInt64(t.name.count)) + t.name + Self.le(t.rank ?? UInt32(t.dims.count))
            for d in t.dims { b += Self.le(d) }
            b += Self.le(t.type) + Self.le(t.offset)
        }
        return b
    }

    var dataOffset: Int { (header.count + alignment - 1) / alignment * alignment }

    var bytes: [UInt8] {
        var b = header
        b += [UInt8](repeating: 0, count: dataOffset - b.count)
        let need = dataBytes ?? 128
        // Recognisable data: byte i of the data section is i & 0xFF.
        b += (0..<need).map { UInt8(truncatingIfNeeded: $0) }
        return b
    }
}

/// GGUF files from real writers (Python `gguf`, candle's layout) read exactly, and corrupt or
/// hostile ones refused with the right kind and a message naming the file and the tensor.
final class GGUFTests: XCTestCase {
    // MARK: helpers

    private func write(_ bytes: [UInt8], _ name: String) -> String {
        let path = temporaryPath("\(name.filter { $0.isLetter || $0.isNumber }).gguf")
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)), path)
        return path
    }

    /// Opens `bytes` as a file, expecting a failure of `kind` whose message starts with the path
    /// and mentions every string of `mentions`.
    @discardableResult
    private func assertFails(_ bytes: [UInt8], _ kind: WeightFileError.Kind, mentions: [String] = [], _ name: String = #function,
                             file: StaticString = #filePath, line: UInt = #line) -> WeightFileError? {
        assertFails(path: write(bytes, name), kind, mentions: mentions, file: file, line: line)
    }

    @discardableResult
    private func assertFails(path: String, _ kind: WeightFileError.Kind, mentions: [String] = [],
                             file: StaticString = #filePath, line: UInt = #line) -> WeightFileError? {
        assertOpenFails(path, kind, mentions: mentions, open: { try GGUFFile(path: $0).entries.count }, file: file, line: line)
    }

    private func parse(_ bytes: [UInt8]) throws -> GGUFFile.Header {
        try bytes.withUnsafeBytes { try GGUFFile.parseHeader($0, path: "memory") }
    }

    private func arrayOf(_ type: UInt32, _ count: UInt64, _ payload: [UInt8]) -> [UInt8] {
        RawGGUF.le(UInt32(type)) + RawGGUF.le(count) + payload
    }

    // MARK: the builder's file is valid

    func testTheBaseFileOpens() throws {
        let raw = RawGGUF()
        let f = try GGUFFile(path: write(raw.bytes, #function))
        XCTAssertEqual(f.version, 3)
        XCTAssertEqual(f.alignment, 32)
        XCTAssertEqual(f.architecture, "moshi-test")
        XCTAssertEqual(f.names, ["a.weight", "b.weight"])
        XCTAssertEqual(f.dataOffset, raw.dataOffset)
        let a = try XCTUnwrap(f["a.weight"]), b = try XCTUnwrap(f["b.weight"])
        XCTAssertEqual(a.shape, [2, 4])
        XCTAssertEqual(a.type, .f32)
        XCTAssertEqual(a.range, raw.dataOffset..<(raw.dataOffset + 32))
        XCTAssertEqual(b.shape, [2, 32])
        XCTAssertEqual(b.type, .q8_0)
        XCTAssertEqual(b.range, (raw.dataOffset + 32)..<(raw.dataOffset + 32 + 68))
        XCTAssertEqual(b.elementCount, 64)
        XCTAssertEqual(Array(f.bytes(b).prefix(3)), [32, 33, 34])
        f.releasePages(b)
        XCTAssertEqual(Array(f.bytes(b).prefix(3)), [32, 33, 34], "released pages fault back in")
    }

    func testNoTensorsAndNoMetadataIsValid() throws {
        var raw = RawGGUF()
        raw.entries = []
        raw.tensors = []
        raw.dataBytes = 0
        raw.version = 2
        let h = try parse(raw.bytes)
        XCTAssertEqual(h.names, [])
        XCTAssertEqual(h.metadata, [:])
        XCTAssertEqual(h.version, 2)
    }

    // MARK: magic and version

    func testEmptyFile() {
        assertFails([], .empty, mentions: ["empty", "not a GGUF file"])
    }

    func testNotGGUF() {
        assertFails(Array("hello, world".utf8), .badMagic, mentions: ["not a GGUF file", "0x68"])
        assertFails(Array("GGUX".utf8) + RawGGUF().bytes.dropFirst(4), .badMagic, mentions: ["not a GGUF file"], "ggux")
        assertFails(Array("tjgg".utf8) + [UInt8](repeating: 0, count: 20), .badMagic, mentions: ["ggjt"], "ggjt")
        assertFails(Array("GG".utf8), .truncated, mentions: ["2 bytes", "magic"], "short")
    }

    func testASafetensorsFileIsRecognised() throws {
        var w = SafetensorsWriter()
        w.add("x", Tensor(shape: [2], data: [1, 2]))
        assertFails([UInt8](w.serialized()), .badMagic, mentions: ["not a GGUF file", "safetensors"])
    }

    func testOnlyVersions2And3() throws {
        for (version, mention) in [(UInt32(1), "version 1"), (4, "version 4"), (0, "version 0"), (0x0300_0000, "big-endian")] {
            var raw = RawGGUF()
            raw.version = version
            assertFails(raw.bytes, .unsupportedVersion, mentions: [mention], "v\(version)")
        }
        var raw = RawGGUF()
        raw.version = 2
        XCTAssertEqual(try parse(raw.bytes).version, 2)
    }

    // MARK: counts and strings bounded by the file

    func testTensorAndMetadataCountsBoundedByTheFile() {
        var raw = RawGGUF()
        raw.tensorCount = 1000
        assertFails(raw.bytes, .truncated, mentions: ["1000 tensors"], "tensors1000")
        raw.tensorCount = 1 << 40
        assertFails(raw.bytes, .badEntry, mentions: ["corrupt", "\(1 << 40) tensors"], "tensorsHuge")
        raw = RawGGUF()
        raw.entryCount = 500
        assertFails(raw.bytes, .truncated, mentions: ["500 metadata entries"], "entries500")
        raw.entryCount = UInt64.max
        assertFails(raw.bytes, .badEntry, mentions: ["corrupt", "\(UInt64.max) metadata entries"], "entriesHuge")
    }

    func testStringLengthsBoundedByTheFile() {
        var raw = RawGGUF()
        raw.entries = [RawGGUF.le(UInt64(5000)) + Array("general.architecture".utf8)]
        assertFails(raw.bytes, .truncated, mentions: ["metadata key 1 of 1", "5000 bytes"], "key")
        raw = RawGGUF()
        raw.tensors[1].nameLength = 1 << 62
        assertFails(raw.bytes, .badEntry, mentions: ["corrupt", "name of tensor 2 of 2"], "name")
        raw = RawGGUF()
        raw.entries = [RawGGUF.entry("general.name", type: 8, RawGGUF.le(UInt64(100_000)) + Array("x".utf8))]
        assertFails(raw.bytes, .truncated, mentions: ["general.name", "100000 bytes"], "value")
    }

    func testStringsMustBeUTF8() {
        var raw = RawGGUF()
        raw.entries = [RawGGUF.le(UInt64(3)) + [0x61, 0xFF, 0xFE] + RawGGUF.le(UInt32(0)) + [1]]
        assertFails(raw.bytes, .badEntry, mentions: ["metadata key 1 of 1", "UTF-8"], "key")
        raw = RawGGUF()
        raw.tensors[0].name = [0xC3, 0x28]
        assertFails(raw.bytes, .badEntry, mentions: ["name of tensor 1 of 2", "UTF-8"], "name")
    }

    func testEmptyNamesAndKeys() {
        var raw = RawGGUF()
        raw.tensors[1].name = []
        assertFails(raw.bytes, .badEntry, mentions: ["tensor 2 of 2 (empty name)"], "tensor")
        raw = RawGGUF()
        raw.entries.append(RawGGUF.entry("", type: 0, [7]))
        assertFails(raw.bytes, .badEntry, mentions: ["metadata key 2 of 2 is empty"], "key")
    }

    // MARK: metadata values

    func testUnknownMetadataValueTypes() {
        var raw = RawGGUF()
        raw.entries.append(RawGGUF.entry("test.odd", type: 13, [0, 0, 0, 0]))
        assertFails(raw.bytes, .unknownType, mentions: ["test.odd", "value type 13"], "value")
        raw = RawGGUF()
        raw.entries.append(RawGGUF.entry("test.odd_array", type: 9, arrayOf(42, 1, [0])))
        assertFails(raw.bytes, .unknownType, mentions: ["test.odd_array", "element type 42"], "element")
    }

    func testArraysBoundedInDepthAndLength() {
        // Nine arrays deep, each holding the next; the innermost holds one uint8.
        var payload = arrayOf(0, 1, [5])
        for _ in 0..<8 { payload = arrayOf(9, 1, payload) }
        var raw = RawGGUF()
        raw.entries.append(RawGGUF.entry("test.deep", type: 9, payload))
        assertFails(raw.bytes, .badEntry, mentions: ["test.deep", "nested more than \(GGUFFile.maxArrayDepth) deep"], "deep")

        // Eight deep is allowed.
        payload = arrayOf(0, 1, [5])
        for _ in 0..<7 { payload = arrayOf(9, 1, payload) }
        raw = RawGGUF()
        raw.entries.append(RawGGUF.entry("test.deep", type: 9, payload))
        var value = try? parse(raw.bytes).metadata["test.deep"]
        for _ in 0..<8 {
            guard case .array(let items)? = value, items.count == 1 else { XCTFail("not an array of one: \(String(describing: value))"); return }
            value = items[0]
        }
        XCTAssertEqual(value, .uint8(5))

        raw = RawGGUF()
        raw.entries.append(RawGGUF.entry("test.long", type: 9, arrayOf(6, 1_000_000, [0, 0, 0, 0])))
        assertFails(raw.bytes, .truncated, mentions: ["test.long", "1000000 float32 values"], "long")
        raw = RawGGUF()
        raw.entries.append(RawGGUF.entry("test.huge", type: 9, arrayOf(8, 1 << 50, [])))
        assertFails(raw.bytes, .badEntry, mentions: ["test.huge", "corrupt"], "huge")
    }

    func testBoolsAreZeroOrOne() {
        var raw = RawGGUF()
        raw.entries.append(RawGGUF.entry("test.flag", type: 7, [2]))
        assertFails(raw.bytes, .badEntry, mentions: ["test.flag", "bool value 2"])
    }

    func testDuplicateMetadataKeys() {
        var raw = RawGGUF()
        raw.entries.append(RawGGUF.entry("general.architecture", type: 8, RawGGUF.string("llama")))
        assertFails(raw.bytes, .badEntry, mentions: ["general.architecture appears twice"])
    }

    func testArchitectureMustBeAString() {
        var raw = RawGGUF()
        raw.entries = [RawGGUF.entry("general.architecture", type: 4, RawGGUF.le(UInt32(1)))]
        assertFails(raw.bytes, .badEntry, mentions: ["general.architecture has type uint32"])
    }

    func testAlignmentIsAPowerOfTwoUpTo1MiB() throws {
        for (value, mention) in [(UInt32(48), "48"), (0, "is 0"), (1 << 21, "\(1 << 21)")] {
            var raw = RawGGUF()
            raw.entries.append(RawGGUF.entry("general.alignment", type: 4, RawGGUF.le(value)))
            assertFails(raw.bytes, .badEntry, mentions: ["general.alignment", mention, "power of two"], "a\(value)")
        }
        var raw = RawGGUF()
        raw.entries.append(RawGGUF.entry("general.alignment", type: 5, RawGGUF.le(Int32(64))))
        assertFails(raw.bytes, .badEntry, mentions: ["general.alignment has type int32, expected uint32"], "int32")

        raw = RawGGUF()
        raw.entries.append(RawGGUF.entry("general.alignment", type: 4, RawGGUF.le(UInt32(64))))
        raw.alignment = 64
        raw.tensors[1].offset = 64
        raw.dataBytes = 64 + 68
        let f = try GGUFFile(path: write(raw.bytes, "ok64"))
        XCTAssertEqual(f.alignment, 64)
        XCTAssertEqual(f.dataOffset % 64, 0)
        XCTAssertEqual(f["b.weight"]?.range.lowerBound, f.dataOffset + 64)
    }

    // MARK: tensor descriptions

    func testNDimsFrom1To4() {
        for rank in [UInt32(0), 5] {
            var raw = RawGGUF()
            raw.tensors[1].rank = rank
            raw.tensors[1].dims = Array(repeating: 1, count: Int(rank))
            assertFails(raw.bytes, .badDimensions, mentions: ["b.weight", "n_dims is \(rank)"], "rank\(rank)")
        }
    }

    func testDimensionsAtLeast1AndNotAbsurd() {
        let cases: [([UInt64], String)] = [
            ([4, 0], "dimension of 0"),
            ([1 << 40], "more than the whole file"),
            ([1 << 32, 1 << 32], "more values than a file can"),
            ([1 << 63, 1], "more values than a file can"),
        ]
        for (i, (dims, mention)) in cases.enumerated() {
            var raw = RawGGUF()
            raw.tensors[0].dims = dims
            assertFails(raw.bytes, .badDimensions, mentions: ["a.weight", mention], "dims\(i)")
        }
    }

    func testUnknownTensorTypeIds() {
        for id in [UInt32(5), 31, 40, 99, .max] {
            var raw = RawGGUF()
            raw.tensors[0].type = id
            assertFails(raw.bytes, .unknownType, mentions: ["a.weight", "type id \(id)"], "type\(id)")
        }
    }

    func testInnermostDimensionIsWholeBlocks() {
        var raw = RawGGUF()
        raw.tensors[1].dims = [33, 2]
        assertFails(raw.bytes, .shapeMismatch, mentions: ["b.weight", "[2, 33]", "Q8_0", "32-value block"], "q8")
        raw = RawGGUF()
        raw.tensors[1].type = GGUFTensorType.q4_K.rawValue
        raw.tensors[1].dims = [128, 2]
        assertFails(raw.bytes, .shapeMismatch, mentions: ["b.weight", "Q4_K", "256-value block"], "q4k")
    }

    func testOffsetsAligned() {
        var raw = RawGGUF()
        raw.tensors[1].offset = 48
        assertFails(raw.bytes, .misaligned, mentions: ["b.weight", "offset 48", "alignment, 32"])
    }

    func testTruncatedFileNamesTheFirstTensorCutShort() {
        var raw = RawGGUF()
        raw.dataBytes = 32 + 60
        assertFails(raw.bytes, .truncated, mentions: ["b.weight", "1 tensor cut short"], "inLast")
        raw.dataBytes = 10
        let error = assertFails(raw.bytes, .truncated, mentions: ["2 tensors cut short, first a.weight"], "inFirst")
        XCTAssertEqual(error?.problems.count, 1, "a cut file is one problem: \(String(describing: error))")
        raw.dataBytes = 0
        assertFails(Array(raw.bytes.prefix(raw.header.count - 3)), .truncated, mentions: ["data offset of b.weight"], "inHeader")
    }

    func testEveryPrefixOfAValidFileIsRefused() {
        let bytes = RawGGUF().bytes
        let lastTensorEnd = RawGGUF().dataOffset + 32 + 68
        for n in 0..<lastTensorEnd {
            do {
                _ = try parse(Array(bytes.prefix(n)))
                XCTFail("a \(n)-byte prefix parsed")
            } catch let error as WeightFileError {
                XCTAssertTrue(error.kinds.isSubset(of: [.truncated, .empty]), "prefix \(n): \(error)")
            } catch {
                XCTFail("prefix \(n): \(error)")
            }
        }
    }

    func testStrayOffsetOutOfRange() {
        var raw = RawGGUF()
        raw.tensors[1].offset = 4096
        assertFails(raw.bytes, .offsetsOutOfRange, mentions: ["b.weight", "beyond the end of the file"], "far")
        // Inside the file but ending past it, and not where a cut file would put it.
        raw.tensors[1].offset = 96
        assertFails(raw.bytes, .offsetsOutOfRange, mentions: ["b.weight", "ends beyond the end of the file"], "end")
        raw.tensors[1].offset = 1 << 63
        assertFails(raw.bytes, .offsetsOutOfRange, mentions: ["b.weight", "offset \(UInt64(1) << 63)"], "huge")
    }

    func testOverlappingTensors() {
        var raw = RawGGUF()
        raw.tensors[1].offset = 0
        assertFails(raw.bytes, .overlap, mentions: ["b.weight", "a.weight", "overlap"])
    }

    func testDuplicateTensorNames() {
        var raw = RawGGUF()
        raw.tensors[1].name = raw.tensors[0].name
        assertFails(raw.bytes, .duplicateTensor, mentions: ["a.weight", "tensors 1 and 2"])
    }

    func testEveryTensorProblemIsReportedAtOnce() {
        var raw = RawGGUF()
        raw.tensors[0].type = 77
        raw.tensors[1].offset = 40
        let error = assertFails(raw.bytes, .unknownType, mentions: ["a.weight", "b.weight"])
        XCTAssertEqual(error?.kinds, [.unknownType, .misaligned])
    }

    func testHostileNamesAreEscapedInMessages() {
        var raw = RawGGUF()
        raw.tensors[0].name = Array("evil\u{1B}[2Jname".utf8)
        raw.tensors[0].type = 99
        let error = assertFails(raw.bytes, .unknownType, mentions: ["evil\\u{1b}[2Jname"])
        XCTAssertFalse(error?.description.contains("\u{1B}") ?? true)
    }

    func testDirectoryAndMissingPaths() {
        let dir = temporaryPath("a-directory.gguf")
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        assertFails(path: dir, .io, mentions: ["directory"])
        assertFails(path: temporaryPath("does-not-exist.gguf"), .io, mentions: ["No such file"])
    }

    /// Single-byte corruptions of a valid file either still parse or throw a WeightFileError;
    /// a trap would end the test run (tools/fuzz/gguf.sh searches far wider).
    func testSingleByteCorruptionsNeverTrap() {
        let bytes = RawGGUF().bytes
        var refused = 0
        for i in 0..<RawGGUF().header.count {
            for v: UInt8 in [0x00, 0xFF, 0x80, bytes[i] ^ 0x01, bytes[i] &+ 0x20] where v != bytes[i] {
                var b = bytes
                b[i] = v
                do { _ = try parse(b) } catch is WeightFileError { refused += 1 } catch { XCTFail("byte \(i): \(error)") }
            }
        }
        XCTAssertGreaterThan(refused, 100)
    }

    // MARK: the type table

    /// Block sizes as ggml-common.h's static_asserts state them (QK_K = 256).
    func testBlockSizesMatchGGML() {
        let expected: [GGUFTensorType: (Int, Int, String)] = [
            .f32: (1, 4, "F32"), .f16: (1, 2, "F16"), .bf16: (1, 2, "BF16"), .f64: (1, 8, "F64"),
            .i8: (1, 1, "I8"), .i16: (1, 2, "I16"), .i32: (1, 4, "I32"), .i64: (1, 8, "I64"),
            .q4_0: (32, 18, "Q4_0"), .q4_1: (32, 20, "Q4_1"), .q5_0: (32, 22, "Q5_0"), .q5_1: (32, 24, "Q5_1"),
            .q8_0: (32, 34, "Q8_0"), .q8_1: (32, 36, "Q8_1"), .iq4_nl: (32, 18, "IQ4_NL"), .mxfp4: (32, 17, "MXFP4"),
            .q2_K: (256, 84, "Q2_K"), .q3_K: (256, 110, "Q3_K"), .q4_K: (256, 144, "Q4_K"), .q5_K: (256, 176, "Q5_K"),
            .q6_K: (256, 210, "Q6_K"), .q8_K: (256, 292, "Q8_K"),
            .iq2_xxs: (256, 66, "IQ2_XXS"), .iq2_xs: (256, 74, "IQ2_XS"), .iq3_xxs: (256, 98, "IQ3_XXS"),
            .iq1_s: (256, 50, "IQ1_S"), .iq3_s: (256, 110, "IQ3_S"), .iq2_s: (256, 82, "IQ2_S"),
            .iq4_xs: (256, 136, "IQ4_XS"), .iq1_m: (256, 56, "IQ1_M"), .tq1_0: (256, 54, "TQ1_0"), .tq2_0: (256, 66, "TQ2_0"),
        ]
        XCTAssertEqual(Set(GGUFTensorType.allCases), Set(expected.keys))
        for t in GGUFTensorType.allCases {
            let (values, bytes, name) = expected[t]!
            XCTAssertEqual(t.blockValues, values, t.name)
            XCTAssertEqual(t.blockBytes, bytes, t.name)
            XCTAssertEqual(t.name, name)
        }
        XCTAssertEqual(GGUFTensorType.q8_0.byteCount(shape: [4096, 4096]), 4096 * 128 * 34)
        XCTAssertNil(GGUFTensorType.q8_0.byteCount(shape: [4, 33]))
        XCTAssertNil(GGUFTensorType.f32.byteCount(shape: [Int.max, 2]))
        XCTAssertNil(GGUFTensorType.f32.byteCount(shape: [0, 2]))
    }
}
