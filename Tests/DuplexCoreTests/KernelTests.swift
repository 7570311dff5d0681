import DuplexCore
import Foundation
import XCTest

/// Every fast kernel against its naive (Double-accumulating) reference, on random and odd shapes:
/// relative L2 error ≤ 1e-6 (design.md §4).
final class KernelTests: XCTestCase {
    override func setUp() { Kernels.setThreads(2) }

    private let oddShapes = [(1, 1, 1), (3, 5, 7), (17, 33, 65), (64, 1, 129), (1, 100, 31), (128, 96, 257), (2, 3, 0)]

    func testMatmulMatchesNaiveOnOddShapes() {
        for (m, n, k) in oddShapes {
            for transposeB in [false, true] {
                for accumulate in [false, true] {
                    let a = randomArray(m * k, seed: 1), b = randomArray(k * n, seed: 2)
                    var fast = randomArray(m * n, seed: 3), slow = fast
                    Kernels.matmul(a, b, &fast, m: m, n: n, k: k, transposeB: transposeB, accumulate: accumulate)
                    Kernels.matmulNaive(a, b, &slow, m: m, n: n, k: k, transposeB: transposeB, accumulate: accumulate)
                    assertClose(fast, slow, relL2: 1e-6, "matmul \(m)×\(k)×\(n) transposeB=\(transposeB) accumulate=\(accumulate)")
                }
            }
        }
    }

    /// Sub-blocks of larger row-major buffers (lda/ldb/ldc wider than the block): the block comes
    /// out right and the padding around it is left alone.
    func testMatmulWithLeadingDimensions() {
        for (m, n, k) in [(3, 5, 7), (17, 9, 33), (4, 6, 0)] {
            for transposeB in [false, true] {
                for accumulate in [false, true] {
                    let (lda, ldb, ldc) = (k + 3, (transposeB ? k : n) + 5, n + 2)
                    let a = randomArray(m * lda, seed: 4)
                    let b = randomArray((transposeB ? n : k) * ldb, seed: 5)
                    let sentinel = randomArray(m * ldc, seed: 6)
                    var fast = sentinel, slow = sentinel
                    Kernels.matmul(a, b, &fast, m: m, n: n, k: k, transposeB: transposeB, accumulate: accumulate,
                                   lda: lda, ldb: ldb, ldc: ldc)
                    Kernels.matmulNaive(a, b, &slow, m: m, n: n, k: k, transposeB: transposeB, accumulate: accumulate,
                                        lda: lda, ldb: ldb, ldc: ldc)
                    let what = "matmul \(m)×\(k)×\(n) lda \(lda) ldb \(ldb) ldc \(ldc) transposeB=\(transposeB) accumulate=\(accumulate)"
                    assertClose(fast, slow, relL2: 1e-6, what)
                    for i in 0..<m {
                        for j in n..<ldc {
                            XCTAssertEqual(fast[i * ldc + j], sentinel[i * ldc + j], "\(what): padding [\(i), \(j)] changed")
                        }
                    }
                }
            }
        }
    }

    func testNaiveMatmulIsRight() {
        // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]], worked by hand.
        var c = [Float](repeating: 0, count: 4)
        Kernels.matmulNaive([1, 2, 3, 4], [5, 6, 7, 8], &c, m: 2, n: 2, k: 2)
        XCTAssertEqual(c, [19, 22, 43, 50])
        Kernels.matmulNaive([1, 2, 3, 4], [5, 6, 7, 8], &c, m: 2, n: 2, k: 2, transposeB: true, accumulate: true)
        // Plus [[1, 2], [3, 4]] · [[5, 7], [6, 8]] = [[17, 23], [39, 53]].
        XCTAssertEqual(c, [36, 45, 82, 103])
    }

    func testMatvecF32AndBF16MatchNaive() {
        for (rows, cols) in [(1, 1), (7, 13), (33, 65), (100, 257), (5, 4096), (3, 15), (3, 16), (3, 17), (4, 0)] {
            for accumulate in [false, true] {
                let w = randomArray(rows * cols, seed: 3), x = randomArray(cols, seed: 4)
                let start = randomArray(rows, seed: 5)
                var fast = start, slow = start
                Kernels.matvec(w, x, &fast, rows: rows, cols: cols, accumulate: accumulate)
                Kernels.matvecNaive(w, x, &slow, rows: rows, cols: cols, accumulate: accumulate)
                assertClose(fast, slow, relL2: 1e-6, "matvec \(rows)×\(cols) accumulate=\(accumulate)")

                let wb = w.map(HalfPrecision.floatToBF16)
                fast = start
                slow = start
                Kernels.matvecBF16(wb, x, &fast, rows: rows, cols: cols, accumulate: accumulate)
                Kernels.matvecBF16Naive(wb, x, &slow, rows: rows, cols: cols, accumulate: accumulate)
                assertClose(fast, slow, relL2: 1e-6, "matvecBF16 \(rows)×\(cols) accumulate=\(accumulate)")
            }
        }
    }

