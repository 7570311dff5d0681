import Foundation

/// Element types a safetensors file may declare. Float types load as Float32 tensors;
/// integer types are readable as Int64 arrays.
public enum DType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"
    /// MLX's packed quantized codes are U32.
    case u32 = "U32", u16 = "U16"

    public var byteSize: Int {
        switch self {
        case .f64, .i64: 8
        case .f32, .i32, .u32: 4
        case .f16, .bf16, .i16, .u16: 2
        case .i8, .u8, .bool: 1
        }
    }

    public var isFloatingPoint: Bool { self == .f32 || self == .f16 || self == .bf16 || self == .f64 }
}

/// Everything that can be wrong with a weight file, each problem with a message a user can act on.
public struct SafetensorsError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        case io, empty, truncated, headerLength, headerNotUTF8, headerNotJSON, badEntry, unknownDType
        case shapeMismatch, offsetsOutOfRange, overlap, missingTensor, unexpectedTensor, wrongShape, wrongDType
        case duplicateTensor
        /// GGUF: not the magic, a version other than 2/3, a type id duplex does not know or
        /// implement, a dimension of 0 or absurd size, data not aligned as the header says.
        case badMagic, unsupportedVersion, unknownType, badDimensions, misaligned
        /// A quantized tensor whose parts disagree (MLX scales/biases vs codes, group sizes).
        case badQuantization
        /// PyTorch `.pt` files: a zip archive that is malformed, compressed or fails its CRC; a
        /// pickle with an opcode outside what torch.save writes, or a global outside the allow-list.
        case badArchive, unsupportedCompression, checksumMismatch, badPickle, forbiddenGlobal
    }
    public struct Problem: Sendable, CustomStringConvertible {
        public let kind: Kind
        public let message: String
        public var description: String { message }
    }
    public let path: String
    public let problems: [Problem]

    public init(path: String, problems: [Problem]) {
        self.path = path
        self.problems = problems
    }

    public init(path: String, _ kind: Kind, _ message: String) {
        self.init(path: path, problems: [Problem(kind: kind, message: message)])
    }

    public var kinds: Set<Kind> { Set(problems.map(\.kind)) }

    public var description: String {
        if problems.count == 1 { return "\(path): \(problems[0].message)" }
        let shown = problems.prefix(40).map { "  - \($0.message)" }.joined(separator: "\n")
        let more = problems.count > 40 ? "\n  … and \(problems.count - 40) more" : ""
        return "\(path): \(problems.count) problems:\n\(shown)\(more)"
    }
}

/// The error of every weight-file reader (safetensors, GGUF, PyTorch .pt): a path and the problems found.
public typealias WeightFileError = SafetensorsError

