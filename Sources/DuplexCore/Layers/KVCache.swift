/// Keys and values of past steps for one attention layer: a fixed ring of `capacity` slots,
/// each remembering the absolute position it holds (−1 while never written). Behaves exactly as
/// Kyutai's `RingKVCache`: a call writes all of its new steps first, then attends over the ring,
/// so positions keep counting forever and a conversation never runs out of cache.
public struct KVCache: Sendable {
    public let capacity: Int
    public let dim: Int
    /// [capacity, dim] each (heads contiguous inside dim, as the projections produce them).
    public var keys: [Float]
    public var values: [Float]
    /// Absolute position held by each slot, −1 if empty.
    public var positions: [Int]
    /// Number of steps ever written (the next step's absolute position).
    public private(set) var end: Int = 0

    public init(capacity: Int, dim: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.dim = dim
        keys = [Float](repeating: 0, count: capacity * dim)
        values = keys
        positions = [Int](repeating: -1, count: capacity)
    }

    /// Stores one step's key and value at the next position.
    public mutating func append(key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let slot = end % capacity
        keys.withUnsafeMutableBufferPointer { $0.baseAddress!.advanced(by: slot * dim).update(from: key, count: dim) }
        values.withUnsafeMutableBufferPointer { $0.baseAddress!.advanced(by: slot * dim).update(from: value, count: dim) }
        positions[slot] = end
        end += 1
    }

    public mutating func reset() {
        positions.withUnsafeMutableBufferPointer { $0.update(repeating: -1) }
        end = 0
    }
}
