import Foundation

/// A weight matrix `[rows, cols]` used as stored: Float32, or bf16 bits straight from the
/// memory map (the 7B LM is never widened to f32). Keeps its backing storage alive.
public struct WeightMatrix: @unchecked Sendable {
    public enum Storage {
        case f32(UnsafePointer<Float>)
        case bf16(UnsafePointer<UInt16>)
    }
    public let rows: Int
    public let cols: Int
    public let storage: Storage
    private let owner: AnyObject

    init(rows: Int, cols: Int, storage: Storage, owner: AnyObject) {
        self.rows = rows
        self.cols = cols
        self.storage = storage
        self.owner = owner
    }

    /// An owned f32 matrix (tests, generated weights).
    public init(_ tensor: Tensor) {
        precondition(tensor.rank == 2, "WeightMatrix needs a 2-D tensor, got \(tensor.shape)")
        let box = FloatBox(tensor.data)
        self.init(rows: tensor.shape[0], cols: tensor.shape[1], storage: .f32(UnsafePointer(box.pointer)), owner: box)
    }

    public var bytesPerElement: Int {
        if case .f32 = storage { return 4 }
        return 2
    }

    public var byteCount: Int { rows * cols * bytesPerElement }

    /// y[rows] (+)= W · x[cols], rows split over the shared worker pool (`ParallelMatvec`; one
    /// pool for f32 and bf16, so OpenBLAS's own threads never spin against ours on a batch-1 step).
    @inline(__always)
    public func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
        switch storage {
        case .f32(let w): ParallelMatvec.f32(w, x, y, rows: rows, cols: cols, accumulate: accumulate)
        case .bf16(let w): ParallelMatvec.bf16(w, x, y, rows: rows, cols: cols, accumulate: accumulate)
        }
    }

    /// Row `r` widened to f32 (embedding lookups).
    @inline(__always)
    public func copyRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        switch storage {
        case .f32(let w): out.update(from: w + r * cols, count: cols)
        case .bf16(let w): HalfPrecision.convertBF16(w + r * cols, to: out, count: cols)
        }
    }

    /// The whole matrix as a Float32 tensor (offline paths and tests).
    public func toTensor() -> Tensor {
        var t = Tensor(zeros: [rows, cols])
        t.data.withUnsafeMutableBufferPointer { d in
            for r in 0..<rows { copyRow(r, into: d.baseAddress! + r * cols) }
        }
        return t
    }
}

/// Owned, aligned Float storage that outlives the structs pointing into it.
/// Owned bf16 storage for generated matrices.
final class BF16Box: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<UInt16>
    init(count: Int) { pointer = .allocate(capacity: max(1, count)) }
    deinit { pointer.deallocate() }
}

final class FloatBox: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    private let malloced: Bool

    /// With `hugePages`, storage of 2 MiB or more is 2 MiB-aligned and advised as huge pages:
    /// weights that are streamed in full every step read ~20 % faster without 4 KiB TLB misses.
    init(_ values: [Float], hugePages: Bool = false) {
        count = values.count
        let bytes = max(1, values.count) * MemoryLayout<Float>.stride
        let huge = 2 << 20
        var raw: UnsafeMutableRawPointer?
        if hugePages && bytes >= huge && posix_memalign(&raw, huge, (bytes + huge - 1) / huge * huge) == 0, let raw {
            madvise(raw, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE)
            pointer = raw.bindMemory(to: Float.self, capacity: max(1, values.count))
            malloced = true
        } else {
            pointer = .allocate(capacity: max(1, values.count))
            malloced = false
        }
        values.withUnsafeBufferPointer { if let b = $0.baseAddress { pointer.initialize(from: b, count: values.count) } }
    }

    deinit {
        if malloced { free(pointer) } else { pointer.deallocate() }
    }
}

