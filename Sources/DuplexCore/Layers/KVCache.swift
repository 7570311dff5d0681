/// What a KV ring stores its keys and values as. A batch-1 step at a full context reads every
/// cached entry once, so the element size is the cost: for the 7B at 3000 steps the keys and
/// values are 786 M values per step — 3.1 GB in f32, 1.6 GB in bf16, 0.84 GB in q8.
///
/// - `f32`: exact; Mimi's transformers keep it, and exact-parity tests ask for it.
/// - `bf16`: rounded to nearest even (as `HalfPrecision.floatToBF16`, PyTorch's `.to(bfloat16)`);
///   the default for the Moshi LM (Kyutai runs its GPU caches in bf16).
/// - `q8`: ggml's Q8_0 applied to each head's row: blocks of 32 values, one f16 scale
///   d = max|x|/127 per block, values round(x/d) in int8 (the last block of a row not a
///   multiple of 32 is shorter). 1.0625 bytes per value for head dimensions of 32·k.
public enum KVCacheType: String, CaseIterable, Sendable, CustomStringConvertible {
    case f32, bf16, q8

    public var description: String { rawValue }

    /// Values per q8 block (ggml's QK8_0).
    public static let q8Block = 32

    /// Bytes one head's row of `headDim` values takes (q8: the row's f16 scales, then its int8 values).
    public func rowBytes(headDim: Int) -> Int {
        switch self {
        case .f32: 4 * headDim
        case .bf16: 2 * headDim
        case .q8: 2 * Self.q8Blocks(headDim) + headDim
        }
    }

    static func q8Blocks(_ headDim: Int) -> Int { (headDim + q8Block - 1) / q8Block }
}

/// Keys and values of past steps for one attention layer: a fixed ring of `capacity` slots,
/// each remembering the absolute position it holds (−1 while never written). Behaves exactly as
/// Kyutai's `RingKVCache`: a call writes all of its new steps first, then attends over the ring,
/// so positions keep counting forever and a conversation never runs out of cache.
///
/// Stored head-major, [numHeads][capacity] rows of `rowBytes`: a head's whole ring is one
/// contiguous stream, which is what one attention task reads from start to end.
public struct KVCache: Sendable {
    public let capacity: Int
    public let numHeads: Int
    public let headDim: Int
    public let type: KVCacheType
    /// Bytes of one head's row of one slot.
    public let rowBytes: Int
    /// Rows in `type`'s encoding; read through `KVCache.decode` or the attention kernels.
    private(set) var keys: [UInt8]
    private(set) var values: [UInt8]
    /// Absolute position held by each slot, −1 if empty.
    public private(set) var positions: [Int]
    /// Number of steps ever written (the next step's absolute position).
    public private(set) var end: Int = 0

    public var dim: Int { numHeads * headDim }
    /// Bytes of one position's key and value, all heads (what a step reads per visible entry).
    public var bytesPerEntry: Int { 2 * numHeads * rowBytes }

    public init(capacity: Int, numHeads: Int, headDim: Int, type: KVCacheType = .f32) {
        precondition(capacity > 0 && numHeads > 0 && headDim > 0)
        self.capacity = capacity
        self.numHeads = numHeads
        self.headDim = headDim
        self.type = type
        rowBytes = type.rowBytes(headDim: headDim)
        keys = [UInt8](repeating: 0, count: numHeads * capacity * rowBytes)
        values = keys
        positions = [Int](repeating: -1, count: capacity)
    }

    /// Byte offset of (head, slot)'s row.
    @inline(__always)
    func rowOffset(head: Int, slot: Int) -> Int { (head * capacity + slot) * rowBytes }

    /// Stores one step's key and value (each [dim], heads contiguous, as the projections produce
    /// them) at the next position.
    public mutating func append(key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        write(slot: end % capacity, key: key, value: value)
        positions[end % capacity] = end
        end += 1
    }

    private mutating func write(slot: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let (hd, type) = (headDim, type)
        for h in 0..<numHeads {
            let at = rowOffset(head: h, slot: slot)
            keys.withUnsafeMutableBytes { Self.encode(key + h * hd, count: hd, type: type, into: $0.baseAddress! + at) }
            values.withUnsafeMutableBytes { Self.encode(value + h * hd, count: hd, type: type, into: $0.baseAddress! + at) }
        }
    }

