import Foundation

/// One query (a batch-1 step, the LM's case) against a KV ring, over the shared `WorkerPool`.
///
/// At a full context a step's attention is a stream through every cached key and value, bound
/// by memory bandwidth like the weights are. Each task takes one head (or, when there are fewer
/// heads than the pool wants tasks, a contiguous range of a head's slots) and, in three passes
/// over its slots, computes the scores q·k (masked to −∞ outside the window), their exponentials
/// against the range's maximum, and the weighted sum of the values. A range leaves its maximum
/// m, its sum of weights l and its unnormalised sum o; the caller merges a head's ranges as
/// softmax is merged (rescale each by exp(m − max m)) and divides once. Each row is read once,
/// straight from its storage type, widened in registers, accumulated in Float32.
///
/// `attendNaive` is the reference: plain loops in Double over the decoded rows.
enum CachedAttention {
    /// Below this many bytes of keys and values a step attends on the calling thread (the
    /// matvecs' threshold: under it a dispatch costs more than the work).
    static let minParallelBytes = ParallelMatvec.minParallelBytes
    /// Fewest slots worth a task of their own.
    static let minSlotsPerChunk = 64

    /// The most ranges one head is split into (the state sizes its scratch by it): enough for
    /// about four tasks per thread of the pool.
    static func maxChunksPerHead(heads: Int, capacity: Int) -> Int {
        max(1, min(capacity / minSlotsPerChunk, (4 * WorkerPool.shared.maxThreads + heads - 1) / heads))
    }

    /// Floats of scratch per range: its maximum, its sum of weights, its sum of values [headDim].
    static func partialStride(headDim: Int) -> Int { headDim + 2 }

    struct Job {
        /// [dim], heads contiguous; for bf16 each head's part split into its even then its odd
        /// elements (`splitHeads`), the order `dotBF16` reads.
        let query: UnsafePointer<Float>
        let keys: UnsafeRawPointer
        let values: UnsafeRawPointer
        let positions: UnsafePointer<Int>
        /// [numHeads, capacity]
        let scores: UnsafeMutablePointer<Float>
        /// [numHeads, chunksPerHead, partialStride]
        let partials: UnsafeMutablePointer<Float>
        let type: KVCacheType
        let headDim: Int
        let rowBytes: Int
        let capacity: Int
        /// Slots 0..<used hold something (slots fill in order from 0).
        let used: Int
        let queryPosition: Int
        let window: Int
        let scale: Float
        var chunksPerHead = 1
        var slotsPerChunk = 0
    }

    /// Scratch a step needs, from the attention's state.
    struct Scratch {
        let splitQuery: UnsafeMutablePointer<Float>   // [dim]
        let scores: UnsafeMutablePointer<Float>       // [numHeads, capacity]
        let partials: UnsafeMutablePointer<Float>     // [numHeads, maxChunks, partialStride]
        let maxChunks: Int
    }

    /// output[dim] = attention of `query` [dim] (heads contiguous, RoPE applied) at absolute
    /// position `queryPosition` over `cache`, window `window` (query − key < window).
    /// `chunksPerHead` forces a split (tests); nil chooses by size and threads.
    static func attend(query: UnsafePointer<Float>, cache: KVCache, queryPosition: Int, window: Int,
                       scratch: Scratch, output: UnsafeMutablePointer<Float>, chunksPerHead forced: Int? = nil) {
        let heads = cache.numHeads, hd = cache.headDim
        let used = min(cache.end, cache.capacity)
        var q = query
        if cache.type == .bf16 {
            splitHeads(query, into: scratch.splitQuery, heads: heads, headDim: hd)
            q = UnsafePointer(scratch.splitQuery)
        }
        cache.keys.withUnsafeBytes { keys in
        cache.values.withUnsafeBytes { values in
        cache.positions.withUnsafeBufferPointer { positions in
            var job = Job(query: q, keys: keys.baseAddress!, values: values.baseAddress!, positions: positions.baseAddress!,
                          scores: scratch.scores, partials: scratch.partials, type: cache.type, headDim: hd,
                          rowBytes: cache.rowBytes, capacity: cache.capacity, used: used, queryPosition: queryPosition,
                          window: window, scale: 1 / Float(hd).squareRoot())
            let pool = WorkerPool.shared
            let bytes = used * cache.bytesPerEntry
            var chunks = 1
            if let forced {
                chunks = max(1, min(forced, scratch.maxChunks, max(1, used)))
            } else if pool.threads > 1 && bytes >= minParallelBytes {
                let wanted = (4 * pool.threads + heads - 1) / heads
                chunks = max(1, min(wanted, scratch.maxChunks, used / minSlotsPerChunk))
            }
            job.chunksPerHead = chunks
            // Ranges in multiples of 8 slots, so each range's vector loops stay whole.
            job.slotsPerChunk = max(8, ((used + chunks - 1) / chunks + 7) & ~7)
            let tasks = heads * chunks
            if pool.threads > 1 && tasks > 1 && (forced != nil || bytes >= minParallelBytes) {
                withUnsafePointer(to: job) { pool.run(task, context: UnsafeRawPointer($0), chunks: tasks) }
            } else {
                for t in 0..<tasks { run(job, task: t) }
            }
            merge(job, heads: heads, into: output)
        }
        }
        }
    }

