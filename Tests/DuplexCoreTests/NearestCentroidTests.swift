import DuplexCore
import XCTest

/// The quantizer's nearest-centroid search against exact float64 distances, in the regime that
/// breaks a float32 ½‖c‖² − x·c argmin: vectors far from the origin (norm ≈ 80, like Mimi's
/// residuals) with centroids close together.
final class NearestCentroidTests: XCTestCase {
    func testFindsTheTrueNearestCentroidFarFromTheOrigin() {
        let (bins, dim) = (2048, 256)
        let base = randomArray(dim, seed: 1, scale: 80 / Float(dim).squareRoot())
        let noise = randomArray(bins * dim, seed: 2, scale: 0.02)
        let centroids = (0..<(bins * dim)).map { base[$0 % dim] + noise[$0] }
        let half = NearestCentroid.halfNorms(centroids, bins: bins, dim: dim)
        let maxHalf = half.max()!
        var scores = [Float](repeating: 0, count: bins)
        var screeningWrong = 0
        for trial in 0..<80 {
            let x = zip(base, randomArray(dim, seed: UInt64(100 + trial), scale: 0.02)).map { $0 + $1 }
            let expected = NearestCentroid.reference(x, centroids: centroids, bins: bins, dim: dim)
            scores.withUnsafeMutableBufferPointer { Kernels.matmulWeightStream(x, centroids, $0.baseAddress!, m: 1, n: bins, k: dim) }
            let got = x.withUnsafeBufferPointer { xp in
                NearestCentroid.search(xp.baseAddress!, centroids: centroids, halfNorms: half, scores: scores, bins: bins, dim: dim,
                                       maxHalfNorm: maxHalf)
            }
            XCTAssertEqual(got, expected, "trial \(trial)")
            // The screening criterion alone, as a float32 argmin.
            var screened = 0
            for b in 1..<bins where half[b] - scores[b] < half[screened] - scores[screened] { screened = b }
            if screened != expected { screeningWrong += 1 }
        }
        // The case is hard enough that the float32 criterion alone gets some of them wrong.
        print("float32 screening alone wrong in \(screeningWrong) of 80")
        XCTAssertGreaterThan(screeningWrong, 0, "test vectors too easy to tell the search from a plain argmin")
    }

    func testExactTiesGoToTheLowestIndex() {
        let centroids: [Float] = [1, 0, 0, 1, 1, 0]  // rows 0 and 2 are the same point
        let half = NearestCentroid.halfNorms(centroids, bins: 3, dim: 2)
        let x: [Float] = [0.9, 0.1]
        var scores = [Float](repeating: 0, count: 3)
        scores.withUnsafeMutableBufferPointer { Kernels.matmulNaive(x, centroids, $0.baseAddress!, m: 1, n: 3, k: 2, transposeB: true) }
        let got = x.withUnsafeBufferPointer {
            NearestCentroid.search($0.baseAddress!, centroids: centroids, halfNorms: half, scores: scores, bins: 3, dim: 2, maxHalfNorm: 1)
        }
        XCTAssertEqual(got, 0)
        XCTAssertEqual(NearestCentroid.reference(x, centroids: centroids, bins: 3, dim: 2), 0)
    }
}
