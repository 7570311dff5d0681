import CAllocCounter

/// The process-wide heap allocation count (all threads), switched on while a benchmark measures.
enum Allocations {
    static func start() { duplex_alloc_counting(1) }
    static func stop() { duplex_alloc_counting(0) }
    static var total: UInt64 { duplex_alloc_count() }
    /// The counter, or nil where it counts nothing (a sanitizer build): a report then says "not counted".
    static var counter: (@Sendable () -> UInt64)? {
        guard duplex_alloc_counter_available() != 0 else { return nil }
        return { @Sendable in duplex_alloc_count() }
    }
}
