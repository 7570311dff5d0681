import CQuant
import Foundation

/// Matrix × vector over the shared `WorkerPool`: the rows of W are split into one contiguous
/// block per thread, each streamed once through SIMD registers. A batch-1 LM step is nothing but
/// these products, bound by how fast weight bytes arrive from memory, so the kernels aim at that
/// ceiling: several independent accumulators (no dependency chain on one register), and separate
/// multiply and add, since a fused `addProduct` on a baseline x86-64 build becomes a libm call per
/// lane (measured: 0.8 GB/s against 17 GB/s for the plain form).
///
/// The naive references are `Kernels.matvecNaive` / `Kernels.matvecBF16Naive`.
public enum ParallelMatvec {
    /// Below this many weight bytes a product runs on the calling thread: handing out the parts
    /// would cost more than the work (about a microsecond per dispatch against 20 GB/s).
    public static let minParallelBytes = 48 << 10

    /// y[rows] (+)= W[rows, cols] · x[cols], W as bf16 bits.
    public static func bf16(_ w: UnsafePointer<UInt16>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                            rows: Int, cols: Int, accumulate: Bool = false) {
        let split = ThreadScratch.floats(cols)
        deinterleave(x, into: split, cols: cols)
        dispatch(Job(w: UnsafeRawPointer(w), x: x, y: y, rows: rows, cols: cols, accumulate: accumulate, split: split),
                 bytes: rows * cols * 2, task: bf16Task, inline: bf16Rows)
    }

    /// y[rows] (+)= W[rows, cols] · x[cols], W as IEEE f16 bits (fp16 checkpoints, kept at 2 bytes).
    public static func f16(_ w: UnsafePointer<UInt16>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                           rows: Int, cols: Int, accumulate: Bool = false) {
        dispatch(Job(w: UnsafeRawPointer(w), x: x, y: y, rows: rows, cols: cols, accumulate: accumulate, split: nil),
                 bytes: rows * cols * 2, task: f16Task, inline: f16Rows)
    }

    /// y[rows] (+)= W[rows, cols] · x[cols], W as Float32.
    public static func f32(_ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                           rows: Int, cols: Int, accumulate: Bool = false) {
        dispatch(Job(w: UnsafeRawPointer(w), x: x, y: y, rows: rows, cols: cols, accumulate: accumulate, split: nil),
                 bytes: rows * cols * 4, task: f32Task, inline: f32Rows)
    }

    /// y[rows] (+)= W · x[cols], W quantized (`QuantType`): x is quantized once, on the calling
    /// thread, into the activation layout the format's integer-dot kernel reads (ggml's recipe),
    /// and every thread's rows read that one copy.
    public static func quantized(_ m: cq_matrix, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                 accumulate: Bool = false) {
        let actBytes = cq_activation_bytes(m.type, m.cols)
        let act = UnsafeMutableRawPointer(ThreadScratch.floats((actBytes + 3) / 4))
        cq_quantize_activation(m.type, x, m.cols, act)
        var job = Job(w: UnsafeRawPointer(m.data), x: x, y: y, rows: Int(m.rows), cols: Int(m.cols), accumulate: accumulate, split: nil)
        job.quantized = m
        job.activation = UnsafeRawPointer(act)
        dispatch(job, bytes: Int(m.rows) * m.row_bytes, task: quantizedTask, inline: quantizedRows)
    }

    // MARK: dispatch

    private struct Job {
        let w: UnsafeRawPointer
        let x: UnsafePointer<Float>
        let y: UnsafeMutablePointer<Float>
        let rows: Int
        let cols: Int
        let accumulate: Bool
        /// x's even elements then its odd ones (bf16 only, see `bf16SplitRows`).
        let split: UnsafePointer<Float>?
        var rowsPerChunk = 0
        /// Quantized products: the matrix and x's quantized activation.
        var quantized = cq_matrix()
        var activation: UnsafeRawPointer?
    }

    /// Bytes of weights per chunk a thread takes at a time: big enough that taking one (an
    /// atomic increment) costs nothing next to streaming it, small enough that a thread slowed
    /// down by a busy machine leaves the rest to the others.
    static let chunkBytes = 96 << 10

    @inline(__always)
    private static func dispatch(_ job: Job, bytes: Int, task: WorkerPool.Task,
                                 inline: (Job, Range<Int>) -> Void) {
        guard job.rows > 0 else { return }
        let pool = WorkerPool.shared
        let threads = pool.threads
        if threads == 1 || bytes < minParallelBytes || job.rows < 2 * threads {
            inline(job, 0..<job.rows)
            return
        }
        // At least 4 chunks per thread; rows per chunk a multiple of 4 when there are enough.
        let rowBytes = max(1, bytes / job.rows)
        var perChunk = max(1, min(chunkBytes / rowBytes, job.rows / (4 * threads)))
        if perChunk >= 8 { perChunk &= ~3 }
        var chunked = job
        chunked.rowsPerChunk = perChunk
        let chunks = (job.rows + perChunk - 1) / perChunk
        withUnsafePointer(to: chunked) { pool.run(task, context: UnsafeRawPointer($0), chunks: chunks) }
    }