    /// Leaves the cache exactly as `steps` calls of `append` would (the same `end`, the same
    /// slots holding the same absolute positions), without computing the keys and values:
    /// the slots that survive get rows copied from `pool` (`poolRows` rows of `dim`, cycled;
    /// values start half-way through the pool so a slot's key and value differ), stored through
    /// the same encoding `append` uses, so every type holds what appending those rows leaves.
    /// Only the last `capacity` positions are written, so advancing by thousands of steps costs
    /// one ring's worth of writes. For benchmarks that need a full context (`LMGen.fillContext`).
    public mutating func advance(by steps: Int, pool: UnsafePointer<Float>, poolRows: Int) {
        precondition(steps >= 0 && poolRows > 0)
        let kept = min(steps, capacity)
        let d = dim
        for position in (end + steps - kept)..<(end + steps) {
            let slot = position % capacity
            write(slot: slot, key: pool + (position % poolRows) * d, value: pool + ((position + poolRows / 2) % poolRows) * d)
            positions[slot] = position
        }
        end += steps
    }

    /// Entries a query at absolute position `query` attends to (the attention's mask: written,
    /// not in the future, and within `window` steps when there is one). What a step reads.
    public func visibleEntries(query: Int, window: Int?) -> Int {
        positions.reduce(0) { count, p in
            p >= 0 && p <= query && query - p < (window ?? Int.max) ? count + 1 : count
        }
    }

    public mutating func reset() {
        positions.withUnsafeMutableBufferPointer { $0.update(repeating: -1) }
        end = 0
    }

    /// The key held in `slot`, decoded to Float32 [dim] (heads contiguous). For tests and references.
    public func key(slot: Int) -> [Float] { decoded(keys, slot: slot) }
    /// The value held in `slot`, decoded to Float32 [dim].
    public func value(slot: Int) -> [Float] { decoded(values, slot: slot) }

    private func decoded(_ rows: [UInt8], slot: Int) -> [Float] {
        var out = [Float](repeating: 0, count: dim)
        rows.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { o in
                for h in 0..<numHeads {
                    Self.decode(raw.baseAddress! + rowOffset(head: h, slot: slot), count: headDim, type: type,
                                into: o.baseAddress! + h * headDim)
                }
            }
        }
        return out
    }

    // MARK: row encodings

    /// Writes `count` floats as one row of `type` at `row`.
    static func encode(_ x: UnsafePointer<Float>, count: Int, type: KVCacheType, into row: UnsafeMutableRawPointer) {
        switch type {
        case .f32:
            row.copyMemory(from: x, byteCount: 4 * count)
        case .bf16:
            var i = 0
            let rounding = SIMD8<UInt32>(repeating: 0x7FFF), one = SIMD8<UInt32>(repeating: 1)
            while i + 8 <= count {
                let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
                let bits = unsafeBitCast(v, to: SIMD8<UInt32>.self)
                // Round to nearest even, as floatToBF16; a NaN lane keeps its sign and stays quiet.
                let rounded = (bits &+ rounding &+ ((bits &>> 16) & one)) &>> 16
                let quiet = (bits &>> 16) | SIMD8<UInt32>(repeating: 0x0040)
                let half = rounded.replacing(with: quiet, where: v .!= v)
                row.storeBytes(of: SIMD8<UInt16>(truncatingIfNeeded: half), toByteOffset: 2 * i, as: SIMD8<UInt16>.self)
                i += 8
            }
            while i < count {
                row.storeBytes(of: HalfPrecision.floatToBF16(x[i]), toByteOffset: 2 * i, as: UInt16.self)
                i += 1
            }
        case .q8:
            let blocks = KVCacheType.q8Blocks(count)
            let quants = row + 2 * blocks
            for b in 0..<blocks {
                let lo = b * KVCacheType.q8Block, hi = min(count, lo + KVCacheType.q8Block)
                var amax: Float = 0
                for i in lo..<hi { amax = max(amax, abs(x[i])) }
                // ggml's quantize_row_q8_0: d from the f32 maximum, values rounded half away from zero.
                let d = amax / 127
                let inverse: Float = d != 0 ? 1 / d : 0
                row.storeBytes(of: HalfPrecision.floatToF16(d), toByteOffset: 2 * b, as: UInt16.self)
                for i in lo..<hi {
                    quants.storeBytes(of: Int8(max(-127, min(127, (x[i] * inverse).rounded()))), toByteOffset: i, as: Int8.self)
                }
            }
        }
    }

    /// Reads one row of `type` back as `count` floats.
    static func decode(_ row: UnsafeRawPointer, count: Int, type: KVCacheType, into y: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32:
            UnsafeMutableRawPointer(y).copyMemory(from: row, byteCount: 4 * count)
        case .bf16:
            for i in 0..<count { y[i] = HalfPrecision.bf16ToFloat(row.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .q8:
            let blocks = KVCacheType.q8Blocks(count)
            for i in 0..<count {
                let d = HalfPrecision.f16ToFloat(row.loadUnaligned(fromByteOffset: 2 * (i / KVCacheType.q8Block), as: UInt16.self))
                y[i] = d * Float(row.load(fromByteOffset: 2 * blocks + i, as: Int8.self))
            }
        }
    }
}
