import DuplexCore
import XCTest

final class RandomWeightsTests: XCTestCase {
    func testDeterministicPerNameAndSeedRegardlessOfOrder() {
        let a = WeightStore(randomSeed: 7), b = WeightStore(randomSeed: 7), c = WeightStore(randomSeed: 8)
        let x1 = a.tensor("layers.0.linear1.weight", shape: [64, 32])
        _ = b.tensor("something.else.weight", shape: [3, 3])
        let x2 = b.tensor("layers.0.linear1.weight", shape: [64, 32])
        XCTAssertEqual(x1, x2, "same seed and name → same values, whatever was asked before")
        XCTAssertNotEqual(x1, c.tensor("layers.0.linear1.weight", shape: [64, 32]), "another seed → other values")
        XCTAssertNotEqual(x1, a.tensor("layers.1.linear1.weight", shape: [64, 32]), "another name → other values")
        XCTAssertNoThrow(try a.finish())
    }

    func testSpreadFollowsWhatTheNameSays() {
        let store = WeightStore(randomSeed: 1)
        func stats(_ t: Tensor) -> (mean: Double, std: Double) {
            let m = t.data.reduce(0.0) { $0 + Double($1) } / Double(t.count)
            let v = t.data.reduce(0.0) { $0 + (Double($1) - m) * (Double($1) - m) } / Double(t.count)
            return (m, v.squareRoot())
        }
        let w = stats(store.tensor("transformer.layers.0.gating.linear_in.weight", shape: [512, 256]))
        XCTAssertEqual(w.mean, 0, accuracy: 0.01)
        XCTAssertEqual(w.std, 1 / 16, accuracy: 0.003, "variance 1/fan-in")
        let alpha = stats(store.tensor("out_norm.alpha", shape: [1, 1, 4096]))
        XCTAssertEqual(alpha.mean, 1, accuracy: 0.01)
        XCTAssertEqual(stats(store.tensor("quantizer.rvq_first.vq.layers.0._codebook.cluster_usage", shape: [2048])).std, 0)
        let emb = stats(store.tensor("emb.3.weight", shape: [2049, 64]))
        XCTAssertEqual(emb.std, 1, accuracy: 0.03)
        let conv = stats(store.tensor("encoder.model.3.conv.conv.weight", shape: [128, 64, 8]))
        XCTAssertEqual(conv.std, 1 / Double(512).squareRoot(), accuracy: 0.003, "conv fan-in is in·kernel")
    }

    func testBF16MatricesStayBF16AndMatchTheirF32Values() {
        let bf = WeightStore(randomSeed: 3, matrixType: .bf16).matrix("text_linear.weight", shape: [40, 24])
        guard case .bf16 = bf.storage else { return XCTFail("expected bf16 storage") }
        let f32 = WeightStore(randomSeed: 3).tensor("text_linear.weight", shape: [40, 24])
        let widened = bf.toTensor()
        for (a, b) in zip(widened.data, f32.data) { XCTAssertEqual(a, b, accuracy: abs(b) / 128 + 1e-9) }
        XCTAssertTrue(WeightStore(randomSeed: 3).contains("decoder.model.0.conv.conv.weight"))
        XCTAssertFalse(WeightStore(randomSeed: 3).contains("decoder.model.0.conv.conv.weight_g"))
    }
}
