import CQuant
import DuplexCore
import Foundation
import XCTest

/// CQuant, the C kernels for quantized weights: every instruction set this CPU runs against the
/// scalar reference, the reference against f64 arithmetic, and the formats against the tools that
/// write real files (gguf-py 0.19.0 and MLX 0.32.4, through the `quant` fixture).
///
/// Tolerance of fast vs reference: both compute each block's integer dot exactly and the same
/// per-block float products; only the order in which those terms are summed differs (SIMD lanes,
/// four rows per pass). Reordering n f32 additions moves a sum by at most about n·2⁻²⁴ of
/// Σ|terms| (4096 columns = 128 blocks ≈ 8·10⁻⁶), so each row is checked to 1e-5 of Σ|ŵ·x̂|, and
/// bit for bit on data where every partial sum is an exact f32 integer.
final class CQuantTests: XCTestCase {
    static let types: [cq_type] = [CQ_Q8_0, CQ_Q4_0, CQ_IQ4_NL, CQ_Q4_K, CQ_Q6_K, CQ_MLX_Q4, CQ_MLX_Q8]

    override func tearDown() {
        _ = cq_set_isa(nil)
        super.tearDown()
    }

    // MARK: Kernels

    func testFastKernelsMatchReferenceOnEveryISA() throws {
        var g = SplitMix64(seed: 11)
        for type in Self.types {
            for group in groups(type) {
                for rows in [1, 3, 5, 17] {
                    for cols in columns(type, group: group) {
                        let m = QuantMatrix.random(type, rows: rows, cols: cols, group: group, exact: false, &g)
                        let x = (0..<cols).map { _ in g.nextGaussian() }
                        try compareEveryISA(m, x, exact: false)
                    }
                }
            }
        }
    }

    func testFastKernelsAreBitEqualWhereEverySumIsExact() throws {
        var g = SplitMix64(seed: 12)
        for type in Self.types {
            for group in groups(type) {
                for (rows, cols) in [(5, 256), (17, 4096)] where cols % max(group, 1) == 0 {
                    let m = QuantMatrix.random(type, rows: rows, cols: cols, group: group, exact: true, &g)
                    try compareEveryISA(m, exactActivation(cols, block: cq_block_values(type) == 256 ? 256 : 32, &g), exact: true)
                }
            }
        }
    }

    func testReferenceMatchesDequantizedProductInDouble() {
        var g = SplitMix64(seed: 13)
        for type in Self.types {
            for group in groups(type) {
                let cols = 1024, rows = 6
                let m = QuantMatrix.random(type, rows: rows, cols: cols, group: group, exact: false, &g)
                let x = (0..<cols).map { _ in g.nextGaussian() }
                let act = Activation(type, x)
                let xh = act.dequantized()
                let y = m.matvec(act, reference: true)
                for r in 0..<rows {
                    let w = m.row(r)
                    var sum = 0.0, mag = 0.0
                    for c in 0..<cols {
                        sum += Double(w[c]) * Double(xh[c])
                        mag += abs(Double(w[c]) * Double(xh[c]))
                    }
                    XCTAssertLessThanOrEqual(abs(Double(y[r]) - sum), 1e-5 * mag,
                                             "\(name(type)) g\(group) row \(r): reference \(y[r]) vs f64 \(sum)")
                }
            }
        }
    }

    func testActivationIsTheSameOnEveryISAAndRoundsLikeGGML() {
        var g = SplitMix64(seed: 14)
        for type in Self.types {
            let cols = 1024
            var x = (0..<cols).map { _ in g.nextGaussian() * 3 }
            x[0] = 127  // block 0's absmax: d = 1, so 2.5 is an exact tie
            x[1] = 2.5
            cq_set_isa("scalar")
            let reference = Activation(type, x)
            for isa in isas() {
                XCTAssertEqual(cq_set_isa(isa), 0)
                XCTAssertEqual(Activation(type, x).bytes, reference.bytes, "\(name(type)) activation on \(isa)")
            }
            _ = cq_set_isa(nil)
            // x̂ = d·q with d = absmax/127 and q = roundf(x/d): within half a step of x, ties away
            // from zero (block 0 has absmax 127, so d = 1 and x = 2.5 becomes exactly 3).
            let xh = reference.dequantized()
            let block = cq_block_values(type) == 256 ? 256 : 32
            for b in 0..<(cols / block) {
                let amax = x[(b * block)..<((b + 1) * block)].map(abs).max()!
                for c in (b * block)..<((b + 1) * block) {
                    XCTAssertLessThanOrEqual(abs(xh[c] - x[c]), 0.5 * amax / 127 * 1.0001, "\(name(type)) x̂[\(c)]")
                }
            }
            XCTAssertEqual(xh[1], 3, "\(name(type)): roundf rounds 2.5 away from zero")
        }
    }

