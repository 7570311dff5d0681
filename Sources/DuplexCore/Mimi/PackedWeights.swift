import Foundation

/// A conv's weight matrix W [n, k] (n outputs, k = kernel·Cin inputs per output), laid out for
/// the shape of a streaming step: one or two rows of X against all of W, bound by how fast W
/// streams from memory. Rows longer than `blockLimit` are cut into column blocks stored one after
/// another ([blocks][n][≤ block]), so that each block is one contiguous stream while its slice of
/// X stays in L1 (the SEANet's widest convs have k = 8192: streamed row by row, the two input rows
/// would not fit L1; streamed as strided chunks, the prefetchers stall — both ≈ 10 GB/s against
/// ≈ 25 GB/s for contiguous tiles). Products of more rows go to sgemm, block by block.
struct PackedWeights: Sendable {
    static let block = 1024
    static let blockLimit = 2048
    let n: Int
    let k: Int
    /// Width of every block but the last; k when not blocked.
    let blockWidth: Int
    let storage: FloatBox

    /// From row-major values [n, k].
    init(_ values: [Float], n: Int, k: Int) {
        precondition(values.count == n * k)
        self.n = n
        self.k = k
        blockWidth = k > PackedWeights.blockLimit ? PackedWeights.block : k
        if blockWidth == k {
            storage = FloatBox(values, hugePages: true)
            return
        }
        var packed = [Float](repeating: 0, count: n * k)
        var start = 0
        while start < k {
            let width = min(blockWidth, k - start)
            for r in 0..<n {
                for c in 0..<width { packed[n * start + r * width + c] = values[r * k + start + c] }
            }
            start += width
        }
        storage = FloatBox(packed, hugePages: true)
    }

    /// Y[m, n] (+)= X[m, k] · Wᵀ, X rows `ldx` apart.
    @inline(__always)
    func apply(_ x: UnsafePointer<Float>, rows m: Int, ldx: Int? = nil, into y: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
        let ldx = ldx ?? k
        if n == 1 && m > 2 && blockWidth == k && ldx == k {
            // One output (SEANet's last conv): a matrix×vector over the rows of X, not an sgemm.
            Kernels.matvec(x, storage.pointer, y, rows: m, cols: k, accumulate: accumulate)
            return
        }
        var start = 0
        while start < k {
            let width = min(blockWidth, k - start)
            Kernels.matmulWeightStream(x + start, storage.pointer + n * start, y, m: m, n: n, k: width, ldx: ldx, ldw: width,
                                       accumulate: accumulate || start > 0)
            start += width
        }
    }
}