/// Hands out tensors by their exact checkpoint names and keeps the books: a model's initialiser
/// asks for every weight it needs, then `finish()` fails, naming every problem at once, if any
/// name was missing, misshaped or wrongly typed, or if the file holds tensors nobody asked for.
/// A requested tensor that has a problem comes back as zeros so loading can go on and collect
/// the rest of the problems.
///
/// Models hand the store their tensor table first (`expect`, done by `Mimi` and `LMModel`): the
/// file is then checked against the table (missing, misshaped, wrongly typed entries; at
/// `finish()`, tensors that are no entry), and the table is what the initialisers may ask for —
/// a request outside it, at another shape, or an entry nobody asked for is a programmer error.
/// Without a table (tests of single layers) the books are kept by what was asked.
public final class WeightStore {
    public let files: [SafetensorsFile]
    private var index: [String: (file: SafetensorsFile, entry: SafetensorsFile.Entry)] = [:]
    private var used: Set<String> = []
    private var problems: [SafetensorsError.Problem] = []
    private let label: String
    /// Set for a store that makes up its weights (see `init(randomSeed:matrixType:)`).
    private let random: RandomWeights?
    /// The tables of the models built from this store (see `expect`), merged.
    public private(set) var table: TensorTable?
    /// Table entries whose problems are already noted (so a request does not note them again).
    private var flagged: Set<String> = []

    public init(files: [SafetensorsFile]) throws {
        self.files = files
        random = nil
        label = files.map(\.path).joined(separator: " + ")
        var duplicates: [SafetensorsError.Problem] = []
        for f in files {
            for (name, entry) in f.entries {
                if let other = index[name] {
                    duplicates.append(.init(kind: .duplicateTensor, message: "\(name) is in both \(other.file.path) and \(f.path)"))
                }
                index[name] = (f, entry)
            }
        }
        if !duplicates.isEmpty {
            throw SafetensorsError(path: label, problems: duplicates.sorted { $0.message < $1.message })
        }
    }

    public convenience init(path: String) throws {
        try self.init(files: [SafetensorsFile(path: path)])
    }

    /// A store with no file that makes up every tensor a model asks for, deterministically from
    /// the seed and the tensor's name, spread like trained weights (see `RandomWeights`): with a
    /// model's table, exactly the table's tensors, at the table's shapes, spread by their kind. For the
    /// embedded default model and for measuring architectures without a checkpoint. Matrices are
    /// held as `matrixType` (`.bf16` keeps a 7B model at 15 GB).
    public init(randomSeed: UInt64, matrixType: DType = .f32) {
        precondition(matrixType == .f32 || matrixType == .bf16, "random matrices are f32 or bf16")
        files = []
        label = "random weights (seed \(randomSeed))"
        random = RandomWeights(seed: randomSeed, matrixType: matrixType)
    }

    /// True for a store that makes up its weights.
    public var isRandom: Bool { random != nil }

    /// Copy every weight out of the memory map as it is handed out (f32 and f16 matrices into
    /// huge-page memory; bf16 matrices stay mapped) and drop the file's pages from this process.
    /// For a model that reads all of its weights every step (Mimi), streaming them from huge
    /// pages is faster than from 4 KiB file pages, and the RSS holds each weight once.
    public var residentCopies = false

    public var names: [String] { index.keys.sorted() }

    /// Names handed out (or deliberately ignored) so far.
    public var requestedNames: Set<String> { used }

    /// Checks the file against a model's tensor table and keeps the table as what may be asked
    /// for. Missing, misshaped and wrongly typed entries are noted now (each once, worded as
    /// always); tensors that are no entry are reported by `finish()`. A second table (two models
    /// from one store) is merged with the first.
    public func expect(_ t: TensorTable) {
        table = table.map { TensorTable(model: "\($0.model) + \(t.model)", specs: $0.specs + t.specs) } ?? t
        guard random == nil else { return }
        let c = t.compare(fileEntries)
        problems += c.problems.filter { $0.kind != .unexpectedTensor }
        flagged.formUnion(c.missing.map(\.name) + c.misshaped.map(\.spec.name) + c.wrongType.map(\.spec.name))
    }

