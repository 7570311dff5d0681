import Foundation

/// Element types a safetensors file may declare. Float types load as Float32 tensors;
/// integer types are readable as Int64 arrays.
public enum DType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"

    public var byteSize: Int {
        switch self {
        case .f64, .i64: 8
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
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
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw SafetensorsError(path: path, .io, "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw SafetensorsError(path: path, .io, "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw SafetensorsError(path: path, .io, "not a regular file")
        }
        let size = Int(info.st_size)
        fileSize = size
        if size == 0 { throw SafetensorsError(path: path, .empty, "empty file (0 bytes): not a safetensors file") }
        if size < 8 {
            throw SafetensorsError(path: path, .truncated, "file is \(size) bytes, too short for the 8-byte header length")
        }
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
            throw SafetensorsError(path: path, .io, "cannot memory-map \(size) bytes: \(String(cString: strerror(errno)))")
        }
        let raw = UnsafeRawPointer(map)
        var ok = false
        defer { if !ok { munmap(map, size) } }

        let headerLength = UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw SafetensorsError(path: path, .headerLength,
                "header length field says \(headerLength) bytes (limit \(Self.maxHeaderBytes)): corrupt or not a safetensors file")
        }
        guard 8 + Int(headerLength) <= size else {
            throw SafetensorsError(path: path, .truncated,
                "header length field says \(headerLength) bytes but the file has only \(size - 8) after it: truncated")
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
        func problem(_ kind: SafetensorsError.Kind, _ message: String) {
            problems.append(.init(kind: kind, message: message))
        }
        var parsed: [String: Entry] = [:]
        var meta: [String: String] = [:]
        for (name, value) in header {
            let fields: HeaderValue.Fields
            switch value {
            case .metadata(let m):
                if name == "__metadata__" { meta = m } else { problem(.badEntry, "\(name): entry is not a tensor description") }
                continue
            case .invalid(let why):
                problem(.badEntry, "\(name): \(why)")
                continue
            case .tensor(let f):
                if name == "__metadata__" { problem(.badEntry, "__metadata__ is not a string map"); continue }
                fields = f
            }
            guard let dtype = DType(rawValue: fields.dtype) else {
                problem(.unknownDType, "\(name): unknown dtype \"\(fields.dtype)\" (known: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))")
                continue
            }
            let shape = fields.shape
            guard shape.allSatisfy({ $0 >= 0 }) else {
                problem(.badEntry, "\(name): shape \(shape) has a negative dimension"); continue
            }
            guard fields.dataOffsets.count == 2, fields.dataOffsets.allSatisfy({ $0 >= 0 }) else {
                problem(.badEntry, "\(name): data_offsets \(fields.dataOffsets) is not a pair of non-negative integers"); continue
            }
            let (begin, end) = (fields.dataOffsets[0], fields.dataOffsets[1])
            guard begin <= end else { problem(.offsetsOutOfRange, "\(name): data_offsets [\(begin), \(end)] run backwards"); continue }
            guard end <= dataLength else {
                problem(.offsetsOutOfRange, "\(name): data_offsets [\(begin), \(end)] end beyond the \(dataLength) data bytes in the file (truncated?)")
                continue
            }
            var elements = 1
            var overflow = false
            for d in shape {
                let (p, o) = elements.multipliedReportingOverflow(by: d)
                if o { overflow = true; break }
                elements = p
            }
            let (bytes, o2) = elements.multipliedReportingOverflow(by: dtype.byteSize)
            if overflow || o2 || bytes != end - begin {
                problem(.shapeMismatch, "\(name): shape \(shape) × \(dtype.rawValue) needs \(overflow || o2 ? "too many" : String(bytes)) bytes but data_offsets span \(end - begin)")
                continue
            }
            parsed[name] = Entry(name: name, dtype: dtype, shape: shape, range: begin..<end)
        }
        let ordered = parsed.values.sorted { ($0.range.lowerBound, $0.range.upperBound, $0.name) < ($1.range.lowerBound, $1.range.upperBound, $1.name) }
        var previous: Entry?
        for entry in ordered where !entry.range.isEmpty {
            if let p = previous, entry.range.lowerBound < p.range.upperBound {
                problem(.overlap, "\(entry.name): bytes [\(entry.range.lowerBound), \(entry.range.upperBound)) overlap \(p.name) [\(p.range.lowerBound), \(p.range.upperBound))")
            }
            if previous == nil || entry.range.upperBound > previous!.range.upperBound { previous = entry }
        }
        if !problems.isEmpty {
            throw SafetensorsError(path: path, problems: problems.sorted { $0.message < $1.message })
        }
        entries = parsed
        names = ordered.map(\.name)
        metadata = meta
        base = raw
        mappedLength = size
        dataStart = 8 + Int(headerLength)
        ok = true
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), mappedLength) }
    }

    /// One value of the header object: a tensor description, the string-to-string metadata map,
    /// or something malformed (kept, so every bad entry is reported rather than the first).
    enum HeaderValue: Decodable {
        struct Fields: Decodable {
            let dtype: String
            let shape: [Int]
            let dataOffsets: [Int]
            enum CodingKeys: String, CodingKey { case dtype, shape, dataOffsets = "data_offsets" }
        }
        case tensor(Fields)
        case metadata([String: String])
        case invalid(String)

        init(from decoder: Decoder) throws {
            if let f = try? Fields(from: decoder) { self = .tensor(f); return }
            if let m = try? [String: String](from: decoder) { self = .metadata(m); return }
            self = .invalid("entry needs dtype (string), shape and data_offsets (lists of integers)")
        }
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
        let raw = bytes(entry)
        let n = entry.elementCount
        var out = [Float](repeating: 0, count: n)
        out.withUnsafeMutableBufferPointer { dst in
            guard let d = dst.baseAddress, n > 0 else { return }
            switch entry.dtype {
            case .f32:
                UnsafeMutableRawPointer(d).copyMemory(from: raw.baseAddress!, byteCount: n * 4)
            case .bf16, .f16:
                for i in 0..<n {
                    let bits = raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
                    d[i] = entry.dtype == .bf16 ? HalfPrecision.bf16ToFloat(bits) : HalfPrecision.f16ToFloat(bits)
                }
            case .f64:
                for i in 0..<n { d[i] = Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
            default: break
            }
        }
        guard entry.dtype.isFloatingPoint else {
            throw SafetensorsError(path: path, .wrongDType, "\(entry.name): stored as \(entry.dtype.rawValue), expected a float type")
        }
        return Tensor(shape: entry.shape, data: out)
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
        default:
            throw SafetensorsError(path: path, .wrongDType, "\(name): stored as \(entry.dtype.rawValue), expected an integer type")
        }
        return (entry.shape, values)
    }
}
