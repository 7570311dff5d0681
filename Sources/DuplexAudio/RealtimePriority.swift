#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Real-time scheduling for the audio threads: SCHED_FIFO keeps a capture or playback thread
/// ahead of the model and its workers whenever its period is due, so a busy machine costs the
/// model time, not the speaker a glitch. Linux grants it to a process with CAP_SYS_NICE or an
/// RLIMIT_RTPRIO at least the priority asked (pam_limits: `@audio - rtprio 95`). Refusal is
/// quiet: the thread stays as it was and the caller says so in its summary.
public enum RealtimePriority {
    /// A SCHED_FIFO priority for audio I/O: above everything a desktop runs at real-time
    /// priority by default except the kernel's own threads (JACK and PipeWire pick 70–88).
    public static let defaultPriority = 70

    public enum Outcome: Sendable, Equatable, CustomStringConvertible {
        /// The calling thread now runs SCHED_FIFO at this priority.
        case granted(priority: Int)
        /// It stays as it was, for this reason (errno's name, then what to do).
        case refused(reason: String)

        public var isGranted: Bool { if case .granted = self { true } else { false } }

        public var description: String {
            switch self {
            case .granted(let priority): "real-time priority SCHED_FIFO \(priority)"
            case .refused(let reason): "normal priority (real-time refused: \(reason))"
            }
        }
    }

    /// A thread's scheduling policy and priority, to read back or restore.
    public struct Scheduling: Sendable, Equatable {
        public var policy: Int32
        public var priority: Int32
        public init(policy: Int32, priority: Int32) {
            self.policy = policy
            self.priority = priority
        }
    }

    /// Asks for SCHED_FIFO at `priority` for the calling thread. Never prints, never throws.
    public static func promoteCurrentThread(priority: Int = defaultPriority) -> Outcome {
        let low = Int(sched_get_priority_min(SCHED_FIFO)), high = Int(sched_get_priority_max(SCHED_FIFO))
        guard (low...high).contains(priority) else {
            return .refused(reason: "EINVAL: priority \(priority) is outside SCHED_FIFO's \(low)…\(high)")
        }
        var parameters = sched_param()
        parameters.sched_priority = Int32(priority)
        let code = pthread_setschedparam(pthread_self(), SCHED_FIFO, &parameters)
        if code == 0 { return .granted(priority: priority) }
        return .refused(reason: reason(code, priority: priority))
    }

    /// The calling thread's scheduling now.
    public static func currentThreadScheduling() -> Scheduling {
        var policy: Int32 = 0
        var parameters = sched_param()
        pthread_getschedparam(pthread_self(), &policy, &parameters)
        return Scheduling(policy: policy, priority: parameters.sched_priority)
    }

    /// Puts the calling thread back to `scheduling` (as read by `currentThreadScheduling`);
    /// false if the system refused.
    @discardableResult
    public static func setCurrentThreadScheduling(_ scheduling: Scheduling) -> Bool {
        var parameters = sched_param()
        parameters.sched_priority = scheduling.priority
        return pthread_setschedparam(pthread_self(), scheduling.policy, &parameters) == 0
    }

    private static func reason(_ code: Int32, priority: Int) -> String {
        switch code {
        case EPERM:
            var limit = ""
            #if os(Linux)
            var rlim = rlimit()
            if getrlimit(__rlimit_resource_t(__RLIMIT_RTPRIO.rawValue), &rlim) == 0 {
                limit = rlim.rlim_cur == rlim_t.max ? " (RLIMIT_RTPRIO is unlimited)" : " (RLIMIT_RTPRIO is \(rlim.rlim_cur), \(priority) asked)"
            }
            #endif
            return "EPERM: no CAP_SYS_NICE or RLIMIT_RTPRIO\(limit); see /etc/security/limits.conf (e.g. `@audio - rtprio 95`)"
        case EINVAL:
            return "EINVAL: SCHED_FIFO priority \(priority) not accepted"
        default:
            return "error \(code): \(String(cString: strerror(code)))"
        }
    }
}