    private var fileEntries: [String: (shape: [Int], dtype: DType)] {
        index.mapValues { (shape: $0.entry.shape, dtype: $0.entry.dtype) }
    }

    /// The table entry `name` stands for; a request outside the table is a programmer error.
    private func spec(_ table: TensorTable, _ name: String, shape: [Int]) -> TensorSpec {
        guard let s = table.resolve(name) else {
            preconditionFailure("\(name) is not in the \(table.model) tensor table (the table and the initialiser disagree)")
        }
        precondition(s.shape == shape, "\(name) is asked for as \(shape), the \(table.model) tensor table says \(s.shape)")
        return s
    }

    /// Whether the checkpoint holds `name`. A random store holds exactly its table (or, without
    /// one, what is asked for), so alternatives (e.g. folded `weight` vs `weight_g`/`weight_v`)
    /// resolve to the plain name.
    public func contains(_ name: String) -> Bool {
        if random != nil {
            if let table { return table[name] != nil }
            return !name.hasSuffix("_g") && !name.hasSuffix("_v")
        }
        return index[name] != nil
    }

    public func shape(of name: String) -> [Int]? { index[name]?.entry.shape }

    private func note(_ kind: SafetensorsError.Kind, _ message: String) {
        problems.append(.init(kind: kind, message: message))
    }

    private func lookup(_ name: String, shape: [Int]) -> (SafetensorsFile, SafetensorsFile.Entry)? {
        used.insert(name)
        if let table {
            _ = spec(table, name, shape: shape)
            guard !flagged.contains(name), let found = index[name] else { return nil }
            return found
        }
        guard let (file, entry) = index[name] else {
            note(.missingTensor, "missing tensor \(name) (expected shape \(shape))")
            return nil
        }
        let shapeOK = entry.shape == shape, dtypeOK = entry.dtype.isFloatingPoint
        if !shapeOK { note(.wrongShape, "\(name) has shape \(entry.shape), expected \(shape)") }
        if !dtypeOK { note(.wrongDType, "\(name) is stored as \(entry.dtype.rawValue), expected a float type (F32, F16, BF16 or F64)") }
        return shapeOK && dtypeOK ? (file, entry) : nil
    }

    /// A float tensor of exactly `shape`, converted to Float32.
    public func tensor(_ name: String, shape: [Int]) -> Tensor {
        if let random { return random.tensor(name, shape: shape, kind: randomKind(name, shape: shape)) }
        guard let (file, entry) = lookup(name, shape: shape),
              let t = try? file.floatTensor(entry) else { return Tensor(zeros: shape) }
        if residentCopies { file.releasePages(entry) }
        return t
    }

    /// A tensor that the checkpoint may or may not have (e.g. `weight` vs `weight_g`/`weight_v`).
    /// Absence is not a problem; a wrong shape still is.
    public func optionalTensor(_ name: String, shape: [Int]) -> Tensor? {
        guard contains(name) else { return nil }
        return tensor(name, shape: shape)
    }

    /// A matrix `[rows, cols]` used as stored: bf16 stays bf16 in the map, f32 is used in place
    /// when aligned, f16 is widened once. `shape` is the stored shape (it may have trailing 1s,
    /// as conv weights of kernel 1 do); it is viewed as rows × (product of the rest).
    public func matrix(_ name: String, shape: [Int]) -> WeightMatrix {
        let rows = shape.first ?? 0
        let cols = shape.dropFirst().reduce(1, *)
        if let random { return random.matrix(name, shape: shape, kind: randomKind(name, shape: shape)) }
        guard let (file, entry) = lookup(name, shape: shape) else {
            return WeightMatrix(Tensor(zeros: [rows, cols]))
        }
        let raw = file.bytes(entry)
        if residentCopies && entry.dtype != .bf16 {
            let t = (try? file.floatTensor(entry)) ?? Tensor(zeros: shape)
            file.releasePages(entry)
            let box = FloatBox(t.data, hugePages: true)
            return WeightMatrix(rows: rows, cols: cols, storage: .f32(UnsafePointer(box.pointer)), owner: box)
        }
        switch entry.dtype {
        case .bf16 where Int(bitPattern: raw.baseAddress) % 2 == 0:
            return WeightMatrix(rows: rows, cols: cols,
                                storage: .bf16(raw.baseAddress!.assumingMemoryBound(to: UInt16.self)), owner: file)
        case .f32 where Int(bitPattern: raw.baseAddress) % 4 == 0:
            return WeightMatrix(rows: rows, cols: cols,
                                storage: .f32(raw.baseAddress!.assumingMemoryBound(to: Float.self)), owner: file)
        default:
            let t = (try? file.floatTensor(entry)) ?? Tensor(zeros: shape)
            return WeightMatrix(t.reshaped([rows, cols]))
        }
    }

