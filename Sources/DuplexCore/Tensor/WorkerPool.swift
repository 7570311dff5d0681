import Foundation
import Synchronization

/// A fixed set of worker threads, created once, that share one job's chunks with the calling
/// thread. Built for the LM's batch-1 step: a few hundred matrix×vector products per 80 ms frame,
/// many of them small, so a dispatch must cost about a microsecond, not the tens of microseconds
/// of a queue hop, and must not allocate.
///
/// Each worker has its own job slot and generation counter: the caller fills the slots, bumps the
/// counters, then every participant (the caller included) takes chunks from one atomic counter
/// until none are left, and the caller spins until the workers are done. Taking chunks rather than
/// fixed halves matters on a shared machine: a thread that loses its core for a while simply takes
/// fewer chunks instead of holding everyone up. Workers spin for a short while after a job (the
/// next one usually follows within microseconds), then sleep on a condition variable so an idle
/// engine costs no CPU. If the pool is already busy (another thread is running a job), `run` does
/// all the chunks inline: never wrong, only slower.
public final class WorkerPool: @unchecked Sendable {
    /// (context, chunk). A C function pointer, so submitting a job allocates nothing.
    public typealias Task = @convention(c) (UnsafeRawPointer, Int) -> Void

    /// One pool for the process, sized by the machine; `threads` says how many take part.
    public static let shared = WorkerPool(maxThreads: max(1, ProcessInfo.processInfo.activeProcessorCount))

    /// Upper bound on participants (workers + the caller).
    public let maxThreads: Int
    private let participants = Atomic<Int>(1)
    private let busy = Atomic<Bool>(false)
    private let remaining = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let nextChunk = Atomic<Int>(0)
    private let slots: UnsafeMutablePointer<Slot>
    private let generations: [Generation]
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    private struct Slot {
        var task: Task?
        var context: UnsafeRawPointer?
        var chunks = 0
    }

    /// A counter on its own cache line, so workers polling theirs do not disturb each other.
    private final class Generation: Sendable {
        let value = Atomic<Int>(0)
        let padding = (0, 0, 0, 0, 0, 0, 0)
    }

    public init(maxThreads: Int) {
        self.maxThreads = max(1, maxThreads)
        slots = .allocate(capacity: self.maxThreads)
        slots.initialize(repeating: Slot(), count: self.maxThreads)
        generations = (0..<self.maxThreads).map { _ in Generation() }
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

    /// Runs `task(context, c)` for every chunk c in 0..<chunks, spread over up to `threads`
    /// threads (the caller is one of them), and returns when all are done.
    public func run(_ task: Task, context: UnsafeRawPointer, chunks: Int) {
        let participants = min(chunks, threads)
        guard participants > 1, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for c in 0..<chunks { task(context, c) }
            return
        }
        nextChunk.store(0, ordering: .relaxed)
        remaining.store(participants - 1, ordering: .relaxed)
        for p in 1..<participants {
            slots[p] = Slot(task: task, context: context, chunks: chunks)
            generations[p].value.add(1, ordering: .sequentiallyConsistent)
        }
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        takeChunks(task, context, chunks)
        var spins = 0
        while remaining.load(ordering: .acquiring) > 0 {
            spins += 1
            // A worker that lost its core (a busy machine) needs the caller to step aside.
            if spins > 4096 { sched_yield() }
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

    private func workerLoop(_ index: Int) {
        let generation = generations[index]
        var seen = 0
        while true {
            var current = generation.value.load(ordering: .acquiring)
            var spins = 0
            while current == seen {
                spins += 1
                if spins < 20_000 {
                    // Busy-wait: the next matvec of a step arrives within microseconds.
                } else if spins < 20_200 {
                    sched_yield()
                } else {
                    pthread_mutex_lock(mutex)
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    while generation.value.load(ordering: .sequentiallyConsistent) == seen {
                        pthread_cond_wait(condition, mutex)
                    }
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    pthread_mutex_unlock(mutex)
                    spins = 0
                }
                current = generation.value.load(ordering: .acquiring)
            }
            seen = current
            let slot = slots[index]
            if let task = slot.task, let context = slot.context {
                takeChunks(task, context, slot.chunks)
            }
            remaining.subtract(1, ordering: .releasing)
        }
    }
}
