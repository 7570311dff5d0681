import CAllocCounter

/// Heap allocations made while `body` runs (all threads), for benchmark reports.
enum Allocations {
    static func count<T>(_ body: () throws -> T) rethrows -> (result: T, allocations: UInt64) {
        duplex_alloc_counting(1)
        let before = duplex_alloc_count()
        let result = try body()
        let after = duplex_alloc_count()
        duplex_alloc_counting(0)
        return (result, after - before)
    }

    static func start() { duplex_alloc_counting(1) }
    static func stop() { duplex_alloc_counting(0) }
    static var total: UInt64 { duplex_alloc_count() }
}
