import DuplexCore
import XCTest

final class KernelTests: XCTestCase {
    override func setUp() { Kernels.setThreads(2) }

    func testMatmulMatchesNaiveOnOddShapes() {
        for (m, n, k) in [(1, 1, 1), (3, 5, 7), (17, 33, 65), (64, 1, 129), (1, 100, 31), (128, 96, 257)] {
            for transposeB in [false, true] {
                let a = randomArray(m * k, seed: 1), b = randomArray(k * n, seed: 2)
                var fast = [Float](repeating: 0, count: m * n), slow = fast
                Kernels.matmul(a, b, &fast, m: m, n: n, k: k, transposeB: transposeB)
                Kernels.matmulNaive(a, b, &slow, m: m, n: n, k: k, transposeB: transposeB)
                assertClose(fast, slow, relL2: 1e-6, "matmul \(m)×\(k)×\(n) transposeB=\(transposeB)")
            }
        }
    }

    func testMatvecF32AndBF16MatchNaive() {
        for (rows, cols) in [(1, 1), (7, 13), (33, 65), (100, 257), (5, 4096)] {
            let w = randomArray(rows * cols, seed: 3), x = randomArray(cols, seed: 4)
            var fast = [Float](repeating: 0, count: rows), slow = fast
            Kernels.matvec(w, x, &fast, rows: rows, cols: cols)
            Kernels.matvecNaive(w, x, &slow, rows: rows, cols: cols)
            assertClose(fast, slow, relL2: 1e-6, "matvec \(rows)×\(cols)")

            let wb = w.map(HalfPrecision.floatToBF16)
            Kernels.matvecBF16(wb, x, &fast, rows: rows, cols: cols)
            Kernels.matvecBF16Naive(wb, x, &slow, rows: rows, cols: cols)
            assertClose(fast, slow, relL2: 1e-6, "matvecBF16 \(rows)×\(cols)")
        }
    }
}
