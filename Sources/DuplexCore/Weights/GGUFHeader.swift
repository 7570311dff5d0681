import Foundation

/// Thrown inside the parser once a problem makes the rest of the header unreadable; the problem
/// itself is already in `GGUFHeaderParser.problems`.
struct GGUFParseStop: Error {}

/// Reads a GGUF header through a cursor over the whole file's bytes. Every read is checked
/// against the end, every count is bounded by the bytes that could hold it before anything is
/// built from it, and all size arithmetic is overflow-checked, so no input traps or allocates
/// beyond a small multiple of its own size. Problems that leave the layout readable (a bad
/// dimension, an unknown tensor type, a misaligned offset) are collected so that one open
/// reports them all; one that loses the thread (a length past the end, an unknown value type)
/// stops the parse.
struct GGUFHeaderParser {
    typealias Problem = WeightFileError.Problem
    typealias Kind = WeightFileError.Kind

    let bytes: UnsafeRawBufferPointer
    var offset = 0
    var problems: [Problem] = []
    /// Metadata values built so far, nested ones included: the memory the header costs.
    private var valuesBuilt = 0

    /// Real vocabularies put under a million values in metadata (tokens, scores, types, merges);
    /// this bounds what a hostile header can make the parser allocate.
    static let maxMetadataValues = 1 << 23
    /// No real file declares 2^32 tensors, keys or array elements, or a 4 GiB string: past that a
    /// count is corruption, below it a count the file cannot hold means the file was cut short.
    static let corruptCount: UInt64 = 1 << 32
    /// The least bytes one metadata entry takes: a key of one byte, its type, a one-byte value.
    static let minimumEntryBytes = 8 + 1 + 4 + 1
    /// The least bytes one tensor description takes: a name of one byte, n_dims, one dim, type, offset.
    static let minimumTensorBytes = 8 + 1 + 4 + 8 + 4 + 8

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    private var remaining: Int { bytes.count - offset }

    private mutating func note(_ kind: Kind, _ message: String) {
        problems.append(Problem(kind: kind, message: message))
    }

    private mutating func stop(_ kind: Kind, _ message: String) -> GGUFParseStop {
        note(kind, message)
        return GGUFParseStop()
    }

    // MARK: the file

