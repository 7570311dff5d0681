import DuplexCore
import Foundation
import XCTest

/// What tools/reference/fixtures_gguf.py recorded about the files it wrote (gguf_expected.json).
struct GGUFExpectations: Decodable {
    struct File: Decodable {
        let version: Int
        let alignment: Int
        let size: Int
        let metadataOrder: [String]
        let metadata: [String: Value]
        let tensors: [Tensor]

        enum CodingKeys: String, CodingKey { case version, alignment, size, metadataOrder = "metadata_order", metadata, tensors }
    }

    struct Tensor: Decodable {
        let name: String
        let type: String
        let shape: [Int]
        let offset: Int
        let bytes: Int
        let sha256: String
    }

    /// `{"type": "uint8", "value": 250}`; arrays hold such objects.
    struct Value: Decodable {
        let value: GGUFValue

        enum CodingKeys: String, CodingKey { case type, value }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let type = try c.decode(String.self, forKey: .type)
            switch type {
            case "uint8": value = .uint8(try c.decode(UInt8.self, forKey: .value))
            case "int8": value = .int8(try c.decode(Int8.self, forKey: .value))
            case "uint16": value = .uint16(try c.decode(UInt16.self, forKey: .value))
            case "int16": value = .int16(try c.decode(Int16.self, forKey: .value))
            case "uint32": value = .uint32(try c.decode(UInt32.self, forKey: .value))
            case "int32": value = .int32(try c.decode(Int32.self, forKey: .value))
            case "float32": value = .float32(try c.decode(Float.self, forKey: .value))
            case "bool": value = .bool(try c.decode(Bool.self, forKey: .value))
            case "string": value = .string(try c.decode(String.self, forKey: .value))
            case "uint64": value = .uint64(try c.decode(UInt64.self, forKey: .value))
            case "int64": value = .int64(try c.decode(Int64.self, forKey: .value))
            case "float64": value = .float64(try c.decode(Double.self, forKey: .value))
            case "array": value = .array(try c.decode([Value].self, forKey: .value).map(\.value))
            default: throw DecodingError.dataCorruptedError(forKey: .type, in: c, debugDescription: "unknown type \(type)")
            }
        }
    }

    let formatVersion: String
    let files: [String: File]

    enum CodingKeys: String, CodingKey { case formatVersion = "format_version", files }

    static func load() throws -> GGUFExpectations {
        let path = try requireFixture("gguf_expected.json", generator: "gguf")
        let e = try JSONDecoder().decode(GGUFExpectations.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        guard e.formatVersion == fixtureFormatVersion else {
            throw FixtureError(description: "gguf_expected.json has format_version \(e.formatVersion), expected \(fixtureFormatVersion): "
                + "regenerate it with \"$(tools/reference/setup_venv.sh)\" tools/reference/make_fixtures.py gguf")
        }
        return e
    }
}

/// Files written by the real tools, read exactly as their writers meant them.
final class GGUFFixtureTests: XCTestCase {
    private func check(_ fixture: String, architecture: String?) throws {
        let expectations = try GGUFExpectations.load()
        let expected = try XCTUnwrap(expectations.files[fixture], "gguf_expected.json has no entry for \(fixture)")
        let f = try GGUFFile(path: try requireFixture(fixture, generator: "gguf"))
        XCTAssertEqual(f.version, expected.version)
        XCTAssertEqual(f.alignment, expected.alignment)
        XCTAssertEqual(f.fileSize, expected.size)
        XCTAssertEqual(f.architecture, architecture)
        XCTAssertEqual(f.metadataKeys, expected.metadataOrder)
        XCTAssertEqual(Set(f.metadata.keys), Set(expected.metadata.keys))
        for (key, value) in expected.metadata {
            XCTAssertEqual(f.metadata[key], value.value, key)
        }
        XCTAssertEqual(f.names, expected.tensors.map(\.name))
        for t in expected.tensors {
            let entry = try XCTUnwrap(f[t.name], t.name)
            XCTAssertEqual(entry.type.name, t.type, t.name)
            XCTAssertEqual(entry.shape, t.shape, t.name)
            XCTAssertEqual(entry.range, t.offset..<(t.offset + t.bytes), t.name)
            XCTAssertEqual(FileHash.sha256(of: f.bytes(entry)), t.sha256, "\(t.name): bytes differ from what the generator wrote")
        }
    }

    /// `gguf` 0.19.0 (Python): v3, general.architecture, every value type, alignment 64.
    func testReadsAFileWrittenByThePythonGGUFPackage() throws {
        try check("gguf_python_v3.gguf", architecture: "duplex-test")
    }

    /// candle's layout, as in Kyutai's model.q8.gguf: v2, no metadata, alignment 32.
    func testReadsACandleStyleFile() throws {
        try check("gguf_candle_v2.gguf", architecture: nil)
    }

    /// GGUFWriter given the same tensors and metadata reproduces both tools' files byte for byte:
    /// the writer lays out files exactly as candle and the `gguf` package do.
    func testTheWriterReproducesBothToolsFiles() throws {
        let expectations = try GGUFExpectations.load()
        for fixture in ["gguf_python_v3.gguf", "gguf_candle_v2.gguf"] {
            let expected = try XCTUnwrap(expectations.files[fixture])
            let path = try requireFixture(fixture, generator: "gguf")
            let original = try GGUFFile(path: path)
            let tensors = original.names.map { name in
                let e = original[name]!
                return GGUFWriter.Tensor(name: name, type: e.type, shape: e.shape)
            }
            let written = try GGUFWriter.serialized(
                version: expected.version,
                metadata: original.metadataKeys.map { ($0, original.metadata[$0]!) },
                alignment: expected.alignment, tensors: tensors) { i, sink in
                    try sink(original.bytes(original[tensors[i].name]!))
                }
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            XCTAssertEqual(written.count, bytes.count, fixture)
            XCTAssertTrue(written == bytes, "\(fixture): first difference at byte \(zip(written, bytes).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1)")
        }
    }
}