    @inline(__always)
    private static func chunkRows(_ job: Job, _ chunk: Int) -> Range<Int> {
        let lo = chunk * job.rowsPerChunk
        return lo..<min(job.rows, lo + job.rowsPerChunk)
    }

    private static let bf16Task: WorkerPool.Task = { context, chunk in
        let job = context.load(as: Job.self)
        ParallelMatvec.bf16Rows(job, ParallelMatvec.chunkRows(job, chunk))
    }

    private static let f16Task: WorkerPool.Task = { context, chunk in
        let job = context.load(as: Job.self)
        ParallelMatvec.f16Rows(job, ParallelMatvec.chunkRows(job, chunk))
    }

    private static let f32Task: WorkerPool.Task = { context, chunk in
        let job = context.load(as: Job.self)
        ParallelMatvec.f32Rows(job, ParallelMatvec.chunkRows(job, chunk))
    }

    private static let quantizedTask: WorkerPool.Task = { context, chunk in
        let job = context.load(as: Job.self)
        ParallelMatvec.quantizedRows(job, ParallelMatvec.chunkRows(job, chunk))
    }

    // MARK: single-thread kernels over a row range

    private static func quantizedRows(_ job: Job, _ range: Range<Int>) {
        var m = job.quantized
        cq_matvec_rows(&m, job.activation, job.y, Int32(range.lowerBound), Int32(range.upperBound), job.accumulate ? 1 : 0)
    }

    private static func bf16Rows(_ job: Job, _ range: Range<Int>) {
        bf16SplitRows(job.w.assumingMemoryBound(to: UInt16.self), job.x, split: job.split!, job.y, rows: range,
                      cols: job.cols, accumulate: job.accumulate)
    }

    /// xs[0..<cols/2] = x[0, 2, 4, …], xs[cols/2..<2·(cols/2)] = x[1, 3, 5, …].
    @inline(__always)
    static func deinterleave(_ x: UnsafePointer<Float>, into xs: UnsafeMutablePointer<Float>, cols: Int) {
        let half = cols / 2
        for i in 0..<half {
            xs[i] = x[2 * i]
            xs[half + i] = x[2 * i + 1]
        }
    }

