import Foundation

/// The tensor types of ggml (`ggml.h` `enum ggml_type`), with the block each one packs values in.
/// Reading a file needs every type's block size to find where each tensor ends, whether or not
/// duplex computes with that type: the loader, not the reader, decides what it implements.
/// Ids 4, 5 (Q4_2, Q4_3), 31–33 and 36–38 (repacked layouts) were removed from ggml and never
/// appear in GGUF files; 40 and up (NVFP4, …) are newer than this table and read as unknown.
public enum GGUFTensorType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
         q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15,
         iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22, iq4_xs = 23,
         i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30, tq1_0 = 34, tq2_0 = 35, mxfp4 = 39

    /// The name ggml and the `gguf` Python package print ("Q8_0", "F32", "IQ4_NL").
    public var name: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q5_0: "Q5_0"
        case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"
        case .q8_1: "Q8_1"
        case .q2_K: "Q2_K"
        case .q3_K: "Q3_K"
        case .q4_K: "Q4_K"
        case .q5_K: "Q5_K"
        case .q6_K: "Q6_K"
        case .q8_K: "Q8_K"
        case .iq2_xxs: "IQ2_XXS"
        case .iq2_xs: "IQ2_XS"
        case .iq3_xxs: "IQ3_XXS"
        case .iq1_s: "IQ1_S"
        case .iq4_nl: "IQ4_NL"
        case .iq3_s: "IQ3_S"
        case .iq2_s: "IQ2_S"
        case .iq4_xs: "IQ4_XS"
        case .i8: "I8"
        case .i16: "I16"
        case .i32: "I32"
        case .i64: "I64"
        case .f64: "F64"
        case .iq1_m: "IQ1_M"
        case .bf16: "BF16"
        case .tq1_0: "TQ1_0"
        case .tq2_0: "TQ2_0"
        case .mxfp4: "MXFP4"
        }
    }

    /// Values per block: 1 for plain types, 32 for the Q*_0/Q*_1/IQ4_NL/MXFP4 family, 256 for the
    /// K-quants, IQ and TQ types (ggml's QK_K).
    public var blockValues: Int {
        switch self {
        case .f32, .f16, .bf16, .f64, .i8, .i16, .i32, .i64: 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1, .iq4_nl, .mxfp4: 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K, .iq2_xxs, .iq2_xs, .iq3_xxs, .iq1_s, .iq3_s, .iq2_s,
             .iq4_xs, .iq1_m, .tq1_0, .tq2_0: 256
        }
    }

    /// Bytes per block, as `sizeof(block_…)` in ggml-common.h. Q8_1 is 36 (two f16 and 32 int8):
    /// the `gguf` Python package 0.19 still lists 40, the size of its old two-f32 layout.
    public var blockBytes: Int {
        switch self {
        case .i8: 1
        case .f16, .bf16, .i16: 2
        case .f32, .i32: 4
        case .f64, .i64: 8
        case .q4_0, .iq4_nl: 18
        case .q4_1: 20
        case .q5_0: 22
        case .q5_1: 24
        case .q8_0: 34
        case .q8_1: 36
        case .mxfp4: 17
        case .q2_K: 84
        case .q3_K, .iq3_s: 110
        case .q4_K: 144
        case .q5_K: 176
        case .q6_K: 210
        case .q8_K: 292
        case .iq2_xxs, .tq2_0: 66
        case .iq2_xs: 74
        case .iq3_xxs: 98
        case .iq1_s: 50
        case .iq2_s: 82
        case .iq4_xs: 136
        case .iq1_m: 56
        case .tq1_0: 54
        }
    }

    public var isQuantized: Bool { blockValues > 1 }

    /// Bytes that `elements` values take, or nil when they are not whole blocks or the size
    /// overflows.
    public func byteCount(elements: Int) -> Int? {
        guard elements >= 0, elements % blockValues == 0 else { return nil }
        let (bytes, overflow) = (elements / blockValues).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : bytes
    }

    /// Bytes of a tensor of `shape` (outermost first), or nil when a dimension is below 1, the
    /// innermost dimension is not whole blocks (ggml quantizes along rows), or the size overflows.
    public func byteCount(shape: [Int]) -> Int? {
        guard let inner = shape.last, inner % blockValues == 0 else { return nil }
        var elements = 1
        for d in shape {
            guard d >= 1 else { return nil }
            let (p, overflow) = elements.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            elements = p
        }
        return byteCount(elements: elements)
    }
}

