import Synchronization

/// A lock-free single-producer/single-consumer ring of values: the only thing audio threads and
/// the model thread share. Neither side ever waits or allocates: a full ring refuses what does not
/// fit (the producer counts an overrun), an empty ring hands back nothing (the consumer plays
/// silence and counts an underrun).
///
/// Exactly one thread may call the `write` methods and exactly one other the `read` methods.
public final class SPSCRing<Element: BitwiseCopyable>: @unchecked Sendable {
    public let capacity: Int
    private let mask: Int
    private let storage: UnsafeMutablePointer<Element>
    /// Total elements ever written / read; their difference is the fill level.
    private let written = Atomic<Int>(0)
    private let consumed = Atomic<Int>(0)

    /// `minimumCapacity` is rounded up to a power of two.
    public init(minimumCapacity: Int, zero: Element) {
        var c = 1
        while c < max(2, minimumCapacity) { c <<= 1 }
        capacity = c
        mask = c - 1
        storage = .allocate(capacity: c)
        storage.initialize(repeating: zero, count: c)
    }

    deinit { storage.deallocate() }

    /// Elements available to read (a snapshot; only grows from the consumer's point of view).
    public var availableToRead: Int {
        written.load(ordering: .acquiring) - consumed.load(ordering: .relaxed)
    }

    /// Free space (a snapshot; only grows from the producer's point of view).
    public var availableToWrite: Int {
        capacity - (written.load(ordering: .relaxed) - consumed.load(ordering: .acquiring))
    }

    /// Producer: copies as many of `count` elements as fit; returns how many were written.
    @discardableResult
    public func write(_ source: UnsafePointer<Element>, count: Int) -> Int {
        let w = written.load(ordering: .relaxed)
        let r = consumed.load(ordering: .acquiring)
        let n = min(count, capacity - (w - r))
        guard n > 0 else { return 0 }
        let start = w & mask
        let first = min(n, capacity - start)
        (storage + start).update(from: source, count: first)
        if n > first { storage.update(from: source + first, count: n - first) }
        written.store(w + n, ordering: .releasing)
        return n
    }

    /// Consumer: copies up to `count` elements out; returns how many were read.
    @discardableResult
    public func read(into destination: UnsafeMutablePointer<Element>, count: Int) -> Int {
        let r = consumed.load(ordering: .relaxed)
        let w = written.load(ordering: .acquiring)
        let n = min(count, w - r)
        guard n > 0 else { return 0 }
        let start = r & mask
        let first = min(n, capacity - start)
        destination.update(from: storage + start, count: first)
        if n > first { (destination + first).update(from: storage, count: n - first) }
        consumed.store(r + n, ordering: .releasing)
        return n
    }

    /// Consumer: drops up to `count` elements (e.g. to catch up after a stall); returns how many.
    @discardableResult
    public func skip(_ count: Int) -> Int {
        let r = consumed.load(ordering: .relaxed)
        let w = written.load(ordering: .acquiring)
        let n = min(count, w - r)
        if n > 0 { consumed.store(r + n, ordering: .releasing) }
        return max(0, n)
    }
}

extension SPSCRing {
    public func write(_ values: [Element]) -> Int {
        values.withUnsafeBufferPointer { write($0.baseAddress!, count: $0.count) }
    }
}
