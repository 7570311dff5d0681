import CQuant
import Foundation

/// How a file stores a tensor's values: a plain element type, or a quantized format.
public enum StoredType: Hashable, Sendable, CustomStringConvertible {
    case plain(DType)
    case quantized(QuantType)

    /// "BF16", "Q8_0", "MLX-Q4 g32", … (`rawValue` for the places that printed a DType).
    public var rawValue: String {
        switch self {
        case .plain(let d): d.rawValue
        case .quantized(let q): q.description
        }
    }

    public var description: String { rawValue }
    public var isFloatingPoint: Bool { if case .plain(let d) = self { return d.isFloatingPoint } else { return false } }
    public var isQuantized: Bool { if case .quantized = self { return true } else { return false } }
}

/// One tensor as the files hold it, under the model's name (Kyutai's PyTorch checkpoint names):
/// one block of rows, or several stored apart that the model stacks (candle's and MLX's
/// per-depth-step depformer projections), each a view into a memory map.
struct StoredTensor: @unchecked Sendable {
    struct Part {
        /// The name in the file, for messages.
        let name: String
        let path: String
        var rows: Int
        let data: UnsafeRawBufferPointer
        /// MLX affine only: bf16 [rows, cols / group] each.
        let scales: UnsafeRawBufferPointer?
        let biases: UnsafeRawBufferPointer?
    }

    var shape: [Int]
    let type: StoredType
    var parts: [Part]
    /// Names of other file tensors that hold copies of this one (candle's per-step copies of a
    /// shared depformer norm); checked equal to it when it is read.
    var copies: [Part] = []
    /// What keeps the maps alive.
    let owner: AnyObject
    /// MLX codes whose bit width is not known yet: `[rows, words]` U32 with `groups` scales per
    /// row. 4-bit group 128 and 8-bit group 64 pack a row alike, so the width comes from the
    /// model's table (`resolvingMLX(cols:)`), as MLX's loaders take it from the file's name.
    var mlxGroups: Int?

    /// The MLX codes read as rows of `cols` values: bits = 32·words/cols, group = cols/groups.
    /// nil (with the reason) if no bit width duplex implements fits.
    func resolvingMLX(cols: Int) -> (StoredTensor?, String?) {
        guard let groups = mlxGroups, shape.count == 2 else { return (self, nil) }
        let words = shape[1]
        guard cols > 0, (words * 32) % cols == 0, cols % groups == 0 else {
            return (nil, "\(words) code words and \(groups) groups per row cannot hold \(cols) values")
        }
        let bits = words * 32 / cols, group = cols / groups
        guard [32, 64, 128].contains(group) else { return (nil, "group size \(group) (MLX uses 32, 64 or 128)") }
        guard bits == 4 || bits == 8 else { return (nil, "MLX \(bits)-bit quantization (group \(group)); duplex implements MLX 4-bit and 8-bit") }
        var s = StoredTensor(shape: [shape[0], cols], type: .quantized(.mlx(bits: bits, group: group)), parts: parts, owner: owner)
        s.copies = copies
        return (s, nil)
    }

    var elementCount: Int { shape.reduce(1, *) }

    /// The same values viewed as `newShape` (a norm gain stored as [dim] read as [1, 1, dim]).
    func reshaped(_ newShape: [Int]) -> StoredTensor {
        precondition(newShape.reduce(1, *) == elementCount && parts.count == 1)
        var s = self
        s.shape = newShape
        s.parts[0].rows = elementCount / max(1, s.cols)
        return s
    }
    var cols: Int { shape.dropFirst().reduce(1, *) }

    /// The file name(s) it came from, for messages.
    var fileNames: String { parts.map(\.name).joined(separator: " + ") }