    private static let task: WorkerPool.Task = { context, index in
        CachedAttention.run(context.load(as: Job.self), task: index)
    }

    /// Task `index`: head index / chunksPerHead, its range index % chunksPerHead.
    static func run(_ job: Job, task index: Int) {
        let h = index / job.chunksPerHead, c = index % job.chunksPerHead
        let lo = min(job.used, c * job.slotsPerChunk), hi = min(job.used, lo + job.slotsPerChunk)
        let hd = job.headDim
        let q = job.query + h * hd
        let row = job.scores + h * job.capacity
        let partial = job.partials + (h * job.chunksPerHead + c) * partialStride(headDim: hd)
        let keys = job.keys + h * job.capacity * job.rowBytes
        let values = job.values + h * job.capacity * job.rowBytes
        let acc = partial + 2
        acc.update(repeating: 0, count: hd)
        // Scores, masked outside the window (an empty slot holds −1, never visible). For q8,
        // whose widening costs more than its bytes take to arrive, four visible slots in a row
        // go through one pass that loads each piece of q once for all four; f32 and bf16 are
        // bound by memory, where interleaving four rows measured slower than streaming one.
        let (positions, queryPosition, window) = (job.positions, job.queryPosition, job.window)
        @inline(__always) func visible(_ s: Int) -> Bool {
            let p = positions[s]
            return p >= 0 && queryPosition - p >= 0 && queryPosition - p < window
        }
        let four = job.type == .q8
        var m = -Float.infinity
        var s = lo
        while s < hi {
            if four && s + 4 <= hi && visible(s) && visible(s + 1) && visible(s + 2) && visible(s + 3) {
                let scaled = dot4Q8(q, keys + s * job.rowBytes, stride: job.rowBytes, count: hd) * job.scale
                UnsafeMutableRawPointer(row + s).storeBytes(of: scaled, as: SIMD4<Float>.self)
                m = max(m, scaled.max())
                s += 4
                continue
            }
            if visible(s) {
                let k = keys + s * job.rowBytes
                let score: Float
                switch job.type {
                case .f32: score = dotF32(q, k, count: hd)
                case .bf16: score = dotBF16(q, k, count: hd)
                case .q8: score = dotQ8(q, k, count: hd)
                }
                row[s] = score * job.scale
                m = max(m, row[s])
            } else {
                row[s] = -.infinity
            }
            s += 1
        }
        var l: Float = 0
        if m > -.infinity {
            l = exponentiate(row + lo, count: hi - lo, max: m)
            // The weighted sum (q8: four slots per pass over the accumulator). A masked or
            // vanished weight is skipped: its row may hold anything, even a NaN a failed stream left.
            var pending = 0
            var w4 = SIMD4<Float>()
            var rows: (UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer) = (values, values, values, values)
            for s in lo..<hi {
                let w = row[s]
                if w == 0 { continue }
                let v = values + s * job.rowBytes
                switch job.type {
                case .f32: accumulateF32(acc, w, v, count: hd)
                case .bf16: accumulateBF16(acc, w, v, count: hd)
                case .q8:
                    w4[pending] = w
                    switch pending {
                    case 0: rows.0 = v
                    case 1: rows.1 = v
                    case 2: rows.2 = v
                    default: rows.3 = v
                    }
                    pending += 1
                    if pending == 4 {
                        accumulate4Q8(acc, w4, rows, count: hd)
                        pending = 0
                    }
                }
            }
            for i in 0..<pending { accumulateQ8(acc, w4[i], i == 0 ? rows.0 : i == 1 ? rows.1 : rows.2, count: hd) }
        }
        partial[0] = m
        partial[1] = l
    }

