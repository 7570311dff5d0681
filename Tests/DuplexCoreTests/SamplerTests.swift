import DuplexCore
import Foundation
import XCTest

/// Temperature + top-k sampling checked by its statistics (never by hard-coded draws): the
/// empirical frequencies of many seeded draws must match softmax(logits / T) over the top k.
final class SamplerTests: XCTestCase {
    private func expected(_ logits: [Float], temperature: Float, topK: Int) -> [Double] {
        let order = logits.indices.sorted { logits[$0] > logits[$1] }
        let kept = Set(order.prefix(topK <= 0 ? logits.count : topK))
        let m = Double(logits.max()!)
        var p = logits.indices.map { kept.contains($0) ? exp((Double(logits[$0]) - m) / Double(temperature)) : 0 }
        let total = p.reduce(0, +)
        for i in p.indices { p[i] /= total }
        return p
    }

    private func frequencies(_ logits: [Float], temperature: Float, topK: Int, draws: Int, seed: UInt64) -> [Double] {
        var sampler = Sampler(seed: seed)
        var counts = [Int](repeating: 0, count: logits.count)
        logits.withUnsafeBufferPointer { l in
            for _ in 0..<draws {
                counts[sampler.sample(l.baseAddress!, count: logits.count, temperature: temperature, topK: topK)!] += 1
            }
        }
        return counts.map { Double($0) / Double(draws) }
    }

    /// Every frequency within 5 standard errors of its probability; tokens outside the top k never drawn.
    private func check(_ logits: [Float], temperature: Float, topK: Int, draws: Int = 20000) {
        let p = expected(logits, temperature: temperature, topK: topK)
        let f = frequencies(logits, temperature: temperature, topK: topK, draws: draws, seed: 99)
        for i in p.indices {
            if p[i] == 0 {
                XCTAssertEqual(f[i], 0, "token \(i) is outside the top \(topK) but was drawn")
            } else {
                let sigma = (p[i] * (1 - p[i]) / Double(draws)).squareRoot()
                XCTAssertLessThan(abs(f[i] - p[i]), 5 * sigma + 1e-4,
                                  "token \(i): frequency \(f[i]) vs probability \(p[i]) (T \(temperature), k \(topK))")
            }
        }
    }

    func testTopKDistributionMatchesSoftmax() {
        let logits = randomArray(50, seed: 5, scale: 1.5)
        check(logits, temperature: 0.8, topK: 5)
        check(logits, temperature: 0.7, topK: 25)
        check(logits, temperature: 2.0, topK: 10)
    }

    func testFullVocabularyWhenTopKCoversIt() {
        let logits = randomArray(20, seed: 6)
        check(logits, temperature: 1.0, topK: 0)
        check(logits, temperature: 0.5, topK: 20)
        check(logits, temperature: 0.5, topK: 400)
    }

    func testLargerKThanPreallocatedStillRight() {
        let logits = randomArray(400, seed: 7, scale: 2)
        check(logits, temperature: 0.8, topK: 300, draws: 4000)
    }

    func testTemperatureZeroIsArgmax() {
        var logits = randomArray(100, seed: 8)
        logits[37] = 10
        logits[60] = 10   // a tie: the first index wins, as torch.argmax
        var sampler = Sampler(seed: 1)
        for topK in [0, 1, 25] {
            XCTAssertEqual(sampler.sample(logits, count: logits.count, temperature: 0, topK: topK), 37)
        }
        XCTAssertEqual(Sampler.argmax(logits, count: logits.count), 37)
    }

    func testSeededAndReproducible() {
        let logits = randomArray(300, seed: 9)
        func draws(_ seed: UInt64) -> [Int] {
            var s = Sampler(seed: seed)
            return (0..<200).map { _ in s.sample(logits, count: logits.count, temperature: 1, topK: 100)! }
        }
        XCTAssertEqual(draws(3), draws(3))
        XCTAssertNotEqual(draws(3), draws(4))
    }

    func testNonFiniteLogitsAreRefused() {
        var sampler = Sampler(seed: 1)
        for bad in [Float.nan, .infinity, -.infinity] {
            var logits = randomArray(10, seed: 10)
            logits[4] = bad
            XCTAssertNil(sampler.sample(logits, count: 10, temperature: 0, topK: 0), "\(bad) greedy")
            XCTAssertNil(sampler.sample(logits, count: 10, temperature: 0.8, topK: 5), "\(bad) sampled")
        }
    }
}
