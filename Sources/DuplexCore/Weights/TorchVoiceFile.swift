import Foundation

/// One tensor of a `torch.save` file: its stored element type and shape, values in row-major
/// order of the shape (strides and storage offset already applied), floats widened to Float32
/// and integers (and bools) to Int64.
public struct TorchTensor: Sendable, Equatable {
    public enum Values: Sendable, Equatable {
        case float([Float])
        case int([Int64])
    }

    public let dtype: DType
    public let shape: [Int]
    public let values: Values

    public var elementCount: Int { shape.reduce(1, *) }
    /// The values as a Float32 tensor (nil for an integer tensor).
    public var floatTensor: Tensor? {
        if case .float(let v) = values { return Tensor(shape: shape, data: v) } else { return nil }
    }
    /// The values of an integer tensor (nil for a float tensor).
    public var int64: [Int64]? {
        if case .int(let v) = values { return v } else { return nil }
    }
}

/// A file written by `torch.save` (PyTorch's zip format: `<name>/data.pkl` plus one member
/// `<name>/data/<key>` per storage), read as data by `TorchPickle` without running anything.
/// It holds what torch.save writes for a dict of tensors and plain values: every leaf by its key
/// path (nested dict keys and list indices joined by "."). Bounded: the file size, the number of
/// elements, the nesting; every tensor's strides and offset are checked against its storage, and
/// every member read is checked against its CRC-32. Errors are `WeightFileError`s naming the file.
public struct TorchFile: Sendable {
    public enum Value: Sendable, Equatable {
        case tensor(TorchTensor)
        case int(Int64), float(Double), bool(Bool), string(String), none
    }

    public static let maxFileBytes = 1 << 30
    public static let maxElements = 1 << 28
    public static let maxDepth = 32
    /// Values visited walking the object (a state dict has thousands; shared tuples could make billions).
    public static let maxValues = 1 << 18

    public let path: String
    /// Leaf paths in the order the file stores them.
    public let names: [String]
    public let values: [String: Value]