    /// Each head's ranges merged and normalised into output [numHeads · headDim]; a head that
    /// sees no entry at all gives zeros.
    private static func merge(_ job: Job, heads: Int, into output: UnsafeMutablePointer<Float>) {
        let hd = job.headDim, stride = partialStride(headDim: hd)
        let half = hd / 2
        for h in 0..<heads {
            let parts = job.partials + h * job.chunksPerHead * stride
            let out = output + h * hd
            out.update(repeating: 0, count: hd)
            var m = -Float.infinity
            for c in 0..<job.chunksPerHead { m = max(m, parts[c * stride]) }
            guard m > -.infinity else { continue }
            var total: Float = 0
            for c in 0..<job.chunksPerHead {
                let part = parts + c * stride
                guard part[0] > -.infinity else { continue }
                let f = job.chunksPerHead == 1 ? 1 : expf(part[0] - m)
                total += f * part[1]
                let acc = part + 2
                if job.type == .bf16 {
                    // Back from (evens, odds) to the row's order.
                    for i in 0..<half {
                        out[2 * i] += f * acc[i]
                        out[2 * i + 1] += f * acc[half + i]
                    }
                    if hd % 2 == 1 { out[hd - 1] += f * acc[hd - 1] }
                } else {
                    for i in 0..<hd { out[i] += f * acc[i] }
                }
            }
            let inverse = 1 / total
            for i in 0..<hd { out[i] *= inverse }
        }
    }

    /// Each head's part of x split into its even elements, then its odd ones (an odd last element
    /// stays last), the layout in which bf16 rows widen without shuffles (`ParallelMatvec.bf16SplitRows`).
    static func splitHeads(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, heads: Int, headDim hd: Int) {
        let half = hd / 2
        for h in 0..<heads {
            let src = x + h * hd, dst = y + h * hd
            for i in 0..<half {
                dst[i] = src[2 * i]
                dst[half + i] = src[2 * i + 1]
            }
            if hd % 2 == 1 { dst[hd - 1] = src[hd - 1] }
        }
    }

    /// row[i] = exp(row[i] − max) (−∞ → 0), returning their sum.
    @inline(__always)
    private static func exponentiate(_ row: UnsafeMutablePointer<Float>, count: Int, max m: Float) -> Float {
        var sum = SIMD8<Float>()
        var i = 0
        let raw = UnsafeMutableRawPointer(row)
        while i + 8 <= count {
            let e = Activations.expNonPositive(raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) - m)
            raw.storeBytes(of: e, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            sum += e
            i += 8
        }
        var total = horizontalSum(sum)
        while i < count {
            let e = expf(row[i] - m)
            row[i] = e
            total += e
            i += 1
        }
        return total
    }

    // MARK: kernels per storage type (one row of `count` values)

