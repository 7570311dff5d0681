import Foundation

/// SCHED_FIFO for the audio threads where the system allows it (root, CAP_SYS_NICE or an
/// RLIMIT_RTPRIO grant); elsewhere they stay at normal priority and the caller says so.
enum RealtimeScheduling {
    enum Outcome: Equatable { case granted, refused(String) }

    static func promoteCurrentThread(priority: Int32 = 20) -> Outcome {
        var parameters = sched_param()
        parameters.sched_priority = priority
        let rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &parameters)
        if rc == 0 { return .granted }
        return .refused(rc == EPERM ? "EPERM: needs CAP_SYS_NICE or an RLIMIT_RTPRIO grant (limits.conf rtprio)" : String(cString: strerror(rc)))
    }
}
