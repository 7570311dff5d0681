import DuplexCore
import Foundation
import XCTest

/// bf16/f16 conversions against independent references written here from the formats'
/// definitions, exhaustively where the space is small, and against PyTorch's own conversions.
final class HalfPrecisionTests: XCTestCase {
    /// IEEE binary16 decoded from its fields.
    private func f16Reference(_ bits: UInt16) -> Double {
        let sign: Double = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int(bits >> 10) & 0x1F, mantissa = Double(bits & 0x3FF)
        switch exponent {
        case 0: return sign * mantissa * 0x1p-24                    // zero and subnormals
        case 31: return mantissa == 0 ? sign * .infinity : .nan
        default: return sign * (1 + mantissa / 1024) * pow(2, Double(exponent - 15))
        }
    }

    /// The bf16 nearest to `value` (ties to the even pattern), found by comparing distances in Double.
    private func bf16Reference(_ value: Float) -> UInt16? {
        guard !value.isNaN else { return nil }
        let low = UInt16(truncatingIfNeeded: value.bitPattern >> 16)
        let high = low &+ 1                                          // next bf16 away from zero
        let v = Double(value)
        let a = Double(Float(bitPattern: UInt32(low) << 16))
        if a == v { return low }
        // Past the largest finite bf16 the next pattern is infinity; IEEE rounding treats it as
        // the value one more step up (2¹²⁸) when choosing, so the overflow threshold is the midpoint.
        let b = high & 0x7FFF == 0x7F80 ? (value < 0 ? -0x1p128 : 0x1p128) : Double(Float(bitPattern: UInt32(high) << 16))
        let da = abs(v - a), db = abs(b - v)
        if da < db { return low }
        if db < da { return high }
        return low & 1 == 0 ? low : high
    }

    func testF16DecodesEveryBitPattern() {
        for bits in 0...UInt16.max {
            let fast = HalfPrecision.f16ToFloat(bits), reference = f16Reference(bits)
            if reference.isNaN {
                XCTAssertTrue(fast.isNaN, "0x\(String(bits, radix: 16))")
            } else {
                XCTAssertEqual(Double(fast), reference, "0x\(String(bits, radix: 16))")
                XCTAssertEqual(fast.sign, reference.sign, "0x\(String(bits, radix: 16))")
                XCTAssertEqual(HalfPrecision.floatToF16(fast), bits, "round trip 0x\(String(bits, radix: 16))")
            }
        }
        XCTAssertEqual(HalfPrecision.f16ToFloat(0x0001), 0x1p-24)     // smallest subnormal
        XCTAssertEqual(HalfPrecision.f16ToFloat(0x03FF), 1023 * 0x1p-24)
        XCTAssertEqual(HalfPrecision.f16ToFloat(0x7BFF), 65504)
        XCTAssertEqual(HalfPrecision.f16ToFloat(0xFC00), -.infinity)
    }

    /// Every midpoint between neighbouring f16 values rounds to the even one; a float either
    /// side of it rounds to the nearer one (this covers subnormals and the overflow to infinity).
    func testF16RoundsToNearestEven() {
        for bits in UInt16(0)..<0x7C00 {
            let a = HalfPrecision.f16ToFloat(bits), b = HalfPrecision.f16ToFloat(bits + 1)
            let mid = bits == 0x7BFF ? Float(65520) : (a + b) / 2       // (a+b)/2 is exact in f32
            let even = bits & 1 == 0 ? bits : bits + 1
            for sign: Float in [1, -1] {
                let s: UInt16 = sign < 0 ? 0x8000 : 0
                XCTAssertEqual(HalfPrecision.floatToF16(sign * mid), even | s, "tie after 0x\(String(bits, radix: 16))")
                XCTAssertEqual(HalfPrecision.floatToF16(sign * mid.nextDown), bits | s, "below tie 0x\(String(bits, radix: 16))")
                XCTAssertEqual(HalfPrecision.floatToF16(sign * mid.nextUp), (bits + 1) | s, "above tie 0x\(String(bits, radix: 16))")
            }
        }
        XCTAssertEqual(HalfPrecision.floatToF16(1e-9), 0)
        XCTAssertEqual(HalfPrecision.floatToF16(-1e-9), 0x8000)
        XCTAssertEqual(HalfPrecision.floatToF16(1e6), 0x7C00)
        XCTAssertTrue(HalfPrecision.f16ToFloat(HalfPrecision.floatToF16(.nan)).isNaN)
    }