    /// The bf16 kernel proper. Two bf16 weights side by side form one 32-bit lane: shifted left
    /// by 16 the lane is the even weight as a Float32, masked it is the odd one. So a row widens
    /// with one shift and one and per 16 weights, no shuffles, and meets x pre-split into its
    /// even and odd elements (`deinterleave`). Measured 18–22 GB/s on one core against 10 GB/s for
    /// widening through a SIMD conversion.
    static func bf16SplitRows(_ w: UnsafePointer<UInt16>, _ x: UnsafePointer<Float>, split xs: UnsafePointer<Float>,
                              _ y: UnsafeMutablePointer<Float>, rows: Range<Int>, cols: Int, accumulate: Bool) {
        let half = cols / 2
        let xe = UnsafeRawPointer(xs), xo = UnsafeRawPointer(xs + half)
        let mask = SIMD8<UInt32>(repeating: 0xFFFF_0000)
        for r in rows {
            let row = UnsafeRawPointer(w + r * cols)
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var p = 0   // pair index
            while p + 16 <= half {
                let v0 = row.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<UInt32>.self)
                let v1 = row.loadUnaligned(fromByteOffset: 4 * p + 32, as: SIMD8<UInt32>.self)
                a0 += unsafeBitCast(v0 &<< 16, to: SIMD8<Float>.self) * xe.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<Float>.self)
                a1 += unsafeBitCast(v0 & mask, to: SIMD8<Float>.self) * xo.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<Float>.self)
                a2 += unsafeBitCast(v1 &<< 16, to: SIMD8<Float>.self)
                    * xe.loadUnaligned(fromByteOffset: 4 * p + 32, as: SIMD8<Float>.self)
                a3 += unsafeBitCast(v1 & mask, to: SIMD8<Float>.self)
                    * xo.loadUnaligned(fromByteOffset: 4 * p + 32, as: SIMD8<Float>.self)
                p += 16
            }
            while p + 8 <= half {
                let v0 = row.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<UInt32>.self)
                a0 += unsafeBitCast(v0 &<< 16, to: SIMD8<Float>.self) * xe.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<Float>.self)
                a1 += unsafeBitCast(v0 & mask, to: SIMD8<Float>.self) * xo.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<Float>.self)
                p += 8
            }
            var sum = ((a0 + a1) + (a2 + a3)).sum()
            var c = 2 * p
            while c < cols {
                sum += HalfPrecision.bf16ToFloat(w[r * cols + c]) * x[c]
                c += 1
            }
            y[r] = accumulate ? y[r] + sum : sum
        }
    }

    private static func f16Rows(_ job: Job, _ range: Range<Int>) {
        f16Rows(job.w.assumingMemoryBound(to: UInt16.self), job.x, job.y, rows: range, cols: job.cols, accumulate: job.accumulate)
    }

    /// The f16 kernel: 16 weights a step widened by the hardware conversion (F16C on x86-64),
    /// two independent accumulators.
    static func f16Rows(_ w: UnsafePointer<UInt16>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                        rows: Range<Int>, cols: Int, accumulate: Bool) {
        let xr = UnsafeRawPointer(x)
        for r in rows {
            let row = UnsafeRawPointer(w + r * cols)
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>()
            var c = 0
            while c + 16 <= cols {
                a0 += SIMD8<Float>(row.loadUnaligned(fromByteOffset: 2 * c, as: SIMD8<Float16>.self))
                    * xr.loadUnaligned(fromByteOffset: 4 * c, as: SIMD8<Float>.self)
                a1 += SIMD8<Float>(row.loadUnaligned(fromByteOffset: 2 * c + 16, as: SIMD8<Float16>.self))
                    * xr.loadUnaligned(fromByteOffset: 4 * c + 32, as: SIMD8<Float>.self)
                c += 16
            }
            var sum = (a0 + a1).sum()
            while c < cols {
                sum += HalfPrecision.f16ToFloat(w[r * cols + c]) * x[c]
                c += 1
            }
            y[r] = accumulate ? y[r] + sum : sum
        }
    }

    private static func f32Rows(_ job: Job, _ range: Range<Int>) {
        f32Rows(job.w.assumingMemoryBound(to: Float.self), job.x, job.y, rows: range, cols: job.cols,
                accumulate: job.accumulate)
    }

    /// The single-threaded f32 kernel.
    static func f32Rows(_ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                        rows: Range<Int>, cols: Int, accumulate: Bool) {
        let xr = UnsafeRawPointer(x)
        for r in rows {
            let row = UnsafeRawPointer(w + r * cols)
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var c = 0
            while c + 32 <= cols {
                let o = 4 * c
                a0 += row.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                    * xr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                a1 += row.loadUnaligned(fromByteOffset: o + 32, as: SIMD8<Float>.self)
                    * xr.loadUnaligned(fromByteOffset: o + 32, as: SIMD8<Float>.self)
                a2 += row.loadUnaligned(fromByteOffset: o + 64, as: SIMD8<Float>.self)
                    * xr.loadUnaligned(fromByteOffset: o + 64, as: SIMD8<Float>.self)
                a3 += row.loadUnaligned(fromByteOffset: o + 96, as: SIMD8<Float>.self)
                    * xr.loadUnaligned(fromByteOffset: o + 96, as: SIMD8<Float>.self)
                c += 32
            }
            while c + 8 <= cols {
                a0 += row.loadUnaligned(fromByteOffset: 4 * c, as: SIMD8<Float>.self)
                    * xr.loadUnaligned(fromByteOffset: 4 * c, as: SIMD8<Float>.self)
                c += 8
            }
            var sum = ((a0 + a1) + (a2 + a3)).sum()
            while c < cols {
                sum += w[r * cols + c] * x[c]
                c += 1
            }
            y[r] = accumulate ? y[r] + sum : sum
        }
    }
}

/// One growable Float buffer per thread (pthread-specific), for per-call scratch that must not
/// allocate in steady state and must not be shared between sessions running on different threads.
enum ThreadScratch {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    /// Header of the buffer: its capacity in floats, then 60 bytes of padding (64-byte data alignment).
    private static let header = 64

    /// A buffer of at least `count` floats private to the calling thread, valid until the next call.
    static func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
        if let raw = pthread_getspecific(key), raw.load(as: Int.self) >= count {
            return (raw + header).assumingMemoryBound(to: Float.self)
        }
        if let old = pthread_getspecific(key) { free(old) }
        let capacity = max(count, 4096)
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, header + 4 * capacity) == 0, let raw else {
            fatalError("out of memory for a \(capacity)-float scratch buffer")
        }
        raw.storeBytes(of: capacity, as: Int.self)
        pthread_setspecific(key, raw)
        return (raw + header).assumingMemoryBound(to: Float.self)
    }
}