    public init(path: String) throws {
        self.path = path
        let (raw, size) = try MappedFile.map(path, kind: "a PyTorch .pt file", format: "PyTorch (torch.save)")
        defer { munmap(UnsafeMutableRawPointer(mutating: raw), size) }
        let bytes = UnsafeRawBufferPointer(start: raw, count: size)
        let fail: ZipArchive.Fail = { WeightFileError(path: path, $0, $1) }
        guard size <= Self.maxFileBytes else {
            throw fail(.badArchive, "\(size) bytes: larger than the \(Self.maxFileBytes)-byte limit for a .pt file")
        }
        if size >= 2, bytes[0] == 0x80, bytes[1] <= 5 {
            throw fail(.unsupportedVersion, "a bare pickle (PyTorch's legacy pre-1.6 format, or not a tensor file): "
                + "re-save it with torch.save from PyTorch 1.6 or later")
        }
        let zip = try ZipArchive(bytes, fail: fail)
        let pickles = zip.entries.filter { $0.name.hasSuffix("/data.pkl") && $0.name.split(separator: "/", omittingEmptySubsequences: false).count == 2 }
        guard pickles.count == 1 else {
            throw fail(.badArchive, pickles.isEmpty
                ? "a zip archive without <name>/data.pkl: not a file torch.save wrote"
                : "\(pickles.count) data.pkl members (\(pickles.map(\.name).joined(separator: ", "))); torch.save writes one")
        }
        let prefix = String(pickles[0].name.dropLast("data.pkl".count))
        if let order = zip[prefix + "byteorder"] {
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[order.range]), as: UTF8.self)
            guard text.trimmingCharacters(in: .whitespacesAndNewlines) == "little" else {
                throw fail(.unsupportedVersion, "byte order \"\(text.prefix(16))\": only little-endian files are read")
            }
        }
        try ZipArchive.verify(pickles[0], in: bytes, fail: fail)
        let pickle = try TorchPickle(UnsafeRawBufferPointer(rebasing: bytes[pickles[0].range]), fail: fail)

        var reader = Reader(bytes: bytes, archive: zip, prefix: prefix, pickle: pickle, fail: fail)
        try reader.flatten(pickle.root, path: "", depth: 0)
        names = reader.names
        values = reader.values
    }

    /// The tensor at `name`, or an error naming what the file holds.
    public func tensor(_ name: String) throws -> TorchTensor {
        guard case .tensor(let t)? = values[name] else {
            let what = values[name] == nil ? "no entry named \(name)" : "\(name) is not a tensor"
            throw WeightFileError(path: path, .missingTensor, "\(what) (the file holds: \(names.prefix(20).joined(separator: ", ")))")
        }
        return t
    }

    /// Walks the pickled object, materializing tensors from their storages.
    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        let archive: ZipArchive
        let prefix: String
        let pickle: TorchPickle
        let fail: ZipArchive.Fail
        var names: [String] = []
        var values: [String: Value] = [:]
        var verified: Set<String> = []
        var elements = 0
        var visited = 0

        mutating func flatten(_ v: TorchPickle.Value, path: String, depth: Int) throws {
            // Shared tuples can make a small pickle a huge tree: bound the walk, not just the depth.
            visited += 1
            guard visited <= TorchFile.maxValues else {
                throw fail(.badPickle, "more than \(TorchFile.maxValues) values once shared containers are unfolded")
            }
            guard depth <= TorchFile.maxDepth else {
                let shown = path.count > 40 ? path.prefix(40) + "…" : Substring(path)
                throw fail(.badPickle, "\(shown): nested more than \(TorchFile.maxDepth) levels deep (or a container that holds itself)")
            }
            func child(_ key: String) -> String { path.isEmpty ? key : path + "." + key }
            switch v {
            case .tuple(let items):
                for (i, item) in items.enumerated() { try flatten(item, path: child("\(i)"), depth: depth + 1) }
            case .list(let id):
                guard case .list(let items) = pickle.containers[id] else { return }
                for (i, item) in items.enumerated() { try flatten(item, path: child("\(i)"), depth: depth + 1) }
            case .dict(let id):
                guard case .dict(let pairs) = pickle.containers[id] else { return }
                for (key, item) in pairs {
                    let name: String
                    switch key {
                    case .string(let s): name = s
                    case .int(let i): name = "\(i)"
                    default: throw fail(.badPickle, "\(path.isEmpty ? "the top-level dict" : path): a key that is neither a string nor an integer")
                    }
                    try flatten(item, path: child(name), depth: depth + 1)
                }
            case .tensor(let ref): try add(path, .tensor(try tensor(ref, name: path)))
            case .int(let i): try add(path, .int(i))
            case .float(let f): try add(path, .float(f))
            case .bool(let b): try add(path, .bool(b))
            case .string(let s): try add(path, .string(s))
            case .none: try add(path, .none)
            case .global, .storage:
                throw fail(.badPickle, "\(path): holds a bare class or storage, not a tensor or a plain value")
            }
        }

        private mutating func add(_ name: String, _ value: Value) throws {
            guard values[name] == nil else { throw fail(.duplicateTensor, "two entries flatten to the name \"\(name)\"") }
            names.append(name)
            values[name] = value
        }

        private mutating func tensor(_ ref: TorchPickle.TensorRef, name: String) throws -> TorchTensor {
            let s = ref.storage
            let member = "\(prefix)data/\(s.key)"
            guard let entry = archive[member] else {
                throw fail(.missingTensor, "\(name): its storage \(member) is not in the archive")
            }
            if !verified.contains(s.key) {
                try ZipArchive.verify(entry, in: bytes, fail: fail)
                verified.insert(s.key)
            }
            let width = s.dtype.byteSize
            guard entry.range.count >= s.count * width else {
                throw fail(.truncated, "\(name): storage \(member) holds \(entry.range.count) bytes, but its \(s.count) "
                    + "\(s.dtype.rawValue) elements need \(s.count * width)")
            }
            // Elements and the furthest storage element the tensor reaches, overflow-checked.
            var count = 1, last = ref.offset, overflow = false
            for (n, st) in zip(ref.shape, ref.strides) {
                let (c, o1) = count.multipliedReportingOverflow(by: n)
                let (reach, o2) = (max(n, 1) - 1).multipliedReportingOverflow(by: st)
                let (l, o3) = last.addingReportingOverflow(reach)
                (count, last, overflow) = (c, l, overflow || o1 || o2 || o3)
            }
            elements += count
            guard !overflow, elements <= TorchFile.maxElements else {
                throw fail(.badDimensions, "\(name): size \(ref.shape) makes more than \(TorchFile.maxElements) elements in the file")
            }
            guard count == 0 || last < s.count else {
                throw fail(.offsetsOutOfRange, "\(name): size \(ref.shape), stride \(ref.strides) and offset \(ref.offset) reach "
                    + "element \(last) of storage \(member), which holds \(s.count) \(s.dtype.rawValue) elements")
            }
            let span = count == 0 ? 0 : last - ref.offset + 1
            let base = bytes.baseAddress! + entry.range.lowerBound + ref.offset * width
            if s.dtype.isFloatingPoint {
                var run = [Float](repeating: 0, count: span)
                run.withUnsafeMutableBufferPointer { d in
                    if span > 0 { SafetensorsFile.widen(base, s.dtype, into: d.baseAddress!, count: span) }
                }
                return TorchTensor(dtype: s.dtype, shape: ref.shape, values: .float(Self.gather(run, ref.shape, ref.strides, count)))
            }
            let run: [Int64] = (0..<span).map { i in
                switch s.dtype {
                case .i64: base.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)
                case .i32: Int64(base.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))
                case .i16: Int64(base.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))
                case .i8: Int64(base.load(fromByteOffset: i, as: Int8.self))
                default: Int64(base.load(fromByteOffset: i, as: UInt8.self))  // u8, bool
                }
            }
            return TorchTensor(dtype: s.dtype, shape: ref.shape, values: .int(Self.gather(run, ref.shape, ref.strides, count)))
        }

        /// The `count` elements of a strided view over `run` (which starts at the view's offset),
        /// in row-major order.
        private static func gather<T>(_ run: [T], _ shape: [Int], _ strides: [Int], _ count: Int) -> [T] {
            var rowMajor = 1, contiguous = count == run.count
            for d in shape.indices.reversed() where shape[d] > 1 {
                contiguous = contiguous && strides[d] == rowMajor
                rowMajor *= shape[d]
            }
            if contiguous { return run }
            var out: [T] = []
            out.reserveCapacity(count)
            var index = [Int](repeating: 0, count: shape.count)
            var at = 0
            for _ in 0..<count {
                out.append(run[at])
                var d = shape.count - 1
                while d >= 0 {
                    index[d] += 1
                    at += strides[d]
                    if index[d] < shape[d] { break }
                    at -= strides[d] * shape[d]
                    index[d] = 0
                    d -= 1
                }
            }
            return out
        }
    }
}