    /// Part `i` as a matrix viewing the map (no copy).
    func matrix(part i: Int) -> WeightMatrix {
        let p = parts[i]
        let cols = self.cols
        switch type {
        case .plain(.bf16) where Int(bitPattern: p.data.baseAddress) % 2 == 0:
            return WeightMatrix(rows: p.rows, cols: cols, storage: .bf16(p.data.baseAddress!.assumingMemoryBound(to: UInt16.self)), owner: owner)
        case .plain(.f16) where Int(bitPattern: p.data.baseAddress) % 2 == 0:
            return WeightMatrix(rows: p.rows, cols: cols, storage: .f16(p.data.baseAddress!.assumingMemoryBound(to: UInt16.self)), owner: owner)
        case .plain(.f32) where Int(bitPattern: p.data.baseAddress) % 4 == 0:
            return WeightMatrix(rows: p.rows, cols: cols, storage: .f32(p.data.baseAddress!.assumingMemoryBound(to: Float.self)), owner: owner)
        case .plain(let d):
            var values = [Float](repeating: 0, count: p.rows * cols)
            values.withUnsafeMutableBufferPointer { SafetensorsFile.widen(p.data.baseAddress!, d, into: $0.baseAddress!, count: p.rows * cols) }
            return WeightMatrix(Tensor(shape: [p.rows, cols], data: values))
        case .quantized(let q):
            var m = cq_matrix()
            m.type = q.cType
            m.rows = Int32(p.rows)
            m.cols = Int32(cols)
            m.row_bytes = p.data.count / max(1, p.rows)
            m.data = p.data.baseAddress!.assumingMemoryBound(to: UInt8.self)
            if case .mlx(_, let group) = q {
                m.group = Int32(group)
                m.scales = p.scales!.baseAddress!.assumingMemoryBound(to: UInt16.self)
                m.biases = p.biases!.baseAddress!.assumingMemoryBound(to: UInt16.self)
            }
            return WeightMatrix(rows: p.rows, cols: cols, storage: .quantized(m, q), owner: owner)
        }
    }

    /// The whole tensor as one matrix: a view when it is stored in one part, else the parts'
    /// rows copied into one owned buffer (same format, no requantization).
    func matrix() -> WeightMatrix {
        if parts.count == 1 { return matrix(part: 0) }
        let pieces = parts.indices.map { matrix(part: $0) }
        return WeightMatrix(stacking: pieces)
    }

    /// Values widened to Float32 (norms, biases, offline paths).
    func floatValues() -> [Float] {
        var out = [Float](repeating: 0, count: elementCount)
        out.withUnsafeMutableBufferPointer { o in
            var row = 0
            for i in parts.indices {
                let m = matrix(part: i)
                for r in 0..<m.rows { m.copyRow(r, into: o.baseAddress! + (row + r) * cols) }
                row += m.rows
            }
        }
        return out
    }

    /// Drops this process's copy of the pages wholly inside the parts (after a copy was taken).
    func releasePages() {
        for p in parts { MappedPages.release(p.data) }
    }
}

enum MappedPages {
    /// madvise(DONTNEED) over the pages lying wholly inside `bytes` of a private read-only map:
    /// they leave the RSS, stay in the page cache and fault back in if read again.
    static func release(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = Int(bitPattern: base)
        let first = (start + page - 1) / page * page
        let end = (start + bytes.count) / page * page
        if end > first { madvise(UnsafeMutableRawPointer(bitPattern: first), end - first, MADV_DONTNEED) }
    }
}

/// Owned, 64-byte-aligned bytes for matrices duplex makes itself (quantized at load, stacked parts).
final class ByteBox: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    let count: Int
    init(count: Int) {
        self.count = count
        var raw: UnsafeMutableRawPointer?
        let huge = 2 << 20
        let alignment = count >= huge ? huge : 64
        let rounded = (max(1, count) + alignment - 1) / alignment * alignment
        guard posix_memalign(&raw, alignment, rounded) == 0, let raw else { fatalError("out of memory for \(count) bytes of weights") }
        if count >= huge { madvise(raw, rounded, MADV_HUGEPAGE) }
        pointer = raw
    }
    deinit { free(pointer) }
}

extension WeightMatrix {
    /// The rows of `pieces` (one format, one width) one after another in one owned buffer.
    init(stacking pieces: [WeightMatrix]) {
        precondition(!pieces.isEmpty && pieces.allSatisfy { $0.cols == pieces[0].cols && $0.formatName == pieces[0].formatName })
        let rows = pieces.reduce(0) { $0 + $1.rows }, cols = pieces[0].cols
        switch pieces[0].storage {
        case .f32, .bf16, .f16:
            let elementBytes = pieces[0].byteCount / max(1, pieces[0].rows * cols)
            let box = ByteBox(count: rows * cols * elementBytes)
            var offset = 0
            for p in pieces {
                switch p.storage {
                case .f32(let w): (box.pointer + offset).copyMemory(from: w, byteCount: p.byteCount)
                case .bf16(let w), .f16(let w): (box.pointer + offset).copyMemory(from: w, byteCount: p.byteCount)
                case .quantized: preconditionFailure()
                }
                offset += p.byteCount
            }
            let halves = UnsafePointer(box.pointer.assumingMemoryBound(to: UInt16.self))
            switch pieces[0].storage {
            case .f32: self.init(rows: rows, cols: cols, storage: .f32(UnsafePointer(box.pointer.assumingMemoryBound(to: Float.self))), owner: box)
            case .f16: self.init(rows: rows, cols: cols, storage: .f16(halves), owner: box)
            default: self.init(rows: rows, cols: cols, storage: .bf16(halves), owner: box)
            }
        case .quantized(var m, let type):
            let rowBytes = m.row_bytes
            let groups = m.group > 0 ? cols / Int(m.group) : 0
            let box = ByteBox(count: rows * rowBytes + 2 * 2 * rows * groups)
            let scales = (box.pointer + rows * rowBytes).assumingMemoryBound(to: UInt16.self)
            let biases = scales + rows * groups
            var row = 0
            for p in pieces {
                guard case .quantized(let pm, _) = p.storage else { preconditionFailure() }
                (box.pointer + row * rowBytes).copyMemory(from: pm.data, byteCount: p.rows * rowBytes)
                if groups > 0 {
                    (scales + row * groups).update(from: pm.scales, count: p.rows * groups)
                    (biases + row * groups).update(from: pm.biases, count: p.rows * groups)
                }
                row += p.rows
            }
            m.rows = Int32(rows)
            m.data = UnsafePointer(box.pointer.assumingMemoryBound(to: UInt8.self))
            if groups > 0 {
                m.scales = UnsafePointer(scales)
                m.biases = UnsafePointer(biases)
            }
            self.init(rows: rows, cols: cols, storage: .quantized(m, type), owner: box)
        }
    }