    func testNonFiniteActivationPoisonsItsBlock() {
        let cols = 256
        for type in Self.types {
            var x = [Float](repeating: 0.25, count: cols)
            x[3] = .nan
            let act = Activation(type, x)
            var g = SplitMix64(seed: 15)
            let m = QuantMatrix.random(type, rows: 2, cols: cols, group: groups(type)[0], exact: false, &g)
            for reference in [true, false] {
                let y = m.matvec(act, reference: reference)
                XCTAssertTrue(y.allSatisfy { $0.isNaN }, "\(name(type)): a NaN input gives NaN, not a finite number")
            }
        }
    }

    func testConcurrentCallsAgreeWithOneThread() {
        var g = SplitMix64(seed: 16)
        let rows = 64, cols = 2048
        let m = QuantMatrix.random(CQ_Q4_K, rows: rows, cols: cols, group: 0, exact: false, &g)
        let act = Activation(CQ_Q4_K, (0..<cols).map { _ in g.nextGaussian() })
        let expected = m.matvec(act, reference: false)
        let y = UnsafeMutableBufferPointer<Float>.allocate(capacity: rows)
        let w = UnsafeMutablePointer<cq_matrix>.allocate(capacity: 1)
        w.initialize(to: m.matrix)
        defer {
            y.deallocate()
            w.deallocate()
        }
        // Each iteration writes its own eight rows; the matrix and activation are only read.
        let shared = SharedPointers(w: w, act: act.pointer, y: y.baseAddress!)
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            cq_matvec_rows(shared.w, shared.act, shared.y, Int32(i * 8), Int32(i * 8 + 8), 0)
        }
        XCTAssertEqual(Array(y), expected)
    }

    // MARK: Formats against gguf-py and MLX

    func testDequantizationMatchesGGUFPyBitForBit() throws {
        let f = try loadFixture("quant")
        for (key, type) in [("q8_0", CQ_Q8_0), ("q4_0", CQ_Q4_0), ("iq4_nl", CQ_IQ4_NL), ("q4_k", CQ_Q4_K), ("q6_k", CQ_Q6_K)] {
            let blocks = try fixtureBytes(f, "\(key)_blocks")
            let expected = try fixtureFloats(f, "\(key)_dequantized")
            let rows = 4, cols = expected.count / 4
            let m = QuantMatrix(type: type, rows: rows, cols: cols, group: 0, data: blocks)
            for r in 0..<rows {
                XCTAssertEqual(m.row(r).map(\.bitPattern), expected[(r * cols)..<((r + 1) * cols)].map(\.bitPattern),
                               "\(key) row \(r) vs gguf-py")
            }
        }
    }

    func testQuantizationMatchesGGUFPyBitForBit() throws {
        let f = try loadFixture("quant")
        let src = try fixtureFloats(f, "src")
        let rows = 8, cols = src.count / 8
        // gguf-py 0.19.0 quantizes only these two of CQuant's types; IQ4_NL and the K types are
        // compared byte for byte with ggml's own C by tools/cquant_vs_ggml.sh.
        for (key, type) in [("q8_0", CQ_Q8_0), ("q4_0", CQ_Q4_0)] {
            let expected = try fixtureBytes(f, "\(key)_quantized")
            var out = [UInt8](repeating: 0, count: rows * cq_row_bytes(type, Int32(cols)))
            XCTAssertEqual(cq_quantize_rows(type, src, Int32(rows), Int32(cols), &out), 0)
            XCTAssertEqual(out, expected, "\(key) vs gguf-py")
        }
    }

    func testMLXMatchesMLX() throws {
        let f = try loadFixture("quant")
        let src = try f.floatTensor("mlx_src").data  // bf16 values, widened exactly
        let rows = 8, cols = src.count / 8
        for bits in [4, 8] {
            let type = bits == 4 ? CQ_MLX_Q4 : CQ_MLX_Q8
            let group = try Int(f.intTensor("mlx_q\(bits)_group").values[0])
            let codes = try fixtureBytes(f, "mlx_q\(bits)_weight")
            let scales = try fixtureHalves(f, "mlx_q\(bits)_scales"), biases = try fixtureHalves(f, "mlx_q\(bits)_biases")
            let expected = try fixtureFloats(f, "mlx_q\(bits)_dequantized")
            // Dequantization: mx.dequantize with f32-cast scales and biases, bit for bit.
            let m = QuantMatrix(type: type, rows: rows, cols: cols, group: group, data: codes, scales: scales, biases: biases)
            for r in 0..<rows {
                XCTAssertEqual(m.row(r).map(\.bitPattern), expected[(r * cols)..<((r + 1) * cols)].map(\.bitPattern),
                               "MLX q\(bits) row \(r) vs mx.dequantize")
            }
            // Quantization: mx.quantize's codes, scales and biases, bit for bit.
            var c = [UInt8](repeating: 0, count: codes.count)
            var s = [UInt16](repeating: 0, count: scales.count), b = [UInt16](repeating: 0, count: biases.count)
            XCTAssertEqual(cq_quantize_rows_mlx(Int32(bits), Int32(group), src, Int32(rows), Int32(cols), &c, &s, &b), 0)
            XCTAssertEqual(c, codes, "MLX q\(bits) codes vs mx.quantize")
            XCTAssertEqual(s, scales, "MLX q\(bits) scales vs mx.quantize")
            XCTAssertEqual(b, biases, "MLX q\(bits) biases vs mx.quantize")
        }
    }

    // MARK: Quantizers

    /// Each format's worst case: Q8_0 half a step plus the f16 rounding of d (127·2⁻¹¹ steps);
    /// Q4_0 one step (the side opposite the extreme has 7 levels for up to 8 steps); IQ4_NL an
    /// eighth of the block's absmax (the book's widest gap is 24 steps, and its positive end,
    /// 113, is 14 steps short of 127); Q4_K and Q6_K one step of the super-block's range at 4 and
    /// 6 bits (sub-scales and mins are themselves quantized to 6 bits of the super-block's).
    func testQuantizeDequantizeStaysWithinTheFormatsStep() {
        var g = SplitMix64(seed: 17)
        let rows = 16, cols = 1024
        var src = [Float](repeating: 0, count: rows * cols)
        for i in src.indices {
            var v = g.nextGaussian() * Float(1 + (i / cols) % 5)
            if i % 5 == 0 { v *= 4 }
            if i % 97 == 0 { v *= 10 }
            src[i] = v
        }
        for i in 0..<64 { src[3 * cols + i] = 0 }  // zero blocks
        for type in [CQ_Q8_0, CQ_Q4_0, CQ_IQ4_NL, CQ_Q4_K, CQ_Q6_K] {
            var data = [UInt8](repeating: 0, count: rows * cq_row_bytes(type, Int32(cols)))
            XCTAssertEqual(cq_quantize_rows(type, src, Int32(rows), Int32(cols), &data), 0)
            let m = QuantMatrix(type: type, rows: rows, cols: cols, group: 0, data: data)
            let block = Int(cq_block_values(type))
            for r in 0..<rows {
                let back = m.row(r)
                let rowBytes = cq_row_bytes(type, Int32(cols)), blockBytes = rowBytes / (cols / block)
                for c in 0..<cols {
                    let x = src[r * cols + c], e = abs(back[c] - x)
                    let b = c / block
                    let amax = src[(r * cols + b * block)..<(r * cols + (b + 1) * block)].map(abs).max()!
                    let d = abs(f16(data, r * rowBytes + b * blockBytes))
                    let bound: Float
                    switch type {
                    case CQ_Q8_0: bound = 0.57 * d
                    case CQ_Q4_0: bound = 1.01 * d
                    case CQ_IQ4_NL: bound = amax / 8
                    case CQ_Q4_K: bound = 2 * amax / 15
                    default: bound = 2 * amax / 63
                    }
                    if !(e <= bound) {
                        XCTFail("\(name(type)) [\(r), \(c)]: \(back[c]) for \(x), error \(e) > \(bound)")
                        return
                    }
                }
            }
        }
        // MLX: round to nearest on the group's grid, but the grid is nudged so that 0 lies a whole
        // number of steps from the edge (s' = edge/rint(edge/s), the edge being the extreme of
        // larger magnitude, so |edge/s| ≥ N/2 for N = 2^bits − 1 steps): it then falls short of
        // the far extreme by N·|s − s'| ≤ |s| ≤ 1.08·|s'| — one step, not half. The codes come
        // from the f32 scale and the stored scale and bias are bf16 (2⁻⁹ relative): q·2⁻⁹ steps
        // and |bias|·2⁻⁹ more.
        for (bits, group) in [(4, 32), (8, 64), (4, 128)] {
            var codes = [UInt8](repeating: 0, count: rows * cols * bits / 8)
            var s = [UInt16](repeating: 0, count: rows * cols / group), b = s
            XCTAssertEqual(cq_quantize_rows_mlx(Int32(bits), Int32(group), src, Int32(rows), Int32(cols), &codes, &s, &b), 0)
            let m = QuantMatrix(type: bits == 4 ? CQ_MLX_Q4 : CQ_MLX_Q8, rows: rows, cols: cols, group: group, data: codes,
                                scales: s, biases: b)
            for r in 0..<rows {
                let back = m.row(r)
                for c in 0..<cols {
                    let scale = abs(bf16(s[(r * cols + c) / group])), bias = abs(bf16(b[(r * cols + c) / group]))
                    let bound = (1.08 + Float((1 << bits) - 1) / 256) * scale + bias / 256
                    XCTAssertLessThanOrEqual(abs(back[c] - src[r * cols + c]), bound, "MLX q\(bits) g\(group) [\(r), \(c)]")
                }
            }
        }
    }

    func testNonFiniteInputIsRefusedAndNothingWritten() {
        let rows = 3, cols = 256
        for type in [CQ_Q8_0, CQ_Q4_0, CQ_IQ4_NL, CQ_Q4_K, CQ_Q6_K] {
            for bad in [Float.nan, .infinity, -.infinity] {
                var src = [Float](repeating: 1, count: rows * cols)
                src[2 * cols + 7] = bad
                var out = [UInt8](repeating: 0xAB, count: rows * cq_row_bytes(type, Int32(cols)))
                XCTAssertEqual(cq_quantize_rows(type, src, Int32(rows), Int32(cols), &out), -2, "\(name(type)) \(bad)")
                XCTAssertTrue(out.allSatisfy { $0 == 0xAB }, "\(name(type)): nothing written")
            }
        }
        var src = [Float](repeating: 1, count: 128)
        src[100] = .nan
        var codes = [UInt8](repeating: 0, count: 64), s = [UInt16](repeating: 0, count: 4), b = s
        XCTAssertEqual(cq_quantize_rows_mlx(4, 32, src, 1, 128, &codes, &s, &b), -2)
    }

    func testInvalidShapesAndTypesAreRefused() {
        var out = [UInt8](repeating: 0, count: 4096)
        let src = [Float](repeating: 1, count: 1024)
        XCTAssertEqual(cq_quantize_rows(CQ_Q8_0, src, 1, 48, &out), -1, "cols not a multiple of 32")
        XCTAssertEqual(cq_quantize_rows(CQ_Q4_K, src, 1, 288, &out), -1, "cols not a multiple of 256")
        XCTAssertEqual(cq_quantize_rows(CQ_Q4_K, src, 1, 0, &out), -1, "no columns")
        XCTAssertEqual(cq_quantize_rows(CQ_F32, src, 1, 32, &out), -1, "not a quantized type")
        XCTAssertEqual(cq_quantize_rows(CQ_MLX_Q4, src, 1, 32, &out), -1, "MLX goes through cq_quantize_rows_mlx")
        var s = [UInt16](repeating: 0, count: 64), b = s
        XCTAssertEqual(cq_quantize_rows_mlx(4, 48, src, 1, 96, &out, &s, &b), -1, "group 48")
        XCTAssertEqual(cq_quantize_rows_mlx(3, 32, src, 1, 96, &out, &s, &b), -1, "3 bits")
        XCTAssertEqual(cq_quantize_rows_mlx(8, 64, src, 1, 96, &out, &s, &b), -1, "cols not a multiple of the group")

        XCTAssertEqual(cq_row_bytes(CQ_Q8_0, 4096), 4352)
        XCTAssertEqual(cq_row_bytes(CQ_Q6_K, 4096), 3360)
        XCTAssertEqual(cq_row_bytes(CQ_MLX_Q4, 4096), 2048)
        XCTAssertEqual(cq_row_bytes(CQ_Q8_0, 33), 0)
        XCTAssertEqual(cq_row_bytes(CQ_Q4_K, -256), 0)
        XCTAssertEqual(cq_valid_cols(CQ_MLX_Q8, 96, 64), 0)
        XCTAssertEqual(cq_valid_cols(CQ_MLX_Q8, 128, 64), 1)
        XCTAssertEqual(cq_valid_cols(CQ_Q4_0, 96, 0), 1)
        XCTAssertEqual(cq_activation_bytes(CQ_F16, 256), 0, "F16 has no activation")
        XCTAssertEqual(cq_activation_bytes(CQ_Q6_K, 128), 0)
        XCTAssertEqual(cq_activation_bytes(CQ_Q8_0, 4096) % 64, 0)

        var g = SplitMix64(seed: 18)
        let good = QuantMatrix.random(CQ_MLX_Q4, rows: 2, cols: 64, group: 32, exact: false, &g)
        var w = good.matrix
        XCTAssertEqual(cq_check_matrix(&w), 0)
        w.row_bytes += 1
        XCTAssertEqual(cq_check_matrix(&w), -1, "row_bytes")
        w = good.matrix
        w.biases = nil
        XCTAssertEqual(cq_check_matrix(&w), -1, "MLX without biases")
        w = good.matrix
        w.group = 48
        XCTAssertEqual(cq_check_matrix(&w), -1, "group 48")
        w = good.matrix
        w.type = CQ_BF16
        w.row_bytes = 128
        XCTAssertEqual(cq_check_matrix(&w), -1, "BF16 is Swift's, not CQuant's")
        XCTAssertEqual(cq_check_matrix(nil), -1)
    }

    func testEveryTypeHasANameAndTheISAIsOneOfTheAvailable() {
        XCTAssertEqual(String(cString: cq_type_name(CQ_IQ4_NL)), "IQ4_NL")
        XCTAssertEqual(String(cString: cq_type_name(CQ_MLX_Q8)), "MLX-Q8")
        let available = isas()
        XCTAssertEqual(available.last, "scalar")
        XCTAssertTrue(available.contains(String(cString: cq_kernel_isa())))
        XCTAssertEqual(cq_set_isa("no-such-isa"), -1)
        cq_force_scalar(1)
        XCTAssertEqual(String(cString: cq_kernel_isa()), "scalar")
        cq_force_scalar(0)
        XCTAssertEqual(String(cString: cq_kernel_isa()), available[0])
    }

    // MARK: Helpers

    private func compareEveryISA(_ m: QuantMatrix, _ x: [Float], exact: Bool, file: StaticString = #filePath,
                                 line: UInt = #line) throws {
        let type = m.matrix.type, rows = Int(m.matrix.rows), cols = Int(m.matrix.cols)
        cq_set_isa("scalar")
        let act = Activation(type, x)
        let xh = act.dequantized()
        let reference = m.matvec(act, reference: true)
        var magnitude = [Double](repeating: 0, count: rows)
        for r in 0..<rows {
            let w = m.row(r)
            for c in 0..<cols { magnitude[r] += abs(Double(w[c]) * Double(xh[c])) }
        }
        let what = "\(name(type)) \(rows)×\(cols) g\(m.matrix.group)"
        for isa in isas() {
            XCTAssertEqual(cq_set_isa(isa), 0, file: file, line: line)
            let a = Activation(type, x)
            XCTAssertEqual(a.bytes, act.bytes, "\(what) activation on \(isa)", file: file, line: line)
            // A row range starting inside the matrix leaves the rows before it alone.
            let first = rows > 2 ? 1 : 0
            var y = [Float](repeating: -7, count: rows)
            var w = m.matrix
            cq_matvec_rows(&w, a.pointer, &y, Int32(first), Int32(rows), 0)
            for r in 0..<first { XCTAssertEqual(y[r], -7, "\(what) on \(isa): row \(r) written", file: file, line: line) }
            for r in first..<rows {
                if exact {
                    XCTAssertEqual(y[r].bitPattern, reference[r].bitPattern, "\(what) on \(isa) row \(r): \(y[r]) vs \(reference[r])",
                                   file: file, line: line)
                } else {
                    XCTAssertLessThanOrEqual(abs(Double(y[r]) - Double(reference[r])), 1e-5 * magnitude[r] + 1e-30,
                                             "\(what) on \(isa) row \(r): \(y[r]) vs \(reference[r])", file: file, line: line)
                }
            }
            // accumulate adds to what is there.
            let before = y[rows - 1]
            cq_matvec_rows(&w, a.pointer, &y, Int32(rows - 1), Int32(rows), 1)
            XCTAssertEqual(y[rows - 1], before + before, "\(what) on \(isa): accumulate", file: file, line: line)
        }
        _ = cq_set_isa(nil)
    }

    /// Integers with one ±127 per activation block (so d = 1 exactly) and the rest in [−15, 15].
    private func exactActivation(_ cols: Int, block: Int, _ g: inout SplitMix64) -> [Float] {
        var x = (0..<cols).map { _ in Float(Int(g.next() % 31) - 15) }
        for b in 0..<(cols / block) { x[b * block + Int(g.next() % UInt64(block))] = g.next() & 1 == 0 ? 127 : -127 }
        return x
    }

    private func groups(_ type: cq_type) -> [Int] { type == CQ_MLX_Q4 || type == CQ_MLX_Q8 ? [32, 64, 128] : [0] }

    private func columns(_ type: cq_type, group: Int) -> [Int] {
        if cq_block_values(type) == 256 { return [256, 768, 4096] }
        return [32, 96, 4128].filter { $0 % max(group, 32) == 0 } + (group > 32 ? [group, 3 * group, 4096] : [])
    }

    private func isas() -> [String] {
        var names = [UnsafePointer<CChar>?](repeating: nil, count: 8)
        let n = Int(cq_available_isas(&names, 8))
        return names[0..<n].map { String(cString: $0!) }
    }

    private func name(_ type: cq_type) -> String { String(cString: cq_type_name(type)) }

    private func f16(_ bytes: [UInt8], _ at: Int) -> Float {
        Float(Float16(bitPattern: UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8))
    }

    private func bf16(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

    private func fixtureBytes(_ f: SafetensorsFile, _ name: String) throws -> [UInt8] {
        guard let e = f[name] else { throw FixtureError(description: "quant fixture lacks \(name): regenerate it") }
        return Array(f.bytes(e))
    }

    private func fixtureFloats(_ f: SafetensorsFile, _ name: String) throws -> [Float] {
        guard let e = f[name], e.dtype == .f32 else { throw FixtureError(description: "quant fixture lacks f32 \(name)") }
        let raw = f.bytes(e)
        return (0..<e.elementCount).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) }
    }

    private func fixtureHalves(_ f: SafetensorsFile, _ name: String) throws -> [UInt16] {
        guard let e = f[name], e.dtype == .bf16 else { throw FixtureError(description: "quant fixture lacks bf16 \(name)") }
        let raw = f.bytes(e)
        return (0..<e.elementCount).map { raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self) }
    }
}

