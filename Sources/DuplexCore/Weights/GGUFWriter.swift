import Foundation

/// Writes little-endian GGUF files, v3 by default (v2 on request, as candle writes them; the two
/// differ only in what a big-endian file would mean).
///
/// Streaming: the header follows from the declared tensors alone (each one's size is type ×
/// shape), so it is written first; then `data(i, sink)` is called once per tensor, in order, and
/// hands the tensor's bytes to `sink` in as many chunks as it likes. The total must be exactly the
/// tensor's size (checked: an extra byte throws at once, a short total after `data` returns), so a
/// 7 GB file is converted a tensor — or a row — at a time. Each tensor is padded to the alignment.
/// The file appears only once complete: it is written to a temporary file beside `path`, synced,
/// then renamed over it, so a failed or interrupted write leaves no half file.
public struct GGUFWriter {
    public struct Tensor: Sendable, Equatable {
        public let name: String
        public let type: GGUFTensorType
        /// Outermost first (PyTorch order); the file stores it reversed.
        public let shape: [Int]

        public init(name: String, type: GGUFTensorType, shape: [Int]) {
            self.name = name
            self.type = type
            self.shape = shape
        }

        /// The bytes this tensor's data takes, nil when the shape does not fit the type.
        public var byteCount: Int? { type.byteCount(shape: shape) }
    }

    public typealias DataSource = (Int, (UnsafeRawBufferPointer) throws -> Void) throws -> Void