    /// A random store's distribution for `name`: by its table entry's kind, else by its name.
    private func randomKind(_ name: String, shape: [Int]) -> RandomWeights.Kind {
        used.insert(name)
        guard let table else { return RandomWeights.kind(of: name, shape: shape) }
        return RandomWeights.kind(of: spec(table, name, shape: shape))
    }

    /// Marks names as deliberately unused (buffers a model does not need, e.g. `_initialized`).
    public func ignore(_ name: String) {
        if index[name] != nil || table?[name] != nil { used.insert(name) }
    }

    /// Throws every problem collected so far, plus every tensor in the files that is no entry of
    /// the table (without a table: that was never asked for), unless it matches `allowUnused`.
    public func finish(allowUnused: (String) -> Bool = { _ in false }) throws {
        var all = problems
        if let table {
            for s in table.specs where !used.contains(s.name) && !(s.weightNormPair.map { used.contains($0.v.name) } ?? false) {
                preconditionFailure("\(s.name) is in the \(table.model) tensor table but no initialiser asked for it")
            }
            for u in table.compare(fileEntries).unexpected where !allowUnused(u.name) {
                all.append(.init(kind: .unexpectedTensor, message: "unexpected tensor \(u.name) \(u.shape) (not part of this model)"))
            }
        } else {
            for name in index.keys.sorted() where !used.contains(name) && !allowUnused(name) {
                all.append(.init(kind: .unexpectedTensor, message: "unexpected tensor \(name) \(index[name]!.entry.shape) (not part of this model)"))
            }
        }
        if !all.isEmpty { throw SafetensorsError(path: label, problems: all) }
    }
}

extension WeightMatrix {
    /// Rows `range` as a matrix sharing this one's storage (e.g. one depth step of a stacked
    /// per-step projection, or the Q block of a fused in-projection).
    public func rows(_ range: Range<Int>) -> WeightMatrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) of a \(rows)-row matrix")
        switch storage {
        case .f32(let p):
            return WeightMatrix(rows: range.count, cols: cols, storage: .f32(p + range.lowerBound * cols), owner: owner)
        case .bf16(let p):
            return WeightMatrix(rows: range.count, cols: cols, storage: .bf16(p + range.lowerBound * cols), owner: owner)
        }
    }

    /// Y[steps, rows] = X[steps, cols] · Wᵀ. One step is a matrix×vector (bandwidth-bound);
    /// two steps of an f32 matrix (Mimi's transformers: one frame) read W once through
    /// `Kernels.matmulWeightStream`; more are one sgemm.
    public func apply(rows x: UnsafePointer<Float>, steps: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
        if steps == 1 {
            apply(x, into: y, accumulate: accumulate)
            return
        }
        switch storage {
        case .f32(let w) where steps == 2:
            Kernels.matmulWeightStream(x, w, y, m: steps, n: rows, k: cols, accumulate: accumulate)
        case .f32(let w):
            Kernels.matmul(x, w, y, m: steps, n: rows, k: cols, transposeB: true, accumulate: accumulate)
        case .bf16:
            for t in 0..<steps { apply(x + t * cols, into: y + t * rows, accumulate: accumulate) }
        }
    }
}