/// Pointers handed to concurrent iterations that touch disjoint rows.
private struct SharedPointers: @unchecked Sendable {
    let w: UnsafePointer<cq_matrix>
    let act: UnsafeMutableRawPointer
    let y: UnsafeMutablePointer<Float>

    init(w: UnsafeMutablePointer<cq_matrix>, act: UnsafeMutableRawPointer, y: UnsafeMutablePointer<Float>) {
        self.w = UnsafePointer(w)
        self.act = act
        self.y = y
    }
}

/// A quantized matrix in owned memory, and the cq_matrix describing it.
private final class QuantMatrix {
    private(set) var matrix: cq_matrix
    private let data: UnsafeMutableRawPointer
    private let scales, biases: UnsafeMutablePointer<UInt16>?

    init(type: cq_type, rows: Int, cols: Int, group: Int, data bytes: [UInt8], scales s: [UInt16]? = nil, biases b: [UInt16]? = nil) {
        let rowBytes = cq_row_bytes(type, Int32(cols))
        precondition(bytes.count == rows * rowBytes, "\(bytes.count) bytes for \(rows) rows of \(rowBytes)")
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
        bytes.withUnsafeBytes { storage.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        data = storage
        scales = Self.copy(s)
        biases = Self.copy(b)
        matrix = cq_matrix(type: type, rows: Int32(rows), cols: Int32(cols), row_bytes: rowBytes,
                           data: UnsafePointer(data.assumingMemoryBound(to: UInt8.self)),
                           scales: scales.map { UnsafePointer($0) }, biases: biases.map { UnsafePointer($0) },
                           group: Int32(group))
    }

    private static func copy(_ v: [UInt16]?) -> UnsafeMutablePointer<UInt16>? {
        guard let v else { return nil }
        let p = UnsafeMutablePointer<UInt16>.allocate(capacity: v.count)
        p.initialize(from: v, count: v.count)
        return p
    }

    deinit {
        data.deallocate()
        scales?.deallocate()
        biases?.deallocate()
    }

    /// Random bytes (every code pattern) with scales of a sensible size, never NaN. `exact`: scales
    /// 1 and small codes, so that every partial sum of a matvec against an exact activation is an
    /// exactly representable integer.
    static func random(_ type: cq_type, rows: Int, cols: Int, group: Int, exact: Bool, _ g: inout SplitMix64) -> QuantMatrix {
        var bytes = (0..<(rows * cq_row_bytes(type, Int32(cols)))).map { _ in UInt8(truncatingIfNeeded: g.next()) }
        func scale(_ size: Float) -> Float { (g.next() & 1 == 0 ? 1 : -1) * (0.5 + g.nextFloat()) * size }
        func put(_ v: Float, _ at: Int) {
            let h = exact ? Float16(1).bitPattern : Float16(v).bitPattern
            bytes[at] = UInt8(h & 0xFF)
            bytes[at + 1] = UInt8(h >> 8)
        }
        var s: [UInt16]? = nil, b: [UInt16]? = nil
        switch type {
        case CQ_Q8_0:
            for at in stride(from: 0, to: bytes.count, by: 34) {
                put(scale(0.01), at)
                if exact { for j in 0..<32 { bytes[at + 2 + j] = UInt8(bitPattern: Int8(Int(g.next() % 7) - 3)) } }
            }
        case CQ_Q4_0, CQ_IQ4_NL:
            for at in stride(from: 0, to: bytes.count, by: 18) { put(scale(0.01), at) }
        case CQ_Q4_K:
            for at in stride(from: 0, to: bytes.count, by: 144) {
                put(abs(scale(0.001)), at)
                put(abs(scale(0.001)), at + 2)
                if exact { for j in 0..<12 { bytes[at + 4 + j] &= 0x01 } }  // scales and mins 0 or 1
            }
        case CQ_Q6_K:
            for at in stride(from: 0, to: bytes.count, by: 210) {
                put(scale(0.001), at + 208)
                if exact { for j in 0..<16 { bytes[at + 192 + j] = UInt8(bitPattern: Int8(Int(g.next() % 3) - 1)) } }
            }
        default:  // MLX
            let n = rows * cols / group
            s = (0..<n).map { _ in exact ? 0x3F80 : UInt16(abs(scale(0.01)).bitPattern >> 16) }
            b = (0..<n).map { _ in exact ? (g.next() & 1 == 0 ? 0x3F80 : 0xBF80) : UInt16(scale(0.05).bitPattern >> 16) }
            if exact && type == CQ_MLX_Q8 { for i in bytes.indices { bytes[i] &= 0x07 } }
        }
        return QuantMatrix(type: type, rows: rows, cols: cols, group: group, data: bytes, scales: s, biases: b)
    }

    func row(_ r: Int) -> [Float] {
        var out = [Float](repeating: 0, count: Int(matrix.cols))
        var w = matrix
        cq_dequantize_row(&w, Int32(r), &out)
        return out
    }

    func matvec(_ act: Activation, reference: Bool) -> [Float] {
        var y = [Float](repeating: 0, count: Int(matrix.rows))
        var w = matrix
        if reference { cq_matvec_rows_reference(&w, act.pointer, &y, 0, matrix.rows, 0) }
        else { cq_matvec_rows(&w, act.pointer, &y, 0, matrix.rows, 0) }
        return y
    }
}

/// A quantized activation in 64-byte aligned memory.
private final class Activation {
    let pointer: UnsafeMutableRawPointer
    let type: cq_type
    let cols: Int
    let count: Int

    init(_ type: cq_type, _ x: [Float]) {
        self.type = type
        cols = x.count
        count = cq_activation_bytes(type, Int32(x.count))
        precondition(count > 0, "no activation for \(x.count) values")
        pointer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 64)
        cq_quantize_activation(type, x, Int32(x.count), pointer)
    }

    deinit { pointer.deallocate() }

    var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: pointer, count: count)) }

    func dequantized() -> [Float] {
        var out = [Float](repeating: 0, count: cols)
        cq_dequantize_activation(type, pointer, Int32(cols), &out)
        return out
    }
}