    func testBF16RoundsToNearestEvenOnRandomAndSpecialBitPatterns() {
        var g = SplitMix64(seed: 5)
        var patterns: [UInt32] = [0, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7F7F_FFFF, 0x7F7F_8000, 0x7F7F_7FFF,
                                  0x0000_0001, 0x0000_8000, 0x0001_8000, 0x3F80_8000, 0x3F81_8000, 0xBF80_8000]
        patterns += (0..<100_000).map { _ in UInt32(truncatingIfNeeded: g.next()) }
        // Ties and their neighbours at random exponents.
        patterns += (0..<10_000).flatMap { _ -> [UInt32] in
            let top = UInt32(truncatingIfNeeded: g.next()) & 0xFFFF_0000
            return [top | 0x8000, top | 0x7FFF, top | 0x8001]
        }
        for p in patterns {
            let value = Float(bitPattern: p)
            let got = HalfPrecision.floatToBF16(value)
            if let expected = bf16Reference(value) {
                XCTAssertEqual(got, expected, "0x\(String(p, radix: 16))")
            } else {
                XCTAssertTrue(HalfPrecision.bf16ToFloat(got).isNaN, "NaN 0x\(String(p, radix: 16)) became 0x\(String(got, radix: 16))")
            }
        }
    }

    /// PyTorch's `.to(torch.bfloat16)` / `.to(torch.float16)` on corner cases. NaN only needs to
    /// stay NaN: PyTorch's own bit pattern for it differs between its scalar (0x7FC0) and
    /// vectorised (0xFFFF) paths.
    func testConversionsMatchPyTorch() throws {
        let f = try loadFixture("dtypes")
        let input = try f.floatTensor("convert_input").data
        guard let bf16Entry = f["convert_bf16"], let f16Entry = f["convert_f16"] else { return XCTFail("entries") }
        let bf16 = f.bytes(bf16Entry), f16 = f.bytes(f16Entry)
        XCTAssertGreaterThan(input.count, 100)
        for (i, v) in input.enumerated() {
            let torchBF16 = bf16.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
            let torchF16 = f16.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
            let hex = "0x\(String(v.bitPattern, radix: 16))"
            if v.isNaN {
                XCTAssertTrue(HalfPrecision.bf16ToFloat(torchBF16).isNaN && HalfPrecision.bf16ToFloat(HalfPrecision.floatToBF16(v)).isNaN, hex)
                XCTAssertTrue(HalfPrecision.f16ToFloat(torchF16).isNaN && HalfPrecision.f16ToFloat(HalfPrecision.floatToF16(v)).isNaN, hex)
            } else {
                XCTAssertEqual(HalfPrecision.floatToBF16(v), torchBF16, "bf16 of \(v) (\(hex))")
                XCTAssertEqual(HalfPrecision.floatToF16(v), torchF16, "f16 of \(v) (\(hex))")
            }
        }
    }

    func testBulkBF16ConversionMatchesScalar() {
        var g = SplitMix64(seed: 9)
        let bits = (0..<300).map { _ in UInt16(truncatingIfNeeded: g.next()) }
        for count in [0, 1, 7, 8, 9, 15, 16, 17, 63, 299] {
            for offset in [0, 1] where offset + count <= bits.count {   // offset 1: unaligned for SIMD loads
                var out = [Float](repeating: -1, count: count + 1)
                bits.withUnsafeBufferPointer { src in
                    HalfPrecision.convertBF16(src.baseAddress! + offset, to: &out, count: count)
                }
                for i in 0..<count {
                    let expected = HalfPrecision.bf16ToFloat(bits[offset + i])
                    XCTAssertEqual(out[i].bitPattern, expected.bitPattern, "count \(count) offset \(offset) [\(i)]")
                }
                XCTAssertEqual(out[count], -1, "wrote past count \(count)")
            }
        }
    }

    func testBulkF16ConversionMatchesScalar() {
        let bits = (0...UInt16.max).map { $0 }
        var out = [Float](repeating: 0, count: bits.count)
        HalfPrecision.convertF16(bits, to: &out, count: bits.count)
        for (b, v) in zip(bits, out) {
            let r = f16Reference(b)
            XCTAssertTrue(r.isNaN ? v.isNaN : Double(v) == r, "0x\(String(b, radix: 16))")
        }
    }
}