/// One metadata value. GGUF arrays hold values of one type (nested arrays included).
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32), float32(Float)
    case bool(Bool), string(String), array([GGUFValue]), uint64(UInt64), int64(Int64), float64(Double)

    /// The type id written before the value (`gguf_type`).
    public var typeID: UInt32 {
        switch self {
        case .uint8: 0
        case .int8: 1
        case .uint16: 2
        case .int16: 3
        case .uint32: 4
        case .int32: 5
        case .float32: 6
        case .bool: 7
        case .string: 8
        case .array: 9
        case .uint64: 10
        case .int64: 11
        case .float64: 12
        }
    }

    public var typeName: String { Self.typeName(typeID) }

    static func typeName(_ id: UInt32) -> String {
        let names = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array",
                     "uint64", "int64", "float64"]
        return id < names.count ? names[Int(id)] : "type \(id)"
    }

    public var string: String? { if case .string(let s) = self { s } else { nil } }

    /// Any integer case whose value fits an Int (the width a writer chose should not matter to a reader).
    public var integer: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): Int(exactly: v)
        case .int64(let v): Int(v)
        default: nil
        }
    }
}

/// A memory-mapped GGUF file (versions 2 and 3, little-endian). Opening validates the whole
/// header against the file's size; tensors are read lazily from the map.
public final class GGUFFile: @unchecked Sendable {
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let type: GGUFTensorType
        /// Outermost first (PyTorch order): the file's dims reversed.
        public let shape: [Int]
        /// Absolute byte range of the tensor's data inside the file.
        public let range: Range<Int>
        public var elementCount: Int { shape.reduce(1, *) }
    }

    /// What the header says, checked against the file it came from.
    public struct Header: Sendable, Equatable {
        public let version: Int
        public let alignment: Int
        public let metadata: [String: GGUFValue]
        /// Metadata keys in file order.
        public let metadataKeys: [String]
        public let entries: [String: Entry]
        /// Tensor names in file (header) order.
        public let names: [String]
        /// Absolute offset of the data section: the header's end rounded up to the alignment.
        public let dataOffset: Int
    }

    public static let defaultAlignment = 32
    /// The most `general.alignment` may be: real files use 32; a page is 4–64 KiB.
    public static let maxAlignment = 1 << 20
    /// Arrays of arrays are legal; a deeper nesting than this is a corrupt or hostile file.
    public static let maxArrayDepth = 8

    public let path: String
    /// Everything the header says (the properties below read it).
    public let header: Header
    public let fileSize: Int
    public var version: Int { header.version }
    public var alignment: Int { header.alignment }
    public var metadata: [String: GGUFValue] { header.metadata }
    public var metadataKeys: [String] { header.metadataKeys }
    public var entries: [String: Entry] { header.entries }
    public var names: [String] { header.names }
    public var dataOffset: Int { header.dataOffset }
    private let base: UnsafeRawPointer
    private let mappedLength: Int

    /// `general.architecture` ("llama", …) when the file has one; candle's files have none.
    public var architecture: String? { metadata["general.architecture"]?.string }

    public init(path: String) throws {
        self.path = path
        let (raw, size) = try MappedFile.map(path, kind: "a .gguf file", format: "GGUF")
        let map = UnsafeMutableRawPointer(mutating: raw)
        do {
            header = try Self.parseHeader(UnsafeRawBufferPointer(start: map, count: size), path: path)
        } catch {
            munmap(map, size)
            throw error
        }
        fileSize = size
        base = UnsafeRawPointer(map)
        mappedLength = size
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), mappedLength)
    }

    public subscript(name: String) -> Entry? { entries[name] }

    /// The raw bytes of one tensor, valid as long as this file object lives.
    public func bytes(_ entry: Entry) -> UnsafeRawBufferPointer {
        precondition(entry.range.lowerBound >= 0 && entry.range.upperBound <= mappedLength,
                     "\(entry.name) is not an entry of \(path)")
        return UnsafeRawBufferPointer(start: base + entry.range.lowerBound, count: entry.range.count)
    }

    /// Drops this process's copy of the pages that lie wholly inside `entry` (after its values
    /// were copied out): they leave the RSS but stay in the page cache, and reading them again
    /// still works (they fault back in).
    public func releasePages(_ entry: Entry) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = Int(bitPattern: base) + entry.range.lowerBound
        let first = (start + page - 1) / page * page
        let last = (start + entry.range.count) / page * page
        if last > first { madvise(UnsafeMutableRawPointer(bitPattern: first), last - first, MADV_DONTNEED) }
    }

    /// Parses and validates a header from memory holding the whole file (used by `init` and by the
    /// fuzzer); never traps on any input. Throws a `WeightFileError` naming `path`.
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer, path: String) throws -> Header {
        var parser = GGUFHeaderParser(bytes)
        do {
            return try parser.parse()
        } catch {
            let problems = parser.problems.isEmpty
                ? [WeightFileError.Problem(kind: .badEntry, message: "invalid GGUF header")] : parser.problems
            throw WeightFileError(path: path, problems: problems)
        }
    }
}
