import CBLAS

/// The matrix kernels every model block goes through. Each fast path has a naive reference
/// beside it (`…Naive`), a handful of plain loops that are the truth the tests compare against.
///
/// Layout convention: row-major everywhere. A weight matrix `W` is `[rows = out, cols = in]`,
/// as PyTorch stores `nn.Linear.weight`, so `y = W·x` is a matrix×vector with W not transposed.
public enum Kernels {
    // MARK: threads

    /// Sets how many threads compute: the engine always calls this (from `-t/--threads`) rather
    /// than leaving libraries to pick, so runs are reproducible and leave cores to audio. One pool
    /// (`WorkerPool.shared`) does all the parallel work; OpenBLAS itself stays single-threaded,
    /// because its threaded sgemm allocates job arrays on every call (the real-time path must not
    /// allocate) and a second set of spinning threads would fight the pool for the same cores.
    public static func setThreads(_ count: Int) {
        openblas_set_num_threads(1)
        WorkerPool.shared.threads = count
    }

    public static var threads: Int { WorkerPool.shared.threads }

    /// Products below this many multiply-adds run on one thread: splitting costs more than it saves.
    static let minParallelMACs = 1 << 21

    // MARK: matrix × matrix

    /// C[m,n] (+)= A[m,k] · op(B), op(B) = B[k,n] or, with `transposeB`, Bᵀ for B stored [n,k].
    /// Leading dimensions default to packed rows.
    public static func matmul(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
        m: Int, n: Int, k: Int, transposeB: Bool = false, accumulate: Bool = false,
        lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil
    ) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            // An empty sum; only the m×n block is C's, the rest of each ldc-wide row is not ours.
            if !accumulate { for i in 0..<m { (c + i * (ldc ?? n)).update(repeating: 0, count: n) } }
            return
        }
        var job = GemmJob(a: a, b: b, c: c, m: m, n: n, k: k, lda: lda ?? k, ldb: ldb ?? (transposeB ? k : n),
                          ldc: ldc ?? n, transposeB: transposeB, beta: accumulate ? 1 : 0)
        let threads = WorkerPool.shared.threads
        if threads <= 1 || m * n * k < minParallelMACs {
            job.run(part: 0, parts: 1)
            return
        }
        // A few blocks per thread, taken dynamically: a thread that lost its core holds up less.
        job.parts = 2 * threads
        withUnsafePointer(to: &job) { WorkerPool.shared.run(GemmJob.task, context: UnsafeRawPointer($0), chunks: $0.pointee.parts) }
    }

    /// One sgemm split into blocks of C's rows (or columns, when there are few rows), each block a
    /// single-threaded OpenBLAS call.
    struct GemmJob {
        let a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>
        let m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int
        let transposeB: Bool
        let beta: Float
        var parts = 1

        static let task: WorkerPool.Task = { context, chunk in
            let job = context.assumingMemoryBound(to: GemmJob.self)
            job.pointee.run(part: chunk, parts: job.pointee.parts)
        }

        func run(part: Int, parts: Int) {
            if m >= 8 * parts || m >= n {
                let rows = (m + parts - 1) / parts
                let r0 = part * rows, r1 = min(m, r0 + rows)
                guard r1 > r0 else { return }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                            Int32(r1 - r0), Int32(n), Int32(k), 1, a + r0 * lda, Int32(lda), b, Int32(ldb),
                            beta, c + r0 * ldc, Int32(ldc))
            } else {
                // Columns in multiples of 16 keep each block's vector loops whole.
                let cols = ((n + parts - 1) / parts + 15) & ~15
                let c0 = part * cols, c1 = min(n, c0 + cols)
                guard c1 > c0 else { return }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                            Int32(m), Int32(c1 - c0), Int32(k), 1, a, Int32(lda), transposeB ? b + c0 * ldb : b + c0, Int32(ldb),
                            beta, c + c0, Int32(ldc))
            }
        }
    }

    public static func matmulNaive(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
        m: Int, n: Int, k: Int, transposeB: Bool = false, accumulate: Bool = false,
        lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil
    ) {
        let (lda, ldb, ldc) = (lda ?? k, ldb ?? (transposeB ? k : n), ldc ?? n)
        for i in 0..<m {
            for j in 0..<n {
                var sum: Double = 0
                for p in 0..<k {
                    let bv = transposeB ? b[j * ldb + p] : b[p * ldb + j]
                    sum += Double(a[i * lda + p]) * Double(bv)
                }
                c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + Float(sum)
            }
        }
    }

    /// Y[m, n] (+)= X[m, k] · Wᵀ for W stored [n, k] (a weight matrix as PyTorch keeps it) and
    /// m ≤ 2: a streaming step of one or two rows. Such a product is bound by how fast W streams
    /// from memory; OpenBLAS's sgemm packs W first (≈ 7 GB/s here at m = 2) and sgemv reads it
    /// once per row, while this reads each weight row once, against both rows of X, in one
    /// contiguous stream (≈ 16–25 GB/s). Larger m goes to sgemm. Rows longer than ~2048 floats
    /// stream best pre-tiled into column blocks (see `PackedWeights`), so the rows of X stay in L1.
    public static func matmulWeightStream(
        _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
        m: Int, n: Int, k: Int, ldx: Int? = nil, ldw: Int? = nil, accumulate: Bool = false
    ) {
        guard m > 0, n > 0 else { return }
        let ldx = ldx ?? k, ldw = ldw ?? k
        if m > 2 {
            matmul(x, w, y, m: m, n: n, k: k, transposeB: true, accumulate: accumulate, lda: ldx, ldb: ldw)
        } else if m == 2 {
            weightStreamRows(x, w, y, two: true, n: n, k: k, ldx: ldx, ldw: ldw, accumulate: accumulate)
        } else {
            weightStreamRows(x, w, y, two: false, n: n, k: k, ldx: ldx, ldw: ldw, accumulate: accumulate)
        }
    }

    /// The loop of `matmulWeightStream`, inlined at two call sites so each gets a loop without
    /// a branch on the row count.
    @inline(__always)
    private static func weightStreamRows(
        _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
        two: Bool, n: Int, k: Int, ldx: Int, ldw: Int, accumulate: Bool
    ) {
        let x0 = x, x1 = x + (two ? ldx : 0)
        for r in 0..<n {
            let wr = w + r * ldw
            var a0 = SIMD4<Float>(), a1 = SIMD4<Float>(), a2 = SIMD4<Float>(), a3 = SIMD4<Float>()
            var b0 = SIMD4<Float>(), b1 = SIMD4<Float>(), b2 = SIMD4<Float>(), b3 = SIMD4<Float>()
            var c = 0
            while c + 16 <= k {
                let q0 = UnsafeRawPointer(wr + c).loadUnaligned(as: SIMD4<Float>.self)
                let q1 = UnsafeRawPointer(wr + c + 4).loadUnaligned(as: SIMD4<Float>.self)
                let q2 = UnsafeRawPointer(wr + c + 8).loadUnaligned(as: SIMD4<Float>.self)
                let q3 = UnsafeRawPointer(wr + c + 12).loadUnaligned(as: SIMD4<Float>.self)
                a0 += q0 * UnsafeRawPointer(x0 + c).loadUnaligned(as: SIMD4<Float>.self)
                a1 += q1 * UnsafeRawPointer(x0 + c + 4).loadUnaligned(as: SIMD4<Float>.self)
                a2 += q2 * UnsafeRawPointer(x0 + c + 8).loadUnaligned(as: SIMD4<Float>.self)
                a3 += q3 * UnsafeRawPointer(x0 + c + 12).loadUnaligned(as: SIMD4<Float>.self)
                if two {
                    b0 += q0 * UnsafeRawPointer(x1 + c).loadUnaligned(as: SIMD4<Float>.self)
                    b1 += q1 * UnsafeRawPointer(x1 + c + 4).loadUnaligned(as: SIMD4<Float>.self)
                    b2 += q2 * UnsafeRawPointer(x1 + c + 8).loadUnaligned(as: SIMD4<Float>.self)
                    b3 += q3 * UnsafeRawPointer(x1 + c + 12).loadUnaligned(as: SIMD4<Float>.self)
                }
                c += 16
            }
            var s0 = ((a0 + a1) + (a2 + a3)).sum()
            var s1 = ((b0 + b1) + (b2 + b3)).sum()
            while c < k {
                s0 += wr[c] * x0[c]
                if two { s1 += wr[c] * x1[c] }
                c += 1
            }
            y[r] = accumulate ? y[r] + s0 : s0
            if two { y[n + r] = accumulate ? y[n + r] + s1 : s1 }
        }
    }

    // MARK: matrix × vector

    /// y[rows] (+)= W[rows, cols] · x[cols].
    public static func matvec(
        _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
        rows: Int, cols: Int, accumulate: Bool = false
    ) {
        guard rows > 0 else { return }
        if cols == 0 { if !accumulate { y.update(repeating: 0, count: rows) }; return }
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(cols), 1, w, Int32(cols),
                    x, 1, accumulate ? 1 : 0, y, 1)
    }

    public static func matvecNaive(
        _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
        rows: Int, cols: Int, accumulate: Bool = false
    ) {
        for r in 0..<rows {
            var sum: Double = 0
            for c in 0..<cols { sum += Double(w[r * cols + c]) * Double(x[c]) }
            y[r] = (accumulate ? y[r] : 0) + Float(sum)
        }
    }

    /// y[rows] (+)= W[rows, cols] · x[cols] with W stored as bf16 bits. Each weight is read once
    /// and widened in registers: a batch-1 LM step is bound by how fast weight bytes stream in,
    /// and bf16 halves that traffic against f32.
    ///
    /// Two bf16 values are read as one UInt32: the even element widens as `u << 16`, the odd one as
    /// `u & 0xFFFF0000`, so no 16→32-bit lane conversion is needed; x is split into its even and odd
    /// lanes to match. Products are multiply-then-add, not `addProduct`: the build targets baseline
    /// x86-64, which has no FMA instruction, so a SIMD fused multiply-add becomes one `fmaf` call
    /// per lane (measured 10× slower).
    public static func matvecBF16(
        _ w: UnsafePointer<UInt16>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
        rows: Int, cols: Int, accumulate: Bool = false
    ) {
        let split = ThreadScratch.floats(cols)
        ParallelMatvec.deinterleave(x, into: split, cols: cols)
        ParallelMatvec.bf16SplitRows(w, x, split: split, y, rows: 0..<rows, cols: cols, accumulate: accumulate)
    }

    public static func matvecBF16Naive(
        _ w: UnsafePointer<UInt16>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
        rows: Int, cols: Int, accumulate: Bool = false
    ) {
        for r in 0..<rows {
            var sum: Double = 0
            for c in 0..<cols { sum += Double(HalfPrecision.bf16ToFloat(w[r * cols + c])) * Double(x[c]) }
            y[r] = (accumulate ? y[r] : 0) + Float(sum)
        }
    }

    // MARK: vectors

    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        // Plain multiply-add: `addProduct` is a libm fma call per lane on baseline x86-64.
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= count {
            // Multiply then add: `addProduct` lowers to libm's fmaf where FMA is not enabled.
            acc += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
                * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            i += 8
        }
        var sum = acc.sum()
        while i < count { sum += a[i] * b[i]; i += 1 }
        return sum
    }

    /// y += alpha · x
    @inline(__always)
    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += alpha * x[i] }
    }

    public static func dotNaive(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var sum: Double = 0
        for i in 0..<count { sum += Double(a[i]) * Double(b[i]) }
        return Float(sum)
    }
}

// MARK: Tensor conveniences (offline paths and tests)

extension Tensor {
    /// self[m,k] · other[k,n] (or otherᵀ for other [n,k]).
    public func matmul(_ other: Tensor, transposeOther: Bool = false) -> Tensor {
        precondition(rank == 2 && other.rank == 2)
        let (m, k) = (shape[0], shape[1])
        let n = transposeOther ? other.shape[0] : other.shape[1]
        precondition((transposeOther ? other.shape[1] : other.shape[0]) == k, "matmul \(shape) × \(other.shape)")
        var out = Tensor(zeros: [m, n])
        data.withUnsafeBufferPointer { a in
            other.data.withUnsafeBufferPointer { b in
                out.data.withUnsafeMutableBufferPointer { c in
                    Kernels.matmul(a.baseAddress!, b.baseAddress!, c.baseAddress!,
                                   m: m, n: n, k: k, transposeB: transposeOther)
                }
            }
        }
        return out
    }
}
