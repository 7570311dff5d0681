import DuplexCore
import XCTest

/// Elementwise ops and norms against the values Kyutai's reference modules produce.
final class OpsReferenceTests: XCTestCase {
    func testActivationsAndNormsMatchReference() throws {
        let f = try loadFixture("ops")
        let x = try f.floatTensor("input")
        let (rows, cols) = (x.shape[0], x.shape[1])

        func elementwise(_ op: (UnsafeMutablePointer<Float>, Int) -> Void) -> [Float] {
            var y = x.data
            y.withUnsafeMutableBufferPointer { op($0.baseAddress!, $0.count) }
            return y
        }
        assertClose(elementwise { Activations.gelu($0, count: $1) }, try f.floatTensor("gelu").data, relL2: 1e-6, "gelu")
        assertClose(elementwise { Activations.silu($0, count: $1) }, try f.floatTensor("silu").data, relL2: 1e-6, "silu")
        assertClose(elementwise { Activations.elu($0, count: $1) }, try f.floatTensor("elu").data, relL2: 1e-6, "elu")

        var soft = x.data
        soft.withUnsafeMutableBufferPointer { p in
            for r in 0..<rows { Activations.softmax(p.baseAddress! + r * cols, count: cols) }
        }
        assertClose(soft, try f.floatTensor("softmax").data, relL2: 1e-6, "softmax")

        let rmsEps = Float(f.metadata["rms_eps"]!)!
        let alpha = try f.floatTensor("rms_alpha").data
        var rms = [Float](repeating: 0, count: x.count)
        x.data.withUnsafeBufferPointer { xp in
            rms.withUnsafeMutableBufferPointer { yp in
                for r in 0..<rows {
                    Norms.rmsNorm(xp.baseAddress! + r * cols, alpha: alpha, eps: rmsEps, output: yp.baseAddress! + r * cols, count: cols)
                }
            }
        }
        assertClose(rms, try f.floatTensor("rms_norm").data, relL2: 1e-6, "rms_norm")

        let lnEps = Float(f.metadata["ln_eps"]!)!
        let w = try f.floatTensor("ln_weight").data, b = try f.floatTensor("ln_bias").data
        var ln = [Float](repeating: 0, count: x.count)
        x.data.withUnsafeBufferPointer { xp in
            ln.withUnsafeMutableBufferPointer { yp in
                for r in 0..<rows {
                    Norms.layerNorm(xp.baseAddress! + r * cols, weight: w, bias: b, eps: lnEps, output: yp.baseAddress! + r * cols, count: cols)
                }
            }
        }
        assertClose(ln, try f.floatTensor("layer_norm").data, relL2: 1e-6, "layer_norm")
    }
}