    @inline(__always)
    static func dotF32(_ q: UnsafePointer<Float>, _ row: UnsafeRawPointer, count: Int) -> Float {
        let qr = UnsafeRawPointer(q)
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>()
        var i = 0
        while i + 16 <= count {
            a0 += row.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) * qr.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            a1 += row.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self)
                * qr.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self)
            i += 16
        }
        if i + 8 <= count {
            a0 += row.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) * qr.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            i += 8
        }
        var sum = horizontalSum(a0 + a1)
        while i < count {
            sum += row.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) * q[i]
            i += 1
        }
        return sum
    }

    /// q split (evens, then odds) · one bf16 row: each 32-bit lane of the row is a pair of
    /// weights, its high half the odd one as a Float32 under a mask, its low half the even one
    /// shifted up.
    @inline(__always)
    static func dotBF16(_ q: UnsafePointer<Float>, _ row: UnsafeRawPointer, count: Int) -> Float {
        let half = count / 2
        let qe = UnsafeRawPointer(q), qo = UnsafeRawPointer(q + half)
        let mask = SIMD8<UInt32>(repeating: 0xFFFF_0000)
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>()
        var p = 0
        while p + 8 <= half {
            let v = row.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<UInt32>.self)
            a0 += unsafeBitCast(v &<< 16, to: SIMD8<Float>.self) * qe.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<Float>.self)
            a1 += unsafeBitCast(v & mask, to: SIMD8<Float>.self) * qo.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<Float>.self)
            p += 8
        }
        var sum = horizontalSum(a0 + a1)
        while p < half {
            sum += HalfPrecision.bf16ToFloat(row.loadUnaligned(fromByteOffset: 4 * p, as: UInt16.self)) * q[p]
            sum += HalfPrecision.bf16ToFloat(row.loadUnaligned(fromByteOffset: 4 * p + 2, as: UInt16.self)) * q[half + p]
            p += 1
        }
        if count % 2 == 1 {
            sum += HalfPrecision.bf16ToFloat(row.loadUnaligned(fromByteOffset: 2 * (count - 1), as: UInt16.self)) * q[count - 1]
        }
        return sum
    }

    /// q · one q8 row: per block, the int8 values widened to Float32 against q, the block's
    /// products scaled in the vector (one horizontal sum per row, not per block).
    @inline(__always)
    static func dotQ8(_ q: UnsafePointer<Float>, _ row: UnsafeRawPointer, count: Int) -> Float {
        let blocks = KVCacheType.q8Blocks(count)
        let quants = row + 2 * blocks
        let qr = UnsafeRawPointer(q)
        var total = SIMD8<Float>()
        var tail: Float = 0
        for b in 0..<blocks {
            let lo = b * KVCacheType.q8Block, hi = min(count, lo + KVCacheType.q8Block)
            let d = HalfPrecision.f16ToFloat(row.loadUnaligned(fromByteOffset: 2 * b, as: UInt16.self))
            var a = SIMD8<Float>()
            var i = lo
            while i + 8 <= hi {
                let v = SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: quants.loadUnaligned(fromByteOffset: i, as: SIMD8<Int8>.self)))
                a += v * qr.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                i += 8
            }
            total += d * a
            while i < hi {
                tail += d * Float(quants.load(fromByteOffset: i, as: Int8.self)) * q[i]
                i += 1
            }
        }
        return horizontalSum(total) + tail
    }

    @inline(__always)
    static func accumulateF32(_ acc: UnsafeMutablePointer<Float>, _ w: Float, _ row: UnsafeRawPointer, count: Int) {
        let a = UnsafeMutableRawPointer(acc)
        var i = 0
        while i + 8 <= count {
            let v = row.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            a.storeBytes(of: a.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) + w * v, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            acc[i] += w * row.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)
            i += 1
        }
    }

    /// acc (split: evens, then odds) += w · one bf16 row.
    @inline(__always)
    static func accumulateBF16(_ acc: UnsafeMutablePointer<Float>, _ w: Float, _ row: UnsafeRawPointer, count: Int) {
        let half = count / 2
        let ae = UnsafeMutableRawPointer(acc), ao = UnsafeMutableRawPointer(acc + half)
        let mask = SIMD8<UInt32>(repeating: 0xFFFF_0000)
        var p = 0
        while p + 8 <= half {
            let v = row.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<UInt32>.self)
            ae.storeBytes(of: ae.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<Float>.self) + w * unsafeBitCast(v &<< 16, to: SIMD8<Float>.self),
                          toByteOffset: 4 * p, as: SIMD8<Float>.self)
            ao.storeBytes(of: ao.loadUnaligned(fromByteOffset: 4 * p, as: SIMD8<Float>.self) + w * unsafeBitCast(v & mask, to: SIMD8<Float>.self),
                          toByteOffset: 4 * p, as: SIMD8<Float>.self)
            p += 8
        }
        while p < half {
            acc[p] += w * HalfPrecision.bf16ToFloat(row.loadUnaligned(fromByteOffset: 4 * p, as: UInt16.self))
            acc[half + p] += w * HalfPrecision.bf16ToFloat(row.loadUnaligned(fromByteOffset: 4 * p + 2, as: UInt16.self))
            p += 1
        }
        if count % 2 == 1 {
            acc[count - 1] += w * HalfPrecision.bf16ToFloat(row.loadUnaligned(fromByteOffset: 2 * (count - 1), as: UInt16.self))
        }
    }

    @inline(__always)
    static func accumulateQ8(_ acc: UnsafeMutablePointer<Float>, _ w: Float, _ row: UnsafeRawPointer, count: Int) {
        let blocks = KVCacheType.q8Blocks(count)
        let quants = row + 2 * blocks
        let a = UnsafeMutableRawPointer(acc)
        for b in 0..<blocks {
            let lo = b * KVCacheType.q8Block, hi = min(count, lo + KVCacheType.q8Block)
            let ws = w * HalfPrecision.f16ToFloat(row.loadUnaligned(fromByteOffset: 2 * b, as: UInt16.self))
            var i = lo
            while i + 8 <= hi {
                let v = SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: quants.loadUnaligned(fromByteOffset: i, as: SIMD8<Int8>.self)))
                a.storeBytes(of: a.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) + ws * v, toByteOffset: 4 * i, as: SIMD8<Float>.self)
                i += 8
            }
            while i < hi {
                acc[i] += ws * Float(quants.load(fromByteOffset: i, as: Int8.self))
                i += 1
            }
        }
    }

    // MARK: q8, four rows at a time (rows `stride` bytes apart; accumulators per row, q loaded once)

    /// [Σ a0, Σ a1, Σ a2, Σ a3] by pairwise adds across the four.
    @inline(__always)
    static func horizontalSums(_ a0: SIMD8<Float>, _ a1: SIMD8<Float>, _ a2: SIMD8<Float>, _ a3: SIMD8<Float>) -> SIMD4<Float> {
        let t0 = a0.lowHalf + a0.highHalf, t1 = a1.lowHalf + a1.highHalf
        let t2 = a2.lowHalf + a2.highHalf, t3 = a3.lowHalf + a3.highHalf
        let u01 = SIMD4(lowHalf: t0.lowHalf + t0.highHalf, highHalf: t1.lowHalf + t1.highHalf)
        let u23 = SIMD4(lowHalf: t2.lowHalf + t2.highHalf, highHalf: t3.lowHalf + t3.highHalf)
        return SIMD4(lowHalf: u01.evenHalf + u01.oddHalf, highHalf: u23.evenHalf + u23.oddHalf)
    }

    @inline(__always)
    static func dot4Q8(_ q: UnsafePointer<Float>, _ rows: UnsafeRawPointer, stride: Int, count: Int) -> SIMD4<Float> {
        let blocks = KVCacheType.q8Blocks(count)
        let qr = UnsafeRawPointer(q)
        let r0 = rows, r1 = rows + stride, r2 = rows + 2 * stride, r3 = rows + 3 * stride
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var tail = SIMD4<Float>()
        @inline(__always) func widen(_ r: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
            SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: r.loadUnaligned(fromByteOffset: 2 * blocks + i, as: SIMD8<Int8>.self)))
        }
        @inline(__always) func scale(_ r: UnsafeRawPointer, _ b: Int) -> Float {
            HalfPrecision.f16ToFloat(r.loadUnaligned(fromByteOffset: 2 * b, as: UInt16.self))
        }
        for b in 0..<blocks {
            let lo = b * KVCacheType.q8Block, hi = min(count, lo + KVCacheType.q8Block)
            var b0 = SIMD8<Float>(), b1 = SIMD8<Float>(), b2 = SIMD8<Float>(), b3 = SIMD8<Float>()
            var i = lo
            while i + 8 <= hi {
                let x = qr.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                b0 += widen(r0, i) * x
                b1 += widen(r1, i) * x
                b2 += widen(r2, i) * x
                b3 += widen(r3, i) * x
                i += 8
            }
            let d = SIMD4(scale(r0, b), scale(r1, b), scale(r2, b), scale(r3, b))
            a0 += d[0] * b0
            a1 += d[1] * b1
            a2 += d[2] * b2
            a3 += d[3] * b3
            while i < hi {
                let x = q[i]
                tail += d * SIMD4(Float(r0.load(fromByteOffset: 2 * blocks + i, as: Int8.self)),
                                  Float(r1.load(fromByteOffset: 2 * blocks + i, as: Int8.self)),
                                  Float(r2.load(fromByteOffset: 2 * blocks + i, as: Int8.self)),
                                  Float(r3.load(fromByteOffset: 2 * blocks + i, as: Int8.self))) * x
                i += 1
            }
        }
        return horizontalSums(a0, a1, a2, a3) + tail
    }

    @inline(__always)
    static func accumulate4Q8(_ acc: UnsafeMutablePointer<Float>, _ w: SIMD4<Float>,
                              _ rows: (UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer), count: Int) {
        let blocks = KVCacheType.q8Blocks(count)
        let a = UnsafeMutableRawPointer(acc)
        @inline(__always) func widen(_ r: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
            SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: r.loadUnaligned(fromByteOffset: 2 * blocks + i, as: SIMD8<Int8>.self)))
        }
        @inline(__always) func scale(_ r: UnsafeRawPointer, _ b: Int) -> Float {
            HalfPrecision.f16ToFloat(r.loadUnaligned(fromByteOffset: 2 * b, as: UInt16.self))
        }
        for b in 0..<blocks {
            let lo = b * KVCacheType.q8Block, hi = min(count, lo + KVCacheType.q8Block)
            let ws = w * SIMD4(scale(rows.0, b), scale(rows.1, b), scale(rows.2, b), scale(rows.3, b))
            var i = lo
            while i + 8 <= hi {
                var sum = a.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                sum += ws[0] * widen(rows.0, i) + ws[1] * widen(rows.1, i)
                sum += ws[2] * widen(rows.2, i) + ws[3] * widen(rows.3, i)
                a.storeBytes(of: sum, toByteOffset: 4 * i, as: SIMD8<Float>.self)
                i += 8
            }
            while i < hi {
                acc[i] += ws[0] * Float(rows.0.load(fromByteOffset: 2 * blocks + i, as: Int8.self))
                    + ws[1] * Float(rows.1.load(fromByteOffset: 2 * blocks + i, as: Int8.self))
                    + ws[2] * Float(rows.2.load(fromByteOffset: 2 * blocks + i, as: Int8.self))
                    + ws[3] * Float(rows.3.load(fromByteOffset: 2 * blocks + i, as: Int8.self))
                i += 1
            }
        }
    }

    /// The lanes' sum as a tree (SIMD8's own `sum()` adds the lanes one after another: eight
    /// dependent scalar adds, once per row).
    @inline(__always)
    static func horizontalSum(_ v: SIMD8<Float>) -> Float {
        let four = v.lowHalf + v.highHalf
        let two = four.lowHalf + four.highHalf
        return two[0] + two[1]
    }

    // MARK: reference

    /// The truth the kernels are tested against: every head's scores over the decoded rows of
    /// every slot, the masked softmax and the weighted sum, in Double.
    static func attendNaive(query: UnsafePointer<Float>, cache: KVCache, queryPosition: Int, window: Int,
                            output: UnsafeMutablePointer<Float>) {
        let hd = cache.headDim
        let scale = 1 / Double(hd).squareRoot()
        let keys = (0..<cache.capacity).map { cache.key(slot: $0) }
        let values = (0..<cache.capacity).map { cache.value(slot: $0) }
        for h in 0..<cache.numHeads {
            var scores = [Double?](repeating: nil, count: cache.capacity)
            for s in 0..<cache.capacity {
                let p = cache.positions[s]
                guard p >= 0, queryPosition - p >= 0, queryPosition - p < window else { continue }
                var dot = 0.0
                for i in 0..<hd { dot += Double(query[h * hd + i]) * Double(keys[s][h * hd + i]) }
                scores[s] = dot * scale
            }
            let m = scores.compactMap { $0 }.max() ?? 0
            var total = 0.0
            var out = [Double](repeating: 0, count: hd)
            for s in 0..<cache.capacity {
                guard let score = scores[s] else { continue }
                let w = exp(score - m)
                total += w
                for i in 0..<hd { out[i] += w * Double(values[s][h * hd + i]) }
            }
            for i in 0..<hd { output[h * hd + i] = total > 0 ? Float(out[i] / total) : 0 }
        }
    }
}

