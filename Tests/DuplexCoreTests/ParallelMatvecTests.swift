import DuplexCore
import XCTest

/// The pooled matrix×vector kernels against the naive references, on shapes that exercise every
/// tail (odd columns, fewer rows than threads, sizes both sides of the parallel threshold) and at
/// 1, 2 and 3 threads (more threads than this machine's pool has are clamped).
final class ParallelMatvecTests: XCTestCase {
    override func tearDown() { Kernels.setThreads(2) }

    private let shapes = [(1, 1), (3, 2), (7, 13), (33, 65), (100, 257), (5, 4096), (257, 96), (1031, 129), (64, 1023)]

    func testBF16MatchesNaive() {
        for threads in [1, 2, 3] {
            Kernels.setThreads(threads)
            for (rows, cols) in shapes {
                let w = randomArray(rows * cols, seed: 11).map(HalfPrecision.floatToBF16)
                let x = randomArray(cols, seed: 12)
                var fast = randomArray(rows, seed: 13), slow = fast
                ParallelMatvec.bf16(w, x, &fast, rows: rows, cols: cols)
                Kernels.matvecBF16Naive(w, x, &slow, rows: rows, cols: cols)
                assertClose(fast, slow, relL2: 1e-6, "bf16 \(rows)×\(cols) threads \(threads)")

                // Accumulating form adds onto y.
                var accFast = randomArray(rows, seed: 14), accSlow = accFast
                ParallelMatvec.bf16(w, x, &accFast, rows: rows, cols: cols, accumulate: true)
                Kernels.matvecBF16Naive(w, x, &accSlow, rows: rows, cols: cols, accumulate: true)
                assertClose(accFast, accSlow, relL2: 1e-6, "bf16 accumulate \(rows)×\(cols) threads \(threads)")
            }
        }
    }

    func testF32MatchesNaive() {
        for threads in [1, 2, 3] {
            Kernels.setThreads(threads)
            for (rows, cols) in shapes {
                let w = randomArray(rows * cols, seed: 21), x = randomArray(cols, seed: 22)
                var fast = randomArray(rows, seed: 23), slow = fast
                ParallelMatvec.f32(w, x, &fast, rows: rows, cols: cols)
                Kernels.matvecNaive(w, x, &slow, rows: rows, cols: cols)
                assertClose(fast, slow, relL2: 1e-6, "f32 \(rows)×\(cols) threads \(threads)")
                var accFast = randomArray(rows, seed: 24), accSlow = accFast
                ParallelMatvec.f32(w, x, &accFast, rows: rows, cols: cols, accumulate: true)
                Kernels.matvecNaive(w, x, &accSlow, rows: rows, cols: cols, accumulate: true)
                assertClose(accFast, accSlow, relL2: 1e-6, "f32 accumulate \(rows)×\(cols) threads \(threads)")
            }
        }
    }

    /// A matrix large enough to be split over the pool, run many times back to back: every part
    /// must be written each time (a lost or doubled part shows up as a wrong row).
    func testRepeatedPooledRunsAreExact() {
        Kernels.setThreads(2)
        let rows = 515, cols = 300   // 309 KB in bf16: above the parallel threshold
        let w = randomArray(rows * cols, seed: 31).map(HalfPrecision.floatToBF16)
        var reference = [Float](repeating: 0, count: rows)
        Kernels.matvecBF16(w, randomArray(cols, seed: 32), &reference, rows: rows, cols: cols)
        let x = randomArray(cols, seed: 32)
        for i in 0..<100 {
            var y = [Float](repeating: .nan, count: rows)
            ParallelMatvec.bf16(w, x, &y, rows: rows, cols: cols)
            if y != reference {
                XCTFail("run \(i): pooled result differs from the single-threaded one")
                return
            }
        }
    }

    /// Two threads submitting at once: one gets the pool, the other runs inline; both right.
    func testConcurrentCallersBothCorrect() {
        Kernels.setThreads(2)
        let rows = 400, cols = 512
        let w = randomArray(rows * cols, seed: 41).map(HalfPrecision.floatToBF16)
        let x = randomArray(cols, seed: 42)
        var reference = [Float](repeating: 0, count: rows)
        Kernels.matvecBF16Naive(w, x, &reference, rows: rows, cols: cols)
        let expected = reference
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<20 {
                var y = [Float](repeating: 0, count: rows)
                ParallelMatvec.bf16(w, x, &y, rows: rows, cols: cols)
                XCTAssertLessThan(relativeL2(y, expected), 1e-6)
            }
        }
    }
}
