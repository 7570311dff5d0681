import CQuant
import Foundation

/// A weight matrix `[rows, cols]` used as stored: Float32, bf16 bits straight from the memory
/// map (the 7B LM is never widened to f32), or a quantized format (`QuantType`: GGUF blocks or
/// MLX affine codes, from the map or quantized at load). Keeps its backing storage alive.
public struct WeightMatrix: @unchecked Sendable {
    public enum Storage {
        case f32(UnsafePointer<Float>)
        case bf16(UnsafePointer<UInt16>)
        /// IEEE half precision, as fp16 checkpoints store it (kept at 2 bytes, widened in the kernel).
        case f16(UnsafePointer<UInt16>)
        /// The C kernels' description of the matrix (pointers into the map or an owned buffer).
        case quantized(cq_matrix, QuantType)
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

    /// Bytes of the whole matrix as stored (codes, scales and biases for quantized ones).
    public var byteCount: Int {
        switch storage {
        case .f32: return rows * cols * 4
        case .bf16, .f16: return rows * cols * 2
        case .quantized(let m, let type):
            var bytes = rows * m.row_bytes
            if case .mlx(_, let group) = type { bytes += 2 * 2 * rows * (cols / group) }
            return bytes
        }
    }

    /// The quantized format, nil for f32 and bf16.
    public var quantType: QuantType? {
        if case .quantized(_, let t) = storage { return t }
        return nil
    }

    /// "F32", "BF16", "Q8_0", "MLX-Q4 g32", …
    public var formatName: String {
        switch storage {
        case .f32: "F32"
        case .bf16: "BF16"
        case .f16: "F16"
        case .quantized(_, let t): t.description
        }
    }

    /// y[rows] (+)= W · x[cols], rows split over the shared worker pool (`ParallelMatvec`; one
    /// pool for f32 and bf16, so OpenBLAS's own threads never spin against ours on a batch-1 step).
    @inline(__always)
    public func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
        switch storage {
        case .f32(let w): ParallelMatvec.f32(w, x, y, rows: rows, cols: cols, accumulate: accumulate)
        case .bf16(let w): ParallelMatvec.bf16(w, x, y, rows: rows, cols: cols, accumulate: accumulate)
        case .f16(let w): ParallelMatvec.f16(w, x, y, rows: rows, cols: cols, accumulate: accumulate)
        case .quantized(let m, _): ParallelMatvec.quantized(m, x, y, accumulate: accumulate)
        }
    }