/// A memory-mapped safetensors file (8-byte little-endian header length, a JSON header, then the
/// raw tensor bytes). Opening validates the whole header; tensors are read lazily from the map,
/// so a 15 GB checkpoint costs no memory until its pages are touched.
public final class SafetensorsFile: @unchecked Sendable {
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Byte range inside the data section (after the header).
        public let range: Range<Int>
        public var elementCount: Int { shape.reduce(1, *) }
    }

    /// Largest header accepted: real checkpoints have headers of tens of kilobytes.
    public static let maxHeaderBytes = 100 << 20

    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    /// Names in file order (by data offset).
    public let names: [String]
    public let fileSize: Int
    private let base: UnsafeRawPointer?
    private let mappedLength: Int
    private let dataStart: Int

    public init(path: String) throws {
        self.path = path
        let (raw, size) = try MappedFile.map(path, kind: "a .safetensors file", format: "safetensors")
        let map = UnsafeMutableRawPointer(mutating: raw)
        fileSize = size
        if size < 8 {
            munmap(map, size)
            throw SafetensorsError(path: path, .truncated, "file is \(size) bytes, too short for the 8-byte header length")
        }
        var ok = false
        defer { if !ok { munmap(map, size) } }

        let headerLength = UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw SafetensorsError(path: path, .headerLength,
                "header length field says \(headerLength) bytes (limit \(Self.maxHeaderBytes)): corrupt or not a safetensors file")
        }
        guard 8 + Int(headerLength) <= size else {
            throw SafetensorsError(path: path, .headerLength,
                "header length field says \(headerLength) bytes but only \(size - 8) follow it: truncated or not a safetensors file")
        }
        let headerBytes = UnsafeRawBufferPointer(start: raw + 8, count: Int(headerLength))
        guard let headerText = String(validating: headerBytes, as: UTF8.self) else {
            throw SafetensorsError(path: path, .headerNotUTF8, "header is not valid UTF-8: corrupt or not a safetensors file")
        }
        let header: [String: HeaderValue]
        do {
            header = try JSONDecoder().decode([String: HeaderValue].self, from: Data(headerText.utf8))
        } catch {
            throw SafetensorsError(path: path, .headerNotJSON, "header is not a JSON object of tensor entries: corrupt or not a safetensors file")
        }

        let dataLength = size - 8 - Int(headerLength)
        var problems: [SafetensorsError.Problem] = []
        var meta: [String: String] = [:]
        var described: [Entry] = []
        for (name, value) in header {
            if name == "__metadata__" {
                if case .metadata(let m) = value {
                    meta = m
                } else {
                    problems.append(.init(kind: .badEntry, message: "__metadata__ must be a JSON object of string values"))
                }
                continue
            }
            switch Self.describe(name, value) {
            case .success(let entry): described.append(entry)
            case .failure(let problem): problems.append(problem)
            }
        }

        // Ranges past the end of the data: one tensor pointing outside the file is a corrupt entry,
        // but tensors that tile the data section contiguously and run past its end mean the file
        // was cut short (an interrupted download), which is one problem, not hundreds.
        let beyond = described.filter { $0.range.upperBound > dataLength }
        var inside = described.filter { $0.range.upperBound <= dataLength }
        if !beyond.isEmpty {
            let needed = described.map(\.range.upperBound).max() ?? 0
            if Self.tilesContiguously(described) {
                let cut = beyond.sorted { $0.range.lowerBound < $1.range.lowerBound }
                problems.append(.init(kind: .truncated,
                    message: "truncated: the tensors need \(needed) data bytes but the file holds only \(dataLength); "
                        + "\(cut.count) tensor\(cut.count == 1 ? "" : "s") cut short, first \(cut[0].name) \(cut[0].shape)"))
                inside = []
            } else {
                for e in beyond {
                    problems.append(.init(kind: .offsetsOutOfRange,
                        message: "\(e.name): data_offsets [\(e.range.lowerBound), \(e.range.upperBound)] end beyond the \(dataLength) data bytes in the file"))
                }
            }
        }

        let ordered = inside.sorted { ($0.range.lowerBound, $0.range.upperBound, $0.name) < ($1.range.lowerBound, $1.range.upperBound, $1.name) }
        var furthest: Entry?
        for entry in ordered where !entry.range.isEmpty {
            if let p = furthest, entry.range.lowerBound < p.range.upperBound {
                problems.append(.init(kind: .overlap,
                    message: "\(entry.name): bytes [\(entry.range.lowerBound), \(entry.range.upperBound)) overlap \(p.name) [\(p.range.lowerBound), \(p.range.upperBound))"))
            }
            if furthest.map({ entry.range.upperBound > $0.range.upperBound }) ?? true { furthest = entry }
        }
        if !problems.isEmpty {
            throw SafetensorsError(path: path, problems: problems.sorted { $0.message < $1.message })
        }
        entries = Dictionary(uniqueKeysWithValues: ordered.map { ($0.name, $0) })
        names = ordered.map(\.name)
        metadata = meta
        base = raw
        mappedLength = size
        dataStart = 8 + Int(headerLength)
        ok = true
    }

    /// Checks one header entry on its own: a known dtype, a shape of non-negative integers, a
    /// forward pair of offsets whose span is exactly shape × dtype size.
    private static func describe(_ name: String, _ value: HeaderValue) -> Described {
        func bad(_ kind: SafetensorsError.Kind, _ message: String) -> Described {
            .failure(SafetensorsError.Problem(kind: kind, message: "\(name): \(message)"))
        }
        let fields: HeaderValue.Fields
        switch value {
        case .metadata: return bad(.badEntry, "entry is not a tensor description (needs dtype, shape and data_offsets)")
        case .invalid(let why): return bad(.badEntry, why)
        case .tensor(let f): fields = f
        }
        guard let dtype = DType(rawValue: fields.dtype) else {
            return bad(.unknownDType, "unknown dtype \"\(fields.dtype)\" (known: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let shape = fields.shape
        guard shape.allSatisfy({ $0 >= 0 }) else { return bad(.badEntry, "shape \(shape) has a negative dimension") }
        guard fields.dataOffsets.count == 2, fields.dataOffsets.allSatisfy({ $0 >= 0 }) else {
            return bad(.badEntry, "data_offsets \(fields.dataOffsets) is not a pair of non-negative integers")
        }
        let (begin, end) = (fields.dataOffsets[0], fields.dataOffsets[1])
        guard begin <= end else { return bad(.offsetsOutOfRange, "data_offsets [\(begin), \(end)] run backwards") }
        var bytes: Int? = dtype.byteSize
        for d in shape {
            guard let b = bytes else { break }
            let (p, overflow) = b.multipliedReportingOverflow(by: d)
            bytes = overflow ? nil : p
        }
        guard let bytes, bytes == end - begin else {
            return bad(.shapeMismatch, "shape \(shape) × \(dtype.rawValue) needs \(bytes.map(String.init) ?? "too many") bytes but data_offsets [\(begin), \(end)] span \(end - begin)")
        }
        return .success(Entry(name: name, dtype: dtype, shape: shape, range: begin..<end))
    }

    private enum Described {
        case success(Entry)
        case failure(SafetensorsError.Problem)
    }

    /// Whether the non-empty ranges, in order, start at 0 and follow each other with no gap or overlap.
    private static func tilesContiguously(_ entries: [Entry]) -> Bool {
        var next = 0
        for r in entries.map(\.range).filter({ !$0.isEmpty }).sorted(by: { $0.lowerBound < $1.lowerBound }) {
            guard r.lowerBound == next else { return false }
            next = r.upperBound
        }
        return true
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), mappedLength) }
    }

    /// One value of the header object: a tensor description, the string-to-string metadata map,
    /// or something malformed (kept, so every bad entry is reported rather than the first).
    enum HeaderValue: Decodable {
        struct Fields {
            let dtype: String
            let shape: [Int]
            let dataOffsets: [Int]
        }
        case tensor(Fields)
        case metadata([String: String])
        case invalid(String)

        private enum Key: String, CodingKey { case dtype, shape, dataOffsets = "data_offsets" }

        init(from decoder: Decoder) throws {
            if let m = try? [String: String](from: decoder) { self = .metadata(m); return }
            // MLX writes `"__metadata__": null`; the format allows no metadata, so null is none.
            if let single = try? decoder.singleValueContainer(), single.decodeNil() { self = .metadata([:]); return }
            guard let c = try? decoder.container(keyedBy: Key.self) else {
                self = .invalid("entry is not a JSON object (needs dtype, shape and data_offsets)")
                return
            }
            func integers(_ key: Key) -> Result<[Int], HeaderValueProblem> {
                guard c.contains(key) else { return .failure(.init("\(key.stringValue) is missing")) }
                if let v = try? c.decode([Int].self, forKey: key) { return .success(v) }
                if let v = try? c.decode([Double].self, forKey: key) {
                    return .failure(.init("\(key.stringValue) \(v) must hold integers"))
                }
                return .failure(.init("\(key.stringValue) must be a list of integers"))
            }
            var why: [String] = []
            let dtype = try? c.decode(String.self, forKey: .dtype)
            if dtype == nil { why.append(c.contains(.dtype) ? "dtype must be a string" : "dtype is missing") }
            let shape = integers(.shape), offsets = integers(.dataOffsets)
            if case .failure(let p) = shape { why.append(p.message) }
            if case .failure(let p) = offsets { why.append(p.message) }
            if let dtype, case .success(let s) = shape, case .success(let o) = offsets {
                self = .tensor(Fields(dtype: dtype, shape: s, dataOffsets: o))
            } else {
                self = .invalid(why.joined(separator: "; "))
            }
        }
    }

    struct HeaderValueProblem: Error {
        let message: String
        init(_ message: String) { self.message = message }
    }

    public subscript(name: String) -> Entry? { entries[name] }

    /// The raw bytes of one tensor, valid as long as this file object lives.
    /// Drops this process's copy of the pages that lie wholly inside `entry` (after its values
    /// were copied out): they leave the RSS but stay in the page cache, and reading them again
    /// still works (they fault back in).
    public func releasePages(_ entry: Entry) {
        guard let base else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = Int(bitPattern: base) + dataStart + entry.range.lowerBound
        let first = (start + page - 1) / page * page
        let last = (start + entry.range.count) / page * page
        if last > first { madvise(UnsafeMutableRawPointer(bitPattern: first), last - first, MADV_DONTNEED) }
    }

    public func bytes(_ entry: Entry) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base! + dataStart + entry.range.lowerBound, count: entry.range.count)
    }

    /// A tensor converted to Float32 (from F32, F16, BF16 or F64).
    public func floatTensor(_ name: String) throws -> Tensor {
        guard let entry = entries[name] else {
            throw SafetensorsError(path: path, .missingTensor, "no tensor named \(name)")
        }
        return try floatTensor(entry)
    }

    public func floatTensor(_ entry: Entry) throws -> Tensor {
        guard entry.dtype.isFloatingPoint else {
            throw SafetensorsError(path: path, .wrongDType, "\(entry.name): stored as \(entry.dtype.rawValue), expected a float type")
        }
        let raw = bytes(entry)
        let n = entry.elementCount
        var out = [Float](repeating: 0, count: n)
        out.withUnsafeMutableBufferPointer { dst in
            guard let d = dst.baseAddress, let src = raw.baseAddress, n > 0 else { return }
            Self.widen(src, entry.dtype, into: d, count: n)
        }
        return Tensor(shape: entry.shape, data: out)
    }

    /// Widens `count` little-endian float values of `dtype` at `src` (any alignment) to Float32.
    static func widen(_ src: UnsafeRawPointer, _ dtype: DType, into d: UnsafeMutablePointer<Float>, count n: Int) {
        switch dtype {
        case .f32:
            UnsafeMutableRawPointer(d).copyMemory(from: src, byteCount: n * 4)
        case .bf16 where Int(bitPattern: src) % 2 == 0:
            HalfPrecision.convertBF16(src.assumingMemoryBound(to: UInt16.self), to: d, count: n)
        case .bf16:
            for i in 0..<n { d[i] = HalfPrecision.bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .f16:
            for i in 0..<n { d[i] = HalfPrecision.f16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .f64:
            for i in 0..<n { d[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
        default:
            d.update(repeating: .nan, count: n)
        }
    }

    /// An integer tensor widened to Int64 (from I64, I32, I16, I8, U8, BOOL).
    public func intTensor(_ name: String) throws -> (shape: [Int], values: [Int64]) {
        guard let entry = entries[name] else {
            throw SafetensorsError(path: path, .missingTensor, "no tensor named \(name)")
        }
        let raw = bytes(entry)
        let n = entry.elementCount
        let values: [Int64]
        switch entry.dtype {
        case .i64: values = (0..<n).map { raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self) }
        case .i32: values = (0..<n).map { Int64(raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
        case .i16: values = (0..<n).map { Int64(raw.loadUnaligned(fromByteOffset: 2 * $0, as: Int16.self)) }
        case .i8: values = (0..<n).map { Int64(raw.load(fromByteOffset: $0, as: Int8.self)) }
        case .u8, .bool: values = (0..<n).map { Int64(raw.load(fromByteOffset: $0, as: UInt8.self)) }
        case .u32: values = (0..<n).map { Int64(raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) }
        case .u16: values = (0..<n).map { Int64(raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) }
        default:
            throw SafetensorsError(path: path, .wrongDType, "\(name): stored as \(entry.dtype.rawValue), expected an integer type")
        }
        return (entry.shape, values)
    }
}
