import DuplexCore
import Foundation
import XCTest

/// The pool's waiting: idle workers stop polling after a bounded time and sleep, and a job
/// published to sleeping workers still runs every chunk exactly once.
final class WorkerPoolTests: XCTestCase {
    private static let mark: WorkerPool.Task = { context, chunk in
        let counts = UnsafeMutableRawPointer(mutating: context).assumingMemoryBound(to: Int32.self)
        counts[chunk] += 1
    }

    private func runAndCount(_ pool: WorkerPool, chunks: Int) -> [Int32] {
        var counts = [Int32](repeating: 0, count: chunks)
        counts.withUnsafeMutableBufferPointer { pool.run(Self.mark, context: UnsafeRawPointer($0.baseAddress!), chunks: chunks) }
        return counts
    }

    func testIdleWorkersSleepAndWakeForTheNextJob() {
        let pool = WorkerPool(maxThreads: 3)
        XCTAssertEqual(runAndCount(pool, chunks: 64), [Int32](repeating: 1, count: 64))
        // Spinning is bounded in time (50 µs), so on any machine the workers are asleep well
        // within a second (the bound leaves room for a loaded machine that deschedules them).
        let deadline = Date().addingTimeInterval(2)
        while pool.sleepingWorkers < pool.maxThreads - 1 && Date() < deadline { usleep(1_000) }
        XCTAssertEqual(pool.sleepingWorkers, pool.maxThreads - 1, "idle workers must park, not spin")
        for chunks in [2, 3, 17, 1_000] {
            XCTAssertEqual(runAndCount(pool, chunks: chunks), [Int32](repeating: 1, count: chunks), "\(chunks) chunks after sleeping")
        }
    }

    func testBackToBackJobsRunEveryChunkOnce() {
        let pool = WorkerPool(maxThreads: 3)
        for round in 0..<2_000 {
            let chunks = 2 + round % 31
            let counts = runAndCount(pool, chunks: chunks)
            if counts != [Int32](repeating: 1, count: chunks) { return XCTFail("round \(round): \(counts)") }
        }
    }
}
