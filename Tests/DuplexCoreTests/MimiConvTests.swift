import DuplexCore
import XCTest

/// The fast convs (im2col + sgemm, overlap-add) against their naive references on odd shapes,
/// streamed in uneven chunks; weight-norm folding; the vectorized ELU.
final class MimiConvTests: XCTestCase {
    private func store(_ tensors: [String: Tensor]) throws -> WeightStore {
        var w = SafetensorsWriter()
        for (name, t) in tensors.sorted(by: { $0.key < $1.key }) { w.add(name, t) }
        let path = temporaryPath("conv-\(UUID().uuidString).safetensors")
        try w.write(to: path)
        return try WeightStore(path: path)
    }

    private func random(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
        Tensor(shape: shape, data: randomArray(shape.reduce(1, *), seed: seed, scale: scale))
    }

    /// Splits `total` steps into chunks that are multiples of `stride`, of uneven sizes.
    private func chunks(_ total: Int, stride: Int, pattern: [Int]) -> [Int] {
        var out: [Int] = []
        var left = total
        var i = 0
        while left > 0 {
            let n = min(left, pattern[i % pattern.count] * stride)
            out.append(n)
            left -= n
            i += 1
        }
        return out
    }

    func testConv1dMatchesReferenceStreamed() throws {
        // (Cin, Cout, K, stride, dilation, padding, bias)
        let cases: [(Int, Int, Int, Int, Int, StreamingConv1d.Padding, Bool)] = [
            (1, 5, 7, 1, 1, .constant, true), (3, 7, 3, 1, 1, .constant, true), (5, 3, 1, 1, 1, .constant, true),
            (6, 9, 8, 4, 1, .constant, true), (7, 4, 10, 5, 1, .constant, false), (4, 6, 3, 1, 2, .constant, true),
            (5, 5, 4, 2, 1, .replicate, false), (3, 11, 5, 2, 1, .replicate, true), (2, 3, 4, 4, 1, .constant, true),
            (6, 1, 3, 1, 1, .constant, true), (700, 3, 4, 2, 1, .constant, true),
        ]
        for (n, (cin, cout, k, s, dil, pad, hasBias)) in cases.enumerated() {
            let w = random([cout, cin, k], seed: UInt64(10 + n), scale: 0.5)
            let b = random([cout], seed: UInt64(50 + n))
            var tensors = ["c.weight": w]
            if hasBias { tensors["c.bias"] = b }
            let st = try store(tensors)
            let conv = StreamingConv1d(store: st, prefix: "c.", inChannels: cin, outChannels: cout, kernel: k, stride: s,
                                       dilation: dil, bias: hasBias, padding: pad)
            try st.finish()
            let steps = 13 * s
            let x = randomArray(steps * cin, seed: UInt64(100 + n))
            let expected = StreamingConv1d.reference(x, steps: steps, weight: w, bias: hasBias ? b.data : nil, stride: s,
                                                     dilation: dil, padding: pad)
            for pattern in [[13], [1], [2, 3, 1], [5, 1]] {
                let sizes = chunks(steps, stride: s, pattern: pattern)
                var state = conv.makeState(maxSteps: sizes.max()!)
                var scratch = [Float](repeating: .nan, count: max(1, conv.scratchCount(maxSteps: sizes.max()!)))
                var y: [Float] = []
                var offset = 0
                for size in sizes {
                    var out = [Float](repeating: .nan, count: size / s * cout)
                    x.withUnsafeBufferPointer { xp in conv.input(state).update(from: xp.baseAddress! + offset * cin, count: size * cin) }
                    scratch.withUnsafeMutableBufferPointer { sp in
                        out.withUnsafeMutableBufferPointer { conv.step(steps: size, into: $0.baseAddress!, state: &state, scratch: sp.baseAddress!) }
                    }
                    y += out
                    offset += size
                }
                assertClose(y, expected, relL2: 1e-6, "conv case \(n) chunks \(pattern)")
            }
        }
    }

