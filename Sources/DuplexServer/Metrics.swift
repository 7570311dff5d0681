import Atomics
import DuplexEngine

/// A latency histogram with fixed buckets, recorded lock-free from any session's worker thread
/// and rendered in Prometheus' text format (cumulative `_bucket{le=…}`, `_sum`, `_count`).
public final class LatencyHistogram: Sendable {
    /// Upper bounds in seconds. Around the 80 ms frame: the interesting question is how close to it.
    public static let bounds: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.32, 0.64, 1.28]
    private let counts: [ManagedAtomic<Int>]  // one per bound, plus +Inf; not cumulative
    private let sumNanoseconds = ManagedAtomic<Int>(0)

    public init() {
        counts = (0...Self.bounds.count).map { _ in ManagedAtomic<Int>(0) }
    }

    public func observe(nanoseconds: UInt64) {
        let seconds = Double(nanoseconds) / 1e9
        var i = 0
        while i < Self.bounds.count && seconds > Self.bounds[i] { i += 1 }
        counts[i].wrappingIncrement(ordering: .relaxed)
        sumNanoseconds.wrappingIncrement(by: Int(clamping: nanoseconds), ordering: .relaxed)
    }

    public var count: Int { counts.reduce(0) { $0 + $1.load(ordering: .relaxed) } }

    func render(name: String, labels: String, into out: inout String) {
        var cumulative = 0
        for (i, bound) in Self.bounds.enumerated() {
            cumulative += counts[i].load(ordering: .relaxed)
            out += "\(name)_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n"
        }
        cumulative += counts[Self.bounds.count].load(ordering: .relaxed)
        out += "\(name)_bucket{\(labels),le=\"+Inf\"} \(cumulative)\n"
        out += "\(name)_sum{\(labels)} \(Double(sumNanoseconds.load(ordering: .relaxed)) / 1e9)\n"
        out += "\(name)_count{\(labels)} \(cumulative)\n"
    }
}

/// The server's counters, shared by every session; scraped at `/metrics`.
public final class ServerMetrics: Sendable {
    public enum Stage: String, CaseIterable, Sendable {
        /// Frame complete (its last sample decoded from the wire) → the session's worker took it.
        case queue
        /// The whole model step (processor call), and its parts where the processor stamps them.
        case model, encode, temporal, depformer, decode
        /// Model done → Opus/Ogg encoded and handed to the connection.
        case output
        /// Frame complete → its response handed to the connection.
        case total
    }

    public enum Rejection: String, CaseIterable, Sendable {
        case capacity, unauthorized, badRequest = "bad_request", modelError = "model_error"
        /// A websocket upgrade while the server drains (HTTP 503).
        case draining
    }

    public enum Close: String, CaseIterable, Sendable {
        /// The client stopped reading and the outbound backlog passed its bound.
        case slowClient = "slow_client"
        case oversizedMessage = "oversized_message"
        case badAudio = "bad_audio"
        /// Input arrived much faster than the model could take it, beyond the inbox bound.
        case inputFlood = "input_flood"
        /// The model could not go on (NaN logits from poisoned weights, …).
        case modelFailed = "model_failed"
    }

    let sessionsActive = ManagedAtomic<Int>(0)
    let sessionsTotal = ManagedAtomic<Int>(0)
    let rejections: [Rejection: ManagedAtomic<Int>]
    let closes: [Close: ManagedAtomic<Int>]
    let framesTotal = ManagedAtomic<Int>(0)
    let underruns = ManagedAtomic<Int>(0)
    let droppedInputFrames = ManagedAtomic<Int>(0)
    let corruptAudioPackets = ManagedAtomic<Int>(0)
    let ignoredMessages = ManagedAtomic<Int>(0)
    let textSent = ManagedAtomic<Int>(0)
    /// 1 while the server drains (refuses new conversations, waits for the running ones).
    let drainingGauge = ManagedAtomic<Int>(0)
    /// Conversations still running at the drain timeout, closed with kind 5 and 1001.
    let drainCut = ManagedAtomic<Int>(0)
    let stages: [Stage: LatencyHistogram]
    /// One frame's duration: a response that leaves later than this after its input was complete
    /// makes a real-time client's playback run dry.
    let frameNanoseconds: UInt64

    public init(frameNanoseconds: UInt64 = 80_000_000) {
        self.frameNanoseconds = frameNanoseconds
        rejections = Dictionary(uniqueKeysWithValues: Rejection.allCases.map { ($0, ManagedAtomic<Int>(0)) })
        closes = Dictionary(uniqueKeysWithValues: Close.allCases.map { ($0, ManagedAtomic<Int>(0)) })
        stages = Dictionary(uniqueKeysWithValues: Stage.allCases.map { ($0, LatencyHistogram()) })
    }