extension Activations {
    /// exp for lanes ≤ 0 (what softmax takes after subtracting the maximum): Cody–Waite reduction
    /// to r in [−ln2/2, ln2/2], a degree-7 Taylor polynomial (truncation < 1e-8 relative), times
    /// 2ⁿ built in the exponent bits. Below about −87.7 (and at −∞) it gives exactly 0, where
    /// the true value is a denormal; NaN stays NaN. Agrees with expf within a few ulp.
    @inline(__always)
    static func expNonPositive(_ v: SIMD8<Float>) -> SIMD8<Float> {
        let x = v.replacing(with: -88, where: v .< -88)
        let magic = SIMD8<Float>(repeating: 12_582_912)
        let shifted = x * 1.442_695_04 + magic
        let n = shifted - magic
        let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4
        let ni = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
        let scale = unsafeBitCast((ni &+ 127) &<< 23, to: SIMD8<Float>.self)
        var p = SIMD8<Float>(repeating: 1.0 / 5040)
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        return scale * p
    }
}

/// The batch-1 attention kernel alone, for `bench-kernels`: one query per layer against
/// `layers` full rings of `slots` entries each (several, as in a step, so that a shape whose
/// rings together exceed the caches is timed from memory, as the LM reads them).
public struct AttentionProbe {
    public let type: KVCacheType
    public let heads: Int
    public let headDim: Int
    public let slots: Int
    private var caches: [KVCache]
    private var query: [Float]
    private var output: [Float]
    private var split: [Float]
    private var scores: [Float]
    private var partials: [Float]
    private let maxChunks: Int

