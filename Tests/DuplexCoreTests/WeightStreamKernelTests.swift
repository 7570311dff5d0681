import DuplexCore
import XCTest

/// Kernels.matmulWeightStream (one or two rows against a weight matrix read once) against the
/// naive reference, on odd sizes that exercise the vector body and the scalar tail.
final class WeightStreamKernelTests: XCTestCase {
    func testMatchesNaiveOnOddShapes() {
        for (m, n, k) in [(1, 7, 3), (2, 5, 16), (2, 13, 37), (1, 64, 512), (2, 33, 1029), (3, 9, 21), (2, 1, 1)] {
            let x = randomArray(m * k, seed: UInt64(m * 100 + k))
            let w = randomArray(n * k, seed: UInt64(n * 7 + k))
            let start = randomArray(m * n, seed: 99)
            for accumulate in [false, true] {
                var expected = start, got = start
                expected.withUnsafeMutableBufferPointer {
                    Kernels.matmulNaive(x, w, $0.baseAddress!, m: m, n: n, k: k, transposeB: true, accumulate: accumulate)
                }
                got.withUnsafeMutableBufferPointer {
                    Kernels.matmulWeightStream(x, w, $0.baseAddress!, m: m, n: n, k: k, accumulate: accumulate)
                }
                assertClose(got, expected, relL2: 1e-6, "m \(m) n \(n) k \(k) accumulate \(accumulate)")
            }
        }
    }
}
