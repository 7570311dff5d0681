/// Conversions from the 16-bit float formats checkpoints store to Float32.
/// bf16 is the top half of an IEEE binary32; f16 is IEEE binary16.
public enum HalfPrecision {
    @inline(__always)
    public static func bf16ToFloat(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// Round-to-nearest-even, as PyTorch's `.to(torch.bfloat16)` does; NaN stays a quiet NaN (its
    /// sign kept). PyTorch's NaN bits differ between its scalar (0x7FC0) and vector (0xFFFF) paths,
    /// so only NaN-ness is part of the contract.
    @inline(__always)
    public static func floatToBF16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x0040) }
        let rounding: UInt32 = 0x7FFF + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }

    @inline(__always)
    public static func f16ToFloat(_ bits: UInt16) -> Float {
        Float(Float16(bitPattern: bits))
    }

    @inline(__always)
    public static func floatToF16(_ value: Float) -> UInt16 {
        Float16(value).bitPattern
    }

    /// Bulk bf16 -> f32, vectorised in 8-lane chunks.
    public static func convertBF16(_ src: UnsafePointer<UInt16>, to dst: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count {
            let raw = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD8<UInt16>.self)
            let wide = SIMD8<UInt32>(truncatingIfNeeded: raw) &<< 16
            UnsafeMutableRawPointer(dst + i).storeBytes(of: unsafeBitCast(wide, to: SIMD8<Float>.self),
                                                        as: SIMD8<Float>.self)
            i += 8
        }
        while i < count { dst[i] = bf16ToFloat(src[i]); i += 1 }
    }

    /// Bulk f16 -> f32, 8 lanes at a time (F16C's vcvtph2ps on x86-64).
    public static func convertF16(_ src: UnsafePointer<UInt16>, to dst: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count {
            let h = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD8<Float16>.self)
            UnsafeMutableRawPointer(dst + i).storeBytes(of: SIMD8<Float>(h), as: SIMD8<Float>.self)
            i += 8
        }
        while i < count { dst[i] = f16ToFloat(src[i]); i += 1 }
    }
}
