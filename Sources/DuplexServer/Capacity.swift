import DuplexEngine
import Foundation

/// How many conversations this machine keeps in real time: the default for `--max-sessions`.
public enum ServerCapacity {
    public struct Estimate: Sendable {
        /// Median wall time of one frame through a fresh session (model step + nothing else).
        public var frameSeconds: Double
        public var sessions: Int
        /// LM steps in the context while it was measured.
        public var contextFrames: Int
    }

    /// Sessions that fit in one frame's duration, keeping `headroom` of it for everything else
    /// (Opus, the network, the scheduler). Concurrent sessions share the cores a single step
    /// already uses, so throughput, not core count, is the limit. Never less than 1.
    public static func sessions(frameSeconds: Double, frameDuration: Double, headroom: Double = 0.8) -> Int {
        guard frameSeconds > 0, frameSeconds.isFinite else { return 1 }
        return max(1, Int((headroom * frameDuration / frameSeconds).rounded(.down)))
    }

    /// Runs `frames` frames of silence through a session (the first `warmup` untimed) on the same
    /// pipeline a connection uses and estimates the capacity from the median time per frame.
    /// `prepare` brings the session to the state to measure (e.g. a filled context: a long
    /// conversation costs more per frame than a fresh one, and capacity must hold for it).
    public static func measure(_ model: ChatModel, frames: Int = 12, warmup: Int = 4, contextFrames: Int = 0,
                               prepare: (any FrameProcessor) throws -> Void = { _ in }) throws -> Estimate {
        let processor = try model.makeSession(SessionParameters())
        try prepare(processor)
        let n = model.frameSize
        var times = Percentiles()
        let clock = MonotonicClock()
        var index = 0
        _ = try FrameLoop.runInline(processor: processor, source: SignalSource([Float](repeating: 0, count: n * (warmup + max(1, frames)))),
                                    sink: NullSink(), clock: clock) { pipeline in
            pipeline.drainFinished { s in
                if index >= warmup { times.record(Double(s.decoded - s.dequeued) / 1e9) }
                index += 1
            }
        }
        let median = times.percentile(50)
        let frameDuration = Double(n) / Double(model.sampleRate)
        return Estimate(frameSeconds: median, sessions: sessions(frameSeconds: median, frameDuration: frameDuration),
                        contextFrames: contextFrames)
    }
}