    func testConvTranspose1dMatchesReferenceStreamed() throws {
        // (Cin, Cout, K, stride, depthwise)
        let cases: [(Int, Int, Int, Int, Bool)] = [
            (6, 3, 16, 8, false), (5, 7, 10, 5, false), (4, 4, 4, 2, true), (3, 5, 3, 1, false), (9, 9, 6, 3, true), (2, 3, 7, 3, false),
        ]
        for (n, (cin, cout, k, s, depthwise)) in cases.enumerated() {
            let w = random(depthwise ? [cin, 1, k] : [cin, cout, k], seed: UInt64(200 + n), scale: 0.5)
            let b = random([cout], seed: UInt64(250 + n))
            let st = try store(["t.weight": w, "t.bias": b])
            let convtr = StreamingConvTranspose1d(store: st, prefix: "t.", inChannels: cin, outChannels: cout, kernel: k, stride: s,
                                                  depthwise: depthwise)
            try st.finish()
            let steps = 11
            let x = randomArray(steps * cin, seed: UInt64(300 + n))
            let expected = StreamingConvTranspose1d.reference(x, steps: steps, weight: w, bias: b.data, stride: s,
                                                              groups: depthwise ? cin : 1)
            for pattern in [[11], [1], [2, 3], [4, 1, 2]] {
                let sizes = chunks(steps, stride: 1, pattern: pattern)
                var state = convtr.makeState(maxSteps: sizes.max()!)
                var scratch = [Float](repeating: .nan, count: convtr.scratchCount(maxSteps: sizes.max()!))
                var y: [Float] = []
                var offset = 0
                for size in sizes {
                    var out = [Float](repeating: .nan, count: size * s * cout)
                    x.withUnsafeBufferPointer { xp in
                        scratch.withUnsafeMutableBufferPointer { sp in
                            out.withUnsafeMutableBufferPointer {
                                convtr.step(xp.baseAddress! + offset * cin, steps: size, into: $0.baseAddress!, state: &state, scratch: sp.baseAddress!)
                            }
                        }
                    }
                    y += out
                    offset += size
                }
                assertClose(y, expected, relL2: 1e-6, "convtr case \(n) chunks \(pattern)")
            }
        }
    }

    /// A checkpoint saved with weight norm (weight_g, weight_v) loads as g · v / ‖v‖, the norm over
    /// every axis but the first (output channels of a conv, input channels of a transposed conv).
    func testWeightNormIsFolded() throws {
        let v = random([4, 3, 5], seed: 7)
        let g = random([4, 1, 1], seed: 8)
        var folded = v
        for o in 0..<4 {
            let norm = (0..<15).map { Double(v.data[o * 15 + $0]) * Double(v.data[o * 15 + $0]) }.reduce(0, +).squareRoot()
            for i in 0..<15 { folded.data[o * 15 + i] = Float(Double(g.data[o]) * Double(v.data[o * 15 + i]) / norm) }
        }
        let st = try store(["c.weight_g": g, "c.weight_v": v, "c.bias": random([4], seed: 9),
                            "t.weight_g": g, "t.weight_v": v, "t.bias": random([3], seed: 10)])
        let conv = StreamingConv1d(store: st, prefix: "c.", inChannels: 3, outChannels: 4, kernel: 5)
        let convtr = StreamingConvTranspose1d(store: st, prefix: "t.", inChannels: 4, outChannels: 3, kernel: 5, stride: 2)
        try st.finish()

        let x = randomArray(6 * 3, seed: 11)
        var state = conv.makeState(maxSteps: 6)
        var scratch = [Float](repeating: 0, count: conv.scratchCount(maxSteps: 6))
        var y = [Float](repeating: 0, count: 6 * 4)
        x.withUnsafeBufferPointer { conv.input(state).update(from: $0.baseAddress!, count: 18) }
        scratch.withUnsafeMutableBufferPointer { s in
            y.withUnsafeMutableBufferPointer { conv.step(steps: 6, into: $0.baseAddress!, state: &state, scratch: s.baseAddress!) }
        }
        let bias = try st.files[0].floatTensor("c.bias").data
        assertClose(y, StreamingConv1d.reference(x, steps: 6, weight: folded, bias: bias, stride: 1), relL2: 1e-6, "folded conv")

        let xt = randomArray(5 * 4, seed: 12)
        var tstate = convtr.makeState(maxSteps: 5)
        var tscratch = [Float](repeating: 0, count: convtr.scratchCount(maxSteps: 5))
        var yt = [Float](repeating: 0, count: 10 * 3)
        xt.withUnsafeBufferPointer { xp in
            tscratch.withUnsafeMutableBufferPointer { s in
                yt.withUnsafeMutableBufferPointer { convtr.step(xp.baseAddress!, steps: 5, into: $0.baseAddress!, state: &tstate, scratch: s.baseAddress!) }
            }
        }
        let tbias = try st.files[0].floatTensor("t.bias").data
        assertClose(yt, StreamingConvTranspose1d.reference(xt, steps: 5, weight: folded, bias: tbias, stride: 2), relL2: 1e-6, "folded convtr")
    }

    func testVectorizedELUMatchesScalar() {
        var x = randomArray(1000 + 13, seed: 5, scale: 4)
        x += [0, -0.0, -1e-30, -1e-7, -87, -90, -200, 1e-7, 50]
        var expected = x
        var got = [Float](repeating: 0, count: x.count)
        expected.withUnsafeMutableBufferPointer { Activations.elu($0.baseAddress!, count: x.count) }
        x.withUnsafeBufferPointer { xp in got.withUnsafeMutableBufferPointer { Activations.eluVectorized(xp.baseAddress!, into: $0.baseAddress!, count: x.count) } }
        for i in x.indices {
            XCTAssertEqual(got[i], expected[i], accuracy: 2e-7 * max(1, abs(expected[i])), "elu(\(x[i]))")
        }
    }
}
