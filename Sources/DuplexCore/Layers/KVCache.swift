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

    /// Leaves the cache exactly as `steps` calls of `append` would (the same `end`, the same
    /// slots holding the same absolute positions), without computing the keys and values:
    /// the slots that survive get rows copied from `pool` (`poolRows` rows of `dim`, cycled;
    /// values start half-way through the pool so a slot's key and value differ). Only the last
    /// `capacity` positions are written, so advancing by thousands of steps costs one ring's
    /// worth of copies. For benchmarks that need a full context (see `LMGen.fillContext`).
    public mutating func advance(by steps: Int, pool: UnsafePointer<Float>, poolRows: Int) {
        precondition(steps >= 0 && poolRows > 0)
        let kept = min(steps, capacity)
        let d = dim
        keys.withUnsafeMutableBufferPointer { keysBuf in
        values.withUnsafeMutableBufferPointer { valuesBuf in
            for position in (end + steps - kept)..<(end + steps) {
                let slot = position % capacity
                keysBuf.baseAddress!.advanced(by: slot * d).update(from: pool + (position % poolRows) * d, count: d)
                valuesBuf.baseAddress!.advanced(by: slot * d)
                    .update(from: pool + ((position + poolRows / 2) % poolRows) * d, count: d)
                positions[slot] = position
            }
        }
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
}