    /// This matrix's values in `type`, quantized row by row over the worker pool into an owned
    /// buffer (`--quantize`, `duplex quantize`). Nil if a row holds NaN or Inf (the C quantizer
    /// refuses it) or the width does not fit the format.
    public func quantized(to type: QuantType) -> WeightMatrix? {
        guard type.ggufTypeID != nil, type.accepts(cols: cols) else { return nil }
        let rowBytes = cq_row_bytes(type.cType, Int32(cols))
        let box = ByteBox(count: rows * rowBytes)
        let failed = QuantizeJob.run(self, type: type, into: box.pointer, rowBytes: rowBytes)
        if failed { return nil }
        var m = cq_matrix()
        m.type = type.cType
        m.rows = Int32(rows)
        m.cols = Int32(cols)
        m.row_bytes = rowBytes
        m.data = UnsafePointer(box.pointer.assumingMemoryBound(to: UInt8.self))
        return WeightMatrix(rows: rows, cols: cols, storage: .quantized(m, type), owner: box)
    }

    /// The stored bytes of a ggml-quantized matrix (rows × row bytes), for writing GGUF.
    public var quantizedBytes: UnsafeRawBufferPointer? {
        guard case .quantized(let m, let type) = storage, type.ggufTypeID != nil else { return nil }
        return UnsafeRawBufferPointer(start: m.data, count: rows * m.row_bytes)
    }
}

/// Quantizes a matrix's rows in chunks over the shared worker pool.
private struct QuantizeJob {
    let source: WeightMatrix
    let type: cq_type
    let destination: UnsafeMutableRawPointer
    let rowBytes: Int
    let rowsPerChunk: Int
    let failures: UnsafeMutablePointer<Int>   // one slot per chunk: nonzero = refused

    static func run(_ m: WeightMatrix, type: QuantType, into destination: UnsafeMutableRawPointer, rowBytes: Int) -> Bool {
        let rowsPerChunk = max(1, min(m.rows, (256 << 10) / max(1, 4 * m.cols)))
        let chunks = (m.rows + rowsPerChunk - 1) / rowsPerChunk
        let failures = UnsafeMutablePointer<Int>.allocate(capacity: max(1, chunks))
        failures.initialize(repeating: 0, count: max(1, chunks))
        defer { failures.deallocate() }
        let job = QuantizeJob(source: m, type: type.cType, destination: destination, rowBytes: rowBytes,
                              rowsPerChunk: rowsPerChunk, failures: failures)
        withUnsafePointer(to: job) { WorkerPool.shared.run(task, context: UnsafeRawPointer($0), chunks: chunks) }
        return (0..<chunks).contains { failures[$0] != 0 }
    }

    private static let task: WorkerPool.Task = { context, chunk in
        let job = context.load(as: QuantizeJob.self)
        let lo = chunk * job.rowsPerChunk, hi = min(job.source.rows, lo + job.rowsPerChunk)
        let cols = job.source.cols
        let scratch = ThreadScratch.floats((hi - lo) * cols)
        for r in lo..<hi { job.source.copyRow(r, into: scratch + (r - lo) * cols) }
        let status = cq_quantize_rows(job.type, scratch, Int32(hi - lo), Int32(cols), job.destination + lo * job.rowBytes)
        if status != 0 { job.failures[chunk] = Int(status) }
    }
}