    func testNaiveMatvecIsRight() {
        var y: [Float] = [10, 20]
        Kernels.matvecNaive([1, 2, 3, 4, 5, 6], [1, 0, -1], &y, rows: 2, cols: 3, accumulate: true)
        XCTAssertEqual(y, [10 - 2, 20 - 2])
        // bf16 0x3F80 = 1, 0x4000 = 2, 0xBF80 = -1.
        Kernels.matvecBF16Naive([0x3F80, 0x4000, 0xBF80, 0x3F80], [3, 4], &y, rows: 2, cols: 2)
        XCTAssertEqual(y, [11, 1])
    }

    /// `WeightMatrix.apply` for one step (matrix×vector) and several (sgemm for f32, a matvec per
    /// step for bf16), against the naive product with the same weights.
    func testWeightMatrixApplyRows() {
        for (rows, cols) in [(5, 7), (33, 17), (64, 100)] {
            let w = Tensor(shape: [rows, cols], data: randomArray(rows * cols, seed: 7))
            let bf16Bits = w.data.map(HalfPrecision.floatToBF16)
            let f32 = WeightMatrix(w)
            let bf16 = bf16Matrix(bf16Bits, rows: rows, cols: cols)
            for steps in [0, 1, 2, 5] {
                for accumulate in [false, true] {
                    let x = randomArray(steps * cols, seed: 8)
                    let start = randomArray(steps * rows, seed: 9)
                    for (name, matrix, reference) in [("f32", f32, w.data), ("bf16", bf16, bf16Bits.map(HalfPrecision.bf16ToFloat))] {
                        var fast = start, slow = start
                        fast.withUnsafeMutableBufferPointer { y in
                            matrix.apply(rows: x, steps: steps, into: y.baseAddress!, accumulate: accumulate)
                        }
                        Kernels.matmulNaive(x, reference, &slow, m: steps, n: rows, k: cols, transposeB: true, accumulate: accumulate)
                        assertClose(fast, slow, relL2: 1e-6, "\(name) apply(rows:) \(rows)×\(cols) steps \(steps) accumulate=\(accumulate)")
                    }
                }
            }
            // Row views share storage and compute the same rows.
            for view in [f32.rows(1..<4), bf16.rows(1..<4)] {
                let x = randomArray(cols, seed: 10)
                var fast = [Float](repeating: 0, count: 3), full = [Float](repeating: 0, count: rows)
                view.apply(x, into: &fast)
                (view.formatName == "F32" ? f32 : bf16).apply(x, into: &full)
                assertClose(fast, Array(full[1..<4]), relL2: 1e-6, "rows(1..<4) view of \(rows)×\(cols)")
            }
        }
    }

    func testDotAndAxpyMatchNaive() {
        for count in [0, 1, 7, 8, 9, 15, 16, 17, 100, 1001, 4099] {
            let a = randomArray(count, seed: 11), b = randomArray(count, seed: 12)
            let fast = Kernels.dot(a, b, count: count), slow = Kernels.dotNaive(a, b, count: count)
            let norm = zip(a, b).reduce(0.0) { $0 + abs(Double($1.0) * Double($1.1)) }
            // A sum of products: compare against the size of the terms, not the (cancelling) result.
            XCTAssertLessThanOrEqual(abs(Double(fast) - Double(slow)), 1e-6 * max(norm, 1e-30), "dot \(count)")

            var y = b
            Kernels.axpy(-0.75, a, &y, count: count)
            let expected = (0..<count).map { Float(Double(b[$0]) - 0.75 * Double(a[$0])) }
            assertClose(y, expected, relL2: 1e-6, "axpy \(count)")
        }
        XCTAssertEqual(Kernels.dotNaive([1, 2, 3], [4, 5, 6], count: 3), 32)
    }

    func testTensorMatmulConvenience() {
        let a = Tensor(shape: [3, 4], data: randomArray(12, seed: 13))
        let b = Tensor(shape: [4, 5], data: randomArray(20, seed: 14))
        var expected = [Float](repeating: 0, count: 15)
        Kernels.matmulNaive(a.data, b.data, &expected, m: 3, n: 5, k: 4)
        assertClose(a.matmul(b).data, expected, relL2: 1e-6, "Tensor.matmul")
        assertClose(a.matmul(b.transposed(), transposeOther: true).data, expected, relL2: 1e-6, "Tensor.matmul transposed")
        XCTAssertEqual(a.matmul(b).shape, [3, 5])
    }

    func testSetThreads() {
        Kernels.setThreads(1)
        XCTAssertEqual(Kernels.threads, 1)
        Kernels.setThreads(0)
        XCTAssertEqual(Kernels.threads, 1, "a thread count below 1 is clamped")
        Kernels.setThreads(2)
    }

    /// A bf16 matrix in a real memory-mapped file, as a checkpoint provides it.
    private func bf16Matrix(_ bits: [UInt16], rows: Int, cols: Int) -> WeightMatrix {
        var w = SafetensorsWriter()
        w.add("w", raw: bits.withUnsafeBytes { Data($0) }, dtype: .bf16, shape: [rows, cols])
        let path = temporaryPath("bf16-\(rows)x\(cols).safetensors")
        do {
            try w.write(to: path)
            let store = try WeightStore(path: path)
            let m = store.matrix("w", shape: [rows, cols])
            try store.finish()
            guard case .bf16 = m.storage else { XCTFail("bf16 stored matrix was widened"); return m }
            return m
        } catch {
            XCTFail("\(error)")
            return WeightMatrix(Tensor(zeros: [rows, cols]))
        }
    }
}