    public static func write(path: String, version: Int = 3, metadata: [(String, GGUFValue)] = [], alignment: Int = 32,
                             tensors: [Tensor], data: DataSource) throws {
        let plan = try Plan(path: path, version: version, metadata: metadata, alignment: alignment, tensors: tensors)
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp").path
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw WeightFileError(path: path, .io, "cannot create \(temporary): \(String(cString: strerror(errno)))")
        }
        let file = BufferedFile(fd: fd, path: path)
        do {
            try plan.emit(tensors: tensors, data: data, to: file.append)
            try file.flush()
            guard fsync(fd) == 0 else { throw file.failure("cannot sync") }
            let closed = close(fd)
            file.closed = true
            guard closed == 0 else { throw file.failure("cannot close") }
            guard rename(temporary, path) == 0 else { throw file.failure("cannot rename \(temporary) to it") }
        } catch {
            if !file.closed { close(fd) }
            unlink(temporary)
            throw error
        }
    }

    /// The whole file in memory: small files, tests.
    public static func serialized(version: Int = 3, metadata: [(String, GGUFValue)] = [], alignment: Int = 32,
                                  tensors: [Tensor], data: DataSource) throws -> [UInt8] {
        let plan = try Plan(path: "<memory>", version: version, metadata: metadata, alignment: alignment, tensors: tensors)
        var out: [UInt8] = []
        try plan.emit(tensors: tensors, data: data) { out.append(contentsOf: $0) }
        return out
    }

    /// The checked header and each tensor's size.
    private struct Plan {
        let path: String
        let alignment: Int
        let header: [UInt8]
        let sizes: [Int]

        init(path: String, version: Int, metadata: [(String, GGUFValue)], alignment: Int, tensors: [Tensor]) throws {
            var problems: [WeightFileError.Problem] = []
            func bad(_ kind: WeightFileError.Kind, _ message: String) { problems.append(.init(kind: kind, message: message)) }
            if version != 2 && version != 3 { bad(.unsupportedVersion, "GGUF version \(version) cannot be written; 2 and 3 can") }
            let alignmentOK = alignment > 0 && alignment & (alignment - 1) == 0 && alignment <= GGUFFile.maxAlignment
            if !alignmentOK { bad(.badEntry, "alignment \(alignment) must be a power of two of at most \(GGUFFile.maxAlignment)") }

            var entries = metadata
            var keys = Set<String>()
            for (key, value) in metadata {
                if key.isEmpty { bad(.badEntry, "a metadata key is empty") }
                if !keys.insert(key).inserted { bad(.badEntry, "metadata key \(key) is given twice") }
                if let why = Self.unwritable(value, depth: 0) { bad(.badEntry, "metadata key \(key): \(why)") }
            }
            // Readers take the alignment from this key alone; 32 is what its absence means.
            if let given = metadata.first(where: { $0.0 == "general.alignment" })?.1 {
                if given != .uint32(UInt32(truncatingIfNeeded: alignment)) {
                    bad(.badEntry, "metadata general.alignment is \(given) but the file is written with alignment \(alignment)")
                }
            } else if alignment != GGUFFile.defaultAlignment, alignmentOK {
                entries.append(("general.alignment", .uint32(UInt32(alignment))))
            }

            var names = Set<String>()
            var sizes: [Int] = []
            for t in tensors {
                if t.name.isEmpty { bad(.badEntry, "a tensor name is empty") }
                if !names.insert(t.name).inserted { bad(.duplicateTensor, "\(t.name): two tensors have this name") }
                if !(1...4).contains(t.shape.count) || t.shape.contains(where: { $0 < 1 }) {
                    bad(.badDimensions, "\(t.name): shape \(t.shape) must have 1 to 4 dimensions, each at least 1")
                } else if t.shape[t.shape.count - 1] % t.type.blockValues != 0 {
                    bad(.shapeMismatch, "\(t.name): shape \(t.shape) cannot be stored as \(t.type.name): the innermost dimension is not a multiple of its \(t.type.blockValues)-value block")
                } else if let size = t.byteCount {
                    sizes.append(size)
                    continue
                } else {
                    bad(.badDimensions, "\(t.name): shape \(t.shape) as \(t.type.name) is too large")
                }
                sizes.append(0)
            }
            if !problems.isEmpty { throw WeightFileError(path: path, problems: problems) }

            var h: [UInt8] = Array("GGUF".utf8)
            Self.put(UInt32(version), &h)
            Self.put(UInt64(tensors.count), &h)
            Self.put(UInt64(entries.count), &h)
            for (key, value) in entries {
                Self.put(key, &h)
                Self.put(value.typeID, &h)
                Self.put(value, &h)
            }
            var offset = 0
            for (t, size) in zip(tensors, sizes) {
                Self.put(t.name, &h)
                Self.put(UInt32(t.shape.count), &h)
                for d in t.shape.reversed() { Self.put(UInt64(d), &h) }
                Self.put(t.type.rawValue, &h)
                Self.put(UInt64(offset), &h)
                let (padded, overflow) = Self.padded(size, alignment).addingReportingOverflow(offset)
                if overflow { throw WeightFileError(path: path, .badDimensions, "the tensors' data is too large for one file") }
                offset = padded
            }
            self.path = path
            self.alignment = alignment
            self.header = h
            self.sizes = sizes
        }

        func emit(tensors: [Tensor], data: DataSource, to out: @escaping (UnsafeRawBufferPointer) throws -> Void) throws {
            let zeros = [UInt8](repeating: 0, count: min(alignment, 1 << 16))
            func pad(_ n: Int) throws {
                var left = Self.padded(n, alignment) - n
                while left > 0 {
                    let k = min(left, zeros.count)
                    try zeros.withUnsafeBytes { try out(UnsafeRawBufferPointer(rebasing: $0[0..<k])) }
                    left -= k
                }
            }
            try header.withUnsafeBytes { try out($0) }
            try pad(header.count)
            for (i, t) in tensors.enumerated() {
                let expected = sizes[i]
                var written = 0
                try data(i) { chunk in
                    guard chunk.count <= expected - written else {
                        throw WeightFileError(path: path, .shapeMismatch,
                            "\(t.name): the data source gave more than the \(expected) bytes that shape \(t.shape) as \(t.type.name) takes")
                    }
                    try out(chunk)
                    written += chunk.count
                }
                guard written == expected else {
                    throw WeightFileError(path: path, .shapeMismatch,
                        "\(t.name): the data source gave \(written) bytes; shape \(t.shape) as \(t.type.name) takes \(expected)")
                }
                try pad(expected)
            }
        }

        static func padded(_ n: Int, _ alignment: Int) -> Int { (n + alignment - 1) / alignment * alignment }

        /// Why a value cannot be written (arrays of mixed types, nesting too deep), or nil.
        static func unwritable(_ value: GGUFValue, depth: Int) -> String? {
            guard case .array(let items) = value else { return nil }
            if depth >= GGUFFile.maxArrayDepth { return "arrays nested more than \(GGUFFile.maxArrayDepth) deep" }
            if let first = items.first, items.contains(where: { $0.typeID != first.typeID }) {
                return "an array mixes value types; GGUF arrays hold one type"
            }
            return items.lazy.compactMap { unwritable($0, depth: depth + 1) }.first
        }

        static func put<T: FixedWidthInteger>(_ v: T, _ out: inout [UInt8]) {
            withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
        }

        static func put(_ s: String, _ out: inout [UInt8]) {
            put(UInt64(s.utf8.count), &out)
            out.append(contentsOf: s.utf8)
        }

        /// A value without its type id (arrays carry their element type, then the count).
        static func put(_ value: GGUFValue, _ out: inout [UInt8]) {
            switch value {
            case .uint8(let v): put(v, &out)
            case .int8(let v): put(v, &out)
            case .uint16(let v): put(v, &out)
            case .int16(let v): put(v, &out)
            case .uint32(let v): put(v, &out)
            case .int32(let v): put(v, &out)
            case .float32(let v): put(v.bitPattern, &out)
            case .bool(let v): put(UInt8(v ? 1 : 0), &out)
            case .string(let v): put(v, &out)
            case .uint64(let v): put(v, &out)
            case .int64(let v): put(v, &out)
            case .float64(let v): put(v.bitPattern, &out)
            case .array(let items):
                // An empty array still needs an element type; uint8 is as good as any to a reader.
                put(items.first?.typeID ?? GGUFValue.uint8(0).typeID, &out)
                put(UInt64(items.count), &out)
                for item in items { put(item, &out) }
            }
        }
    }

    /// Buffers small writes (header fields, padding, row-sized chunks) into large ones.
    private final class BufferedFile {
        let fd: Int32
        let path: String
        var closed = false
        private var buffer: [UInt8] = []
        private let capacity = 1 << 20

        init(fd: Int32, path: String) {
            self.fd = fd
            self.path = path
            buffer.reserveCapacity(capacity)
        }

        func append(_ chunk: UnsafeRawBufferPointer) throws {
            if buffer.count + chunk.count > capacity { try flush() }
            if chunk.count >= capacity { try writeAll(chunk) } else { buffer.append(contentsOf: chunk) }
        }

        func flush() throws {
            try buffer.withUnsafeBytes { try writeAll($0) }
            buffer.removeAll(keepingCapacity: true)
        }

        private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
            guard var p = bytes.baseAddress else { return }
            var left = bytes.count
            while left > 0 {
                let n = posixWrite(fd, p, left)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw failure("cannot write")
                }
                p += n
                left -= n
            }
        }

        func failure(_ what: String) -> WeightFileError {
            WeightFileError(path: path, .io, "\(what): \(String(cString: strerror(errno)))")
        }
    }
}

/// `write(2)`, out of reach of the writer's own `write` inside its scope.
private func posixWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int { write(fd, bytes, count) }
