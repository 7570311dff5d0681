import DuplexAudio
import Foundation
import XCTest

final class RealtimePriorityTests: XCTestCase {
    /// Runs `body` on a thread of its own, so the test runner's thread is never left at
    /// real-time priority even if restoring failed.
    private func onOwnThread(_ body: @escaping @Sendable () -> Void) {
        let done = DispatchSemaphore(value: 0)
        let thread = Thread { body(); done.signal() }
        thread.start()
        done.wait()
    }

    func testPromotionIsGrantedAndReadsBackOrRefusedWithAReason() {
        let results = ResultBox()
        onOwnThread {
            let before = RealtimePriority.currentThreadScheduling()
            let outcome = RealtimePriority.promoteCurrentThread(priority: RealtimePriority.defaultPriority)
            let during = RealtimePriority.currentThreadScheduling()
            let restored = RealtimePriority.setCurrentThreadScheduling(before)
            let after = RealtimePriority.currentThreadScheduling()
            results.set(outcome: outcome, before: before, during: during, restored: restored, after: after)
        }
        let r = results.get()
        switch r.outcome {
        case .granted(let priority):
            XCTAssertEqual(priority, RealtimePriority.defaultPriority)
            XCTAssertEqual(r.during.policy, SCHED_FIFO, "a granted promotion reads back as SCHED_FIFO")
            XCTAssertEqual(Int(r.during.priority), priority)
            XCTAssertTrue(r.restored, "the old policy must be restorable")
            XCTAssertEqual(r.after, r.before)
        case .refused(let reason):
            XCTAssertFalse(reason.isEmpty)
            XCTAssertEqual(r.during, r.before, "a refusal leaves the thread as it was")
        }
        XCTAssertFalse("\(r.outcome)".isEmpty)
    }

    func testAnImpossiblePriorityIsRefusedNotApplied() {
        let results = ResultBox()
        onOwnThread {
            let before = RealtimePriority.currentThreadScheduling()
            let outcome = RealtimePriority.promoteCurrentThread(priority: 1_000)
            let during = RealtimePriority.currentThreadScheduling()
            results.set(outcome: outcome, before: before, during: during, restored: true, after: during)
        }
        let r = results.get()
        guard case .refused(let reason) = r.outcome else { return XCTFail("priority 1000 cannot be granted: \(r.outcome)") }
        XCTAssertTrue(reason.hasPrefix("EINVAL"), reason)
        XCTAssertEqual(r.during, r.before)
    }
}

private final class ResultBox: @unchecked Sendable {
    struct Results {
        var outcome: RealtimePriority.Outcome
        var before, during: RealtimePriority.Scheduling
        var restored: Bool
        var after: RealtimePriority.Scheduling
    }
    private let lock = NSLock()
    private var results: Results?
    func set(outcome: RealtimePriority.Outcome, before: RealtimePriority.Scheduling, during: RealtimePriority.Scheduling,
             restored: Bool, after: RealtimePriority.Scheduling) {
        lock.withLock { results = Results(outcome: outcome, before: before, during: during, restored: restored, after: after) }
    }
    func get() -> Results { lock.withLock { results! } }
}
