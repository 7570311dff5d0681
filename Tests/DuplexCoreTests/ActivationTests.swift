import DuplexCore
import XCTest

/// Activations and norms against their Double-precision naive references on odd sizes, at
/// ordinary and large magnitudes (softmax must not overflow). The fixture test in
/// OpsReferenceTests pins the same functions to PyTorch's.
final class ActivationTests: XCTestCase {
    private let sizes = [1, 2, 3, 17, 255, 1023, 4097]
    private let scales: [Float] = [0.01, 1, 8, 1000]

    private func elementwise(_ name: String, scales: [Float]? = nil,
                             _ fast: (UnsafeMutablePointer<Float>, Int) -> Void,
                             _ naive: (UnsafeMutablePointer<Float>, Int) -> Void) {
        for count in sizes {
            for scale in scales ?? self.scales {
                var a = randomArray(count, seed: UInt64(count), scale: scale), b = a
                a.withUnsafeMutableBufferPointer { fast($0.baseAddress!, count) }
                b.withUnsafeMutableBufferPointer { naive($0.baseAddress!, count) }
                assertClose(a, b, relL2: 1e-6, "\(name) count \(count) scale \(scale)")
            }
        }
    }

    func testGelu() { elementwise("gelu", { Activations.gelu($0, count: $1) }, { Activations.geluNaive($0, count: $1) }) }
    func testSilu() { elementwise("silu", { Activations.silu($0, count: $1) }, { Activations.siluNaive($0, count: $1) }) }
    func testElu() {
        elementwise("elu", { Activations.elu($0, count: $1) }, { Activations.eluNaive($0, count: $1) })
        elementwise("elu alpha 0.5", { Activations.elu($0, count: $1, alpha: 0.5) }, { Activations.eluNaive($0, count: $1, alpha: 0.5) })
    }

    func testSoftmax() {
        elementwise("softmax", scales: scales + [1e5, 1e30],
                    { Activations.softmax($0, count: $1) }, { Activations.softmaxNaive($0, count: $1) })
    }

    func testSoftmaxIsStableAndSumsToOne() {
        var huge: [Float] = [3e38, -3e38, 1e38]
        Activations.softmax(&huge, count: 3)
        XCTAssertEqual(huge, [1, 0, 0])
        for offset: Float in [0, 1e4, -1e4, 1e6] {
            var x: [Float] = [offset, offset - 1, offset - 2, offset - 1000]
            Activations.softmax(&x, count: x.count)
            XCTAssertTrue(x.allSatisfy(\.isFinite), "offset \(offset): \(x)")
            XCTAssertEqual(Double(x.reduce(0, +)), 1, accuracy: 1e-6, "offset \(offset)")
            XCTAssertGreaterThan(x[0], x[1])
        }
        // e⁰ : e⁻¹ : e⁻² : ~0, worked by hand.
        var x: [Float] = [5, 4, 3, -995]
        Activations.softmax(&x, count: 4)
        let z = 1 + exp(-1.0) + exp(-2.0)
        assertClose(x, [Float(1 / z), Float(exp(-1.0) / z), Float(exp(-2.0) / z), 0], relL2: 1e-6, "softmax by hand")
        var one: [Float] = [-3]
        Activations.softmax(&one, count: 1)
        XCTAssertEqual(one, [1])
    }

    func testRMSNorm() {
        for count in sizes {
            for scale in scales + [1e-3, 1e4] {
                let x = randomArray(count, seed: 20, scale: scale)
                let alpha = randomArray(count, seed: 21).map { $0 + 1 }
                var fast = [Float](repeating: 0, count: count), slow = fast
                Norms.rmsNorm(x, alpha: alpha, eps: 1e-8, output: &fast, count: count)
                Norms.rmsNormNaive(x, alpha: alpha, eps: 1e-8, output: &slow, count: count)
                assertClose(fast, slow, relL2: 1e-6, "rmsNorm count \(count) scale \(scale)")
            }
        }
        // x = [3, 4]: mean square 12.5, y = x / √12.5 with alpha 1 (by hand).
        var y = [Float](repeating: 0, count: 2)
        Norms.rmsNormNaive([3, 4], alpha: [1, 1], eps: 0, output: &y, count: 2)
        assertClose(y, [Float(3 / 12.5.squareRoot()), Float(4 / 12.5.squareRoot())], relL2: 1e-7, "rmsNorm by hand")
    }

    func testLayerNorm() {
        for count in sizes {
            for (scale, shift) in [(Float(1), Float(0)), (0.01, 0), (100, 0), (1, 1000), (1e4, -3e4)] {
                let x = randomArray(count, seed: 30, scale: scale).map { $0 + shift }
                let w = randomArray(count, seed: 31).map { $0 + 1 }, b = randomArray(count, seed: 32)
                var fast = [Float](repeating: 0, count: count), slow = fast
                Norms.layerNorm(x, weight: w, bias: b, eps: 1e-5, output: &fast, count: count)
                Norms.layerNormNaive(x, weight: w, bias: b, eps: 1e-5, output: &slow, count: count)
                assertClose(fast, slow, relL2: 1e-6, "layerNorm count \(count) scale \(scale) shift \(shift)")
            }
        }
        // x = [1, 3]: mean 2, variance 1, y = [-1, 1] · w + b (by hand, eps 0).
        var y = [Float](repeating: 0, count: 2)
        Norms.layerNormNaive([1, 3], weight: [2, 2], bias: [0.5, 0.5], eps: 0, output: &y, count: 2)
        XCTAssertEqual(y, [-1.5, 2.5])
    }
}