    public init(type: KVCacheType, heads: Int, headDim: Int, slots: Int, layers: Int) {
        self.type = type
        self.heads = heads
        self.headDim = headDim
        self.slots = slots
        let dim = heads * headDim
        var g = SplitMix64(seed: 7)
        let pool = (0..<(61 * dim)).map { _ in g.nextGaussian() }
        caches = (0..<layers).map { _ in
            var cache = KVCache(capacity: slots, numHeads: heads, headDim: headDim, type: type)
            pool.withUnsafeBufferPointer { cache.advance(by: slots, pool: $0.baseAddress!, poolRows: min(61, slots)) }
            return cache
        }
        query = (0..<dim).map { _ in g.nextGaussian() }
        output = [Float](repeating: 0, count: dim)
        split = output
        scores = [Float](repeating: 0, count: heads * slots)
        maxChunks = CachedAttention.maxChunksPerHead(heads: heads, capacity: slots)
        partials = [Float](repeating: 0, count: heads * maxChunks * CachedAttention.partialStride(headDim: headDim))
    }

    /// Bytes of keys and values one query reads (one layer).
    public var bytesPerQuery: Int { slots * (caches.first?.bytesPerEntry ?? 0) }

    /// One query against every layer's ring in turn.
    public mutating func run() {
        let maxChunks = maxChunks
        query.withUnsafeBufferPointer { q in
        split.withUnsafeMutableBufferPointer { s in
        scores.withUnsafeMutableBufferPointer { sc in
        partials.withUnsafeMutableBufferPointer { p in
        output.withUnsafeMutableBufferPointer { o in
            let scratch = CachedAttention.Scratch(splitQuery: s.baseAddress!, scores: sc.baseAddress!, partials: p.baseAddress!,
                                                  maxChunks: maxChunks)
            for cache in caches {
                CachedAttention.attend(query: q.baseAddress!, cache: cache, queryPosition: cache.end - 1, window: cache.capacity,
                                       scratch: scratch, output: o.baseAddress!)
            }
        }
        }
        }
        }
        }
    }
}