    mutating func parse() throws(GGUFParseStop) -> GGUFFile.Header {
        try magic()
        let version = try scalar(UInt32.self, "the version")
        switch version {
        case 2, 3: break
        case 1:
            throw stop(.unsupportedVersion, "GGUF version 1 (the first GGUF files, with 32-bit counts) is not supported; versions 2 and 3 are: convert the file again")
        case let v where v > 0xFFFF && (1...3).contains(v.byteSwapped):
            throw stop(.unsupportedVersion, "a big-endian GGUF file (version \(v.byteSwapped), byte-swapped): only little-endian files are supported")
        default:
            throw stop(.unsupportedVersion, "GGUF version \(version) is not supported; versions 2 and 3 are")
        }
        let tensorCount = try scalar(UInt64.self, "the tensor count")
        let entryCount = try scalar(UInt64.self, "the metadata count")
        try bound(entryCount, each: Self.minimumEntryBytes, "the header declares \(entryCount) metadata entries")

        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        for i in 0..<Int(entryCount) {
            let key = try string("metadata key \(i + 1) of \(entryCount)")
            if key.isEmpty { note(.badEntry, "metadata key \(i + 1) of \(entryCount) is empty") }
            let type = try scalar(UInt32.self, "the value type of metadata key \(shown(key))")
            let value = try value(type, key: key, depth: 0)
            if metadata[key] != nil {
                note(.badEntry, "metadata key \(shown(key)) appears twice")
            } else {
                metadata[key] = value
                keys.append(key)
            }
        }
        let alignment = try self.alignment(metadata["general.alignment"])
        if let arch = metadata["general.architecture"], arch.string == nil {
            note(.badEntry, "general.architecture has type \(arch.typeName), expected string")
        }

        try bound(tensorCount, each: Self.minimumTensorBytes, "the header declares \(tensorCount) tensors")
        var described: [Described] = []
        var order: [String] = []
        var firstIndex: [String: Int] = [:]
        for i in 0..<Int(tensorCount) {
            let d = try tensorInfo(i, of: tensorCount, alignment: alignment)
            if let first = firstIndex[d.name] {
                note(.duplicateTensor, "\(shown(d.name)): two tensors have this name (tensors \(first + 1) and \(i + 1) of \(tensorCount))")
                continue
            }
            firstIndex[d.name] = i
            if let d = d.valid {
                described.append(d)
                order.append(d.name)
            }
        }
        // Data starts at the header's end rounded up to the alignment (both far below Int.max).
        let dataOffset = (offset + alignment - 1) / alignment * alignment
        let entries = locate(described, dataOffset: dataOffset, alignment: alignment)
        if !problems.isEmpty { throw GGUFParseStop() }
        return GGUFFile.Header(version: Int(version), alignment: alignment, metadata: metadata, metadataKeys: keys,
                               entries: Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0) }),
                               names: order, dataOffset: dataOffset)
    }

    private mutating func magic() throws(GGUFParseStop) {
        let expected: [UInt8] = Array("GGUF".utf8)
        if bytes.isEmpty { throw stop(.empty, "empty file (0 bytes): not a GGUF file") }
        let head = Array(bytes.prefix(4))
        if head == expected { offset = 4; return }
        if head.count < 4, head == Array(expected.prefix(head.count)) {
            throw stop(.truncated, "truncated: the file is \(bytes.count) bytes, it ends inside the GGUF magic")
        }
        // Safetensors: an 8-byte little-endian header length (far below 2^48), then the JSON's "{".
        if bytes.count > 8, bytes[8] == UInt8(ascii: "{"), bytes[6] == 0, bytes[7] == 0 {
            throw stop(.badMagic, "not a GGUF file: it looks like a safetensors file (an 8-byte header length, then JSON); load it as safetensors")
        }
        let legacy: [String: String] = ["lmgg": "ggml", "fmgg": "ggmf", "tjgg": "ggjt", "algg": "ggla"]
        if let text = String(validating: head, as: UTF8.self), let old = legacy[text] {
            throw stop(.badMagic, "not a GGUF file: it is a pre-GGUF \"\(old)\" file (llama.cpp before August 2023); convert it to GGUF")
        }
        let hex = head.map { "0x" + String($0, radix: 16, uppercase: true) }.joined(separator: " ")
        throw stop(.badMagic, "not a GGUF file: it starts with \(hex), not \"GGUF\"")
    }

    /// `general.alignment`: absent means 32; present, a uint32 power of two of at most 1 MiB.
    private mutating func alignment(_ value: GGUFValue?) throws(GGUFParseStop) -> Int {
        guard let value else { return GGUFFile.defaultAlignment }
        guard case .uint32(let a) = value else {
            throw stop(.badEntry, "general.alignment has type \(value.typeName), expected uint32")
        }
        guard a > 0, a & (a - 1) == 0, a <= GGUFFile.maxAlignment else {
            throw stop(.badEntry, "general.alignment is \(a): it must be a power of two of at most \(GGUFFile.maxAlignment) (1 MiB)")
        }
        return Int(a)
    }

    /// A count checked against the bytes left before anything is sized from it.
    private mutating func bound(_ count: UInt64, each: Int, _ what: @autoclosure () -> String) throws(GGUFParseStop) {
        if count >= Self.corruptCount {
            throw stop(.badEntry, "corrupt header: \(what())")
        }
        if count > UInt64(remaining / each) {
            throw stop(.truncated, "truncated or corrupt: \(what()), which need at least \(count * UInt64(each)) bytes, but only \(remaining) follow at offset \(offset)")
        }
    }

    // MARK: tensors

    /// One tensor description as read; `valid` when its own fields are consistent.
    private struct Info {
        let name: String
        let valid: Described?
    }

    struct Described {
        let name: String
        let type: GGUFTensorType
        let shape: [Int]
        let byteCount: Int
        /// Relative to the data section, as the file says.
        let offset: Int
    }

    private mutating func tensorInfo(_ i: Int, of count: UInt64, alignment: Int) throws(GGUFParseStop) -> Info {
        let name = try string("the name of tensor \(i + 1) of \(count)")
        let label = name.isEmpty ? "tensor \(i + 1) of \(count) (empty name)" : shown(name)
        if name.isEmpty { note(.badEntry, "\(label): a tensor needs a name") }
        let rank = try scalar(UInt32.self, "the n_dims of \(label)")
        guard (1...4).contains(rank) else {
            throw stop(.badDimensions, "\(label): n_dims is \(rank); GGUF tensors have 1 to 4 dimensions")
        }
        var dims: [UInt64] = []
        for _ in 0..<rank { dims.append(try scalar(UInt64.self, "the dims of \(label)")) }
        let typeID = try scalar(UInt32.self, "the type of \(label)")
        let rawOffset = try scalar(UInt64.self, "the data offset of \(label)")

        // PyTorch order, outermost first: the file lists ggml's ne[], innermost first.
        let shapeText = "[" + dims.reversed().map(String.init).joined(separator: ", ") + "]"
        var ok = !name.isEmpty
        if dims.contains(0) {
            note(.badDimensions, "\(label): shape \(shapeText) has a dimension of 0; every dimension must be at least 1")
            ok = false
        }
        let type = GGUFTensorType(rawValue: typeID)
        if type == nil {
            note(.unknownType, "\(label): unknown ggml tensor type id \(typeID)")
            ok = false
        }
        var elements: Int? = 1
        for d in dims {
            guard let e = elements, let di = Int(exactly: d) else { elements = nil; break }
            let (p, overflow) = e.multipliedReportingOverflow(by: di)
            elements = overflow ? nil : p
        }
        if elements == nil {
            note(.badDimensions, "\(label): shape \(shapeText) holds more values than a file can")
            ok = false
        }
        var byteCount = 0
        if ok, let type, let elements {
            if dims[0] % UInt64(type.blockValues) != 0 {
                note(.shapeMismatch, "\(label): shape \(shapeText) cannot be stored as \(type.name): the innermost dimension, \(dims[0]), is not a multiple of its \(type.blockValues)-value block")
                ok = false
            } else if let b = type.byteCount(elements: elements), b <= bytes.count {
                byteCount = b
            } else {
                let need = type.byteCount(elements: elements).map { "\($0) bytes" } ?? "more bytes than a file can hold"
                note(.badDimensions, "\(label): shape \(shapeText) as \(type.name) needs \(need), more than the whole file (\(bytes.count) bytes)")
                ok = false
            }
        }
        guard let relative = Int(exactly: rawOffset), relative <= bytes.count else {
            note(.offsetsOutOfRange, "\(label): data offset \(rawOffset) lies beyond the end of the file (\(bytes.count) bytes)")
            return Info(name: name, valid: nil)
        }
        if relative % alignment != 0 {
            note(.misaligned, "\(label): data offset \(relative) is not a multiple of the alignment, \(alignment)")
            ok = false
        }
        guard ok, let type else { return Info(name: name, valid: nil) }
        return Info(name: name, valid: Described(name: name, type: type, shape: dims.reversed().map { Int($0) },
                                                 byteCount: byteCount, offset: relative))
    }

    /// Places the tensors in the file: inside it, not overlapping. Tensors laid end to end (each
    /// padded to the alignment) that run past the end mean the file was cut short, one problem;
    /// a stray tensor past the end is a corrupt entry.
    private mutating func locate(_ described: [Described], dataOffset: Int, alignment: Int) -> [GGUFFile.Entry] {
        // Offsets and sizes are each at most the file size here, so these sums cannot overflow.
        let all = described.map {
            GGUFFile.Entry(name: $0.name, type: $0.type, shape: $0.shape,
                           range: (dataOffset + $0.offset)..<(dataOffset + $0.offset + $0.byteCount))
        }
        let size = bytes.count
        let ordered = all.sorted { ($0.range.lowerBound, $0.range.upperBound, $0.name) < ($1.range.lowerBound, $1.range.upperBound, $1.name) }
        let beyond = ordered.filter { $0.range.upperBound > size }
        var inside = ordered.filter { $0.range.upperBound <= size }
        if !beyond.isEmpty {
            var next = dataOffset
            var tiles = true
            for e in ordered {
                if e.range.lowerBound != next { tiles = false; break }
                next = (e.range.upperBound + alignment - 1) / alignment * alignment
            }
            if tiles {
                let first = beyond[0]
                note(.truncated, "truncated: the tensors need \(ordered.last!.range.upperBound) bytes but the file has only \(size); "
                    + "\(beyond.count) tensor\(beyond.count == 1 ? "" : "s") cut short, first \(shown(first.name)) \(first.shape) \(first.type.name)")
                inside = []
            } else {
                for e in beyond {
                    note(.offsetsOutOfRange, "\(shown(e.name)): data [\(e.range.lowerBound), \(e.range.upperBound)) ends beyond the end of the file (\(size) bytes)")
                }
            }
        }
        var furthest: GGUFFile.Entry?
        for e in inside {
            if let p = furthest, e.range.lowerBound < p.range.upperBound {
                note(.overlap, "\(shown(e.name)): bytes [\(e.range.lowerBound), \(e.range.upperBound)) overlap \(shown(p.name)) [\(p.range.lowerBound), \(p.range.upperBound))")
            }
            if furthest.map({ e.range.upperBound > $0.range.upperBound }) ?? true { furthest = e }
        }
        return inside
    }

    // MARK: metadata values

    private mutating func value(_ type: UInt32, key: String, depth: Int) throws(GGUFParseStop) -> GGUFValue {
        valuesBuilt += 1
        if valuesBuilt > Self.maxMetadataValues {
            throw stop(.badEntry, "metadata key \(shown(key)): the metadata holds more than \(Self.maxMetadataValues) values: corrupt, or not a model file")
        }
        func what() -> String { "the value of metadata key \(shown(key))" }
        switch type {
        case 0: return .uint8(try scalar(UInt8.self, what()))
        case 1: return .int8(try scalar(Int8.self, what()))
        case 2: return .uint16(try scalar(UInt16.self, what()))
        case 3: return .int16(try scalar(Int16.self, what()))
        case 4: return .uint32(try scalar(UInt32.self, what()))
        case 5: return .int32(try scalar(Int32.self, what()))
        case 6: return .float32(Float(bitPattern: try scalar(UInt32.self, what())))
        case 7:
            let b = try scalar(UInt8.self, what())
            guard b <= 1 else { throw stop(.badEntry, "metadata key \(shown(key)): bool value \(b), expected 0 or 1") }
            return .bool(b == 1)
        case 8: return .string(try string(what()))
        case 9:
            guard depth < GGUFFile.maxArrayDepth else {
                throw stop(.badEntry, "metadata key \(shown(key)): arrays nested more than \(GGUFFile.maxArrayDepth) deep")
            }
            let elementType = try scalar(UInt32.self, "the array element type of metadata key \(shown(key))")
            guard let each = Self.minimumBytes(elementType) else {
                throw stop(.unknownType, "metadata key \(shown(key)): array element type \(elementType) is not a GGUF value type (0 to 12)")
            }
            let count = try scalar(UInt64.self, "the array length of metadata key \(shown(key))")
            try bound(count, each: each, "metadata key \(shown(key)) declares an array of \(count) \(GGUFValue.typeName(elementType)) values")
            var values: [GGUFValue] = []
            // Grown as values are read, never sized from the count: the count is only bounded by
            // the bytes left, and a value takes more memory than its encoding.
            values.reserveCapacity(min(Int(count), 1 << 12))
            for _ in 0..<Int(count) { values.append(try value(elementType, key: key, depth: depth + 1)) }
            return .array(values)
        case 10: return .uint64(try scalar(UInt64.self, what()))
        case 11: return .int64(try scalar(Int64.self, what()))
        case 12: return .float64(Double(bitPattern: try scalar(UInt64.self, what())))
        default:
            throw stop(.unknownType, "metadata key \(shown(key)): value type \(type) is not a GGUF value type (0 to 12)")
        }
    }

    /// The least bytes one value of a type takes (nil: not a value type).
    static func minimumBytes(_ type: UInt32) -> Int? {
        switch type {
        case 0, 1, 7: 1
        case 2, 3: 2
        case 4, 5, 6: 4
        case 8, 10, 11, 12: 8
        case 9: 12
        default: nil
        }
    }

    // MARK: primitives

    private mutating func scalar<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws(GGUFParseStop) -> T {
        let n = MemoryLayout<T>.size
        guard n <= remaining else {
            throw stop(.truncated, "truncated: the file (\(bytes.count) bytes) ends inside \(what()), \(n) bytes at offset \(offset)")
        }
        let v = T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += n
        return v
    }

    private mutating func string(_ what: @autoclosure () -> String) throws(GGUFParseStop) -> String {
        let length = try scalar(UInt64.self, "the length of \(what())")
        if length >= Self.corruptCount {
            throw stop(.badEntry, "corrupt header: \(what()) is declared \(length) bytes long")
        }
        guard length <= UInt64(remaining) else {
            throw stop(.truncated, "truncated or corrupt: \(what()) is declared \(length) bytes long but only \(remaining) follow at offset \(offset)")
        }
        let n = Int(length)
        guard let s = String(validating: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)]), as: UTF8.self) else {
            throw stop(.badEntry, "\(what()) is not valid UTF-8 (\(n) bytes at offset \(offset))")
        }
        offset += n
        return s
    }
}

/// A name from a file as a message shows it: control characters escaped, long names cut, so a
/// hostile name cannot garble a terminal or flood a log.
fileprivate func shown(_ name: String) -> String {
    var out = ""
    for (i, scalar) in name.unicodeScalars.enumerated() {
        if i == 160 { out += "…"; break }
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator:
            out += "\\u{" + String(scalar.value, radix: 16) + "}"
        default:
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}