/// A PersonaPlex voice prompt, `voices/<name>.pt` (NVIDIA/personaplex moshi/moshi/models/lm.py
/// `_step_voice_prompt_core`, which writes it with `torch.save({"embeddings": …, "cache": …})`):
///   - `embeddings` [T, 1, 1, D], the model dtype (bf16 in the released voices): the temporal
///     transformer's input at each of the first T steps, i.e. the sum of the 17 stream embeddings
///     the model computed for the voice prompt's columns 0…T−1. Replayed, each replaces the whole
///     embedding sum of its step (`LMGen.step_embeddings` → `forward_embeddings`).
///   - `cache` [1, K, CT] int64, K = 17 streams, CT = max delay + 3 = 4: LMGen's token delay ring
///     at the end of the voice prompt, column j at slot j mod CT. It is copied over the ring after
///     the replay; only column T (all streams) and column T + 1 (the delayed streams) are read
///     afterwards — the last voice frame's tokens, which no embedding covers.
public struct TorchVoiceFile: Sendable {
    public let path: String
    /// [T, …, D] as stored (NVIDIA's [T, 1, 1, D]), widened to Float32.
    public let embeddings: Tensor
    public let embeddingsDType: DType
    /// [1, K, CT].
    public let cacheShape: [Int]
    public let cache: [Int64]

    /// T: the number of temporal steps the embeddings cover.
    public var frames: Int { embeddings.shape[0] }
    /// D: the model width they were made for.
    public var width: Int { embeddings.shape[embeddings.rank - 1] }
    public var streams: Int { cacheShape[1] }
    public var cacheColumns: Int { cacheShape[2] }

    /// Step `t`'s input embedding (D values).
    public func embedding(_ t: Int) -> ArraySlice<Float> { embeddings.data[(t * width)..<((t + 1) * width)] }
    /// The token of `stream` at ring slot `slot`.
    public func cache(stream: Int, slot: Int) -> Int64 { cache[stream * cacheColumns + slot] }

    public init(path: String) throws {
        let file = try TorchFile(path: path)
        self.path = path
        func wrong(_ kind: WeightFileError.Kind, _ message: String) -> WeightFileError {
            WeightFileError(path: path, kind, "not a PersonaPlex voice prompt: \(message)")
        }
        let e = try file.tensor("embeddings"), c = try file.tensor("cache")
        guard let values = e.floatTensor else {
            throw wrong(.wrongDType, "embeddings are \(e.dtype.rawValue), expected a float type")
        }
        guard e.shape.count >= 2, e.shape[0] >= 1, e.shape.last! >= 1, e.shape.dropFirst().dropLast().allSatisfy({ $0 == 1 }) else {
            throw wrong(.wrongShape, "embeddings have shape \(e.shape), expected [T, 1, 1, D] with T, D ≥ 1")
        }
        guard let tokens = c.int64 else { throw wrong(.wrongDType, "cache is \(c.dtype.rawValue), expected an integer type") }
        guard c.shape.count == 3, c.shape[0] == 1, c.shape[1] >= 1, c.shape[2] >= 1 else {
            throw wrong(.wrongShape, "cache has shape \(c.shape), expected [1, streams, columns]")
        }
        embeddings = values
        embeddingsDType = e.dtype
        cacheShape = c.shape
        cache = tokens
    }
}
