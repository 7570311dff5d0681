import DuplexCore
import Foundation
import XCTest

/// GGUFWriter: what it writes reads back exactly; what it cannot write is refused before any
/// file exists; a failed write leaves no file (and keeps an older one).
final class GGUFWriterTests: XCTestCase {
    static let everyValue: [(String, GGUFValue)] = [
        ("general.architecture", .string("duplex")),
        ("t.u8", .uint8(255)), ("t.i8", .int8(-128)), ("t.u16", .uint16(65535)), ("t.i16", .int16(-32768)),
        ("t.u32", .uint32(.max)), ("t.i32", .int32(.min)), ("t.f32", .float32(-0.375)), ("t.bool", .bool(false)),
        ("t.string", .string("\u{e9}t\u{e9} \u{1F600}")), ("t.empty_string", .string("")),
        ("t.u64", .uint64(.max)), ("t.i64", .int64(.min)), ("t.f64", .float64(1e-300)),
        ("t.strings", .array([.string("a"), .string("bc")])),
        ("t.floats", .array([.float32(1), .float32(.infinity)])),
        ("t.nested", .array([.array([.int16(1), .int16(2)]), .array([.string("x")]), .array([])])),
        ("t.empty", .array([])),
    ]

    static let tensors: [GGUFWriter.Tensor] = [
        .init(name: "f32", type: .f32, shape: [3, 5]),
        .init(name: "f16", type: .f16, shape: [7]),
        .init(name: "bf16", type: .bf16, shape: [2, 3, 4]),
        .init(name: "q8_0", type: .q8_0, shape: [4, 64]),
        .init(name: "q4_K", type: .q4_K, shape: [2, 256]),
        .init(name: "q6_K", type: .q6_K, shape: [1, 1, 256]),
        .init(name: "iq4_nl", type: .iq4_nl, shape: [32]),
        .init(name: "i32", type: .i32, shape: [1, 2, 1, 3]),
    ]

    private func bytes(of tensor: Int, count: Int) -> [UInt8] {
        var g = SplitMix64(seed: UInt64(tensor) &+ 17)
        return (0..<count).map { _ in UInt8(truncatingIfNeeded: g.next()) }
    }

    /// Hands each tensor's bytes over in 7-byte chunks, the last one shorter.
    private func chunked(_ tensors: [GGUFWriter.Tensor]) -> GGUFWriter.DataSource {
        { i, sink in
            let data = self.bytes(of: i, count: tensors[i].byteCount!)
            try data.withUnsafeBytes { all in
                for start in stride(from: 0, to: all.count, by: 7) {
                    try sink(UnsafeRawBufferPointer(rebasing: all[start..<min(start + 7, all.count)]))
                }
            }
        }
    }

