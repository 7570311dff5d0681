import Foundation
import Synchronization

/// A fixed set of worker threads, created once, that share one job's chunks with the calling
/// thread. Built for the LM's batch-1 step: a few hundred matrix×vector products per 80 ms frame,
/// many of them small, so a dispatch must cost about a microsecond, not the tens of microseconds
/// of a queue hop, and must not allocate.
///
/// The caller publishes a job (a C function pointer, a context pointer, a chunk count) under a new
/// sequence number, then takes chunks from one atomic counter until none are left; workers that
/// see the job in time *join* it and take chunks too. When the chunks run out the caller closes
/// the job and waits only for the workers that joined. So a worker that lost its core on a shared
/// machine, or is still asleep, never holds a product up: it finds the job closed and skips it.
/// Workers poll for a short *time* after a job (the next one usually follows within
/// microseconds): at most `spinNanoseconds` by the monotonic clock, offering the core with
/// `sched_yield` every few hundred polls, then they sleep on a condition variable, so an idle
/// engine costs no CPU and a spinning worker never holds a core an audio thread is waiting for
/// (a bound in iterations is a bound in nothing: it lasts ten times longer on a slow or busy
/// core). If the pool is already busy (another thread is running a job), `run` does all the
/// chunks inline: never wrong, only slower.
public final class WorkerPool: @unchecked Sendable {
    /// (context, chunk). A C function pointer, so submitting a job allocates nothing.
    public typealias Task = @convention(c) (UnsafeRawPointer, Int) -> Void

    /// One pool for the process, sized by the machine; `threads` says how many take part.
    public static let shared = WorkerPool(maxThreads: max(1, ProcessInfo.processInfo.activeProcessorCount))

    /// Upper bound on participants (workers + the caller).
    public let maxThreads: Int
    /// How long an idle worker polls for the next job before it sleeps. Jobs of one LM step
    /// follow each other within a few microseconds; a longer gap (sampling, the codec, the
    /// next frame) is one a sleeping worker can afford: the caller never waits for it.
    public static let spinNanoseconds: UInt64 = 50_000
    /// Polls between looks at the clock (and offers of the core).
    private static let pollsPerCheck = 256
    private let participants = Atomic<Int>(1)
    private let busy = Atomic<Bool>(false)
    /// Sequence number of the latest job; workers poll it.
    private let sequence = Atomic<Int>(0)
    /// (sequence << 16) | closed flag | workers inside the job.
    private let joinState = Atomic<Int>(0)
    private let nextChunk = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private static let closed = 0x8000
    private static let countMask = 0x7FFF

    // The current job; written by the caller before the sequence is published, read by workers
    // only after joining (so never while being rewritten).
    private var task: Task?
    private var context: UnsafeRawPointer?
    private var chunks = 0

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init(maxThreads: Int) {
        self.maxThreads = min(max(1, maxThreads), Self.countMask)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        for index in 1..<self.maxThreads {
            // Workers hold the pool for the life of the process (pools are made once, not per use).
            let thread = Thread { self.workerLoop(index) }
            thread.name = "duplex-worker-\(index)"
            thread.stackSize = 1 << 20
            thread.start()
        }
        participants.store(self.maxThreads, ordering: .releasing)
    }

    /// How many threads (caller included) take part in a job; at most `maxThreads`.
    public var threads: Int {
        get { participants.load(ordering: .relaxed) }
        set { participants.store(min(maxThreads, max(1, newValue)), ordering: .relaxed) }
    }

    /// Workers asleep on the condition variable now (idle longer than `spinNanoseconds`).
    public var sleepingWorkers: Int { sleepers.load(ordering: .relaxed) }

    /// Runs `task(context, c)` for every chunk c in 0..<chunks, spread over up to `threads`
    /// threads (the caller is one of them), and returns when all are done.
    public func run(_ task: Task, context: UnsafeRawPointer, chunks: Int) {
        guard chunks > 1, threads > 1, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for c in 0..<chunks { task(context, c) }
            return
        }
        self.task = task
        self.context = context
        self.chunks = chunks
        nextChunk.store(0, ordering: .relaxed)
        let seq = sequence.load(ordering: .relaxed) + 1
        joinState.store(seq << 16, ordering: .releasing)
        sequence.store(seq, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        takeChunks(task, context, chunks)
        // No chunk left: close the job to latecomers, then wait for those inside (they are
        // finishing a chunk each). Poll briefly, then step aside on every poll: a worker that
        // lost its core on a busy machine needs the caller's core to finish.
        var state = joinState.bitwiseOr(Self.closed, ordering: .acquiringAndReleasing).newValue
        var polls = 0
        while state & Self.countMask != 0 {
            polls += 1
            if polls > Self.pollsPerCheck { sched_yield() }
            state = joinState.load(ordering: .acquiring)
        }
        busy.store(false, ordering: .releasing)
    }

    @inline(__always)
    private func takeChunks(_ task: Task, _ context: UnsafeRawPointer, _ chunks: Int) {
        while true {
            let c = nextChunk.wrappingAdd(1, ordering: .relaxed).oldValue
            if c >= chunks { return }
            task(context, c)
        }
    }

    /// Joins job `seq` if it is still open; false if it closed (or a newer one replaced it).
    private func join(_ seq: Int) -> Bool {
        var state = joinState.load(ordering: .acquiring)
        while state >> 16 == seq && state & Self.closed == 0 {
            let (exchanged, original) = joinState.compareExchange(expected: state, desired: state + 1,
                                                                  ordering: .acquiringAndReleasing)
            if exchanged { return true }
            state = original
        }
        return false
    }

    private func workerLoop(_ index: Int) {
        var seen = 0
        while true {
            var current = sequence.load(ordering: .acquiring)
            var polls = 0
            var deadline = Self.monotonicNanoseconds() + Self.spinNanoseconds
            while current == seen {
                polls += 1
                if polls == Self.pollsPerCheck {
                    // Every few hundred polls (about a microsecond): look at the clock, and
                    // let any thread waiting for this core (an audio thread) run first.
                    polls = 0
                    if Self.monotonicNanoseconds() >= deadline {
                        park(until: seen)
                        deadline = Self.monotonicNanoseconds() + Self.spinNanoseconds
                    } else {
                        sched_yield()
                    }
                }
                current = sequence.load(ordering: .acquiring)
            }
            seen = current
            guard index < threads, join(current) else { continue }
            if let task, let context { takeChunks(task, context, chunks) }
            joinState.subtract(1, ordering: .releasing)
        }
    }

    /// Sleeps until a job newer than `seen` is published.
    private func park(until seen: Int) {
        pthread_mutex_lock(mutex)
        sleepers.add(1, ordering: .sequentiallyConsistent)
        while sequence.load(ordering: .sequentiallyConsistent) == seen {
            pthread_cond_wait(condition, mutex)
        }
        sleepers.subtract(1, ordering: .sequentiallyConsistent)
        pthread_mutex_unlock(mutex)
    }

    @inline(__always)
    private static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