    // MARK: reading (tests, /healthz)

    public var activeSessions: Int { sessionsActive.load(ordering: .relaxed) }
    public var acceptedSessions: Int { sessionsTotal.load(ordering: .relaxed) }
    public var frames: Int { framesTotal.load(ordering: .relaxed) }
    public var underrunCount: Int { underruns.load(ordering: .relaxed) }
    public var draining: Bool { drainingGauge.load(ordering: .relaxed) != 0 }
    public var cutAtDrainTimeout: Int { drainCut.load(ordering: .relaxed) }
    public func rejected(_ r: Rejection) -> Int { rejections[r]?.load(ordering: .relaxed) ?? 0 }
    public func closed(_ c: Close) -> Int { closes[c]?.load(ordering: .relaxed) ?? 0 }
    public func histogram(_ s: Stage) -> LatencyHistogram? { stages[s] }

    // MARK: recording

    func reject(_ r: Rejection) { rejections[r]?.wrappingIncrement(ordering: .relaxed) }
    func close(_ c: Close) { closes[c]?.wrappingIncrement(ordering: .relaxed) }

    /// Records one processed frame. `processed` is when the processor returned; stamps that a
    /// processor left at zero are skipped, never recorded as bogus durations.
    func recordFrame(_ s: FrameTimestamps, processed: UInt64) {
        framesTotal.wrappingIncrement(ordering: .relaxed)
        func span(_ stage: Stage, _ from: UInt64, _ to: UInt64) {
            guard from > 0, to >= from else { return }
            stages[stage]?.observe(nanoseconds: to - from)
        }
        span(.queue, s.inputEnd, s.dequeued)
        span(.model, s.dequeued, processed)
        span(.encode, s.dequeued, s.encoded)
        span(.temporal, s.encoded, s.temporalDone)
        span(.depformer, s.temporalDone, s.lmDone)
        span(.decode, s.lmDone, s.decoded)
        span(.output, processed, s.outputStart)
        span(.total, s.inputEnd, s.outputStart)
        if s.outputStart > s.inputEnd + frameNanoseconds { underruns.wrappingIncrement(ordering: .relaxed) }
    }

    /// Prometheus text exposition format 0.0.4.
    public func render(maxSessions: Int) -> String {
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, Int)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, value) in samples { out += "\(name)\(labels) \(value)\n" }
        }
        metric("duplex_sessions_active", "gauge", "Conversations in progress.", [("", activeSessions)])
        metric("duplex_sessions_max", "gauge", "Conversations this instance admits at once (--max-sessions).", [("", maxSessions)])
        metric("duplex_sessions_total", "counter", "Conversations accepted since start.", [("", acceptedSessions)])
        metric("duplex_sessions_rejected_total", "counter", "Connections refused, by reason.",
               Rejection.allCases.map { ("{reason=\"\($0.rawValue)\"}", rejected($0)) })
        metric("duplex_sessions_closed_by_server_total", "counter", "Conversations the server ended because of the client, by reason.",
               Close.allCases.map { ("{reason=\"\($0.rawValue)\"}", closed($0)) })
        metric("duplex_draining", "gauge", "1 while the instance drains: new conversations refused (HTTP 503), running ones finishing.",
               [("", draining ? 1 : 0)])
        metric("duplex_drain_cut_total", "counter", "Conversations still running at the drain timeout, closed with kind 5 and close 1001.",
               [("", cutAtDrainTimeout)])
        metric("duplex_frames_total", "counter", "80 ms frames processed, all sessions.", [("", frames)])
        metric("duplex_underruns_total", "counter",
               "Frames whose response left more than one frame duration after the frame was complete (a real-time client's playback runs dry).",
               [("", underrunCount)])
        metric("duplex_input_frames_dropped_total", "counter",
               "Input frames dropped because the model fell more than the backlog bound behind.",
               [("", droppedInputFrames.load(ordering: .relaxed))])
        metric("duplex_audio_corrupt_packets_total", "counter", "Inbound Opus packets or Ogg pages that did not decode (skipped).",
               [("", corruptAudioPackets.load(ordering: .relaxed))])
        metric("duplex_messages_ignored_total", "counter", "Inbound messages ignored (unknown kinds, websocket text frames, client-side kinds).",
               [("", ignoredMessages.load(ordering: .relaxed))])
        metric("duplex_text_messages_total", "counter", "Text pieces (kind 2) sent.", [("", textSent.load(ordering: .relaxed))])
        let name = "duplex_frame_stage_seconds"
        out += "# HELP \(name) Per-frame time by stage (queue, model and its parts, output, total).\n# TYPE \(name) histogram\n"
        for stage in Stage.allCases { stages[stage]?.render(name: name, labels: "stage=\"\(stage.rawValue)\"", into: &out) }
        return out
    }
}