    private func directoryListing(_ path: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path)) ?? []
    }

    func testRoundTripEveryTypeAndValueInV2AndV3At32And64() throws {
        for version in [2, 3] {
            for alignment in [32, 64] {
                let path = temporaryPath("roundtrip-v\(version)-a\(alignment).gguf")
                try GGUFWriter.write(path: path, version: version, metadata: Self.everyValue, alignment: alignment,
                                     tensors: Self.tensors, data: chunked(Self.tensors))
                let f = try GGUFFile(path: path)
                let what = "v\(version) alignment \(alignment)"
                XCTAssertEqual(f.version, version, what)
                XCTAssertEqual(f.alignment, alignment, what)
                XCTAssertEqual(f.architecture, "duplex", what)
                // 32 is what no key means; any other alignment is recorded after the caller's keys.
                let keys = Self.everyValue.map(\.0) + (alignment == 32 ? [] : ["general.alignment"])
                XCTAssertEqual(f.metadataKeys, keys, what)
                for (key, value) in Self.everyValue { XCTAssertEqual(f.metadata[key], value, "\(what) \(key)") }
                if alignment != 32 { XCTAssertEqual(f.metadata["general.alignment"], .uint32(UInt32(alignment))) }
                XCTAssertEqual(f.names, Self.tensors.map(\.name), what)
                XCTAssertEqual(f.dataOffset % alignment, 0, what)
                var expectedStart = f.dataOffset
                for (i, t) in Self.tensors.enumerated() {
                    let e = try XCTUnwrap(f[t.name])
                    XCTAssertEqual(e.type, t.type, "\(what) \(t.name)")
                    XCTAssertEqual(e.shape, t.shape, "\(what) \(t.name)")
                    XCTAssertEqual(e.range.lowerBound, expectedStart, "\(what) \(t.name): packed in order, each padded")
                    XCTAssertEqual(Array(f.bytes(e)), bytes(of: i, count: t.byteCount!), "\(what) \(t.name)")
                    expectedStart += (e.range.count + alignment - 1) / alignment * alignment
                }
                XCTAssertEqual(f.fileSize, expectedStart, "\(what): the last tensor is padded too")
            }
        }
    }

    /// Above the writer's 1 MiB buffer, chunks go straight to the file; mixing both paths keeps order.
    func testStreamsATensorLargerThanTheBuffer() throws {
        let tensors: [GGUFWriter.Tensor] = [.init(name: "small", type: .f32, shape: [3]), .init(name: "big", type: .f32, shape: [2, 300_001])]
        let big = bytes(of: 1, count: tensors[1].byteCount!)
        let path = temporaryPath("big.gguf")
        try GGUFWriter.write(path: path, tensors: tensors) { i, sink in
            if i == 0 { try bytes(of: 0, count: 12).withUnsafeBytes { try sink($0) }; return }
            try big.withUnsafeBytes { all in
                let cuts = [0, 5, 5 + (1 << 20) + 3, all.count]
                for k in 0..<3 { try sink(UnsafeRawBufferPointer(rebasing: all[cuts[k]..<cuts[k + 1]])) }
            }
        }
        let f = try GGUFFile(path: path)
        XCTAssertEqual(Array(f.bytes(f["small"]!)), bytes(of: 0, count: 12))
        XCTAssertTrue(Array(f.bytes(f["big"]!)) == big)
    }

    func testWrongByteCountsThrowAndLeaveNoFile() {
        let tensors: [GGUFWriter.Tensor] = [.init(name: "w", type: .q8_0, shape: [2, 32])]
        for (given, mention) in [(67, "gave 67 bytes"), (69, "more than the 68 bytes")] {
            let path = temporaryPath("wrong\(given).gguf")
            XCTAssertThrowsError(try GGUFWriter.write(path: path, tensors: tensors) { _, sink in
                try [UInt8](repeating: 1, count: given).withUnsafeBytes { try sink($0) }
            }) { error in
                let e = error as? WeightFileError
                XCTAssertEqual(e?.kinds, [.shapeMismatch], "\(error)")
                XCTAssertTrue("\(error)".contains("w: "), "\(error)")
                XCTAssertTrue("\(error)".contains(mention), "\(error)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: path))
            XCTAssertFalse(directoryListing(path).contains { $0.hasPrefix(".wrong\(given).gguf.") }, "temporary file left behind")
        }
    }

    struct SourceFailed: Error {}

    func testAFailedWriteKeepsThePreviousFile() throws {
        let path = temporaryPath("kept.gguf")
        let tensors: [GGUFWriter.Tensor] = [.init(name: "x", type: .f32, shape: [2])]
        try GGUFWriter.write(path: path, tensors: tensors) { _, sink in try [Float(1), 2].withUnsafeBytes { try sink($0) } }
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try GGUFWriter.write(path: path, tensors: tensors) { _, _ in throw SourceFailed() }) { error in
            XCTAssertTrue(error is SourceFailed, "the data source's own error comes through: \(error)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
        XCTAssertFalse(directoryListing(path).contains { $0.hasPrefix(".kept.gguf.") }, "temporary file left behind")
    }

    func testWhatCannotBeWrittenIsRefusedBeforeAnyFileExists() {
        let ok = GGUFWriter.Tensor(name: "ok", type: .f32, shape: [4])
        let cases: [(String, Int, Int, [(String, GGUFValue)], [GGUFWriter.Tensor], WeightFileError.Kind, String)] = [
            ("version", 4, 32, [], [ok], .unsupportedVersion, "version 4"),
            ("alignment", 3, 48, [], [ok], .badEntry, "alignment 48"),
            ("duplicate", 3, 32, [], [ok, ok], .duplicateTensor, "ok: two tensors"),
            ("noname", 3, 32, [], [.init(name: "", type: .f32, shape: [1])], .badEntry, "tensor name is empty"),
            ("rank0", 3, 32, [], [.init(name: "s", type: .f32, shape: [])], .badDimensions, "s: shape []"),
            ("rank5", 3, 32, [], [.init(name: "s", type: .f32, shape: [1, 1, 1, 1, 1])], .badDimensions, "1 to 4"),
            ("zero", 3, 32, [], [.init(name: "z", type: .f32, shape: [2, 0])], .badDimensions, "z: shape [2, 0]"),
            ("block", 3, 32, [], [.init(name: "q", type: .q8_0, shape: [2, 48])], .shapeMismatch, "32-value block"),
            ("huge", 3, 32, [], [.init(name: "h", type: .f32, shape: [1 << 62, 4])], .badDimensions, "too large"),
            ("mixed", 3, 32, [("m", .array([.int32(1), .string("a")]))], [ok], .badEntry, "mixes value types"),
            ("dupkey", 3, 32, [("k", .bool(true)), ("k", .bool(false))], [ok], .badEntry, "k is given twice"),
            ("emptykey", 3, 32, [("", .bool(true))], [ok], .badEntry, "key is empty"),
            ("alignkey", 3, 64, [("general.alignment", .uint32(32))], [ok], .badEntry, "alignment 64"),
            ("aligntype", 3, 32, [("general.alignment", .uint64(32))], [ok], .badEntry, "general.alignment"),
        ]
        for (name, version, alignment, metadata, tensors, kind, mention) in cases {
            let path = temporaryPath("refused-\(name).gguf")
            var called = false
            XCTAssertThrowsError(try GGUFWriter.write(path: path, version: version, metadata: metadata, alignment: alignment,
                                                      tensors: tensors) { _, _ in called = true }, name) { error in
                XCTAssertTrue((error as? WeightFileError)?.kinds.contains(kind) ?? false, "\(name): \(error)")
                XCTAssertTrue("\(error)".hasPrefix(path), "\(name): \(error)")
                XCTAssertTrue("\(error)".contains(mention), "\(name): \(error)")
            }
            XCTAssertFalse(called, "\(name): data requested for a file that cannot be written")
            XCTAssertFalse(FileManager.default.fileExists(atPath: path), name)
        }
    }

    func testAnUnwritableDirectory() {
        let path = temporaryPath("no-such-dir") + "/x.gguf"
        XCTAssertThrowsError(try GGUFWriter.write(path: path, tensors: []) { _, _ in }) { error in
            XCTAssertEqual((error as? WeightFileError)?.kinds, [.io], "\(error)")
            XCTAssertTrue("\(error)".contains("No such file"), "\(error)")
        }
    }

    func testAGivenAlignmentKeyThatAgreesIsKeptWhereItIs() throws {
        let path = temporaryPath("alignkey.gguf")
        try GGUFWriter.write(path: path, metadata: [("general.alignment", .uint32(128)), ("a", .int8(1))], alignment: 128,
                             tensors: [.init(name: "x", type: .f32, shape: [2])]) { _, sink in try [Float(3), 4].withUnsafeBytes { try sink($0) } }
        let f = try GGUFFile(path: path)
        XCTAssertEqual(f.metadataKeys, ["general.alignment", "a"])
        XCTAssertEqual(f.alignment, 128)
        XCTAssertEqual(f["x"]?.range.lowerBound, f.dataOffset)
        XCTAssertEqual(f.dataOffset % 128, 0)
    }
}