    /// Row `r` widened to f32 (embedding lookups).
    @inline(__always)
    public func copyRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        switch storage {
        case .f32(let w): out.update(from: w + r * cols, count: cols)
        case .bf16(let w): HalfPrecision.convertBF16(w + r * cols, to: out, count: cols)
        case .f16(let w): HalfPrecision.convertF16(w + r * cols, to: out, count: cols)
        case .quantized(var m, _): cq_dequantize_row(&m, Int32(r), out)
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
///
/// Names are always Kyutai's PyTorch checkpoint names. A file that names and splits tensors
/// otherwise (candle's GGUF, MLX's safetensors) is read through a `TensorLayout`, given with
/// the table: the one place that says which file tensors make up each entry.
public final class WeightStore {
    public let files: [SafetensorsFile]
    /// What the files hold, by the names the model asks for (after `expect` translated a layout).
    private var index: [String: StoredTensor] = [:]
    private var used: Set<String> = []
    private var problems: [SafetensorsError.Problem] = []
    private let label: String
    /// Set for a store that makes up its weights (see `init(randomSeed:matrixType:)`).
    private let random: RandomWeights?
    /// The tables of the models built from this store (see `expect`), merged.
    public private(set) var table: TensorTable?
    /// Table entries whose problems are already noted (so a request does not note them again).
    private var flagged: Set<String> = []
    /// The layout the file was read through (`expect`).
    public private(set) var layout: TensorLayout = .kyutai
    /// GGUF files behind the store (kept alive by the stored tensors too).
    private var ggufFiles: [GGUFFile] = []
    /// `general.architecture` of the GGUF behind the store, if it says one.
    public var ggufArchitecture: String? { ggufFiles.lazy.compactMap(\.architecture).first }

    /// Matrices and embeddings stored as plain floats are quantized as they are handed out
    /// (`--quantize`): each table entry's format comes from the recipe (nil: keep as stored).
    public var quantizeRecipe: QuantizeRecipe?
    /// Quantized matrices are widened to f32 as they are handed out (a reference model computing
    /// exactly the file's dequantized weights, as candle's `CANDLE_DEQUANTIZE_ALL` does).
    public var dequantizeAll = false
    /// Called after each matrix is quantized with (bytes done, bytes to do), for a progress bar.
    public var onQuantizeProgress: ((Int, Int) -> Void)?
    private var quantizedBytes = 0
    /// The bf16 bytes the recipe will quantize (the progress bar's total), counted once.
    private var quantizeTotalBytes: Int?

    public init(files: [SafetensorsFile]) throws {
        self.files = files
        random = nil
        label = files.map(\.path).joined(separator: " + ")
        var duplicates: [SafetensorsError.Problem] = []
        var grouping: [SafetensorsError.Problem] = []
        for f in files {
            let (tensors, problems) = Self.storedTensors(of: f)
            grouping += problems
            for (name, t) in tensors {
                if let other = index[name] {
                    duplicates.append(.init(kind: .duplicateTensor, message: "\(name) is in both \(other.parts[0].path) and \(f.path)"))
                }
                index[name] = t
            }
        }
        if !duplicates.isEmpty || !grouping.isEmpty {
            throw SafetensorsError(path: label, problems: (duplicates + grouping).sorted { $0.message < $1.message })
        }
    }

    public convenience init(path: String) throws {
        if path.hasSuffix(".gguf") {
            try self.init(gguf: GGUFFile(path: path))
        } else {
            try self.init(files: [SafetensorsFile(path: path)])
        }
    }

    /// A store over a GGUF file: each tensor's type comes from the file (F32, F16 and BF16 as
    /// plain floats, the ggml quantized types duplex computes with as they are stored); any
    /// other type is a problem naming the tensor.
    public init(gguf: GGUFFile) throws {
        files = []
        random = nil
        label = gguf.path
        ggufFiles = [gguf]
        var problems: [SafetensorsError.Problem] = []
        for name in gguf.names {
            guard let e = gguf.entries[name] else { continue }
            let type: StoredType
            switch e.type {
            case .f32: type = .plain(.f32)
            case .f16: type = .plain(.f16)
            case .bf16: type = .plain(.bf16)
            default:
                guard let q = QuantType(ggufTypeID: e.type.rawValue) else {
                    problems.append(.init(kind: .unknownType, message: "\(name) is stored as \(e.type.name), which duplex does not implement "
                        + "(it computes with F32, F16, BF16, " + QuantType.ggmlTypes.map(\.description).joined(separator: ", ") + ")"))
                    continue
                }
                type = .quantized(q)
            }
            let rows = e.shape.count >= 2 ? e.shape[0] : 1
            index[name] = StoredTensor(shape: e.shape, type: type,
                                       parts: [.init(name: name, path: gguf.path, rows: rows, data: gguf.bytes(e), scales: nil, biases: nil)],
                                       owner: gguf)
        }
        if !problems.isEmpty { throw SafetensorsError(path: label, problems: problems) }
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

    /// A safetensors file's tensors as the store keeps them: one per entry, except MLX's
    /// quantized layers, whose `X.weight` (U32 codes), `X.scales` and `X.biases` (bf16) become one
    /// quantized tensor `X.weight` of the unpacked shape.
    static func storedTensors(of f: SafetensorsFile) -> ([String: StoredTensor], [SafetensorsError.Problem]) {
        var out: [String: StoredTensor] = [:]
        var problems: [SafetensorsError.Problem] = []
        var consumed: Set<String> = []
        for (name, e) in f.entries where e.dtype == .u32 && name.hasSuffix(".weight") {
            let stem = String(name.dropLast("weight".count))
            guard let scales = f.entries[stem + "scales"], let biases = f.entries[stem + "biases"] else {
                problems.append(.init(kind: .badQuantization, message: "\(name) is U32 (MLX quantized codes) but \(stem)scales or \(stem)biases is missing"))
                continue
            }
            consumed.formUnion([name, stem + "scales", stem + "biases"])
            func bad(_ why: String) { problems.append(.init(kind: .badQuantization, message: "\(stem)*: \(why)")) }
            guard e.shape.count == 2, scales.shape.count == 2, scales.shape == biases.shape, scales.shape[0] == e.shape[0],
                  e.shape[0] > 0, e.shape[1] > 0, scales.shape[1] > 0 else {
                bad("codes \(e.shape), scales \(scales.shape) and biases \(biases.shape) do not describe one [rows, cols] matrix"); continue
            }
            guard scales.dtype == .bf16, biases.dtype == .bf16 else {
                bad("scales and biases are \(scales.dtype.rawValue)/\(biases.dtype.rawValue), expected BF16 (Kyutai's MLX files)"); continue
            }
            var t = StoredTensor(shape: e.shape, type: .plain(.u32),
                                 parts: [.init(name: name, path: f.path, rows: e.shape[0], data: f.bytes(e),
                                               scales: f.bytes(scales), biases: f.bytes(biases))],
                                 owner: f)
            t.mlxGroups = scales.shape[1]
            out[name] = t
        }
        for (name, e) in f.entries where !consumed.contains(name) && out[name] == nil {
            out[name] = StoredTensor(shape: e.shape, type: .plain(e.dtype),
                                     parts: [.init(name: name, path: f.path, rows: e.shape.first ?? 1, data: f.bytes(e), scales: nil, biases: nil)],
                                     owner: f)
        }
        return (out, problems)
    }

    /// Checks the file against a model's tensor table and keeps the table as what may be asked
    /// for. With a `layout` other than Kyutai's, the file's tensors are first gathered under the
    /// table's names as the layout says. Missing, misshaped and wrongly typed entries are noted
    /// now (each once, worded as always); tensors that are no entry are reported by `finish()`.
    /// A second table (two models from one store) is merged with the first.
    public func expect(_ t: TensorTable, layout: TensorLayout = .kyutai) {
        table = table.map { TensorTable(model: "\($0.model) + \(t.model)", specs: $0.specs + t.specs) } ?? t
        guard random == nil else { return }
        if !layout.isIdentity {
            self.layout = layout
            translate(t, layout)
        }
        let c = t.compare(fileEntries)
        problems += c.problems.filter { $0.kind != .unexpectedTensor }
        flagged.formUnion(c.missing.map(\.name) + c.misshaped.map(\.spec.name) + c.wrongType.map(\.spec.name))
    }

    /// Gathers the file's tensors under the table's names: renamed, stacked from per-step parts,
    /// or one of several equal copies. Parts that are missing or disagree are noted by their
    /// file names; file tensors no entry claims stay under their own names (unexpected).
    private func translate(_ t: TensorTable, _ layout: TensorLayout) {
        var translated: [String: StoredTensor] = [:]
        var claimed: Set<String> = []
        for spec in t.specs {
            let source = layout.source(spec)
            let names: [String]
            switch source {
            case .one(let n): names = [n]
            case .stacked(let ns), .shared(let ns): names = ns
            }
            var found = names.compactMap { index[$0] }
            claimed.formUnion(names)
            // MLX codes take their bit width from the entry's width.
            if spec.shape.count == 2, found.contains(where: { $0.mlxGroups != nil }) {
                var resolved: [StoredTensor] = []
                for (n, f) in zip(names, found) {
                    let (r, why) = f.resolvingMLX(cols: spec.shape[1])
                    if let r { resolved.append(r) } else { problems.append(.init(kind: .badQuantization, message: "\(n): \(why ?? "")")) }
                }
                guard resolved.count == found.count else { flagged.insert(spec.name); continue }
                found = resolved
            }
            let absent = names.filter { index[$0] == nil }
            if !absent.isEmpty {
                if absent.count < names.count || spec.required {
                    for n in absent {
                        let of = n == spec.name ? "expected shape \(spec.shape)" : "of \(spec.name) \(spec.shape)"
                        problems.append(.init(kind: .missingTensor, message: "missing tensor \(n) (\(of), \(layout.name) layout)"))
                    }
                    flagged.insert(spec.name)
                }
                continue
            }
            var first = found[0]
            // Norm gains: [dim] and [1, 1, dim] are the same vector.
            func reshapedIfVector(_ s: StoredTensor) -> StoredTensor {
                let vector = spec.kind == .norm || spec.kind == .layerScale || spec.kind == .bias
                return vector && s.shape != spec.shape && s.elementCount == spec.elementCount && s.parts.count == 1 ? s.reshaped(spec.shape) : s
            }
            switch source {
            case .one:
                translated[spec.name] = reshapedIfVector(first)
            case .shared:
                first = reshapedIfVector(first)
                first.copies = found.dropFirst().flatMap(\.parts)
                for (n, other) in zip(names.dropFirst(), found.dropFirst()) where other.shape.reduce(1, *) != first.elementCount || other.type != first.type {
                    problems.append(.init(kind: .wrongShape, message: "\(n) is \(other.shape) \(other.type), unlike its copy \(names[0]) \(found[0].shape) \(found[0].type)"))
                    flagged.insert(spec.name)
                }
                translated[spec.name] = first
            case .stacked:
                let cols = first.cols
                var ok = true
                for (n, part) in zip(names, found) where part.shape.count != 2 || part.cols != cols || part.type != first.type {
                    problems.append(.init(kind: .wrongShape, message: "\(n) is \(part.shape) \(part.type), unlike the other parts of \(spec.name) (\(first.shape) \(first.type))"))
                    ok = false
                }
                guard ok else { flagged.insert(spec.name); continue }
                var stacked = first
                stacked.parts = found.flatMap(\.parts)
                stacked.shape = [found.reduce(0) { $0 + $1.shape[0] }, cols]
                translated[spec.name] = stacked
            }
        }
        for (name, s) in index where !claimed.contains(name) { translated[name] = s }
        index = translated
    }

    private var fileEntries: [String: (shape: [Int], dtype: StoredType)] {
        index.mapValues { (shape: $0.shape, dtype: $0.type) }
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

    public func shape(of name: String) -> [Int]? { index[name]?.shape }

    private func note(_ kind: SafetensorsError.Kind, _ message: String) {
        problems.append(.init(kind: kind, message: message))
    }

    private func lookup(_ name: String, shape: [Int]) -> StoredTensor? {
        used.insert(name)
        if let table {
            _ = spec(table, name, shape: shape)
            guard !flagged.contains(name), let found = index[name] else { return nil }
            return found
        }
        guard let found = index[name] else {
            note(.missingTensor, "missing tensor \(name) (expected shape \(shape))")
            return nil
        }
        let shapeOK = found.shape == shape, dtypeOK = found.type.isFloatingPoint
        if !shapeOK { note(.wrongShape, "\(name) has shape \(found.shape), expected \(shape)") }
        if !dtypeOK { note(.wrongDType, "\(name) is stored as \(found.type.rawValue), expected a float type (F32, F16, BF16 or F64)") }
        return shapeOK && dtypeOK ? found : nil
    }

    /// Checks candle's per-step copies of a shared tensor against the first: duplex keeps one.
    private func checkCopies(_ name: String, _ stored: StoredTensor) {
        for copy in stored.copies where !copy.data.elementsEqual(stored.parts[0].data) {
            note(.wrongShape, "\(copy.name) differs from \(stored.parts[0].name): duplex shares one \(name) across depth steps, as Kyutai's model does")
        }
    }

    /// A float tensor of exactly `shape`, converted to Float32.
    public func tensor(_ name: String, shape: [Int]) -> Tensor {
        if let random { return random.tensor(name, shape: shape, kind: randomKind(name, shape: shape)) }
        guard let stored = lookup(name, shape: shape) else { return Tensor(zeros: shape) }
        checkCopies(name, stored)
        let t = Tensor(shape: shape, data: stored.floatValues())
        if residentCopies { stored.releasePages() }
        return t
    }

    /// A tensor that the checkpoint may or may not have (e.g. `weight` vs `weight_g`/`weight_v`).
    /// Absence is not a problem; a wrong shape still is.
    public func optionalTensor(_ name: String, shape: [Int]) -> Tensor? {
        guard contains(name) else { return nil }
        return tensor(name, shape: shape)
    }

    /// A matrix `[rows, cols]` used as stored: bf16 stays bf16 in the map, f32 is used in place
    /// when aligned, f16 is widened once, quantized formats are used as stored. `shape` is the
    /// stored shape (it may have trailing 1s, as conv weights of kernel 1 do); it is viewed as
    /// rows × (product of the rest).
    public func matrix(_ name: String, shape: [Int]) -> WeightMatrix {
        matrices(name, shape: shape, parts: 1)[0]
    }

    /// A matrix `[rows, cols]` that the model uses as `parts` equal blocks of rows (the
    /// depformer's per-step projections, stacked step-major in Kyutai's files and stored apart
    /// in candle's and MLX's): each block a view of the file, whichever way it is stored.
    public func matrices(_ name: String, shape: [Int], parts: Int) -> [WeightMatrix] {
        let rows = shape.first ?? 0
        let cols = shape.dropFirst().reduce(1, *)
        precondition(parts >= 1 && rows % parts == 0, "\(name): \(rows) rows do not split into \(parts) parts")
        let block = rows / parts
        func split(_ m: WeightMatrix) -> [WeightMatrix] {
            parts == 1 ? [m] : (0..<parts).map { m.rows(($0 * block)..<(($0 + 1) * block)) }
        }
        if let random {
            let kind = randomKind(name, shape: shape)
            return split(quantizeIfAsked(name, random.matrix(name, shape: shape, kind: kind)))
        }
        guard let stored = lookup(name, shape: shape) else {
            return split(WeightMatrix(Tensor(zeros: [rows, cols])))
        }
        if stored.type.isQuantized {
            if let problem = Self.quantizationProblem(stored) {
                note(.badQuantization, "\(stored.fileNames): \(problem)")
                return split(WeightMatrix(Tensor(zeros: [rows, cols])))
            }
            if dequantizeAll { return split(WeightMatrix(Tensor(shape: [rows, cols], data: stored.floatValues()))) }
        } else if residentCopies && stored.type != .plain(.bf16) {
            let values = stored.floatValues()
            stored.releasePages()
            let box = FloatBox(values, hugePages: true)
            return split(WeightMatrix(rows: rows, cols: cols, storage: .f32(UnsafePointer(box.pointer)), owner: box))
        } else if quantizeRecipe != nil {
            return split(quantizeIfAsked(name, stored.matrix()))
        }
        if stored.parts.count == parts, stored.parts.allSatisfy({ $0.rows == block }) {
            return stored.parts.indices.map { stored.matrix(part: $0) }
        }
        return split(stored.matrix())
    }

    /// What makes a quantized tensor unusable, checked once as it is handed out: a layout the
    /// kernels would misread (`cq_check_matrix`), or MLX scales/biases that are NaN or ±Inf
    /// (which would turn whole rows into NaN far from the file that caused it).
    static func quantizationProblem(_ stored: StoredTensor) -> String? {
        for i in stored.parts.indices {
            guard case .quantized(var m, let type) = stored.matrix(part: i).storage else { continue }
            if cq_check_matrix(&m) != 0 {
                return "its bytes do not form a \(type) matrix of \(m.rows)×\(m.cols) (\(m.row_bytes) bytes per row)"
            }
            let p = stored.parts[i]
            for (what, buffer) in [("scales", p.scales), ("biases", p.biases)] {
                guard let buffer else { continue }
                let bits = buffer.bindMemory(to: UInt16.self)
                // bf16 exponent all ones: Inf or NaN.
                if let bad = bits.firstIndex(where: { $0 & 0x7F80 == 0x7F80 }) {
                    return "MLX \(what) hold NaN or Inf (row \(bad / max(1, Int(m.cols) / Int(max(1, m.group)))) of part \(p.name))"
                }
            }
        }
        return nil
    }

    /// `m` in the recipe's format for `name` (as is without a recipe, or for an entry it keeps).
    private func quantizeIfAsked(_ name: String, _ m: WeightMatrix) -> WeightMatrix {
        guard let recipe = quantizeRecipe, let table, let spec = table[name], let type = recipe.type(for: spec, table: table) else { return m }
        if quantizeTotalBytes == nil {
            quantizeTotalBytes = table.specs.filter { recipe.type(for: $0, table: table) != nil }.reduce(0) { $0 + $1.elementCount * 2 }
        }
        guard let q = m.quantized(to: type) else {
            note(.badQuantization, "\(name) cannot be quantized to \(type): it holds NaN or Inf, or its \(m.cols) columns are no multiple of \(type.blockValues)")
            return m
        }
        quantizedBytes += spec.elementCount * 2
        onQuantizeProgress?(quantizedBytes, quantizeTotalBytes ?? 0)
        return q
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

    /// The file checked against `table` through `layout` without handing anything out (`duplex
    /// info`): the problems loading would report.
    public func problems(against table: TensorTable, layout: TensorLayout) -> [SafetensorsError.Problem] {
        expect(table, layout: layout)
        var all = problems
        for u in table.compare(fileEntries).unexpected {
            all.append(.init(kind: .unexpectedTensor, message: "unexpected tensor \(u.name) \(u.shape) (not part of this model"
                             + (layout.isIdentity ? ")" : " in the \(layout.name) layout)")))
        }
        return all
    }

    /// Every value of every float or quantized tensor, dequantized row by row as the model would
    /// read it (`duplex info --scan`): NaN/Inf counts, the range, the tensors holding non-finite
    /// values (by the names the file uses). `progress(done, total)` in values.
    public func scanValues(progress: (Int, Int) -> Void = { _, _ in }) -> ValueScan {
        var scan = ValueScan()
        let tensors = index.keys.sorted().compactMap { index[$0] }.filter { $0.type.isFloatingPoint || $0.type.isQuantized }
        let total = tensors.reduce(0) { $0 + $1.elementCount }
        var done = 0
        for t in tensors {
            var bad = false
            for i in t.parts.indices {
                let m = t.matrix(part: i)
                var row = [Float](repeating: 0, count: m.cols)
                row.withUnsafeMutableBufferPointer { r in
                    for rIndex in 0..<m.rows {
                        m.copyRow(rIndex, into: r.baseAddress!)
                        for v in r {
                            if v.isFinite {
                                scan.minimum = min(scan.minimum, v)
                                scan.maximum = max(scan.maximum, v)
                            } else {
                                if v.isNaN { scan.nanCount += 1 } else { scan.infCount += 1 }
                                bad = true
                            }
                        }
                        done += m.cols
                        if rIndex % 256 == 0 { progress(done, total) }
                    }
                }
            }
            scan.values += t.elementCount
            if bad { scan.badTensors.append(t.fileNames) }
        }
        progress(total, total)
        return scan
    }

    /// How many tensors (table entries, once `expect` ran) are stored in each type.
    /// (MLX codes not yet matched to a table entry, whose bit width is still open, count as "MLX".)
    public var storedTypes: [String: Int] {
        index.values.reduce(into: [:]) { $0[$1.mlxGroups != nil ? "MLX" : $1.type.rawValue, default: 0] += 1 }
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
                all.append(.init(kind: .unexpectedTensor, message: "unexpected tensor \(u.name) \(u.shape) (not part of this model"
                                 + (layout.isIdentity ? ")" : " in the \(layout.name) layout)")))
            }
        } else {
            for name in index.keys.sorted() where !used.contains(name) && !allowUnused(name) {
                all.append(.init(kind: .unexpectedTensor, message: "unexpected tensor \(name) \(index[name]!.shape) (not part of this model)"))
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
        case .f16(let p):
            return WeightMatrix(rows: range.count, cols: cols, storage: .f16(p + range.lowerBound * cols), owner: owner)
        case .quantized(var m, let type):
            m.rows = Int32(range.count)
            m.data += range.lowerBound * m.row_bytes
            if m.group > 0 {
                let perRow = Int(m.cols / m.group)
                m.scales += range.lowerBound * perRow
                m.biases += range.lowerBound * perRow
            }
            return WeightMatrix(rows: range.count, cols: cols, storage: .quantized(m, type), owner: owner)
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
        case .bf16, .f16, .quantized:
            for t in 0..<steps { apply(x + t * cols, into: y + t * rows, accumulate: accumulate) }
        }
    }
}
